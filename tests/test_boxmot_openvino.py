"""Our OpenVINO export in boxmot 25.0.0's own OpenVINO backend and in its trackers (in the same environment as
osnet_zoo, as tests/test_boxmot.py sets up; its helpers are reused here).

``export --format openvino`` writes ``<name>_openvino_model/`` (``<name>.xml`` / ``.bin``, the layout boxmot's
exporter writes and its backend reads) with our metadata inside: ``<name>.xml.metadata.json``, which boxmot reads
when given the .xml, and ``manifest.json``, which it reads when given the folder. ``tests/boxmot_side.py`` loads
both through boxmot's ``ReID`` in a child process that never imports osnet_zoo, then runs BotSort (and StrongSort,
DeepOcSort) with ``reid_weights`` = the folder. boxmot's OpenVINO backend pip-installs ``openvino>=2025.2.0`` at run
time when it is missing; the ``test`` extra installs it up front, so the run changes nothing in the environment.
"""
import json
import sys
from importlib.metadata import version

import numpy as np
import pytest
import timm
import torch

import osnet_zoo
from osnet_zoo.inference.export import export_model
from conftest import REPO, child_env, run_python
from test_boxmot import PEOPLE, SIZES, _boxmot_or_skip, _calibrated, _cosines, _crops, _scene

ARCH = 'osnet_x0_25'
FOLDER = f'{ARCH}_test_openvino_model'
XML = f'{ARCH}_test.xml'


@pytest.fixture(scope='module')
def boxmot_openvino_run(tmp_path_factory):
    """(the folder of the files, our fp32 PyTorch features by name, boxmot's result.json, openvino's version
    before and after boxmot ran)."""
    _boxmot_or_skip()
    tmp = tmp_path_factory.mktemp('boxmot_openvino')
    torch.manual_seed(0)
    size = SIZES[ARCH]  # 128x64, not boxmot's 256x128 default: it must come from our metadata
    net = _calibrated(timm.create_model(ARCH, num_classes=0), size, 101)
    net.pretrained_cfg = {**net.pretrained_cfg, 'input_size': (3, *size)}
    folder = tmp / FOLDER
    contract = export_model(net, folder, fmt='openvino')
    assert contract['check']['passed'] and contract['file'] == FOLDER
    crops = _crops(size, 4, seed=3)
    frames, detections = _scene(crops, seed=3)
    np.save(tmp / 'crops.npy', crops)
    np.savez(tmp / 'scene.npz', frames=frames, detections=detections)
    common = {'crops': str(tmp / 'crops.npy'), 'frames': str(tmp / 'scene.npz')}
    request = {'files': [{'path': str(folder), **common}, {'path': str(folder / XML), **common, 'trackers': False}]}
    (tmp / 'request.json').write_text(json.dumps(request))
    ours = osnet_zoo.FeatureExtractor(net, device='cpu', backend='torch')(list(crops)).numpy()
    before = version('openvino')
    run = run_python(REPO / 'tests' / 'boxmot_side.py', tmp / 'request.json', tmp / 'result.json',
                     python=sys.executable, env=child_env(BOXMOT_ORT_LOG_LEVEL='3'), timeout=1200, cwd=tmp)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    return tmp, ours, json.loads((tmp / 'result.json').read_text()), (before, version('openvino'))


@pytest.mark.parametrize('name', [FOLDER, XML])
def test_boxmot_openvino_backend_loads_our_export_and_gives_our_features(boxmot_openvino_run, name):
    tmp, ours, result, _ = boxmot_openvino_run
    got = result['files'][name]
    assert result['osnet_zoo_imported'] is False
    # boxmot's own OpenVINO backend, the architecture and the 128x64 crop size from our metadata (manifest.json
    # for the folder, <name>.xml.metadata.json for the .xml; without them it would resize crops to 256x128)
    assert (got['format'], got['backend']) == ('openvino', 'OpenVinoBackend')
    assert got['model_name'] == ARCH and got['input_shape'] == list(SIZES[ARCH])
    features = np.load(tmp / f'{name}.reid.npy')
    assert features.shape == ours.shape == (4, 512)
    assert _cosines(features, ours).min() >= 0.9999
    assert _cosines(features, np.roll(ours, 1, axis=0)).max() < 0.9  # different crops are far apart


def test_boxmot_openvino_backend_installed_nothing(boxmot_openvino_run):
    *_, (before, after) = boxmot_openvino_run
    assert before == after


@pytest.mark.parametrize('tracker', ['BotSort', 'StrongSort', 'DeepOcSort'])
def test_boxmot_trackers_run_with_our_openvino_export(boxmot_openvino_run, tracker):
    tmp, ours, result, _ = boxmot_openvino_run
    got = result['files'][FOLDER]['trackers'][tracker]
    assert got['backend'] == 'OpenVinoBackend' and got['backend_weights'] == str(tmp / FOLDER)
    assert got['input_shape'] == list(SIZES[ARCH]) and got['embedding_width'] == 512
    # the tracker's own appearance features of the last frame's people are ours
    assert _cosines(np.load(tmp / f'{FOLDER}.{tracker}.npy'), ours[:PEOPLE]).min() >= 0.9999
    # it follows the three people, one stable identity each, boxes on the detections
    last, before = got['frames'][-1], got['frames'][-2]
    assert len(set(last['ids'])) == PEOPLE and sorted(last['ids']) == sorted(before['ids'])
    detections = np.load(tmp / 'scene.npz')['detections'][-1][:, :4]
    boxes = np.asarray(last['boxes'])
    assert np.abs(np.sort(boxes, axis=0) - np.sort(detections, axis=0)).max() < 4.0
