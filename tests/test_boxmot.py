"""Our tracker files in the real tracker: boxmot 25.0.0 loads each export format as written.

boxmot lives in its own environment (it pins onnxruntime 1.24.3 and replaces a different one at run time; it pulls
pandas, pyarrow, scikit-learn, ...): .ci/run builds ``.boxmot-venv`` beside ``.venv``. This test writes the
files with osnet_zoo here, then runs ``tests/boxmot_side.py`` with that environment's Python, which knows
nothing of osnet_zoo: like a user who exports in one environment and tracks in another, the files and their
``.metadata.json`` are all that passes between the two. Without that environment the test is skipped, saying
so; ``OSNET_ZOO_REQUIRE_BOXMOT=1`` (set by .ci/run) turns the skip into a failure.
"""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
from filelock import FileLock
from safetensors.torch import save_file
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

import osnet_zoo
from osnet_zoo.inference.export import export_model
from osnet_zoo.weights.__main__ import main as weights_cli
from conftest import REPO, child_env, run_python

BOXMOT_VERSION = '25.0.0'
BOXMOT_PYTHON = Path(os.environ.get('OSNET_ZOO_BOXMOT_PYTHON', REPO / '.boxmot-venv' / 'bin' / 'python'))
REQUIRED = os.environ.get('OSNET_ZOO_REQUIRE_BOXMOT') == '1'
TRACKERS = ('BotSort', 'StrongSort', 'DeepOcSort')
# two architectures (the classic and the AIN key layout), two input sizes (the main job's 128x64, 256x128)
SIZES = {'osnet_x0_25': (128, 64), 'osnet_ain_x0_25': (256, 128)}
FILES = [(arch, suffix) for arch in SIZES for suffix in ('.pt', '.torchscript', '.onnx')]
BACKENDS = {'.pt': 'PyTorchBackend', '.torchscript': 'TorchscriptBackend', '.onnx': 'ONNXBackend'}
NUM_CLASSES = 7  # the AIN checkpoint's classifier, kept in its .pt
FRAMES, PEOPLE = 6, 3


def _boxmot_or_skip() -> None:
    def unavailable(reason: str) -> None:
        if REQUIRED:
            pytest.fail(f'{reason} (OSNET_ZOO_REQUIRE_BOXMOT=1)', pytrace=False)
        pytest.skip(reason)

    if not BOXMOT_PYTHON.is_file():
        unavailable(f'no boxmot environment at {BOXMOT_PYTHON} (.ci/run builds it with boxmot=={BOXMOT_VERSION}; '
                    'or point OSNET_ZOO_BOXMOT_PYTHON at a Python that has it)')
    probe = run_python('-c', 'import boxmot; print(boxmot.__version__)', python=BOXMOT_PYTHON,
                       env=child_env(PYTHONPATH=None, VIRTUAL_ENV=None), timeout=300)
    if probe.returncode != 0:
        unavailable(f'boxmot is not importable by {BOXMOT_PYTHON}: {probe.stderr.strip().splitlines()[-1:]}')
    if probe.stdout.strip() != BOXMOT_VERSION:
        unavailable(f'{BOXMOT_PYTHON} has boxmot {probe.stdout.strip()}; this test pins {BOXMOT_VERSION}')


def _calibrated(model: nn.Module, size, seed: int) -> nn.Module:
    """BatchNorm statistics measured on pictures like the test's (as training leaves them), so that different
    crops get different embeddings (cosine ~0.45-0.8 between two crops here, ~0.9999 with the fresh
    statistics): a cosine of 0.9999 then says the same picture went through the same network."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # the plain average over what is seen
    x = torch.from_numpy(_crops(size, 16, seed)).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(IMAGENET_DEFAULT_MEAN)[:, None, None]) / torch.tensor(IMAGENET_DEFAULT_STD)[:, None, None]
    # and the N(0, 1) batches the exporter checks its files on, so its 1e-4 tolerance holds for them too
    x = torch.cat([x, torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))])
    with torch.no_grad():
        model.train()(x)
        for m in model.modules():  # channels that (nearly) never fire: no 1/sqrt(eps) gains, as in a trained net
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_var.clamp_(min=0.005)
    return model.eval()


def _crops(size, count: int, seed: int) -> np.ndarray:
    """(count, H, W, 3) RGB uint8 person-sized pictures: coarse colour blocks and fine noise."""
    h, w = size
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (count, h // 16, w // 16, 3)).repeat(16, 1).repeat(16, 2)
    return (coarse + rng.integers(-20, 21, (count, h, w, 3))).clip(0, 255).astype(np.uint8)


def _scene(crops: np.ndarray, seed: int):
    """FRAMES BGR frames with the first PEOPLE crops walking right, and their detections (x1, y1, x2, y2,
    conf, cls): each box is exactly a pasted crop, so boxmot crops it back at the model's input size."""
    h, w = crops.shape[1:3]
    rng = np.random.default_rng(seed)
    frames = rng.integers(90, 110, (FRAMES, 480, 640, 3)).astype(np.uint8)
    detections = np.zeros((FRAMES, PEOPLE, 6), np.float32)
    for t in range(FRAMES):
        for p in range(PEOPLE):
            x, y = 20 + 200 * p + 3 * t, 100 + 2 * t
            frames[t, y:y + h, x:x + w] = crops[p][..., ::-1]
            detections[t, p] = (x, y, x + w, y + h, 0.9, 0)
    return frames, detections


def _write_and_run(tmp: Path) -> None:
    """Write the files with osnet_zoo and our features of the crops (ours.npz), run boxmot on them
    (result.json, <file>.*.npy)."""
    torch.manual_seed(0)
    # osnet_x0_25 as the main job trains it (128x64), exported from the module
    small = _calibrated(timm.create_model('osnet_x0_25', num_classes=0), SIZES['osnet_x0_25'], 101)
    small.pretrained_cfg = {**small.pretrained_cfg, 'input_size': (3, *SIZES['osnet_x0_25'])}
    # osnet_ain_x0_25 from a checkpoint with a classifier, through the CLIs' code paths (256x128)
    ckpt = tmp / 'osnet_ain_x0_25_test.safetensors'
    ain = _calibrated(timm.create_model('osnet_ain_x0_25', num_classes=NUM_CLASSES), SIZES['osnet_ain_x0_25'], 102)
    save_file(ain.state_dict(), ckpt)
    extractors = {
        'osnet_x0_25': osnet_zoo.FeatureExtractor(small, device='cpu'),
        'osnet_ain_x0_25': osnet_zoo.FeatureExtractor('osnet_ain_x0_25', device='cpu', pretrained=False,
                                                      checkpoint_path=ckpt),
    }
    request, ours = [], {}
    for i, (arch, suffix) in enumerate(FILES):
        path = tmp / f'{arch}_test{suffix}'
        fmt = {'.pt': 'torchreid', '.torchscript': 'torchscript', '.onnx': 'onnx'}[suffix]
        if arch == 'osnet_x0_25':
            export_model(small, path, fmt=fmt)
        elif suffix == '.pt':  # `weights convert --to torchreid` (keeps the classifier)
            assert weights_cli(['convert', str(ckpt), '--to', 'torchreid', '--model', arch,
                                '--output', str(path)]) == 0
        else:
            export_model(arch, path, fmt=fmt, pretrained=False, checkpoint_path=str(ckpt))
        crops = _crops(SIZES[arch], 4, seed=i)
        frames, detections = _scene(crops, seed=i)
        np.save(tmp / f'{path.name}.crops.npy', crops)
        np.savez(tmp / f'{path.name}.scene.npz', frames=frames, detections=detections)
        request.append({'path': str(path), 'crops': str(tmp / f'{path.name}.crops.npy'),
                        'frames': str(tmp / f'{path.name}.scene.npz')})
        ours[path.name] = extractors[arch](list(crops)).numpy()
    # the 128x64 files without their .metadata.json, the .pt under a name that does not say the architecture
    for suffix in ('.pt', '.torchscript', '.onnx'):
        source, bare = tmp / f'osnet_x0_25_test{suffix}', tmp / f'bare{suffix}'
        shutil.copyfile(source, bare)
        request.append({**next(r for r in request if r['path'] == str(source)), 'path': str(bare), 'trackers': False})
        ours[bare.name] = ours[source.name]
    np.savez(tmp / 'ours.npz', **ours)
    # refused: the same torchreid checkpoint named .pth, as torchreid's trainer names its checkpoints; and the
    # flat layout osnet_zoo wrote before (model_name among the tensors), with its metadata file
    shutil.copyfile(tmp / 'osnet_x0_25_test.pt', tmp / 'osnet_x0_25_test.pth')
    nested = torch.load(tmp / 'osnet_x0_25_test.pt', weights_only=True)
    torch.save({**nested['state_dict'], 'model_name': nested['model_name']}, tmp / 'osnet_x0_25_flat.pt')
    shutil.copyfile(tmp / 'osnet_x0_25_test.pt.metadata.json', tmp / 'osnet_x0_25_flat.pt.metadata.json')
    refused = [str(tmp / 'osnet_x0_25_test.pth'), str(tmp / 'osnet_x0_25_flat.pt')]
    (tmp / 'request.json').write_text(json.dumps({'files': request, 'refused': refused}))
    # the boxmot environment's Python, without this checkout on its path: it knows nothing of osnet_zoo
    env = child_env(PYTHONPATH=None, VIRTUAL_ENV=None, BOXMOT_ORT_LOG_LEVEL='3')
    run = run_python(REPO / 'tests' / 'boxmot_side.py', tmp / 'request.json', tmp / 'result.json',
                     python=BOXMOT_PYTHON, env=env, timeout=1200, cwd=tmp)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]


@pytest.fixture(scope='module')
def boxmot_run(tmp_path_factory):
    """(the folder of the files, our features by file name, boxmot's result.json)."""
    _boxmot_or_skip()
    if os.environ.get('PYTEST_XDIST_WORKER') is None:
        tmp = tmp_path_factory.mktemp('boxmot')
        _write_and_run(tmp)
    else:
        # under pytest-xdist every worker running a test of this module would build the fixture: the first one
        # does the work in the run's shared temporary folder, the others wait for it and read what it wrote
        tmp = tmp_path_factory.getbasetemp().parent / 'boxmot'
        with FileLock(f'{tmp}.lock'):
            if not (tmp / 'done').is_file():
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                _write_and_run(tmp)
                (tmp / 'done').touch()
    with np.load(tmp / 'ours.npz') as ours:
        return tmp, dict(ours), json.loads((tmp / 'result.json').read_text())


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def test_boxmot_environment_kept_its_onnxruntime(boxmot_run):
    _, _, result = boxmot_run
    assert result['boxmot'] == BOXMOT_VERSION
    # boxmot's ONNX backend installs onnxruntime==1.24.3 at run time when another version is there; .ci/run
    # installs that one up front, so loading our .onnx changed nothing (and the main environment never sees it)
    assert result['onnxruntime_before'] == result['onnxruntime_after'] == '1.24.3'


@pytest.mark.parametrize('arch,suffix', FILES)
def test_boxmot_reid_loads_our_file_and_gives_our_features(boxmot_run, arch, suffix):
    tmp, ours, result = boxmot_run
    name = f'{arch}_test{suffix}'
    got = result['files'][name]
    # the backend boxmot picks by the suffix, the architecture and crop size it takes from our metadata file
    assert got['backend'] == BACKENDS[suffix] and got['model_name'] == arch
    assert got['input_shape'] == list(SIZES[arch])
    if suffix == '.pt':
        report = got['load_report']  # boxmot built the reference OSNet and loaded every tensor it needs
        assert report['unexpected'] == [] and report['mismatched'] == [] and report['numel_coverage'] == 1.0
        assert report['classifier_loaded'] == (arch == 'osnet_ain_x0_25')  # the .pt of `weights convert`
        assert report['missing'] == ([] if arch == 'osnet_ain_x0_25' else ['classifier.bias', 'classifier.weight'])
    features = np.load(tmp / f'{name}.reid.npy')
    assert features.shape == ours[name].shape == (4, 512)
    assert _cosines(features, ours[name]).min() >= 0.9999
    # ... and 0.9999 is a strict test: two different crops are far apart
    assert _cosines(features, np.roll(ours[name], 1, axis=0)).max() < 0.9


def test_without_the_metadata_file(boxmot_run):
    """What .metadata.json changes: without it boxmot still finds the architecture (in the .pt's model_name;
    in the file name for the others, here 'bare' has none) but resizes crops to its 256x128 default, except for
    an ONNX graph, whose fixed height and width it takes."""
    tmp, ours, result = boxmot_run
    files = result['files']
    assert files['bare.pt']['model_name'] == 'osnet_x0_25' and files['bare.pt']['load_report']['unexpected'] == []
    assert files['bare.torchscript']['model_name'] is None and files['bare.onnx']['model_name'] is None
    assert files['bare.onnx']['input_shape'] == [128, 64]
    cosine = _cosines(np.load(tmp / 'bare.onnx.reid.npy'), ours['bare.onnx'])
    assert cosine.min() >= 0.9999
    for name in ('bare.pt', 'bare.torchscript'):
        assert files[name]['input_shape'] == [256, 128]
        # our 128x64 crops upscaled to 256x128: not the features the model gives at its own input size
        assert _cosines(np.load(tmp / f'{name}.reid.npy'), ours[name]).max() < 0.99


def test_what_boxmot_refuses(boxmot_run):
    _, _, result = boxmot_run
    assert result['refused']['osnet_x0_25_test.pth'].startswith('ValueError: Unsupported ReID artifact format')
    flat = result['refused']['osnet_x0_25_flat.pt']
    assert flat.startswith('RuntimeError: Checkpoint') and "unexpected=['model_name']" in flat


@pytest.mark.parametrize('arch,suffix', FILES)
@pytest.mark.parametrize('tracker', TRACKERS)
def test_boxmot_trackers_run_with_our_file(boxmot_run, arch, suffix, tracker):
    tmp, ours, result = boxmot_run
    name = f'{arch}_test{suffix}'
    got = result['files'][name]['trackers'][tracker]
    assert got['backend'] == BACKENDS[suffix] and Path(got['backend_weights']) == tmp / name
    assert got['input_shape'] == list(SIZES[arch]) and got['embedding_width'] == 512
    # the tracker's own appearance features of the last frame's people are ours
    features = np.load(tmp / f'{name}.{tracker}.npy')
    assert _cosines(features, ours[name][:PEOPLE]).min() >= 0.9999
    # after a few frames it follows the three people, one stable identity each, boxes on the detections
    last, before = got['frames'][-1], got['frames'][-2]
    assert len(set(last['ids'])) == PEOPLE and sorted(last['ids']) == sorted(before['ids'])
    detections = np.load(tmp / f'{name}.scene.npz')['detections'][-1][:, :4]
    boxes = np.asarray(last['boxes'])
    assert np.abs(np.sort(boxes, axis=0) - np.sort(detections, axis=0)).max() < 4.0
