"""`extract` and `evaluate` under a real `torchrun --nproc_per_node 2` (gloo, CPU): the results equal a
one-process run bit for bit, and a killed 2-process extract resumes (per rank) to the same file."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from osnet_zoo.data import synthetic_reid
from osnet_zoo.evaluate import main as evaluate_main
from osnet_zoo.extract import load_features
from conftest import run_python, start_python

SMALL = dict(num_train_ids=2, num_test_ids=6, num_cameras=2, cameras_per_id=(2, 2), images_per_camera=(1, 2),
             num_distractors=3, num_junk=1)


def command(module, args, nproc=None):
    """The arguments of Python for ``python -m module args``, under ``torchrun --nproc_per_node nproc`` if given."""
    launcher = ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(nproc)] if nproc else []
    return [*launcher, '-m', module, *args]


def run(module, args, cwd, nproc=None):
    return run_python(*command(module, args, nproc), cwd=cwd)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """24 crops of different sizes, a seeded osnet_x0_25 checkpoint (with a classifier, as training writes it)
    and a small synthetic re-ID set."""
    root = tmp_path_factory.mktemp('distributed')
    rng = np.random.default_rng(0)
    (root / 'crops').mkdir()
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (30 + i, 14 + i // 2, 3), dtype=np.uint8)).save(
            root / 'crops' / f'{i:03d}.png')
    torch.manual_seed(0)
    model = timm.create_model('osnet_x0_25', num_classes=5)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / 'model.safetensors'))
    synthetic_reid(root / 'data', **SMALL)
    return root


def extract_args(out):
    return ['crops', '--output', out, '--model', 'osnet_x0_25', '--checkpoint', 'model.safetensors', '--device', 'cpu',
            '--batch-size', '2', '--shard-size', '2', '--workers', '1']


def descendants(pid):
    """Process ids of every descendant of ``pid`` (from /proc: torchrun starts its workers in their own sessions)."""
    children = {}
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / 'stat').read_text().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def alive(pid):
    try:
        return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def assert_same_features(a, b):
    fa, pa, ma = load_features(a)
    fb, pb, mb = load_features(b)
    assert fa.shape == (24, 512) and torch.equal(fa, fb), (fa - fb).abs().max()
    assert pa == pb and ma == mb


def test_extract_two_processes_resume_after_kill_and_equal_one(setup):
    one = run('osnet_zoo.extract', extract_args('one.safetensors'), setup)
    assert one.returncode == 0, one.stderr

    # stopped after one shard per rank: rank 0 wrote shard 0, rank 1 shard 1 (global indices), nothing merged
    parts = setup / 'killed.safetensors.parts'
    stopped = run('osnet_zoo.extract', [*extract_args('killed.safetensors'), '--max-shards', '1'], setup, nproc=2)
    assert stopped.returncode != 0 and 'rerun the same command' in stopped.stdout, stopped.stderr[-2000:]
    assert sorted(p.name for p in parts.glob('shard_*')) == ['shard_000000.safetensors', 'shard_000001.safetensors']
    assert not (setup / 'killed.safetensors').exists()

    # a real SIGKILL of the whole job once the next shard file appears
    first = {p.name: p.stat().st_mtime_ns for p in parts.glob('shard_*')}
    job = start_python(*command('osnet_zoo.extract', extract_args('killed.safetensors'), nproc=2), cwd=setup,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(list(parts.glob('shard_*'))) <= 2 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    workers = descendants(job.pid)
    for pid in [*workers, job.pid]:  # the workers (ranks) and the launcher, as when a node is lost
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    job.wait()
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (setup / 'killed.safetensors').exists(), 'the job finished before it was killed'
    assert workers and not any(alive(pid) for pid in workers)
    done = sorted(int(p.stem.split('_')[1]) for p in parts.glob('shard_*'))
    assert 2 < len(done) < 12
    # the killed run did not redo the shards of the stopped one
    assert {name: (parts / name).stat().st_mtime_ns for name in first} == first

    # the resumed run (2 processes again) skips every finished shard on each rank and merges the same file
    resumed = run('osnet_zoo.extract', extract_args('killed.safetensors'), setup, nproc=2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rank0_done = sum(1 for i in done if i % 2 == 0)  # rank 0 reports the shards it skips
    assert f'Reusing {rank0_done} finished shard(s) from killed.safetensors.parts (rank 0)' in resumed.stdout
    assert_same_features(setup / 'one.safetensors', setup / 'killed.safetensors')
    assert 'Wrote killed.safetensors: 24 x 512' in resumed.stdout and not parts.exists()


def test_extract_bad_image_on_one_rank_stops_every_rank(setup, tmp_path):
    crops = tmp_path / 'crops'
    crops.mkdir()
    for p in sorted((setup / 'crops').glob('*.png'))[:5]:
        (crops / p.name).write_bytes(p.read_bytes())
    (crops / '003.png').write_bytes(b'not a png')  # shard 1 (shard size 2): rank 1's
    args = [crops, '--output', tmp_path / 'f.safetensors', '--model', 'osnet_x0_25', '--checkpoint',
            setup / 'model.safetensors', '--device', 'cpu', '--batch-size', '2', '--shard-size', '2', '--workers', '1']
    proc = run('osnet_zoo.extract', args, tmp_path, nproc=2)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and '003.png' in errors[0] and '--skip-bad' in errors[0] and 'verify_images' in errors[0]
    assert not (tmp_path / 'f.safetensors').exists()


def test_evaluate_two_processes_equal_one(setup, monkeypatch, capsys):
    common = ['--model', 'osnet_x0_25', '--checkpoint', 'model.safetensors', '--dataset', 'synthetic', '--root',
              'data', '--height', '64', '--width', '32', '--batch-size', '3', '--workers', '0', '--flip',
              '--device', 'cpu']
    one = run('osnet_zoo.evaluate', [*common, '--output', 'eval_one'], setup)
    assert one.returncode == 0, one.stderr
    two = run('osnet_zoo.evaluate', [*common, '--output', 'eval_two'], setup, nproc=2)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count(' R1 ') == one.stdout.count(' R1 ') == 1  # metrics on rank 0 only
    r1 = json.loads((setup / 'eval_one' / 'results.json').read_text())
    r2 = json.loads((setup / 'eval_two' / 'results.json').read_text())
    assert r1['targets'] == r2['targets'] and r1['targets']['synthetic']['num_query'] > 0
    for split in ('query', 'gallery'):
        name = f'features_synthetic_{split}.safetensors'
        a, b = load_file(str(setup / 'eval_one' / name)), load_file(str(setup / 'eval_two' / name))
        assert a.keys() == b.keys()  # the same cache key: the 2-process cache serves a 1-process rerun
        assert all(torch.equal(a[k], b[k]) for k in a)
    # the rerun in this process takes the features of the 2-process run from its cache, and says so
    monkeypatch.chdir(setup)
    capsys.readouterr()
    again = evaluate_main([*common, '--output', 'eval_two'])
    assert capsys.readouterr().out.count('features from cache: eval_two') == 2
    assert again['targets'] == r2['targets']
