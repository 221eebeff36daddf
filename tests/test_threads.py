"""Thread pools sized to the CPU the process may use, and waiting threads that sleep (issue 31): the CPU budget
against real affinity / cgroup files, the precedence of the user's settings, the onnxruntime session options,
the start line, and that a library import changes no global setting. No timings here: those are in
benchmarks/bench_shared_cpu.py."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from osnet_zoo import threads
from osnet_zoo.inference import FeatureExtractor
from conftest import REPO, child_env, run_module, run_python
from test_backend import Tiny
from test_extractor import trained_looking


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_cgroup_v2_quota_is_the_smallest_on_the_path_rounded_up(tmp_path):
    proc = write(tmp_path / 'proc_cgroup', '0::/outer/inner\n')
    root = tmp_path / 'fs'
    write(root / 'outer' / 'inner' / 'cpu.max', 'max 100000\n')  # no limit of its own
    write(root / 'outer' / 'cpu.max', '150000 100000\n')  # its parent: 1.5 CPUs
    assert threads.cgroup_cpu_limit(root, proc) == pytest.approx(1.5)
    assert threads.cpu_budget(root, proc, affinity=16) == 2  # 1.5 CPUs keep two threads busy
    assert threads.cpu_budget(root, proc, affinity=1) == 1  # the affinity mask is smaller
    write(root / 'outer' / 'inner' / 'cpu.max', '50000 100000\n')  # half a CPU: still one thread
    assert threads.cpu_budget(root, proc, affinity=16) == 1


def test_cgroup_v2_without_a_quota_leaves_the_affinity(tmp_path):
    proc = write(tmp_path / 'proc_cgroup', '0::/\n')
    write(tmp_path / 'fs' / 'cpu.max', 'max 100000\n')
    assert threads.cgroup_cpu_limit(tmp_path / 'fs', proc) is None
    assert threads.cpu_budget(tmp_path / 'fs', proc, affinity=6) == 6


def test_cgroup_v1_cfs_quota_and_a_container_path_missing_under_the_mount(tmp_path):
    # inside a container /proc/self/cgroup names the host's path; the mount's root is the container's group
    proc = write(tmp_path / 'proc_cgroup', '4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n')
    mount = tmp_path / 'fs' / 'cpu,cpuacct'
    write(mount / 'cpu.cfs_quota_us', '300000\n')
    write(mount / 'cpu.cfs_period_us', '100000\n')
    assert threads.cgroup_cpu_limit(tmp_path / 'fs', proc) == pytest.approx(3.0)
    assert threads.cpu_budget(tmp_path / 'fs', proc, affinity=64) == 3
    write(mount / 'cpu.cfs_quota_us', '-1\n')  # no quota
    assert threads.cpu_budget(tmp_path / 'fs', proc, affinity=64) == 64


def test_unreadable_cgroup_files_leave_the_real_affinity(tmp_path):
    write(tmp_path / 'fs' / 'cpu.max', 'garbage\n')
    budget = threads.cpu_budget(tmp_path / 'fs', tmp_path / 'missing')
    assert budget == len(os.sched_getaffinity(0))


def test_the_users_choice_wins_then_the_budget_less_the_workers():
    none = {}
    assert threads.compute_threads(8, workers=1, environ=none, budget=4) == 3  # capped to the budget less workers
    assert threads.compute_threads(2, workers=0, environ=none, budget=4) == 2  # a lower torch count is kept
    assert threads.compute_threads(8, workers=6, environ=none, budget=4) == 1  # never below one
    assert threads.compute_threads(8, workers=1, environ={'OMP_NUM_THREADS': '6'}, budget=4) == 8  # env: torch's
    assert threads.compute_threads(8, workers=1, environ={'MKL_NUM_THREADS': '5,2'}, budget=4) == 8
    assert threads.compute_threads(8, workers=3, explicit=5, environ={'OMP_NUM_THREADS': '2'}, budget=4) == 5
    assert threads.user_threads({'OMP_NUM_THREADS': 'x', 'MKL_NUM_THREADS': '3'}) == ('MKL_NUM_THREADS', 3)
    assert threads.user_threads({'OMP_NUM_THREADS': '0'}) is None
    with pytest.raises(ValueError, match='threads must be >= 1'):
        threads.compute_threads(2, explicit=0)


@pytest.mark.parametrize('argv, expected', [
    (['python', '-m', 'osnet_zoo.train', '--epochs', '1'], 'osnet_zoo.train'),
    (['python', '-u', '-X', 'importtime', '-m', 'osnet_zoo'], 'osnet_zoo'),
    (['python', '-mosnet_zoo.extract'], 'osnet_zoo.extract'),
    (['python', '-m', 'pytest', 'tests'], None),
    (['python', '-c', 'import osnet_zoo'], None),
    (['python', 'script.py', '-m', 'osnet_zoo.train'], None),
])
def test_cli_module(argv, expected):
    assert threads.cli_module(argv) == expected


def test_the_wait_policy_is_set_for_our_commands_only_and_never_over_the_users():
    cli = ['python', '-m', 'osnet_zoo.evaluate']
    env = {}
    assert threads.prepare_cli_process(env, cli, torch_loaded=False) == {'OMP_WAIT_POLICY': 'PASSIVE'}
    assert env == {'OMP_WAIT_POLICY': 'PASSIVE'}
    for user in ({'OMP_WAIT_POLICY': 'ACTIVE'}, {'GOMP_SPINCOUNT': '1000'}, {'KMP_BLOCKTIME': '0'}):
        env = dict(user)
        assert threads.prepare_cli_process(env, cli, torch_loaded=False) == {} and env == user
    for argv, loaded in ((['python', '-c', 'pass'], False), (cli, True), (cli + ['--spin'], False)):
        env = {}
        assert threads.prepare_cli_process(env, argv, torch_loaded=loaded) == {} and env == {}


def test_start_line_says_what_was_decided():
    line = threads.describe(1, 2, budget=2, environ={}, set_env={'OMP_WAIT_POLICY': 'PASSIVE'})
    assert line == ('CPU: 1 compute thread (budget 2 CPUs), 2 loader workers; set OMP_WAIT_POLICY=PASSIVE '
                    '(waiting threads sleep)')
    line = threads.describe(3, 0, 'decoding threads', budget=8,
                            environ={'OMP_NUM_THREADS': '3', 'OMP_WAIT_POLICY': 'ACTIVE'}, set_env={})
    assert line == 'CPU: 3 compute threads (OMP_NUM_THREADS=3), 0 decoding threads; yours: OMP_WAIT_POLICY=ACTIVE'


IMPORT_CHECK = '''
import json, os, sys, torch
torch.set_num_threads(1)
before = dict(os.environ)
import osnet_zoo
from osnet_zoo.inference import FeatureExtractor
changed = {k: os.environ.get(k) for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)}
print(json.dumps(dict(threads=torch.get_num_threads(), changed=changed)))
'''


def test_a_library_import_changes_no_global_setting():
    out = run_python('-c', IMPORT_CHECK, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == dict(threads=1, changed={})
    # torch not loaded first: still nothing, the process is not one of our commands
    out = run_python('-c', 'import os; import osnet_zoo; print(os.environ.get("OMP_WAIT_POLICY"))', check=True,
                     env=child_env(OMP_WAIT_POLICY=None))
    assert out.stdout.split()[-1] == 'None'


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return trained_looking(Tiny())


def test_onnxruntime_sessions_do_not_spin_unless_asked(tiny):
    pytest.importorskip('onnxruntime')
    quiet = FeatureExtractor(tiny, device='cpu', backend='onnxruntime', threads=1)
    options = quiet.model.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry('session.intra_op.allow_spinning') == '0'
    assert options.get_session_config_entry('session.inter_op.allow_spinning') == '0'
    spinning = FeatureExtractor(tiny, device='cpu', backend='onnxruntime', threads=2, spin=True)
    options = spinning.model.session.get_session_options()
    assert options.intra_op_num_threads == 2 and spinning.threads == 2
    assert options.get_session_config_entry('session.intra_op.allow_spinning') == '1'


@pytest.mark.parametrize('backend', ['torch', 'onnxruntime'])
def test_the_extractor_gives_the_callers_thread_count_back(tiny, backend, monkeypatch):
    for name in threads.USER_THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    if backend == 'onnxruntime':
        pytest.importorskip('onnxruntime')
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        extractor = FeatureExtractor(tiny, device='cpu', backend=backend, threads=2)
        frame = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
        feats, kept = extractor.from_boxes(frame, [[10, 10, 60, 150], [100, 20, 150, 200]])
        assert feats.shape == (2, 8) and bool(kept.all())
        assert torch.get_num_threads() == 3 and extractor.threads == 2
        # the default: torch's count capped to the budget less the workers (at least one)
        assert FeatureExtractor(tiny, device='cpu', backend=backend, workers=64).threads == 1
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_the_command_prints_its_start_line_and_sets_the_wait_policy(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    from PIL import Image
    for i in range(2):
        Image.fromarray(np.full((64, 32, 3), 40 * i, np.uint8)).save(images / f'{i}.png')
    common = [str(images), '--model', 'osnet_x0_25', '--no-pretrained', '--backend', 'torch', '--device', 'cpu',
              '--workers', '1']
    env = child_env(OMP_WAIT_POLICY=None, GOMP_SPINCOUNT=None, KMP_BLOCKTIME=None, OMP_NUM_THREADS=None,
                    MKL_NUM_THREADS=None)
    out = run_module('osnet_zoo.extract', *common, '--output', tmp_path / 'a.safetensors', env=env, check=True)
    budget = threads.cpu_budget()
    count = max(1, min(budget - 1, torch.get_num_threads()))
    expected = (f'CPU: {count} compute thread{"s" * (count != 1)} (budget {budget} CPU{"s" * (budget != 1)}), '
                '1 decoding threads; set OMP_WAIT_POLICY=PASSIVE (waiting threads sleep)')
    assert out.stdout.splitlines()[0] == expected
    out = run_module('osnet_zoo.extract', *common, '--threads', '2', '--spin', '--output', tmp_path / 'b.safetensors',
                     env=dict(env, OMP_NUM_THREADS='1'), check=True)
    assert out.stdout.splitlines()[0] == 'CPU: 2 compute threads (OMP_NUM_THREADS=1), 1 decoding threads'


def test_the_shared_cpu_benchmark_runs_and_writes_its_figures(tmp_path):
    out = tmp_path / 'shared.json'
    run_python(REPO / 'benchmarks' / 'bench_shared_cpu.py', '--skip', 'train', 'commands', '--models', 'osnet_x0_25',
               '--cases', 'default,eager', '--rounds', 1, '--seconds', 0.05, '--loads', 0, '--output', out,
               cwd=REPO, check=True)
    rows = json.loads(out.read_text())['from_boxes']
    assert set(rows) == {'osnet_x0_25 default', 'osnet_x0_25 eager'}
    assert all(r['load0'] > 0 and r['x_fastest_idle'] >= 1 for r in rows.values())
    assert rows['osnet_x0_25 eager']['backend'] == 'torch'
