"""Bad inputs and faults: one parametrised test per entry point, one id per case.

A bad input must end in a clear refusal: a CLI exits non-zero with one ``error: ...`` line (no traceback), the
library raises a user error (ValueError, TypeError, CheckpointError, OSError ...); either way the message names
the thing (file, option, key). Each case asserts that, and that nothing on disk was lost or half-written. Cases
that are a *correct behaviour* rather than an error (a 16-bit PNG converted, a rerun reusing its shards, a
lone ``stepsize: 60``) assert that behaviour. No pickle code ever runs: every checkpoint is read through
``read_checkpoint``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Sequence

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from osnet_zoo import cli
from osnet_zoo.data import make_synthetic_reid, read_image, read_image_tensor
from osnet_zoo.evaluate import main as evaluate_main
from osnet_zoo.export import main as export_main
from osnet_zoo.extract import main as extract_main
from osnet_zoo.files import atomic_write_text, remove_stale_temporaries
from osnet_zoo.inference import FeatureExtractor
from osnet_zoo.metrics import evaluate_features, evaluate_rank
from osnet_zoo.train.__main__ import get_args_parser as train_parser
from osnet_zoo.train.__main__ import main as train_main
from osnet_zoo.engine.checkpoint import load_training_state
from osnet_zoo.engine.optim import build_scheduler
from osnet_zoo.engine.recipes import resolve_config
from osnet_zoo.visualize import main as visualize_main
from osnet_zoo.weights import CheckpointError, file_sha256, load_osnet_checkpoint, read_checkpoint
from osnet_zoo.weights.__main__ import main as weights_main
from osnet_zoo.weights.hub import HubFile, check_file
from osnet_zoo.publish.mirror import hf_snapshot_of
from conftest import REPO, run_python, start_python

ERRORS = cli.USER_ERRORS + (TypeError,)


def cli_error(main: Callable, argv: Sequence[str], capsys) -> str:
    """The ``error: ...`` line a CLI ends with on a bad input: a non-zero exit status and no traceback (an
    exception escaping ``cli.run`` fails the test with its own traceback)."""
    capsys.readouterr()
    try:
        code = cli.run(lambda: main(list(argv)))
    except SystemExit as e:  # a main that exits with its message (argparse)
        code = e.code if isinstance(e.code, int) else 1
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert code != 0, f'exit status 0 on a bad input; stderr: {err[-300:]!r}'
    assert lines, f'no "error:" line; stderr: {err[-300:]!r}'
    assert 'Traceback' not in err, err[-500:]
    return lines[-1]


def library_error(fn: Callable[[], object]) -> str:
    """The message of the user error ``fn()`` raises (any other exception, or none, fails the test)."""
    with pytest.raises(ERRORS) as info:
        fn()
    return str(info.value)


def assert_names(message: str, *names: str) -> None:
    missing = [n for n in names if n.lower() not in message.lower()]
    assert not missing, f'the message does not name {missing}: {message!r}'


def tree(folder: Path) -> dict:
    """Every file under ``folder`` with its size (what "nothing lost, nothing half-written" compares)."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob('*')) if p.is_file()}


@contextmanager
def returns_within(seconds: int):
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``."""
    def expire(*_):
        raise TimeoutError(f'still running after {seconds} s: hangs')
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# Checkpoint files whose content is not a mapping of parameter names (group 1 of issue 22): every loader
# names the file, never an AttributeError.
WRONG_CONTENTS = {'list': [1, 2, 3], 'tensor': torch.zeros(3), 'string': 'weights', 'int_keys': {0: torch.zeros(1)}}


def wrong_checkpoint(folder: Path, kind: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f'{kind}.pth'
    torch.save(WRONG_CONTENTS[kind], path)
    return path


# ----------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def root(tmp_path_factory) -> Path:
    """A tiny Market1501-layout set (8 train ids, 6 test ids, 32x16 crops) and random osnet_x0_25 weights."""
    root = tmp_path_factory.mktemp('bad_inputs')
    make_synthetic_reid(root / 'data' / 'Market-1501-v15.09.15', num_train_ids=8, num_test_ids=6, height=32,
                        width=16, num_distractors=2, num_junk=1, seed=5)
    torch.manual_seed(0)
    model = timm.create_model('osnet_x0_25', num_classes=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / 'model.safetensors'))
    return root


TRAIN = ['--sources', 'market1501', '--targets', 'market1501', '--model', 'osnet_x0_25', '--height', '32',
         '--width', '16', '--batch-size', '8', '--epochs', '1', '--workers', '0', '--device', 'cpu',
         '--max-steps-per-epoch', '2', '--lr-scheduler', 'constant']


def train_base(root: Path, out: Path) -> list:
    return ['--root', str(root / 'data'), '--output', str(out), *TRAIN]


@pytest.fixture(scope='module')
def finished_run(root, tmp_path_factory) -> Path:
    """A finished 1-epoch run folder (its checkpoint.pth is what the resume cases edit)."""
    out = tmp_path_factory.mktemp('finished') / 'run'
    train_main(train_base(root, out))
    return out



def png16(path: Path, mode: str) -> np.ndarray:
    """Write a 16-bit grayscale PNG (``'L16'``: from a uint16 array, or PIL mode ``'I;16'``) and return the 8-bit pixels
    (high byte) a correct reader gives, as an (H, W, 3) uint8 array."""
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, (32, 16), dtype=np.uint16)
    if mode == 'L16':
        Image.fromarray(values).save(path)
    else:
        Image.frombytes('I;16', values.shape[::-1], values.astype('<u2').tobytes()).save(path)
    eight = (values >> 8).astype(np.uint8)
    return np.repeat(eight[:, :, None], 3, axis=2)


def png16_rgb(path: Path) -> np.ndarray:
    """An RGB 16-bit PNG (written by hand: PIL cannot write one) and its 8-bit pixels."""
    import struct
    import zlib
    rng = np.random.default_rng(1)
    values = rng.integers(0, 65536, (32, 16, 3), dtype=np.uint16)
    raw = b''.join(b'\x00' + values[y].astype('>u2').tobytes() for y in range(values.shape[0]))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack('>IIBBBBB', values.shape[1], values.shape[0], 16, 2, 0, 0, 0)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(raw))
                     + chunk(b'IEND', b''))
    return (values >> 8).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- train

def _recipe(tmp: Path, text: str) -> list:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / 'recipe.yaml').write_text(text)
    return ['--recipe', str(tmp / 'recipe.yaml')]


def _torchreid_file(tmp: Path, trainer: bool) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    model = timm.create_model('osnet_x0_25', num_classes=8)
    state = {'state_dict': {'module.' + k: v for k, v in model.state_dict().items()}, 'epoch': 60}
    if trainer:  # what the reference trainer saves beside the weights (numpy scalars, optimiser state)
        state.update(rank1=np.float32(0.5), optimizer={'state': {}, 'param_groups': []})
    torch.save(state, tmp / 'model.pth.tar')
    return tmp / 'model.pth.tar'


def _tampered(run: Path, tmp: Path, edit: Callable[[dict], None]) -> list:
    """--resume from a copy of ``run``'s checkpoint with ``edit`` applied (a user's or a tool's edit)."""
    state = torch.load(run / 'checkpoint.pth', weights_only=True)
    edit(state)
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save(state, tmp / 'checkpoint.pth')
    return ['--resume', str(tmp / 'checkpoint.pth')]


def _bytes(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def _set(key: str, value) -> Callable[[dict], None]:
    return lambda state: state.__setitem__(key, value)


def _output_file(tmp: Path) -> list:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / 'afile').write_text('keep me')
    return ['--output', str(tmp / 'afile')]


# id -> (the extra argv, given the module's root, a finished run and tmp; what the message must name)
TRAIN_ERRORS: Dict[str, tuple] = {
    'unknown_target': (lambda root, run, tmp: ['--targets', 'synthtic'], ['--targets', 'synthtic']),
    'unknown_source': (lambda root, run, tmp: ['--sources', 'synthtic'], ['--sources', 'synthtic']),
    # any timm model trains as a re-ID backbone (issue 24: the papers' baselines); a name timm lacks is refused
    'not_timm': (lambda root, run, tmp: ['--model', 'resnet18_nope'], ['resnet18_nope', 'not a timm model']),
    'epochs_negative': (lambda root, run, tmp: ['--epochs', '-2'], ['--epochs']),
    'batch_size_zero': (lambda root, run, tmp: ['--batch-size', '0'], ['--batch-size']),
    'height_8': (lambda root, run, tmp: ['--height', '8'], ['--height', '8']),
    'output_is_a_file': (lambda root, run, tmp: _output_file(tmp), ['afile']),
    'resume_torchreid_pth_tar': (lambda root, run, tmp: ['--resume', str(_torchreid_file(tmp, False))],
                                 ['model.pth.tar', 'torchreid', '--pretrained']),
    'resume_reference_trainer_checkpoint': (lambda root, run, tmp: ['--resume', str(_torchreid_file(tmp, True))],
                                            ['model.pth.tar', 'torchreid']),
    'resume_corrupt_checkpoint': (lambda root, run, tmp: ['--resume', str(_bytes(tmp / 'broken.pth', b'PK\x03\x04 '
                                                                                  b'not really a zip'))],
                                  ['broken.pth']),
    'resume_safetensors_weights': (lambda root, run, tmp: ['--resume', str(root / 'model.safetensors')],
                                   ['model.safetensors']),
    'resume_epoch_x': (lambda root, run, tmp: _tampered(run, tmp, _set('epoch', 'x')), ['checkpoint.pth', 'epoch']),
    'resume_epoch_negative': (lambda root, run, tmp: _tampered(run, tmp, _set('epoch', -3)),
                              ['checkpoint.pth', 'epoch', '-3']),
    'resume_model_list': (lambda root, run, tmp: _tampered(run, tmp, lambda s: s.__setitem__(
        'model', [s['model']])), ['checkpoint.pth', 'model']),
    'resume_config_epochs_string': (lambda root, run, tmp: _tampered(run, tmp, lambda s: s['config'].__setitem__(
        'epochs', '1')), ['checkpoint', 'epochs', "'1'"]),
    'resume_rng_without_python': (lambda root, run, tmp: _tampered(run, tmp, lambda s: s['rng'].pop('python')),
                                  ['checkpoint.pth', 'rng', 'python']),
    'recipe_stepsize_ten': (lambda root, run, tmp: _recipe(tmp, 'lr_scheduler: multistep\nstepsize: ten\n'),
                            ['stepsize', 'ten']),
    'recipe_epochs_string': (lambda root, run, tmp: _recipe(tmp, 'epochs: "1"\n'), ['epochs', "'1'"]),
    'recipe_lr_fast': (lambda root, run, tmp: _recipe(tmp, 'lr: fast\n'), ['lr', 'fast']),
    'recipe_batch_size_float': (lambda root, run, tmp: _recipe(tmp, 'batch_size: 8.5\n'), ['batch_size', '8.5']),
    'recipe_height_zero': (lambda root, run, tmp: _recipe(tmp, 'height: 0\n'), ['height']),
    'recipe_unknown_transform': (lambda root, run, tmp: _recipe(tmp, 'transforms: random_flap\n'),
                                 ['transforms', 'random_flap']),
    **{f'init_checkpoint_{kind}': (lambda root, run, tmp, kind=kind: [
        '--init-checkpoint', str(wrong_checkpoint(tmp, kind))], [f'{kind}.pth']) for kind in WRONG_CONTENTS},
}
# the recipe cases give no option the recipe sets (an option on the command line overrides the recipe)
RECIPE_ONLY = ['--sources', 'market1501', '--targets', 'market1501', '--workers', '0', '--device', 'cpu']


@pytest.mark.parametrize('case', list(TRAIN_ERRORS))
def test_train_refuses(case, root, finished_run, tmp_path, capsys):
    extra, names = TRAIN_ERRORS[case]
    out = tmp_path / 'run'
    argv = extra(root, finished_run, tmp_path / 'in')
    base = ['--root', str(root / 'data'), '--output', str(out), *RECIPE_ONLY] if case.startswith('recipe_') \
        else train_base(root, out)
    inputs = tree(tmp_path)
    assert_names(cli_error(train_main, [*base, *argv], capsys), *names)
    assert tree(tmp_path / 'in') == {k[3:]: v for k, v in inputs.items() if k.startswith('in/')}, 'an input changed'
    assert not (out / 'checkpoint.pth').exists(), 'trained before refusing'


# id -> (a recipe giving one value where a list is expected, the list options it must give)
LONE_VALUES: Dict[str, tuple] = {
    'multistep_int_stepsize': ('lr_scheduler: multistep\nstepsize: 60\n', {'stepsize': [60]}),
    'single_source_string': ('sources: synthetic\ntargets: synthetic\n',
                             {'sources': ['synthetic'], 'targets': ['synthetic']}),
    'single_transform_string': ('transforms: random_flip\n', {'transforms': ['random_flip']}),
}


@pytest.mark.parametrize('case', list(LONE_VALUES))
def test_recipe_accepts_a_lone_value_for_a_list(case, tmp_path):
    text, expected = LONE_VALUES[case]
    cfg = resolve_config(train_parser().parse_args(_recipe(tmp_path, text)))
    assert {name: getattr(cfg, name) for name in expected} == expected


def test_recipe_lone_stepsize_is_one_milestone(tmp_path):
    cfg = resolve_config(train_parser().parse_args(_recipe(tmp_path, LONE_VALUES['multistep_int_stepsize'][0])))
    scheduler = build_scheduler('multistep', torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1),
                                100, cfg.stepsize, 0.1)
    assert dict(scheduler.milestones) == {60: 1}


def test_train_nan_without_checkpoint(root, tmp_path, capsys):
    out = tmp_path / 'run'
    line = cli_error(train_main, [*train_base(root, out), '--lr', '1e30', '--max-steps-per-epoch', '4'], capsys)
    assert_names(line, 'lr')
    ckpt = out / 'checkpoint.pth'
    if ckpt.exists():  # a checkpoint that exists holds finite weights only
        state = load_training_state(ckpt)
        assert all(torch.isfinite(v).all() for v in state['model'].values() if v.is_floating_point())
    else:
        assert 'intact' not in line, f'claims an intact checkpoint that does not exist: {line}'


def _copy_run(run: Path, tmp: Path) -> Path:
    out = tmp / 'run'
    shutil.copytree(run, out)
    return out


def test_train_resume_changes_model(root, finished_run, tmp_path, capsys):
    out = _copy_run(finished_run, tmp_path)
    line = cli_error(train_main, [*train_base(root, out), '--resume', '--epochs', '2', '--model', 'osnet_x0_5'],
                     capsys)
    assert_names(line, '--model', 'osnet_x0_5')


def test_train_resume_other_identities(root, finished_run, tmp_path, capsys):
    other = tmp_path / 'other'
    shutil.copytree(root / 'data', other)
    train_dir = other / 'Market-1501-v15.09.15' / 'bounding_box_train'
    pid = sorted(train_dir.glob('*.jpg'))[0].name[:4]
    for p in train_dir.glob(f'{pid}_*.jpg'):  # the same count of identities, one of them another person
        p.rename(p.with_name('0999' + p.name[4:]))
    out = _copy_run(finished_run, tmp_path)
    before, config = tree(out), (out / 'config.json').read_bytes()
    line = cli_error(train_main, [*train_base(root, out), '--root', str(other), '--resume', '--epochs', '2'], capsys)
    assert_names(line, 'identities', 'checkpoint.pth')
    assert tree(out) == before and (out / 'config.json').read_bytes() == config, 'the run folder changed'


def test_train_resume_with_new_lr(root, finished_run, tmp_path):
    out = _copy_run(finished_run, tmp_path)
    train_main([*train_base(root, out), '--resume', '--epochs', '2', '--lr', '0.01'])
    lrs = [r['lr'] for r in map(json.loads, (out / 'metrics.jsonl').read_text().splitlines())
           if r.get('kind') == 'train']
    config = json.loads((out / 'config.json').read_text())
    assert config['lr'] == 0.01 and len(lrs) == 2, (lrs, config['lr'])
    assert lrs[0] != pytest.approx(0.01) and lrs[1] == pytest.approx(0.01), lrs


def test_train_resume_new_epochs_cosine(root, tmp_path):
    cosine = [*train_base(root, tmp_path / 'run'), '--lr-scheduler', 'cosine', '--lr', '0.002']
    train_main(cosine)
    train_main([*cosine, '--resume', '--epochs', '3'])
    lrs = [r['lr'] for r in map(json.loads, (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines())
           if r.get('kind') == 'train']
    # the cosine schedule over 3 epochs, continued at epoch 1 (not the 1-epoch one, which ends at 0)
    assert lrs == pytest.approx([0.002, 0.002 * 0.75, 0.002 * 0.25])
    assert json.loads((tmp_path / 'run' / 'config.json').read_text())['epochs'] == 3


def test_train_resume_finished_without_results(root, finished_run, tmp_path):
    out = _copy_run(finished_run, tmp_path)
    (out / 'results.json').unlink()
    shutil.rmtree(out / 'final')
    results = train_main([*train_base(root, out), '--resume'])
    assert results and 'market1501' in results, f'resumed finished run returned {results!r}'
    assert json.loads((out / 'results.json').read_text()), 'results.json is empty'
    evals = [r for r in map(json.loads, (out / 'metrics.jsonl').read_text().splitlines()) if r['kind'] == 'eval']
    assert len(evals) == 1, f'the final evaluation is logged {len(evals)} times'


def test_train_resume_finished_keeps_results(root, finished_run, tmp_path):
    out = _copy_run(finished_run, tmp_path)
    first = json.loads((out / 'results.json').read_text())['targets']
    stamp = (out / 'results.json').stat().st_mtime_ns
    again = train_main([*train_base(root, out), '--resume'])
    assert again == first, 'a finished run resumed to other results'
    assert (out / 'results.json').stat().st_mtime_ns == stamp, 'results.json rewritten'


# ----------------------------------------------------------------------------------------------- images

@pytest.mark.parametrize('kind', ['L16', 'I;16', 'RGB16'])
def test_sixteen_bit_png_reads_as_its_eight_bit_pixels(kind, tmp_path):
    path = tmp_path / 'deep.png'
    expected = png16_rgb(path) if kind == 'RGB16' else png16(path, kind)
    tensor = read_image_tensor(path)
    assert tensor.dtype == torch.uint8, f'read_image_tensor gives {tensor.dtype}'
    assert np.array_equal(np.asarray(read_image(path)), expected), 'read_image pixels are not the high bytes'
    assert np.array_equal(tensor.permute(1, 2, 0).numpy(), expected), 'read_image_tensor differs'


# ----------------------------------------------------------------------------------------------- evaluate

def evaluate_base(root: Path, data: Path, out: Path) -> list:
    return ['--model', 'osnet_x0_25', '--checkpoint', str(root / 'model.safetensors'), '--dataset', 'market1501',
            '--root', str(data), '--device', 'cpu', '--workers', '0', '--height', '32', '--width', '16',
            '--output', str(out)]


EVALUATE_ERRORS: Dict[str, tuple] = {
    'unknown_dataset': (lambda tmp: ['--dataset', 'markt1501'], ['markt1501']),
    'missing_checkpoint': (lambda tmp: ['--checkpoint', str(tmp / 'nope.pth')], ['nope.pth']),
    'height_zero': (lambda tmp: ['--height', '0'], ['--height']),
    'width_8': (lambda tmp: ['--width', '8'], ['--width']),
    'batch_size_zero': (lambda tmp: ['--batch-size', '0'], ['--batch-size']),
    **{f'checkpoint_{kind}': (lambda tmp, kind=kind: ['--checkpoint', str(wrong_checkpoint(tmp, kind))],
                              [f'{kind}.pth']) for kind in WRONG_CONTENTS},
}


@pytest.mark.parametrize('case', list(EVALUATE_ERRORS))
def test_evaluate_refuses(case, root, tmp_path, capsys):
    extra, names = EVALUATE_ERRORS[case]
    argv = [*evaluate_base(root, root / 'data', tmp_path / 'out'), *extra(tmp_path / 'in')]
    assert_names(cli_error(evaluate_main, argv, capsys), *names)
    assert not (tmp_path / 'out').exists() or tree(tmp_path / 'out') == {}


@pytest.fixture
def data_copy(root, tmp_path) -> tuple:
    data = tmp_path / 'data'
    shutil.copytree(root / 'data', data)
    gallery = sorted((data / 'Market-1501-v15.09.15' / 'bounding_box_test').glob('*.jpg'))
    return data, gallery


def test_evaluate_unreadable_gallery_image(root, data_copy, tmp_path, capsys):
    data, gallery = data_copy
    gallery[3].write_bytes(b'not a jpeg')
    line = cli_error(evaluate_main, evaluate_base(root, data, tmp_path / 'out'), capsys)
    assert_names(line, gallery[3].name, 'verify')


def test_evaluate_sixteen_bit_gallery_ranks_as_eight_bit(root, data_copy, tmp_path):
    data, gallery = data_copy
    base = evaluate_base(root, data, tmp_path / 'out')
    eight = {p: np.asarray(Image.open(p).convert('L')) for p in gallery}
    for p, values in eight.items():  # 8-bit grayscale PNGs under the .jpg names
        Image.fromarray(values).save(p, format='PNG')
    reference = evaluate_main(base)['targets']['market1501']
    for p, values in eight.items():  # the same pixels as 16-bit PNGs
        Image.fromarray(values.astype(np.uint16) * 257).save(p, format='PNG')
    shutil.rmtree(tmp_path / 'out')
    got = evaluate_main(base)['targets']['market1501']
    assert got['mAP'] == pytest.approx(reference['mAP'], abs=1e-6), 'the 16-bit gallery ranks differently'


def test_evaluate_cache_follows_changed_images(root, data_copy, tmp_path):
    data, gallery = data_copy
    base = evaluate_base(root, data, tmp_path / 'out')
    first = evaluate_main(base)['targets']['market1501']
    for p in gallery:
        Image.new('RGB', Image.open(p).size, (128, 128, 128)).save(p, format='JPEG')
    second = evaluate_main(base)['targets']['market1501']
    assert second['mAP'] != first['mAP'], 'the same mAP after the gallery became grey: stale cache'


# ----------------------------------------------------------------------------------------------- extract

def query_images(root: Path, folder: Path, count: int) -> Path:
    """A folder of the first ``count`` query crops of the tiny set (images in, no dataset layout)."""
    folder.mkdir()
    for p in sorted((root / 'data' / 'Market-1501-v15.09.15' / 'query').glob('*.jpg'))[:count]:
        shutil.copy(p, folder / p.name)
    return folder


@pytest.fixture
def crops(root, tmp_path) -> Path:
    return query_images(root, tmp_path / 'crops', 5)


def extract_base(root: Path, source: str, out: Path) -> list:
    return [source, '--output', str(out), '--model', 'osnet_x0_25', '--checkpoint', str(root / 'model.safetensors'),
            '--device', 'cpu', '--workers', '1', '--batch-size', '2', '--shard-size', '2']


def _parts_state(out: Path, text: str) -> None:
    parts = out.with_name(out.name + '.parts')
    parts.mkdir()
    (parts / 'run.json').write_text(text)


def _unrelated_file(out: Path) -> None:
    out.write_text('my notes, not features')


EXTRACT_ERRORS: Dict[str, tuple] = {
    'bogus_model': (lambda out: ['--model', 'osnet_bogus'], ['osnet_bogus']),
    'batch_size_zero': (lambda out: ['--batch-size', '0'], ['--batch-size']),
    'shard_size_zero': (lambda out: ['--shard-size', '0'], ['--shard-size']),
    'shard_size_negative': (lambda out: ['--shard-size', '-5'], ['--shard-size']),
    'output_is_a_folder': (lambda out: out.mkdir() or [], ['--output', 'folder']),
    'output_is_an_unrelated_file': (lambda out: _unrelated_file(out) or [], ['--output', 'features file']),
    'parts_run_json_list': (lambda out: _parts_state(out, '[]') or [], ['run.json']),
    'parts_run_json_truncated': (lambda out: _parts_state(out, '{"key": "ab') or [], ['run.json']),
    **{f'checkpoint_{kind}': (lambda out, kind=kind: ['--checkpoint', str(wrong_checkpoint(out.parent / 'in', kind))],
                              [f'{kind}.pth']) for kind in WRONG_CONTENTS},
}


@pytest.mark.parametrize('case', list(EXTRACT_ERRORS))
def test_extract_refuses(case, root, crops, tmp_path, capsys):
    extra, names = EXTRACT_ERRORS[case]
    out = tmp_path / 'feats.safetensors'
    argv = [*extract_base(root, str(crops), out), *extra(out)]
    before = tree(tmp_path)
    assert_names(cli_error(extract_main, argv, capsys), *names)
    assert tree(tmp_path) == before, 'files were written, changed or left behind'


def test_extract_bad_image_names_it(root, crops, tmp_path, capsys):
    (crops / 'zz_bad.jpg').write_bytes(b'\xff\xd8 truncated')
    line = cli_error(extract_main, extract_base(root, str(crops), tmp_path / 'feats.safetensors'), capsys)
    assert_names(line, 'zz_bad.jpg', '--skip-bad')


@pytest.mark.parametrize('case', ['rerun_with_skip_bad', 'rerun_after_removing_bad_file'])
def test_extract_rerun_reuses_shards(case, root, crops, tmp_path, capsys):
    bad = crops / 'zz_bad.jpg'
    bad.write_bytes(b'\xff\xd8 truncated')
    out = tmp_path / 'feats.safetensors'
    parts = tmp_path / 'feats.safetensors.parts'
    base = extract_base(root, str(crops), out)
    cli_error(extract_main, base, capsys)
    done = sorted(p.name for p in parts.glob('shard_*'))
    assert done, 'no good shard was written before the bad image'
    if case == 'rerun_with_skip_bad':
        argv = [*base, '--skip-bad']
    else:
        bad.unlink()
        argv = base
    assert cli.run(lambda: extract_main(argv)) == 0
    assert 'reusing' in capsys.readouterr().out.lower(), 'no word about the reused shards'
    assert not parts.exists() and out.is_file()


def test_extract_glob_through_a_symlink_loop_lists_each_image_once(root, crops, tmp_path):
    (crops / 'loop').symlink_to(crops, target_is_directory=True)
    out = tmp_path / 'feats.safetensors'
    assert cli.run(lambda: extract_main(extract_base(root, f'{crops}/**/*.jpg', out))) == 0
    from osnet_zoo.inference import load_features
    feats, paths, _ = load_features(out)
    assert len(paths) == 5 == feats.shape[0], f'{len(paths)} rows for 5 images'


@pytest.mark.skipif(os.geteuid() == 0, reason='root lists any folder: no unreadable folder to make')
def test_extract_unreadable_subfolder_is_an_error(root, crops, tmp_path, capsys):
    locked = crops / 'locked'
    locked.mkdir()
    shutil.copy(next(crops.glob('*.jpg')), locked / 'hidden.jpg')
    locked.chmod(0)
    try:
        line = cli_error(extract_main, extract_base(root, str(crops), tmp_path / 'feats.safetensors'), capsys)
    finally:
        locked.chmod(0o755)
    assert_names(line, 'locked')
    assert not (tmp_path / 'feats.safetensors').exists()


# ----------------------------------------------------------------------------------------------- export

def _a_file(tmp: Path) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / 'a_file').write_text('keep me')
    return tmp / 'a_file'


EXPORT_ERRORS: Dict[str, tuple] = {
    'opset_one': (lambda tmp: ['--opset', '1'], ['--opset']),
    'missing_checkpoint': (lambda tmp: ['--checkpoint', str(tmp / 'nope.pth')], ['nope.pth']),
    'batch_size_zero': (lambda tmp: ['--batch-size', '0'], ['--batch-size']),
    'batch_size_negative': (lambda tmp: ['--batch-size', '-2', '--fixed-batch'], ['--batch-size', '-2']),
    'output_under_a_file': (lambda tmp: ['--output', str(_a_file(tmp) / 'x.onnx')], ['a_file', 'not a folder']),
    'torchreid_format_of_resnet': (lambda tmp: ['--model', 'resnet18', '--no-pretrained', '--format', 'torchreid',
                                                '--output', str(tmp / 'r.pt')], ['resnet18', 'torchreid']),
    **{f'checkpoint_{kind}': (lambda tmp, kind=kind: ['--checkpoint', str(wrong_checkpoint(tmp, kind))],
                              [f'{kind}.pth']) for kind in WRONG_CONTENTS},
}


@pytest.mark.parametrize('case', list(EXPORT_ERRORS))
def test_export_refuses(case, root, tmp_path, capsys):
    pytest.importorskip('onnx', reason='export needs the onnx package')
    out = tmp_path / 'out'
    out.mkdir()
    extra, names = EXPORT_ERRORS[case]
    argv = ['--model', 'osnet_x0_25', '--checkpoint', str(root / 'model.safetensors'), '--output', str(out / 'm.onnx'),
            *extra(tmp_path / 'in')]
    inputs = tree(tmp_path / 'in') if (tmp_path / 'in').exists() else {}
    assert_names(cli_error(export_main, argv, capsys), *names)
    assert tree(out) == {}, f'files left behind: {tree(out)}'
    assert (tree(tmp_path / 'in') if (tmp_path / 'in').exists() else {}) == inputs


# ----------------------------------------------------------------------------------------------- visualize

@pytest.fixture
def person_images(root, tmp_path) -> Path:
    return query_images(root, tmp_path / 'images', 3)


VISUALIZE_ERRORS: Dict[str, tuple] = {
    'grid_images_zero': (lambda tmp: ['--grid-images', '0'], ['--grid-images']),
    'output_is_a_file': (lambda tmp: ['--output', str(_a_file(tmp))], ['a_file', '--output']),
    'height_8': (lambda tmp: ['--height', '8'], ['--height']),
    'corrupt_image_with_workers': (lambda tmp: ['--workers', '2'], ['zz_bad.jpg']),
    **{f'checkpoint_{kind}': (lambda tmp, kind=kind: ['--checkpoint', str(wrong_checkpoint(tmp, kind))],
                              [f'{kind}.pth']) for kind in WRONG_CONTENTS},
}


@pytest.mark.parametrize('case', list(VISUALIZE_ERRORS))
def test_visualize_refuses(case, root, person_images, tmp_path, capsys):
    extra, names = VISUALIZE_ERRORS[case]
    if case == 'corrupt_image_with_workers':  # read in a DataLoader worker process: still one line
        (person_images / 'zz_bad.jpg').write_bytes(b'\xff\xd8 not a jpeg')
    argv = ['actmap', str(person_images), '--model', 'osnet_x0_25', '--checkpoint', str(root / 'model.safetensors'),
            '--device', 'cpu', '--workers', '0', '--height', '32', '--width', '16',
            '--output', str(tmp_path / 'figures'), *extra(tmp_path / 'in')]
    assert_names(cli_error(visualize_main, argv, capsys), *names)
    assert not (tmp_path / 'figures').exists() or case == 'corrupt_image_with_workers'


# ----------------------------------------------------------------------------------------------- extractor

@pytest.fixture(scope='module')
def extractor(root) -> FeatureExtractor:
    return FeatureExtractor('osnet_x0_25', device='cpu', pretrained=False,
                            checkpoint_path=str(root / 'model.safetensors'), batch_size=4)


FRAME = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
BOXES = [[0, 0, 16, 32], [10, 20, 40, 60]]
EXTRACTOR_ERRORS: Dict[str, tuple] = {
    'nan_pixels': (lambda ex, tmp: ex([torch.rand(3, 32, 16), torch.rand(3, 32, 16).index_fill_(
        0, torch.tensor([0]), float('nan'))]), ['input 1', 'nan']),
    'inf_pixels': (lambda ex, tmp: ex(torch.rand(3, 32, 16).index_fill_(1, torch.tensor([0]), float('inf'))),
                   ['input 0', 'inf']),
    'missing_file': (lambda ex, tmp: ex(tmp / 'gone.jpg'), ['gone.jpg']),
    # the frame of from_boxes gets the checks of a single image (issue 22: every box was silently skipped)
    'from_boxes_hwc_tensor': (lambda ex, tmp: ex.from_boxes(torch.from_numpy(FRAME), BOXES),
                              ['frame', 'channels-last']),
    'from_boxes_chw_numpy': (lambda ex, tmp: ex.from_boxes(np.ascontiguousarray(FRAME.transpose(2, 0, 1)), BOXES),
                             ['frame', 'channels-first']),
}


@pytest.mark.parametrize('case', list(EXTRACTOR_ERRORS))
def test_extractor_refuses(case, extractor, tmp_path):
    call, names = EXTRACTOR_ERRORS[case]
    assert_names(library_error(lambda: call(extractor, tmp_path)), *names)


def test_extractor_from_boxes_accepts_both_layouts_alike(extractor):
    hwc, kept = extractor.from_boxes(FRAME, BOXES)
    chw, kept_t = extractor.from_boxes(torch.from_numpy(FRAME).permute(2, 0, 1), BOXES)
    assert kept.all() and kept_t.all() and torch.allclose(hwc, chw, atol=1e-5)


def test_extractor_reads_a_sixteen_bit_png_as_its_eight_bit_pixels(extractor, tmp_path):
    expected = png16(tmp_path / 'deep.png', 'L16')
    got, want = extractor(tmp_path / 'deep.png'), extractor(expected)
    assert torch.allclose(got, want, atol=1e-6), 'features of the 16-bit file differ from its 8-bit pixels'


# ----------------------------------------------------------------------------------------------- metrics

def _metric_inputs():
    rng = np.random.default_rng(0)
    qf, gf = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=(10, 8)).astype(np.float32)
    q_pids, g_pids = np.array([1, 2, 3, 4]), np.array([1, 2, 3, 4, 1, 2, 3, 4, 5, 6])
    q_cams, g_cams = np.zeros(4, int), np.ones(10, int)
    return qf, gf, q_pids, g_pids, q_cams, g_cams


def _nan_row(gf: np.ndarray) -> np.ndarray:
    gf = gf.copy()
    gf[8] = np.nan
    return gf


def _nan_distance(dist: np.ndarray) -> np.ndarray:
    dist = dist.copy()
    dist[1, 7] = np.nan  # not a true match of query 1: it only moves junk around
    return dist


METRIC_ERRORS: Dict[str, tuple] = {
    'unhashable_pids': (lambda d, qf, gf, qp, gp, qc, gc: evaluate_rank(d, [[1]] * 4, gp, qc, gc), ['q_pids']),
    'float_max_rank': (lambda d, qf, gf, qp, gp, qc, gc: evaluate_rank(d, qp, gp, qc, gc, max_rank=2.5),
                       ['max_rank']),
    'nan_distances': (lambda d, qf, gf, qp, gp, qc, gc: evaluate_rank(_nan_distance(d), qp, gp, qc, gc),
                      ['nan', 'distmat']),
    'nan_feature_row': (lambda d, qf, gf, qp, gp, qc, gc: evaluate_features(qf, _nan_row(gf), qp, gp, qc, gc),
                        ['nan', 'gallery_features', '8']),
}


@pytest.mark.parametrize('case', list(METRIC_ERRORS))
def test_metrics_refuse(case):
    qf, gf, qp, gp, qc, gc = _metric_inputs()
    dist = ((qf[:, None] - gf[None]) ** 2).sum(-1)
    call, names = METRIC_ERRORS[case]
    assert_names(library_error(lambda: call(dist, qf, gf, qp, gp, qc, gc)), *names)


@pytest.mark.parametrize('case', ['string_pids', 'string_camids'])
def test_metrics_take_string_labels(case):
    qf, gf, qp, gp, qc, gc = _metric_inputs()
    dist = ((qf[:, None] - gf[None]) ** 2).sum(-1)
    reference = evaluate_rank(dist, qp, gp, qc, gc, max_rank=5)
    if case == 'string_pids':
        qp, gp = [f'p{i}' for i in qp], [f'p{i}' for i in gp]
    else:
        qc, gc = [f'c{i}' for i in qc], [f'c{i}' for i in gc]
    got = evaluate_rank(dist, qp, gp, qc, gc, max_rank=5)
    got_f = evaluate_features(qf, gf, qp, gp, qc, gc, distance='euclidean', max_rank=5)
    for r in (got, got_f):
        assert r['mAP'] == pytest.approx(reference['mAP']) and np.allclose(r['cmc'], reference['cmc'])


# ----------------------------------------------------------------------------------------------- checkpoints

def _safetensors_named_pth(tmp: Path) -> Path:
    save_file({'w': torch.zeros(2)}, str(tmp / 'weights.pth'))
    return tmp / 'weights.pth'


def _bad_tensor_record(tmp: Path) -> Path:
    """A zip checkpoint whose pickle calls torch's tensor rebuilder with a storage that is a string: allowed
    by weights_only (the function is on torch's own list), so torch fails inside it."""
    import pickle
    import zipfile

    class Bad:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, ('x', 0, (2,), (1,), False, None)

    torch.save({'w': torch.zeros(2)}, tmp / 'good.pth')
    path = tmp / 'bad_record.pth'
    with zipfile.ZipFile(tmp / 'good.pth') as good, zipfile.ZipFile(path, 'w') as bad:
        for name in good.namelist():
            bad.writestr(name, pickle.dumps({'w': Bad()}, protocol=2) if name.endswith('data.pkl') else good.read(name))
    return path


def _torchreid_pth_tar(tmp: Path) -> Path:
    torch.save({'state_dict': {'conv1.conv.weight': torch.zeros(2)}, 'epoch': 3}, tmp / 'model.pth.tar')
    return tmp / 'model.pth.tar'


def _truncated(tmp: Path) -> Path:
    torch.save({'epoch': 1, 'model': {'w': torch.zeros(1000)}}, tmp / 'ckpt.pth')
    (tmp / 'ckpt.pth').write_bytes((tmp / 'ckpt.pth').read_bytes()[:200])
    return tmp / 'ckpt.pth'


def _empty_dict(tmp: Path) -> Path:
    torch.save({}, tmp / 'empty.pth')
    return tmp / 'empty.pth'


# the file (made in tmp), what load_training_state's message names, what loading it as weights names
CHECKPOINT_FILES: Dict[str, tuple] = {
    'missing': (lambda tmp: tmp / 'ckpt.pth', ['ckpt.pth', 'does not exist'], ['ckpt.pth', 'not found']),
    'truncated': (_truncated, ['ckpt.pth'], ['ckpt.pth']),
    'torchreid_pth_tar': (_torchreid_pth_tar, ['model.pth.tar', 'torchreid'], ['model.pth.tar', 'OSNet checkpoint']),
    'not_a_checkpoint': (lambda tmp: wrong_checkpoint(tmp, 'list'), ['list.pth', 'list'], ['list.pth', 'list']),
    'empty_dict': (_empty_dict, ['empty.pth', 'missing'], ['empty.pth', 'no tensors']),
    'bad_tensor_record': (_bad_tensor_record, ['bad_record.pth'], ['bad_record.pth', 'corrupt']),
    'text_file': (lambda tmp: _bytes(tmp / 'notes.pth', b'hello'), ['notes.pth'], ['notes.pth', 'not a checkpoint']),
    'fifo': (lambda tmp: (os.mkfifo(tmp / 'pipe.pth'), tmp / 'pipe.pth')[1], ['pipe.pth', 'fifo'],
             ['pipe.pth', 'fifo']),
    'dev_zero_link': (lambda tmp: ((tmp / 'zero.pth').symlink_to('/dev/zero'), tmp / 'zero.pth')[1],
                      ['zero.pth', 'device'], ['zero.pth', 'device']),
    **{f'content_{kind}': (lambda tmp, kind=kind: wrong_checkpoint(tmp, kind), [f'{kind}.pth'],
                           [f'{kind}.pth', 'not a checkpoint']) for kind in WRONG_CONTENTS},
}


@pytest.mark.parametrize('case', list(CHECKPOINT_FILES))
def test_load_training_state_refuses(case, tmp_path):
    make, names, _ = CHECKPOINT_FILES[case]
    path = make(tmp_path)
    before = tree(tmp_path)
    with returns_within(20):
        assert_names(library_error(lambda: load_training_state(path)), *names)
    assert tree(tmp_path) == before


@pytest.mark.parametrize('case', list(CHECKPOINT_FILES))
def test_load_osnet_checkpoint_refuses(case, tmp_path):
    make, _, names = CHECKPOINT_FILES[case]
    path = make(tmp_path)
    model = timm.create_model('osnet_x0_25', num_classes=0)
    with returns_within(20):
        message = library_error(lambda: load_osnet_checkpoint(model, path))
    assert_names(message, *names)
    assert '\x1b[' not in message and 'weights_only=False' not in message, message


@pytest.mark.parametrize('case', [k for k in CHECKPOINT_FILES if k != 'missing'])
def test_timm_file_overlay_refuses(case, tmp_path):
    """``timm.create_model(..., pretrained_cfg_overlay=dict(file=...))``: our message, not timm's 'No pretrained
    weights exist' (an empty file) nor an AttributeError (a list)."""
    make, _, names = CHECKPOINT_FILES[case]
    path = make(tmp_path)
    with returns_within(20):
        message = library_error(lambda: timm.create_model('osnet_x0_25', pretrained=True, num_classes=0,
                                                          pretrained_cfg_overlay=dict(file=str(path))))
    assert_names(message, path.name)


def test_safetensors_named_pth_loads_by_content(tmp_path):
    model = timm.create_model('osnet_x0_25', num_classes=0)
    path = tmp_path / 'osnet.pth'  # a safetensors file under a .pth name: read by its header, not its name
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert set(read_checkpoint(path)) == set(model.state_dict())
    load_osnet_checkpoint(timm.create_model('osnet_x0_25', num_classes=0), path)
    assert set(read_checkpoint(_safetensors_named_pth(tmp_path))) == {'w'}


# ----------------------------------------------------------------------------------------------- weights CLI

WEIGHTS_ERRORS: Dict[str, tuple] = {
    **{f'convert_{kind}': (lambda tmp, kind=kind: ['convert', str(wrong_checkpoint(tmp, kind)), '--model',
                                                   'osnet_x0_25', '--tag', 'mine', '--output', str(tmp / 'out')],
                           [f'{kind}.pth']) for kind in WRONG_CONTENTS},
    **{f'record_{kind}': (lambda tmp, kind=kind: ['verify', '--record', str(wrong_checkpoint(tmp, kind))],
                          [f'{kind}.pth']) for kind in WRONG_CONTENTS},
    'manifest_default_tags_list': (lambda tmp: ['list', '--manifest', str(_edited_manifest(
        tmp, lambda m: m.__setitem__('default_tags', ['osnet_x1_0'])))], ['manifest.json', 'default_tags']),
    'manifest_rank1_string': (lambda tmp: ['list', '--manifest', str(_edited_manifest(
        tmp, lambda m: next(e for e in m['entries'] if e['evaluation'])['evaluation'][0].__setitem__(
            'rank1', 'high')))],
                              ['manifest.json', 'rank1', 'high']),
    'mirror_state_list': (lambda tmp: _mirror_args(tmp, '[]'), ['mirror_state.json']),
    'mirror_state_tags_list': (lambda tmp: _mirror_args(tmp, '{"dry_run": true, "tags": []}'), ['mirror_state.json']),
}


def _edited_manifest(tmp: Path, edit: Callable[[dict], None]) -> Path:
    data = json.loads((REPO / 'osnet_zoo' / 'weights' / 'weights_manifest.json').read_text())
    edit(data)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / 'manifest.json').write_text(json.dumps(data))
    return tmp / 'manifest.json'


def _mirror_args(tmp: Path, state: str) -> list:
    (tmp / 'refs').mkdir(parents=True)
    (tmp / 'work').mkdir()
    (tmp / 'work' / 'mirror_state.json').write_text(state)
    return ['mirror', str(tmp / 'refs'), '--dry-run', '--output', str(tmp / 'work')]


@pytest.mark.parametrize('case', list(WEIGHTS_ERRORS))
def test_weights_cli_refuses(case, tmp_path, capsys):
    extra, names = WEIGHTS_ERRORS[case]
    manifest = tmp_path / 'm' / 'manifest.json'
    if not case.startswith('manifest_'):  # --record writes the manifest it is given: a copy
        _edited_manifest(tmp_path / 'm', lambda m: None)
    argv = extra(tmp_path / 'in')
    if '--manifest' not in argv:
        argv += ['--manifest', str(manifest)]
    before = tree(tmp_path)
    assert_names(cli_error(weights_main, argv, capsys), *names)
    assert tree(tmp_path) == before, 'files were written or changed'


def test_weights_mirror_skips_a_wrong_content_file_and_goes_on(tmp_path, capsys):
    refs = tmp_path / 'refs'
    for kind in WRONG_CONTENTS:
        wrong_checkpoint(refs, kind)
    manifest = _edited_manifest(tmp_path / 'm', lambda m: None)
    code = weights_main(['mirror', str(refs), '--dry-run', '--output', str(tmp_path / 'work'),
                         '--manifest', str(manifest)])
    out = capsys.readouterr().out
    assert code == 0 and f'{len(WRONG_CONTENTS)} files skipped' in out, out[-500:]
    for kind in WRONG_CONTENTS:
        assert f'skip {kind}.pth: not a readable checkpoint' in out


def _hf_snapshot(cache: Path, entry_name: str = 'osnet_x0_25.msmt17_combineall') -> Path:
    """The snapshot path where huggingface_hub keeps the upstream file of ``entry_name`` (nothing made yet)."""
    from osnet_zoo.weights.manifest import load_manifest
    loc = load_manifest().entry(entry_name).locations()[0]
    repo = cache / ('models--' + loc.repo_id.replace('/', '--'))
    for sub in ('blobs', 'refs'):
        (repo / sub).mkdir(parents=True, exist_ok=True)
    (repo / 'refs' / 'main').write_text(loc.revision)
    snapshot = repo / 'snapshots' / loc.revision / loc.filename
    snapshot.parent.mkdir(parents=True)
    return snapshot


CACHE_ENTRIES: Dict[str, Callable[[Path], None]] = {
    'dangling_blob': lambda snap: snap.symlink_to(Path('..', '..', 'blobs', 'f' * 64)),
    'directory': lambda snap: snap.mkdir(),
    'fifo': lambda snap: os.mkfifo(snap),
    'dev_zero_link': lambda snap: snap.symlink_to('/dev/zero'),
}


@pytest.mark.parametrize('case', list(CACHE_ENTRIES))
def test_weights_verify_reports_a_broken_cache_entry(case, tmp_path, capsys):
    snapshot = _hf_snapshot(tmp_path / 'hf')
    CACHE_ENTRIES[case](snapshot)
    with returns_within(30):
        code = weights_main(['verify', '--cache-dir', str(tmp_path / 'hf')])
    out = capsys.readouterr().out
    assert code == 1, f'exit {code}: {out[-300:]}'
    assert_names(out, snapshot.name, 'BROKEN', '1 mismatched')


@pytest.mark.parametrize('case', ['fifo', 'dev_zero_link'])
def test_pretrained_from_a_special_cache_entry_does_not_hang(case, tmp_path, monkeypatch):
    snapshot = _hf_snapshot(tmp_path / 'hf')
    CACHE_ENTRIES[case](snapshot)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.delenv('OSNET_ZOO_MANIFEST', raising=False)
    with returns_within(30):
        message = library_error(lambda: timm.create_model('osnet_x0_25', pretrained=True, cache_dir=tmp_path / 'hf'))
    assert_names(message, snapshot.name, 'not a regular file')


def test_hashing_refuses_special_files_and_other_sizes(tmp_path):
    path = _bytes(tmp_path / 'w.pth', b'x' * 100)
    expected = HubFile('o/r', 'w.pth', None, sha256='0' * 64, size=99)
    assert_names(library_error(lambda: check_file(path, expected, 'osnet_x0_25.t', None)), 'w.pth', '99', '100')
    assert_names(library_error(lambda: file_sha256(path, size=99)), 'w.pth', '99', 'not hashed')
    with returns_within(10):
        assert_names(library_error(lambda: file_sha256('/dev/zero')), '/dev/zero', 'device')


@pytest.mark.parametrize('case', ['regular_file_in_a_lookalike_path', 'link_to_another_blob'])
def test_record_learns_no_revision_from_a_lookalike_snapshot(case, tmp_path):
    snapshot = _hf_snapshot(tmp_path / 'hf')
    payload = b'weights'
    if case == 'regular_file_in_a_lookalike_path':  # a folder named like a cache, not made by huggingface_hub
        snapshot.write_bytes(payload)
    else:
        (snapshot.parents[2] / 'blobs' / ('e' * 64)).write_bytes(payload)
        snapshot.symlink_to(Path('..', '..', 'blobs', 'e' * 64))
    sha = file_sha256(snapshot)
    assert hf_snapshot_of(snapshot, sha) is None
    # the real thing: a link to the blob named by its sha256
    (snapshot.parents[2] / 'blobs' / sha).write_bytes(payload)
    snapshot.unlink()
    snapshot.symlink_to(Path('..', '..', 'blobs', sha))
    assert hf_snapshot_of(snapshot, sha) == ('kaiyangzhou/osnet', snapshot.parent.name, snapshot.name)


# ----------------------------------------------------------------------------------------------- files

KILLED_WRITER = '''
import os, sys
from osnet_zoo.files import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b'half a checkpoint')
    os.kill(os.getpid(), 9)  # SIGKILL mid-write: no cleanup code runs
'''


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / 'checkpoint.pth'
    proc = run_python('-c', KILLED_WRITER, target)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-300:]
    stale = [p.name for p in tmp_path.iterdir()]
    assert len(stale) == 1 and '.tmp' in stale[0] and not target.exists(), stale
    # a live writer's temporary of the same output, and another output's, are kept
    gone = start_python('-c', 'pass')
    gone.wait()
    sleeper = start_python('-c', 'import time; time.sleep(60)')
    try:
        live = tmp_path / f'.checkpoint.{sleeper.pid}.abcdefgh.tmp.pth'
        other = tmp_path / f'.results.{gone.pid}.abcdefgh.tmp.json'
        live.write_bytes(b'being written')
        other.write_bytes(b'x')
        atomic_write_text(target, 'done')
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, 'checkpoint.pth'])
        assert target.read_text() == 'done'
        assert remove_stale_temporaries(tmp_path / 'results.json') == [other]
        assert remove_stale_temporaries(target) == [] and live.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
