"""Bad inputs and faults, one parametrised test per entry point.

Every case feeds one bad input (or fault) and classifies what happened:

* ``clear``: a non-zero exit with one ``error: ...`` line (CLIs) or an exception of a user-error type
  (library), whose message names the thing (file, option, argument), and nothing on disk lost or half-written;
* ``crash``: an exception that is not a user error, or a message that does not name the thing;
* ``silent``: no error at all (a wrong result, or a "success" that did nothing).

A case that is a *correct behaviour* rather than an error (a 16-bit PNG converted, a rerun reusing its shards)
asserts that behaviour and reports ``clear`` when it holds, ``silent`` when the result is wrong.
The assertion message carries the classification, so ``pytest -rf`` lists crash / silent per case.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, List, Sequence

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from osnet_zoo import cli
from osnet_zoo.data import make_synthetic_reid, read_image, read_image_tensor
from osnet_zoo.data.images import ImageReadError
from osnet_zoo.evaluate import main as evaluate_main
from osnet_zoo.export import main as export_main
from osnet_zoo.extract import main as extract_main
from osnet_zoo.inference import FeatureExtractor
from osnet_zoo.metrics import evaluate_features, evaluate_rank
from osnet_zoo.train.__main__ import main as train_main
from osnet_zoo.train.checkpoint import load_training_state

USER_ERRORS = cli.USER_ERRORS + (SystemExit,)


def run_cli(main: Callable, argv: Sequence[str], capsys) -> tuple:
    """(exit status, stderr) of ``cli.run(main(argv))``; an exception escaping ``run`` is re-raised."""
    capsys.readouterr()
    try:
        code = cli.run(lambda: main(list(argv)))
    except SystemExit as e:  # a main that exits with a message (argparse, load_model)
        code = e.code if isinstance(e.code, int) else 1
        if isinstance(e.code, str):
            print(e.code, file=__import__('sys').stderr)
    return code, capsys.readouterr().err


def classify_cli(main: Callable, argv: Sequence[str], capsys, names: Sequence[str]) -> str:
    try:
        code, err = run_cli(main, argv, capsys)
    except Exception as e:  # not turned into a message by cli.run
        return f'crash: {type(e).__name__}: {e}'[:300]
    if code == 0:
        return 'silent: exit 0'
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    if not lines:
        return f'crash: no error line in {err[-300:]!r}'
    missing = [n for n in names if n.lower() not in lines[-1].lower()]
    return 'clear' if not missing else f'crash: message {lines[-1]!r} does not name {missing}'


def classify_call(fn: Callable[[], object], names: Sequence[str]) -> str:
    try:
        fn()
    except USER_ERRORS as e:
        missing = [n for n in names if n.lower() not in str(e).lower()]
        return 'clear' if not missing else f'crash: message {str(e)!r} does not name {missing}'
    except Exception as e:
        return f'crash: {type(e).__name__}: {e}'[:300]
    return 'silent: no error'


def behaves(check: Callable[[], None]) -> str:
    """'clear' when the correct behaviour holds, 'silent' when it does not, 'crash' on an exception."""
    try:
        check()
    except AssertionError as e:
        return f'silent: {e}'[:300]
    except Exception as e:
        return f'crash: {type(e).__name__}: {e}'[:300]
    return 'clear'


def tree(folder: Path) -> dict:
    """Every file under ``folder`` with its size (what "nothing lost, nothing half-written" compares)."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob('*')) if p.is_file()}


def no_temp_files(folder: Path) -> List[str]:
    return [p for p in tree(folder) if '.tmp' in Path(p).name]


# ----------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def root(tmp_path_factory) -> Path:
    """A tiny Market1501-layout set (8 train ids, 6 test ids, 32x16 crops)."""
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

def _train_case(case: str, root: Path, tmp: Path, capsys) -> str:
    data, out = str(root / 'data'), tmp / 'run'
    base = ['--root', data, '--output', str(out), *TRAIN]
    if case in ('unknown_target', 'unknown_source'):
        option = '--targets' if case == 'unknown_target' else '--sources'
        result = classify_cli(train_main, [*base, option, 'synthtic'], capsys, [option, 'synthtic'])
        return result if not (out / 'checkpoint.pth').exists() else 'silent: refused only after training'
    if case == 'not_osnet':
        return classify_cli(train_main, [*base, '--model', 'resnet18'], capsys, ['resnet18'])
    if case == 'epochs_negative':
        result = classify_cli(train_main, [*base, '--epochs', '-2'], capsys, ['--epochs'])
        return result if not (out / 'final').exists() else 'silent: final/ written'
    if case == 'batch_size_zero':
        return classify_cli(train_main, [*base, '--batch-size', '0'], capsys, ['--batch-size'])
    if case == 'output_is_a_file':
        tmp.mkdir(exist_ok=True)
        (tmp / 'afile').write_text('keep me')
        result = classify_cli(train_main, ['--root', data, '--output', str(tmp / 'afile'), *TRAIN], capsys,
                              [str(tmp / 'afile')])
        return result if (tmp / 'afile').read_text() == 'keep me' else 'silent: the file was replaced'
    if case == 'resume_torchreid_pth_tar':
        tmp.mkdir(exist_ok=True)
        model = timm.create_model('osnet_x0_25', num_classes=8)
        torch.save({'state_dict': {'module.' + k: v for k, v in model.state_dict().items()}, 'epoch': 60},
                   tmp / 'model.pth.tar')
        return classify_cli(train_main, [*base, '--resume', str(tmp / 'model.pth.tar')], capsys,
                            ['model.pth.tar', 'torchreid', '--pretrained'])
    if case == 'resume_corrupt_checkpoint':
        tmp.mkdir(exist_ok=True)
        (tmp / 'broken.pth').write_bytes(b'PK\x03\x04 not really a zip')
        return classify_cli(train_main, [*base, '--resume', str(tmp / 'broken.pth')], capsys, ['broken.pth'])
    if case == 'nan_without_checkpoint':
        try:
            code_err = run_cli(train_main, [*base, '--lr', '1e30', '--max-steps-per-epoch', '4'], capsys)
        except Exception as e:
            return f'crash: {type(e).__name__}: {e}'[:300]
        code, err = code_err
        if code == 0:
            return 'silent: exit 0 at lr 1e30'
        ckpt = out / 'checkpoint.pth'
        if ckpt.exists():
            state = load_training_state(ckpt)
            if not all(torch.isfinite(v).all() for v in state['models'][0].values() if v.is_floating_point()):
                return 'silent: non-finite weights saved as a good checkpoint'
        elif 'intact' in err:
            return f'silent: claims an intact checkpoint that does not exist: {err.strip()[-200:]}'
        return 'clear' if code == 2 and 'lr' in err.lower() else f'crash: {err[-300:]}'
    if case == 'resume_with_new_lr':
        def check():
            assert train_main(base) is not None
            train_main([*base, '--resume', '--epochs', '2', '--lr', '0.01'])
            lrs = [r['lr'] for r in map(json.loads, (out / 'metrics.jsonl').read_text().splitlines())
                   if r.get('kind') == 'train']
            config = json.loads((out / 'config.json').read_text())
            assert (config['lr'] == 0.01 and len(lrs) == 2 and lrs[0] != pytest.approx(0.01)
                    and lrs[1] == pytest.approx(0.01)), f'log lr {lrs}, config lr {config["lr"]}'
        return behaves(check)
    if case == 'resume_changes_model':
        train_main(base)
        return classify_cli(train_main, [*base, '--resume', '--epochs', '2', '--model', 'osnet_x0_5'], capsys,
                            ['--model', 'osnet_x0_5'])
    if case == 'resume_finished_without_results':
        def check():
            train_main(base)
            (out / 'results.json').unlink()
            shutil.rmtree(out / 'final')
            results = train_main([*base, '--resume'])
            assert results and 'market1501' in results, f'resumed finished run returned {results!r}'
            assert json.loads((out / 'results.json').read_text()), 'results.json is empty'
            evals = [r for r in map(json.loads, (out / 'metrics.jsonl').read_text().splitlines())
                     if r['kind'] == 'eval']
            assert len(evals) == 1, f'the final evaluation is logged {len(evals)} times'
        return behaves(check)
    if case == 'resume_new_epochs_cosine':
        def check():
            cosine = [*base, '--lr-scheduler', 'cosine', '--lr', '0.002']
            train_main(cosine)
            train_main([*cosine, '--resume', '--epochs', '3'])
            lrs = [r['lr'] for r in map(json.loads, (out / 'metrics.jsonl').read_text().splitlines())
                   if r.get('kind') == 'train']
            # the cosine schedule over 3 epochs, continued at epoch 1 (not the 1-epoch one, which ends at 0)
            assert lrs == pytest.approx([0.002, 0.002 * 0.75, 0.002 * 0.25]), f'lrs that ran: {lrs}'
            assert json.loads((out / 'config.json').read_text())['epochs'] == 3
        return behaves(check)
    if case == 'resume_other_identities':
        other = tmp / 'other'
        shutil.copytree(root / 'data', other)
        train_dir = other / 'Market-1501-v15.09.15' / 'bounding_box_train'
        pid = sorted(train_dir.glob('*.jpg'))[0].name[:4]
        for p in train_dir.glob(f'{pid}_*.jpg'):  # the same count of identities, one of them another person
            p.rename(p.with_name('0999' + p.name[4:]))
        train_main(base)
        before = tree(out)
        config = (out / 'config.json').read_bytes()
        result = classify_cli(train_main, [*base, '--root', str(other), '--resume', '--epochs', '2'], capsys,
                              ['identities', 'checkpoint.pth'])
        unchanged = tree(out) == before and (out / 'config.json').read_bytes() == config
        return result if unchanged else f'silent: the run folder changed: {tree(out)}'
    if case == 'resume_finished_keeps_results':
        def check():
            first = train_main(base)
            stamp = (out / 'results.json').stat().st_mtime_ns
            again = train_main([*base, '--resume'])
            assert again == json.loads(json.dumps(first)), 'a finished run resumed to other results'
            assert (out / 'results.json').stat().st_mtime_ns == stamp, 'results.json rewritten'
        return behaves(check)
    raise AssertionError(case)


TRAIN_CASES = ['unknown_target', 'unknown_source', 'not_osnet', 'epochs_negative', 'batch_size_zero',
               'output_is_a_file', 'resume_torchreid_pth_tar', 'resume_corrupt_checkpoint', 'nan_without_checkpoint',
               'resume_with_new_lr', 'resume_new_epochs_cosine', 'resume_changes_model',
               'resume_finished_without_results', 'resume_finished_keeps_results', 'resume_other_identities']


@pytest.mark.parametrize('case', TRAIN_CASES)
def test_train(case, root, tmp_path, capsys):
    assert _train_case(case, root, tmp_path, capsys) == 'clear'


# ----------------------------------------------------------------------------------------------- images

@pytest.mark.parametrize('kind', ['L16', 'I;16', 'RGB16'])
def test_sixteen_bit_png_reads_as_its_eight_bit_pixels(kind, tmp_path):
    path = tmp_path / 'deep.png'
    expected = png16_rgb(path) if kind == 'RGB16' else png16(path, kind)

    def check():
        pil = np.asarray(read_image(path))
        tensor = read_image_tensor(path)
        assert tensor.dtype == torch.uint8, f'read_image_tensor gives {tensor.dtype}'
        assert np.array_equal(pil, expected), 'read_image pixels are not the high bytes'
        assert np.array_equal(tensor.permute(1, 2, 0).numpy(), expected), 'read_image_tensor differs'
    assert behaves(check) == 'clear'


# ----------------------------------------------------------------------------------------------- evaluate

def _evaluate_case(case: str, root: Path, tmp: Path, capsys) -> str:
    data = tmp / 'data'
    shutil.copytree(root / 'data', data)
    base = ['--model', 'osnet_x0_25', '--checkpoint', str(root / 'model.safetensors'), '--dataset', 'market1501',
            '--root', str(data), '--device', 'cpu', '--workers', '0', '--height', '32', '--width', '16',
            '--output', str(tmp / 'out')]
    gallery = sorted((data / 'Market-1501-v15.09.15' / 'bounding_box_test').glob('*.jpg'))
    if case == 'unreadable_gallery_image':
        gallery[3].write_bytes(b'not a jpeg')
        return classify_cli(evaluate_main, base, capsys, [gallery[3].name, 'verify'])
    if case == 'sixteen_bit_gallery_image':
        def check():
            eight = {p: np.asarray(Image.open(p).convert('L')) for p in gallery}
            for p, values in eight.items():  # 8-bit grayscale PNGs under the .jpg names
                Image.fromarray(values).save(p, format='PNG')
            reference = evaluate_main(base)['targets']['market1501']
            for p, values in eight.items():  # the same pixels as 16-bit PNGs
                Image.fromarray(values.astype(np.uint16) * 257).save(p, format='PNG')
            shutil.rmtree(tmp / 'out')
            got = evaluate_main(base)['targets']['market1501']
            assert got['mAP'] == pytest.approx(reference['mAP'], abs=1e-6), 'the 16-bit gallery ranks differently'
        return behaves(check)
    if case == 'cache_after_images_changed':
        def check():
            first = evaluate_main(base)['targets']['market1501']
            for p in gallery:
                Image.new('RGB', Image.open(p).size, (128, 128, 128)).save(p, format='JPEG')
            second = evaluate_main(base)['targets']['market1501']
            assert second['mAP'] != first['mAP'], 'the same mAP after the gallery became grey: stale cache'
        return behaves(check)
    if case == 'unknown_dataset':
        return classify_cli(evaluate_main, [*base, '--dataset', 'markt1501'], capsys, ['markt1501'])
    if case == 'missing_checkpoint':
        return classify_cli(evaluate_main, [*base, '--checkpoint', str(tmp / 'nope.pth')], capsys, ['nope.pth'])
    raise AssertionError(case)


EVALUATE_CASES = ['unreadable_gallery_image', 'sixteen_bit_gallery_image', 'cache_after_images_changed',
                  'unknown_dataset', 'missing_checkpoint']


@pytest.mark.parametrize('case', EVALUATE_CASES)
def test_evaluate(case, root, tmp_path, capsys):
    assert _evaluate_case(case, root, tmp_path, capsys) == 'clear'


# ----------------------------------------------------------------------------------------------- extract

def _extract_case(case: str, root: Path, tmp: Path, capsys) -> str:
    crops = tmp / 'crops'
    crops.mkdir()
    for p in sorted((root / 'data' / 'Market-1501-v15.09.15' / 'query').glob('*.jpg'))[:5]:
        shutil.copy(p, crops / p.name)
    out = tmp / 'feats.safetensors'
    base = [str(crops), '--output', str(out), '--model', 'osnet_x0_25', '--checkpoint', str(root / 'model.safetensors'),
            '--device', 'cpu', '--workers', '1', '--batch-size', '2', '--shard-size', '2']
    parts = tmp / 'feats.safetensors.parts'

    def refused_cleanly(argv, names):
        result = classify_cli(extract_main, argv, capsys, names)
        if result == 'clear' and parts.exists():
            return f'crash: {parts.name}/ left behind'
        return result
    if case == 'bogus_model':
        return refused_cleanly([*base, '--model', 'osnet_bogus'], ['osnet_bogus'])
    if case == 'batch_size_zero':
        return refused_cleanly([*base, '--batch-size', '0'], ['--batch-size'])
    if case in ('shard_size_zero', 'shard_size_negative'):
        return refused_cleanly([*base, '--shard-size', '0' if case == 'shard_size_zero' else '-5'], ['--shard-size'])
    bad = crops / 'zz_bad.jpg'
    bad.write_bytes(b'\xff\xd8 truncated')
    if case == 'bad_image':
        return classify_cli(extract_main, base, capsys, ['zz_bad.jpg', '--skip-bad'])
    if case in ('rerun_with_skip_bad', 'rerun_after_removing_bad_file'):
        def check():
            assert run_cli(extract_main, base, capsys)[0] != 0
            done = sorted(p.name for p in parts.glob('shard_*'))
            stamps = {p.name: p.stat().st_mtime_ns for p in parts.glob('shard_*')}
            if case == 'rerun_with_skip_bad':
                code, err = run_cli(extract_main, [*base, '--skip-bad'], capsys)
            else:
                bad.unlink()
                code, err = run_cli(extract_main, base, capsys)
            assert code == 0, f'rerun refused: {err.strip()[-200:]}'
            assert done, 'no good shard was written before the bad image'
            assert not parts.exists() and out.is_file()
            assert 'reus' in capsys.readouterr().out.lower() or stamps, 'no word about the reused shards'
        return behaves(check)
    raise AssertionError(case)


EXTRACT_CASES = ['bogus_model', 'batch_size_zero', 'shard_size_zero', 'shard_size_negative', 'bad_image',
                 'rerun_with_skip_bad', 'rerun_after_removing_bad_file']


@pytest.mark.parametrize('case', EXTRACT_CASES)
def test_extract(case, root, tmp_path, capsys):
    assert _extract_case(case, root, tmp_path, capsys) == 'clear'


# ----------------------------------------------------------------------------------------------- export

@pytest.mark.parametrize('case', ['opset_one', 'missing_checkpoint'])
def test_export(case, root, tmp_path, capsys):
    pytest.importorskip('onnx', reason='export needs the onnx package')
    out = tmp_path / 'out'
    out.mkdir()
    base = ['--model', 'osnet_x0_25', '--checkpoint', str(root / 'model.safetensors'), '--output',
            str(out / 'm.onnx')]
    if case == 'opset_one':
        result = classify_cli(export_main, [*base, '--opset', '1'], capsys, ['--opset'])
    else:
        result = classify_cli(export_main, [*base, '--checkpoint', str(tmp_path / 'nope.pth')], capsys, ['nope.pth'])
    assert result == 'clear'
    assert tree(out) == {}, f'files left behind: {tree(out)}'


# ----------------------------------------------------------------------------------------------- extractor

@pytest.fixture(scope='module')
def extractor(root) -> FeatureExtractor:
    return FeatureExtractor('osnet_x0_25', device='cpu', pretrained=False,
                            checkpoint_path=str(root / 'model.safetensors'), batch_size=4)


@pytest.mark.parametrize('case', ['nan_pixels', 'inf_pixels', 'sixteen_bit_png', 'missing_file'])
def test_extractor(case, extractor, tmp_path):
    image = torch.rand(3, 32, 16)
    if case == 'nan_pixels':
        image[0, 3, 3] = float('nan')
        result = classify_call(lambda: extractor([torch.rand(3, 32, 16), image]), ['input 1', 'nan'])
    elif case == 'inf_pixels':
        image[1, 0, 0] = float('inf')
        result = classify_call(lambda: extractor(image), ['input 0', 'inf'])
    elif case == 'sixteen_bit_png':
        expected = png16(tmp_path / 'deep.png', 'L16')

        def check():
            got, want = extractor(tmp_path / 'deep.png'), extractor(expected)
            assert torch.allclose(got, want, atol=1e-6), 'features of the 16-bit file differ from its 8-bit pixels'
        result = behaves(check)
    else:
        result = classify_call(lambda: extractor(tmp_path / 'gone.jpg'), ['gone.jpg'])
    assert result == 'clear'


# ----------------------------------------------------------------------------------------------- metrics

def _metric_inputs():
    rng = np.random.default_rng(0)
    qf, gf = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=(10, 8)).astype(np.float32)
    q_pids, g_pids = np.array([1, 2, 3, 4]), np.array([1, 2, 3, 4, 1, 2, 3, 4, 5, 6])
    q_cams, g_cams = np.zeros(4, int), np.ones(10, int)
    return qf, gf, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize('case', ['string_pids', 'string_camids', 'unhashable_pids', 'float_max_rank',
                                  'nan_distances', 'nan_feature_row'])
def test_metrics(case):
    qf, gf, qp, gp, qc, gc = _metric_inputs()
    dist = ((qf[:, None] - gf[None]) ** 2).sum(-1)
    if case in ('string_pids', 'string_camids'):
        reference = evaluate_rank(dist, qp, gp, qc, gc, max_rank=5)

        def check():
            if case == 'string_pids':
                got = evaluate_rank(dist, [f'p{i}' for i in qp], [f'p{i}' for i in gp], qc, gc, max_rank=5)
                got_f = evaluate_features(qf, gf, [f'p{i}' for i in qp], [f'p{i}' for i in gp], qc, gc,
                                          metric='euclidean', max_rank=5)
            else:
                got = evaluate_rank(dist, qp, gp, [f'c{i}' for i in qc], [f'c{i}' for i in gc], max_rank=5)
                got_f = evaluate_features(qf, gf, qp, gp, [f'c{i}' for i in qc], [f'c{i}' for i in gc],
                                          metric='euclidean', max_rank=5)
            for r in (got, got_f):
                assert r['mAP'] == pytest.approx(reference['mAP']) and np.allclose(r['cmc'], reference['cmc'])
        result = behaves(check)
    elif case == 'unhashable_pids':
        result = classify_call(lambda: evaluate_rank(dist, [[1]] * 4, gp, qc, gc), ['q_pids'])
    elif case == 'float_max_rank':
        result = classify_call(lambda: evaluate_rank(dist, qp, gp, qc, gc, max_rank=2.5), ['max_rank'])
    elif case == 'nan_distances':
        dist[1, 7] = np.nan  # not a true match of query 1: it only moves junk around
        result = classify_call(lambda: evaluate_rank(dist, qp, gp, qc, gc), ['nan', 'distmat'])
    else:
        gf[8] = np.nan
        result = classify_call(lambda: evaluate_features(qf, gf, qp, gp, qc, gc), ['nan', 'gallery_features', '8'])
    assert result == 'clear'


# ----------------------------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize('case', ['missing', 'truncated', 'torchreid_pth_tar', 'not_a_checkpoint'])
def test_checkpoint_loading(case, tmp_path):
    path = tmp_path / 'ckpt.pth'
    if case == 'truncated':
        torch.save({'epoch': 1, 'models': [{'w': torch.zeros(1000)}]}, path)
        path.write_bytes(path.read_bytes()[:200])
        names = ['ckpt.pth']
    elif case == 'torchreid_pth_tar':
        path = tmp_path / 'model.pth.tar'
        torch.save({'state_dict': {'conv1.conv.weight': torch.zeros(2)}, 'epoch': 3}, path)
        names = ['model.pth.tar', 'torchreid']
    elif case == 'not_a_checkpoint':
        torch.save([1, 2, 3], path)
        names = ['ckpt.pth']
    else:
        names = ['ckpt.pth', 'does not exist']
    before = tree(tmp_path)
    assert classify_call(lambda: load_training_state(path), names) == 'clear'
    assert tree(tmp_path) == before
