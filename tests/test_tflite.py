"""``export --format tflite``: the file litert-torch writes, run by the LiteRT interpreter (ai-edge-litert), gives
PyTorch's features; its contract and tracker metadata describe it (NCHW input, as the ONNX export); without the
converter the CLI says in one line which extra to install.

The converter is the optional extra ``osnet-zoo[tflite]``. Without it the tests that convert are skipped, saying so;
``OSNET_ZOO_REQUIRE_TFLITE=1`` (set by .ci/run, which installs the extra) turns the skip into a failure.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import osnet_zoo
from osnet_zoo.inference.export import TRACKER_METADATA_KEYS, contract_path, export_model, metadata_path
from osnet_zoo.inference.tflite import TFLITE_INSTALL, missing_tflite_packages
from conftest import run_python
from test_boxmot import _calibrated, _cosines, _crops, built_once

REQUIRED = os.environ.get('OSNET_ZOO_REQUIRE_TFLITE') == '1'
SIZE = (64, 32)  # a small input: the conversion's time grows with it


def tflite_or_skip() -> None:
    """Skip (or fail, with OSNET_ZOO_REQUIRE_TFLITE=1) where the 'tflite' extra is not installed."""
    missing = missing_tflite_packages()
    if missing:
        reason = f"the 'tflite' extra is not installed ({', '.join(missing)}: {TFLITE_INSTALL})"
        if REQUIRED:
            pytest.fail(f'{reason} (OSNET_ZOO_REQUIRE_TFLITE=1)', pytrace=False)
        pytest.skip(reason)


def small_model(size=SIZE, seed: int = 201) -> torch.nn.Module:
    """osnet_x0_25 at ``size`` with BatchNorm statistics of crops like the test's (different crops, different
    features)."""
    torch.manual_seed(0)
    net = _calibrated(timm.create_model('osnet_x0_25', num_classes=0), size, seed)
    net.pretrained_cfg = {**net.pretrained_cfg, 'input_size': (3, *size)}
    return net


def litert_features(path: Path, crops: np.ndarray) -> np.ndarray:
    """``crops`` (N, H, W, 3) RGB uint8 at the model's size, normalised as the metadata says, through the LiteRT
    interpreter as a deployment runs it (NCHW, the interpreter resized to the batch)."""
    from ai_edge_litert.interpreter import Interpreter

    meta = json.loads(metadata_path(path).read_text())
    x = ((crops / meta['pixel_scale'] - np.float32(meta['mean'])) / np.float32(meta['std'])).astype(np.float32)
    assert meta['layout'] == 'NCHW' and meta['channel_order'] == 'rgb'
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    interpreter = Interpreter(model_path=str(path))
    index = interpreter.get_input_details()[0]['index']
    interpreter.resize_tensor_input(index, list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]['index'])


@pytest.fixture(scope='module')
def tflite_export(tmp_path_factory):
    """(the folder, the exported model) of osnet_x0_25 at 64x32 exported as osnet_x0_25_test.tflite."""
    tflite_or_skip()
    net = small_model()
    tmp = built_once(tmp_path_factory, 'tflite', lambda folder: export_model(net, folder / 'osnet_x0_25_test.tflite',
                                                                             fmt='tflite'))
    return tmp, net


def test_litert_gives_pytorch_features(tflite_export):
    tmp, net = tflite_export
    crops = _crops(SIZE, 5, seed=3)
    got = litert_features(tmp / 'osnet_x0_25_test.tflite', crops)
    want = osnet_zoo.FeatureExtractor(net, device='cpu', backend='torch')(list(crops)).numpy()
    assert got.shape == want.shape == (5, 512)
    assert _cosines(got, want).min() >= 0.9999
    # ... and 0.9999 says something: two different crops are far apart
    assert _cosines(got, np.roll(want, 1, axis=0)).max() < 0.9


def test_contract_and_metadata(tflite_export):
    tmp, _ = tflite_export
    path = tmp / 'osnet_x0_25_test.tflite'
    contract = json.loads(contract_path(path).read_text())
    assert contract['format'] == 'tflite' and contract['input']['layout'] == 'NCHW'
    assert contract['input']['shape'] == ['batch', 3, *SIZE] and contract['output']['shape'] == ['batch', 512]
    check = contract['check']
    assert check['passed'] and check['batch_sizes'] == [1, 3] and check['runtime'].startswith('litert-torch ')
    assert check['max_abs_diff'] <= check['allowed_abs_diff']
    meta = json.loads(metadata_path(path).read_text())
    assert tuple(meta) == TRACKER_METADATA_KEYS
    assert meta['layout'] == 'NCHW' and meta['input_shape'] == ['batch', 3, *SIZE] and meta['input_size'] == list(SIZE)
    assert meta['model_name'] == 'osnet_x0_25' and meta['model_kwargs'] == {'img_size': list(SIZE)}
    assert meta['format'] == 'tflite' and meta['file'] == path.name and meta['dynamic_batch'] is True
    # the interpreter reads what the contract says: NCHW (boxmot's LiteRT backend feeds NCHW to a file whose
    # input is not (N, H, W, 3)), converted at a batch of one
    from ai_edge_litert.interpreter import Interpreter
    details = Interpreter(model_path=str(path)).get_input_details()[0]
    assert list(details['shape']) == [1, 3, *SIZE] and details['dtype'] == np.float32


def test_tflite_refusals(tmp_path):
    tflite_or_skip()
    net = small_model()
    with pytest.raises(ValueError, match=r'--format tflite writes fp32 \(drop --precision fp16\)'):
        export_model(net, tmp_path, fmt='tflite', half=True)
    with pytest.raises(ValueError, match=r'x\.onnx: a TFLite export ends in \.tflite'):
        export_model(net, tmp_path / 'x.onnx', fmt='tflite')
    assert list(tmp_path.iterdir()) == []


def test_without_the_converter_one_line_naming_the_extra(tmp_path):
    """Where litert-torch cannot be imported (hidden from this child), the CLI stops before building anything
    with one line that names the extra and its pip command."""
    code = ('import runpy, sys; sys.modules["litert_torch"] = None; '
            'sys.argv = ["osnet_zoo.export", "--model", "osnet_x0_25", "--no-pretrained", "--format", "tflite", '
            f'"--output", {str(tmp_path / "out")!r}]; runpy.run_module("osnet_zoo.export", run_name="__main__")')
    run = run_python('-c', code, cwd=tmp_path)
    assert run.returncode == 2 and run.stdout == ''
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in run.stderr
    assert lines[0].startswith('error: --format tflite needs the litert-torch ')
    assert lines[0].endswith("(the optional 'tflite' extra): pip install \"osnet-zoo[tflite]\"")
    assert not (tmp_path / 'out').exists()
