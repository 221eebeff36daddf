"""Our ``.tflite`` in boxmot 25.0.0's own LiteRT backend, in the environment .ci/run builds (osnet_zoo with the
'tflite' extra, boxmot==25.0.0 and onnxruntime==1.24.3 in one environment, ``pip check`` clean).

osnet_zoo writes the file and its ``.metadata.json``; ``tests/boxmot_side.py`` then loads it in a child process
that never imports osnet_zoo, through boxmot's ``ReID`` (the backend it picks by the suffix) and its trackers.
Without boxmot or the extra the tests are skipped, saying so; ``OSNET_ZOO_REQUIRE_BOXMOT=1`` and
``OSNET_ZOO_REQUIRE_TFLITE=1`` (set by .ci/run) turn each skip into a failure.
"""
import json
import sys

import numpy as np
import pytest

import osnet_zoo
from osnet_zoo.inference.export import export_model
from conftest import REPO, child_env, run_python
from test_boxmot import PEOPLE, SIZES, TRACKERS, _boxmot_or_skip, _cosines, _crops, _scene
from test_tflite import built_once, small_model, tflite_or_skip

NAME = 'osnet_x0_25_test.tflite'
SIZE = SIZES['osnet_x0_25']  # 128x64, as the main job trains it


def _write_and_run(tmp) -> None:
    """The file, our features of the crops (ours.npy) and boxmot's result.json with its features."""
    net = small_model(SIZE, seed=101)
    export_model(net, tmp / NAME, fmt='tflite')
    crops = _crops(SIZE, 4, seed=11)
    frames, detections = _scene(crops, seed=11)
    np.save(tmp / 'crops.npy', crops)
    np.savez(tmp / 'scene.npz', frames=frames, detections=detections)
    np.save(tmp / 'ours.npy', osnet_zoo.FeatureExtractor(net, device='cpu', backend='torch')(list(crops)).numpy())
    request = {'files': [{'path': str(tmp / NAME), 'crops': str(tmp / 'crops.npy'), 'frames': str(tmp / 'scene.npz')}]}
    (tmp / 'request.json').write_text(json.dumps(request))
    run = run_python(REPO / 'tests' / 'boxmot_side.py', tmp / 'request.json', tmp / 'result.json',
                     python=sys.executable, env=child_env(BOXMOT_ORT_LOG_LEVEL='3'), timeout=1200, cwd=tmp)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]


@pytest.fixture(scope='module')
def boxmot_tflite(tmp_path_factory):
    """(the folder, our features of the crops, boxmot's entry for the file, its whole result)."""
    _boxmot_or_skip()
    tflite_or_skip()
    tmp = built_once(tmp_path_factory, 'boxmot_tflite', _write_and_run)
    result = json.loads((tmp / 'result.json').read_text())
    return tmp, np.load(tmp / 'ours.npy'), result['files'][NAME], result


def test_boxmot_litert_backend_loads_our_file_and_gives_our_features(boxmot_tflite):
    tmp, ours, got, result = boxmot_tflite
    assert result['osnet_zoo_imported'] is False
    # the backend boxmot picks by the suffix; the architecture and crop size from our metadata file
    assert got['format'] == 'tflite' and got['backend'] == 'TFLiteBackend'
    assert got['model_name'] == 'osnet_x0_25' and got['input_shape'] == list(SIZE)
    features = np.load(tmp / f'{NAME}.reid.npy')  # NCHW, as boxmot tells from the input's shape
    assert features.shape == ours.shape == (4, 512)
    assert _cosines(features, ours).min() >= 0.9999
    assert _cosines(features, np.roll(ours, 1, axis=0)).max() < 0.9


@pytest.mark.parametrize('tracker', TRACKERS)
def test_boxmot_trackers_run_with_our_tflite(boxmot_tflite, tracker):
    tmp, ours, got, _ = boxmot_tflite
    run = got['trackers'][tracker]
    assert run['backend'] == 'TFLiteBackend' and run['backend_weights'] == str(tmp / NAME)
    assert run['input_shape'] == list(SIZE) and run['embedding_width'] == 512
    # the tracker's own appearance features of the last frame's people are ours
    assert _cosines(np.load(tmp / f'{NAME}.{tracker}.npy'), ours[:PEOPLE]).min() >= 0.9999
    # it follows the three people, one stable identity each, its boxes on the detections
    last, before = run['frames'][-1], run['frames'][-2]
    assert len(set(last['ids'])) == PEOPLE and sorted(last['ids']) == sorted(before['ids'])
    detections = np.load(tmp / 'scene.npz')['detections'][-1][:, :4]
    assert np.abs(np.sort(np.asarray(last['boxes']), axis=0) - np.sort(detections, axis=0)).max() < 4.0
