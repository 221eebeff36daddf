"""Our INT8 exports in boxmot 25.0.0's own backends and trackers (in the same environment as osnet_zoo, as
tests/test_boxmot.py sets up; its helpers are reused here).

``export --int8`` writes a QDQ ``.onnx`` (onnxruntime's quantizer), which boxmot runs with its ONNX backend, and
with ``--format openvino`` an IR folder ``<name>_int8_openvino_model`` (NNCF), which it runs with its OpenVINO
backend; both with our metadata beside them. ``tests/boxmot_side.py`` loads them through boxmot's ``ReID`` in a
child process that never imports osnet_zoo and runs BotSort, StrongSort and DeepOcSort with them. boxmot's
features must be the INT8 model's as osnet_zoo runs it (cosine >= 0.9999: the same file, the same quantized
arithmetic), and each crop's INT8 feature nearest to the fp32 feature of the same crop. (How close INT8 is to fp32
is measured on a trained model in tests/test_quantize.py: this random-weight network with BN statistics from a few
synthetic crops has extreme activation ranges, and INT8 keeps only 0.78-0.98 cosine to its fp32 features.)
"""
import importlib.util
import json
import sys

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

import osnet_zoo
from osnet_zoo.inference.quantize import QuantizedModel, export_int8
from conftest import REPO, child_env, run_python
from test_boxmot import PEOPLE, SIZES, _boxmot_or_skip, _calibrated, _cosines, _crops, _scene

ARCH = 'osnet_x0_25'
ONNX = f'{ARCH}_int8.onnx'
FOLDER = f'{ARCH}_int8_openvino_model'
BACKENDS = {ONNX: 'ONNXBackend', FOLDER: 'OpenVinoBackend'}


def _names():
    return [ONNX] + ([FOLDER] if importlib.util.find_spec('nncf') is not None else [])


@pytest.fixture(scope='module')
def boxmot_int8_run(tmp_path_factory):
    """(folder, {name: our INT8 features}, our fp32 features, boxmot's result.json)."""
    _boxmot_or_skip()
    tmp = tmp_path_factory.mktemp('boxmot_int8')
    torch.manual_seed(0)
    size = SIZES[ARCH]  # 128x64: boxmot takes it from our metadata
    net = _calibrated(timm.create_model(ARCH, num_classes=0), size, 101)
    net.pretrained_cfg = {**net.pretrained_cfg, 'input_size': (3, *size)}
    calibration = tmp / 'calibration'
    calibration.mkdir()
    for i, crop in enumerate(_crops(size, 32, seed=7)):
        Image.fromarray(crop).save(calibration / f'{i:02d}.png')
    crops = _crops(size, 4, seed=3)
    frames, detections = _scene(crops, seed=3)
    np.save(tmp / 'crops.npy', crops)
    np.savez(tmp / 'scene.npz', frames=frames, detections=detections)
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(IMAGENET_DEFAULT_MEAN)[:, None, None]) / torch.tensor(IMAGENET_DEFAULT_STD)[:, None, None]
    ours, request = {}, []
    for name in _names():
        path, _ = export_int8(net, tmp / name, calibration=calibration, fmt='onnx' if name == ONNX else 'openvino')
        assert path == tmp / name
        ours[name] = QuantizedModel(path)(x).numpy()
        request.append({'path': str(path), 'crops': str(tmp / 'crops.npy'), 'frames': str(tmp / 'scene.npz')})
    (tmp / 'request.json').write_text(json.dumps({'files': request}))
    fp32 = osnet_zoo.FeatureExtractor(net, device='cpu', backend='torch')(list(crops)).numpy()
    run = run_python(REPO / 'tests' / 'boxmot_side.py', tmp / 'request.json', tmp / 'result.json',
                     python=sys.executable, env=child_env(BOXMOT_ORT_LOG_LEVEL='3'), timeout=1200, cwd=tmp)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    return tmp, ours, fp32, json.loads((tmp / 'result.json').read_text())


@pytest.mark.parametrize('name', _names())
def test_boxmot_loads_our_int8_export_with_its_own_backend(boxmot_int8_run, name):
    tmp, ours, fp32, result = boxmot_int8_run
    got = result['files'][name]
    assert result['osnet_zoo_imported'] is False
    assert got['backend'] == BACKENDS[name]
    assert got['model_name'] == ARCH and got['input_shape'] == list(SIZES[ARCH])
    features = np.load(tmp / f'{name}.reid.npy')
    assert features.shape == ours[name].shape == (4, 512)
    assert _cosines(features, ours[name]).min() >= 0.9999  # the INT8 model as we run it
    # each crop's INT8 feature is nearest to the fp32 feature of the same crop: the same network and pictures
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    reference = fp32 / np.linalg.norm(fp32, axis=1, keepdims=True)
    assert ((unit @ reference.T).argmax(1) == np.arange(len(fp32))).all()


@pytest.mark.parametrize('name', _names())
@pytest.mark.parametrize('tracker', ['BotSort', 'StrongSort', 'DeepOcSort'])
def test_boxmot_trackers_run_with_our_int8_export(boxmot_int8_run, name, tracker):
    tmp, ours, _, result = boxmot_int8_run
    got = result['files'][name]['trackers'][tracker]
    assert got['backend'] == BACKENDS[name] and got['embedding_width'] == 512
    assert _cosines(np.load(tmp / f'{name}.{tracker}.npy'), ours[name][:PEOPLE]).min() >= 0.9999
    last, before = got['frames'][-1], got['frames'][-2]
    assert len(set(last['ids'])) == PEOPLE and sorted(last['ids']) == sorted(before['ids'])
    detections = np.load(tmp / 'scene.npz')['detections'][-1][:, :4]
    assert np.abs(np.sort(np.asarray(last['boxes']), axis=0) - np.sort(detections, axis=0)).max() < 4.0
