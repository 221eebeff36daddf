"""INT8: post-training static quantization (osnet_zoo/inference/quantize.py), `export --int8` and precision='int8'.

One small training run (osnet_x0_25, 64x32 synthetic Market-1501 layout, a few epochs: Rank-1 well above chance)
is quantized for real by onnxruntime (and by NNCF for the OpenVINO IR), evaluated on the run's own split before and
after, and refused when the bound is exceeded. Nothing is mocked: real files, real quantizers, real subprocesses.
"""
import importlib.util
import json
from pathlib import Path

import onnx
import pytest
import torch

from osnet_zoo import FeatureExtractor
from osnet_zoo.data import make_synthetic_reid
from osnet_zoo.inference.backend import select_backend
from osnet_zoo.inference.quantize import CalibrationError, calibration_images, default_engine, int8_cache_dir
from osnet_zoo.precision import autocast_dtype, resolve_dtype
from conftest import run_module

TINY = ['--sources', 'market1501', '--targets', 'market1501', '--model', 'osnet_x0_25', '--height', '64',
        '--width', '32', '--batch-size', '16', '--lr', '0.003', '--eval-freq', '0', '--workers', '0',
        '--device', 'cpu', '--epochs', '6']
# INT8 embeddings of the tiny run against its fp32 ones, on its 51 query crops. Measured here: onnxruntime's engine
# mean 0.975, lowest 0.90; NNCF's mean 0.968-0.983, lowest 0.64-0.95 (one crop at 0.64 in one run); random-weight
# 256x128 models give 0.9998. So the mean and the 10% quantile are bounded (not one crop), with room for another
# machine's rounding; a broken quantization (wrong ranges or preprocessing) falls below 0.8.
MIN_MEAN_COSINE, MIN_COSINE_Q10 = 0.95, 0.9


def _close_to_fp32(cosine: torch.Tensor) -> bool:
    return bool(cosine.mean() >= MIN_MEAN_COSINE and cosine.quantile(0.1) >= MIN_COSINE_Q10)


@pytest.fixture(scope='module')
def run(tmp_path_factory) -> Path:
    """A finished training run on a synthetic dataset (its config.json names the sources and root)."""
    root = tmp_path_factory.mktemp('data')
    make_synthetic_reid(root / 'Market-1501-v15.09.15', num_train_ids=32, num_test_ids=16, height=64, width=32,
                        num_distractors=5, num_junk=2, seed=3)
    out = tmp_path_factory.mktemp('run') / 'run'
    r = run_module('osnet_zoo.train', '--root', root, '--output', out, *TINY)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((out / 'results.json').read_text())['targets']['market1501']
    assert results['rank1'] > 2 * results['chance_rank1'], results  # a model whose Rank-1 can drop
    return out


def _ops(path: Path) -> set:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _one_error_line(r) -> str:
    lines = [line for line in r.stderr.splitlines() if line.startswith('error: ')]
    assert len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    return lines[0]


def test_int8_export_of_a_run_reports_rank1_and_map_before_and_after(run, tmp_path):
    r = run_module('osnet_zoo.export', '--checkpoint', run, '--int8', '--output', tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    path = tmp_path / 'osnet_x0_25_trained_int8.onnx'
    assert {'QuantizeLinear', 'DequantizeLinear'} <= _ops(path)  # a QDQ graph, not the fp32 one renamed
    contract = json.loads((tmp_path / 'osnet_x0_25_trained_int8.onnx.json').read_text())
    accuracy = contract['accuracy']
    market = accuracy['targets']['market1501']
    # "before" is the run's own figure: the same split, the same distance, as training evaluated it
    trained = json.loads((run / 'results.json').read_text())['targets']['market1501']
    assert market['fp32']['rank1'] == pytest.approx(100 * trained['rank1'], abs=1e-6)
    assert market['fp32']['mAP'] == pytest.approx(100 * trained['mAP'], abs=0.05)
    assert accuracy['rank1_drop'] == pytest.approx(market['fp32']['rank1'] - market['int8']['rank1'])
    assert accuracy['rank1_drop'] <= accuracy['max_rank1_drop'] == 1.0
    assert contract['precision'] == 'int8' and contract['quantization']['engine'] == 'onnxruntime'
    # the run's training images calibrated it (32 ids, 260 images: fewer than the default 300)
    assert 0 < contract['quantization']['calibration_images'] <= 300
    metadata = json.loads((tmp_path / 'osnet_x0_25_trained_int8.onnx.metadata.json').read_text())
    assert metadata['precision'] == 'int8' and metadata['file'] == path.name and metadata['input_size'] == [64, 32]
    # printed too
    assert f"Rank-1 {market['fp32']['rank1']:.1f}% -> {market['int8']['rank1']:.1f}%" in r.stdout
    assert 'PASSED' in r.stdout


def test_int8_export_refuses_a_model_that_drops_more_than_the_bound(run, tmp_path):
    out = tmp_path / 'out'
    # any drop (even a gain of up to 100 points) exceeds a bound of -100: the refusal path, with the real figures
    r = run_module('osnet_zoo.export', '--checkpoint', run, '--int8', '--max-rank1-drop', '-100', '--output', out)
    assert r.returncode == 1
    line = _one_error_line(r)
    assert 'osnet_x0_25_trained_int8.onnx not written: INT8 loses' in line and '--max-rank1-drop -100' in line
    assert 'market1501: Rank-1' in line
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_int8_export_from_a_folder_without_a_run_says_what_was_measured(tmp_path):
    crops = tmp_path / 'crops'
    make_synthetic_reid(tmp_path / 'data', num_train_ids=4, num_test_ids=2, height=64, width=32, seed=5)
    crops.mkdir()
    for i, p in enumerate(sorted((tmp_path / 'data' / 'bounding_box_train').glob('*.jpg'))):
        (crops / f'{i:03d}.jpg').write_bytes(p.read_bytes())
    out = tmp_path / 'model.onnx'
    r = run_module('osnet_zoo.export', '--model', 'osnet_x0_25', '--no-pretrained', '--int8', '--calibration', crops,
                   '--calibration-size', '7', '--output', out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'Not measured: Rank-1 / mAP: no evaluation split' in r.stdout
    contract = json.loads(Path(f'{out}.json').read_text())
    assert contract['quantization']['calibration_images'] == 7  # --calibration-size, spread over the folder
    assert contract['accuracy']['rank1_drop'] is None and 'targets' not in contract['accuracy']
    cosine = contract['accuracy']['cosine_on_calibration']
    assert cosine['images'] == 7 and 0.9 < cosine['min'] <= cosine['mean'] < 1.0
    assert 'QuantizeLinear' in _ops(out)


@pytest.mark.parametrize('case', ['empty', 'not_images', 'broken_image', 'csv', 'missing', 'no_calibration'])
def test_bad_calibration_inputs_are_one_line(tmp_path, case):
    source = tmp_path / 'source'
    expected = {'empty': 'holds no images', 'not_images': 'holds no images', 'broken_image': 'calibration image',
                'csv': 'missing column camid, split', 'missing': 'no such folder', 'no_calibration': 'needs --calibration'}[case]
    if case in ('empty', 'not_images', 'broken_image'):
        source.mkdir()
    if case == 'not_images':
        (source / 'notes.txt').write_text('no pictures here')
    if case == 'broken_image':
        (source / 'crop.jpg').write_text('not a JPEG')
    if case == 'csv':
        source = tmp_path / 'crops.csv'
        source.write_text('path,pid\na.jpg,1\n')
    args = [] if case == 'no_calibration' else ['--calibration', source]
    r = run_module('osnet_zoo.export', '--model', 'osnet_x0_25', '--no-pretrained', '--int8', *args,
                   '--output', tmp_path / 'out')
    assert r.returncode == 2
    line = _one_error_line(r)
    assert expected in line, line
    if case not in ('no_calibration', 'broken_image'):
        assert str(source) in line
    if case == 'broken_image':
        assert 'crop.jpg' in line
    assert not (tmp_path / 'out').exists()


def test_calibration_from_a_csv_listing_takes_its_training_images(tmp_path):
    from PIL import Image
    rows = ['path,pid,camid,split']
    for i, (pid, split) in enumerate([('a', 'train'), ('a', 'train'), ('b', 'train'), ('b', 'train'),
                                      ('c', 'query'), ('c', 'gallery')]):
        Image.new('RGB', (16, 32), (40 * i, 10, 200)).save(tmp_path / f'{i}.png')
        rows.append(f'{i}.png,{pid},{i % 2},{split}')
    (tmp_path / 'listing.csv').write_text('\n'.join(rows) + '\n')
    picked = calibration_images(tmp_path / 'listing.csv', 10)
    assert [Path(p).name for p in picked] == ['0.png', '1.png', '2.png', '3.png']  # the train rows only


def test_calibration_images_spread_over_the_listing(tmp_path):
    for i in range(10):
        (tmp_path / f'{i}.png').write_bytes(b'')  # listed, not decoded
    picked = calibration_images(tmp_path, 4)
    assert [Path(p).name for p in picked] == ['0.png', '2.png', '5.png', '7.png']
    with pytest.raises(CalibrationError, match='--calibration-size'):
        calibration_images(tmp_path, 0)


def test_feature_extractor_int8_is_close_to_fp32_and_cached(run):
    images = sorted(str(p) for p in (Path(json.loads((run / 'config.json').read_text())['root'])
                                     / 'Market-1501-v15.09.15' / 'query').glob('*.jpg'))
    fp32 = FeatureExtractor(checkpoint_path=run, device='cpu')(images)
    # calibrated on the run; onnxruntime's engine, the one a QDQ graph shows
    extractor = FeatureExtractor(checkpoint_path=run, device='cpu', precision='int8', backend='onnxruntime')
    assert extractor.plan.describe() == 'onnxruntime (int8)'
    assert {'QuantizeLinear', 'DequantizeLinear'} <= _ops(extractor.model.path)
    int8 = extractor(images)
    assert int8.shape == fp32.shape and int8.dtype == torch.float32
    cosine = (int8 * fp32).sum(1)  # both L2-normalised
    assert _close_to_fp32(cosine), cosine
    assert cosine.min() < 0.99999  # quantized, not the fp32 graph
    # the bound means something: other people's fp32 embeddings are further away than INT8 is from fp32
    assert (int8 * fp32.roll(1, 0)).sum(1).mean() < cosine.mean() - 0.05
    # a second extractor with the same calibration reuses the cached model
    mtime = extractor.model.path.stat().st_mtime_ns
    again = FeatureExtractor(checkpoint_path=run, device='cpu', precision='int8', backend='onnxruntime')
    assert again.model.path == extractor.model.path and again.model.path.stat().st_mtime_ns == mtime
    assert again.model.path.parent == int8_cache_dir()
    assert torch.allclose(again(images), int8, atol=1e-5)
    # the default engine (OpenVINO's where the int8 extra is installed), as close
    default = FeatureExtractor(checkpoint_path=run, device='cpu', precision='int8')
    assert default.plan.describe() == f'{default_engine()} (int8)'
    cosine = (default(images) * fp32).sum(1)
    assert _close_to_fp32(cosine), cosine


def test_evaluate_precision_int8_gives_the_exports_figures(run, tmp_path):
    r = run_module('osnet_zoo.export', '--checkpoint', run, '--int8', '--output', tmp_path / 'export')
    assert r.returncode == 0, r.stderr[-3000:]
    contract = json.loads((tmp_path / 'export' / 'osnet_x0_25_trained_int8.onnx.json').read_text())
    config = json.loads((run / 'config.json').read_text())
    r = run_module('osnet_zoo.evaluate', '--checkpoint', run, '--dataset', 'market1501', '--root', config['root'],
                   '--precision', 'int8', '--backend', 'onnxruntime', '--workers', '0', '--device', 'cpu',
                   '--output', tmp_path / 'eval')
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads((tmp_path / 'eval' / 'results.json').read_text())['targets']['market1501']
    want = contract['accuracy']['targets']['market1501']['int8']
    assert 100 * got['rank1'] == pytest.approx(want['rank1'], abs=1e-6)
    assert 100 * got['mAP'] == pytest.approx(want['mAP'], abs=0.05)


@pytest.mark.skipif(importlib.util.find_spec('nncf') is None, reason='the int8 extra (nncf) is not installed')
def test_int8_openvino_export_is_an_ir_folder_boxmot_recognises(run, tmp_path):
    r = run_module('osnet_zoo.export', '--checkpoint', run, '--int8', '--format', 'openvino', '--output', tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    folder = tmp_path / 'osnet_x0_25_trained_int8_openvino_model'
    xml = folder / 'osnet_x0_25_trained_int8.xml'
    assert xml.is_file() and xml.with_suffix('.bin').is_file()
    assert 'FakeQuantize' in xml.read_text() or 'fake_quantize' in xml.read_text().lower()
    contract = json.loads((folder / 'osnet_x0_25_trained_int8.xml.json').read_text())
    assert contract['format'] == 'openvino' and contract['quantization']['engine'] == 'openvino'
    assert contract['accuracy']['rank1_drop'] <= 1.0
    manifest = json.loads((folder / 'manifest.json').read_text())
    assert manifest['precision'] == 'int8' and manifest['model_kwargs'] == {'img_size': [64, 32]}


def test_int8_is_cpu_inference_only():
    assert resolve_dtype('int8') == torch.float32
    with pytest.raises(ValueError, match='quantized model for inference on the CPU'):
        autocast_dtype('int8')
    for kwargs in (dict(backend='torch'), dict(device='cuda'), dict(optimize=True)):
        with pytest.raises(ValueError, match="precision='int8' runs a quantized model on the CPU"):
            select_backend(**{'backend': 'auto', 'device': 'cpu', **kwargs}, precision='int8')
    # auto: OpenVINO's engine, measured faster, where the int8 extra is installed
    assert default_engine() == ('openvino' if importlib.util.find_spec('nncf') else 'onnxruntime')
    assert select_backend('auto', 'cpu', 'int8').describe() == f'{default_engine()} (int8)'
    assert select_backend('onnxruntime', 'cpu', 'int8').describe() == 'onnxruntime (int8)'
    if importlib.util.find_spec('nncf') is not None:
        assert select_backend('openvino', 'cpu', 'int8').describe() == 'openvino (int8)'
