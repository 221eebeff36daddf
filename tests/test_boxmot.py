"""Our tracker files and our appearance model in the real tracker, boxmot 25.0.0, installed in this environment.

.ci/run installs boxmot==25.0.0 (and the onnxruntime==1.24.3 its ONNX backend would otherwise install at run time)
into the same environment as osnet_zoo, and checks ``pip check``. The file tests write the files with osnet_zoo,
then run ``tests/boxmot_side.py`` with this same interpreter in a child process that never imports osnet_zoo:
boxmot reads only the files and their ``.metadata.json``, as for a user who exports and then tracks. The
appearance-model tests run boxmot's trackers in this process with ``BoxmotAppearanceModel`` as ``reid_model``.
Without boxmot the tests are skipped, saying so; ``OSNET_ZOO_REQUIRE_BOXMOT=1`` (set by .ci/run) turns the skip
into a failure.
"""
import importlib.util
import json
import os
import shutil
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Callable

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

    if importlib.util.find_spec('boxmot') is None:
        unavailable(f'boxmot is not installed in this environment ({sys.executable}; .ci/run installs '
                    f'boxmot=={BOXMOT_VERSION} onnxruntime==1.24.3 beside osnet_zoo)')
    if version('boxmot') != BOXMOT_VERSION:
        unavailable(f'this environment has boxmot {version("boxmot")}; these tests pin {BOXMOT_VERSION}')


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
    # and our .pt with a model_kwargs key boxmot does not know in its metadata file
    shutil.copyfile(tmp / 'osnet_x0_25_test.pt', tmp / 'osnet_x0_25_kwargs.pt')
    metadata = json.loads((tmp / 'osnet_x0_25_test.pt.metadata.json').read_text())
    metadata['model_kwargs'] = {**metadata['model_kwargs'], 'width': 2}
    (tmp / 'osnet_x0_25_kwargs.pt.metadata.json').write_text(json.dumps(metadata))
    refused = [str(tmp / 'osnet_x0_25_test.pth'), str(tmp / 'osnet_x0_25_flat.pt'), str(tmp / 'osnet_x0_25_kwargs.pt')]
    (tmp / 'request.json').write_text(json.dumps({'files': request, 'refused': refused}))
    # this environment's Python in a child that imports no osnet_zoo: boxmot sees only the files
    env = child_env(BOXMOT_ORT_LOG_LEVEL='3')
    run = run_python(REPO / 'tests' / 'boxmot_side.py', tmp / 'request.json', tmp / 'result.json',
                     python=sys.executable, env=env, timeout=1200, cwd=tmp)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder that ``build`` filled once per test run: under pytest-xdist the first worker that needs it builds
    it in the run's shared temporary folder, the others wait for it (a conversion takes most of a minute)."""
    if os.environ.get('PYTEST_XDIST_WORKER') is None:
        tmp = tmp_path_factory.mktemp(name)
        build(tmp)
        return tmp
    tmp = tmp_path_factory.getbasetemp().parent / name
    with FileLock(f'{tmp}.lock'):
        if not (tmp / 'done').is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            build(tmp)
            (tmp / 'done').touch()
    return tmp


@pytest.fixture(scope='module')
def boxmot_run(tmp_path_factory):
    """(the folder of the files, our features by file name, boxmot's result.json)."""
    _boxmot_or_skip()
    tmp = built_once(tmp_path_factory, 'boxmot', _write_and_run)
    with np.load(tmp / 'ours.npz') as ours:
        return tmp, dict(ours), json.loads((tmp / 'result.json').read_text())


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def test_boxmot_environment_kept_its_onnxruntime(boxmot_run):
    _, _, result = boxmot_run
    assert result['boxmot'] == BOXMOT_VERSION and result['osnet_zoo_imported'] is False
    # boxmot's ONNX backend installs onnxruntime==1.24.3 at run time when another version is there; .ci/run
    # installs that one up front, so loading our .onnx changed nothing in the shared environment
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
    kwargs = result['refused']['osnet_x0_25_kwargs.pt']
    assert kwargs.startswith('ValueError: Invalid model metadata for ') and \
        kwargs.endswith("osnet_x0_25_kwargs.pt: Unknown model_kwargs in schema v1: ['width']")


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


# ------------------------------------------------------------------ our appearance model inside boxmot's trackers

APPEARANCE_TRACKERS = ('BotSort', 'StrongSort', 'DeepOcSort', 'HybridSort', 'BoostTrack')
PERSON = (208, 96)  # the people's boxes: larger than the 128x64 input, so every crop is resized
# boxes boxmot accepts (x2 > x1, y2 > y1) that have no pixel in the frame, and a tiny one (1x2 pixels)
NO_PIXELS = [[300.1, 300.0, 300.4, 360.0], [700.0, 100.0, 760.0, 228.0]]
TINY = [400.0, 400.0, 401.0, 402.0]


@pytest.fixture(scope='module')
def appearance_scene():
    """(the embedding net, FRAMES BGR frames, detections per frame: PEOPLE people, then NO_PIXELS and TINY)."""
    _boxmot_or_skip()
    torch.manual_seed(0)
    net = _calibrated(timm.create_model('osnet_x0_25', num_classes=0), SIZES['osnet_x0_25'], 101)
    net.pretrained_cfg = {**net.pretrained_cfg, 'input_size': (3, *SIZES['osnet_x0_25'])}
    crops = _crops(PERSON, PEOPLE, seed=7)
    frames, people = _scene(crops, seed=7)
    extra = np.array([[*box, 0.9, 0] for box in NO_PIXELS + [TINY]], np.float32)
    detections = [np.concatenate([d, extra]) for d in people]
    return net, frames, detections


def _tracker(name: str, model):
    import boxmot

    # BoostTrack uses appearance only when asked; the others by default
    return getattr(boxmot, name)(reid_model=model, **({'use_embeddings': True} if name == 'BoostTrack' else {}))


@pytest.mark.parametrize('tracker', APPEARANCE_TRACKERS)
def test_our_appearance_model_in_every_tracker_that_uses_appearance(appearance_scene, tracker):
    from osnet_zoo.integrations.boxmot import BoxmotAppearanceModel

    net, frames, detections = appearance_scene
    model = BoxmotAppearanceModel(net, device='cpu')
    live = _tracker(tracker, model)
    tracks = [live.update(d, f) for f, d in zip(frames, detections)]  # boxes without pixels: no crash
    assert live._get_live_reid_model() is model and live.last_emb_size == 512
    # the people keep one identity each over the last frames, their boxes on the detections
    people = detections[-1][:PEOPLE, :4]

    def ids(rows):
        return [int(rows[np.abs(rows[:, :4] - box).max(1).argmin(), 4]) for box in people]

    assert len(set(ids(tracks[-1]))) == PEOPLE and ids(tracks[-1]) == ids(tracks[-2])
    assert min(np.abs(tracks[-1][:, :4] - box).max(1).min() for box in people) < 4.0
    # what the tracker got for this frame: the people's features as FeatureExtractor gives them (boxmot's
    # resize), the boxes without pixels one shared row, every row of norm 1
    features = model.get_features(detections[-1][:, :4], frames[-1])
    crops = [frames[-1][int(y0):int(y1), int(x0):int(x1)] for x0, y0, x1, y1 in people.round()]
    ours = osnet_zoo.FeatureExtractor(net, device='cpu', channel_order='bgr', resize='cv2')(crops).numpy()
    assert _cosines(features[:PEOPLE], ours).min() >= 0.9999
    assert np.allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    assert np.allclose(features[PEOPLE], features[PEOPLE + 1])


def test_our_appearance_model_gives_boxmot_backend_features(appearance_scene, tmp_path):
    """With resize='cv2' (the default) our model and boxmot's own ONNX backend, on the same weights, give the same
    rows for resized crops, boxes without pixels (boxmot: a black crop) and a tiny box."""
    from boxmot.reid.core import ReID
    from osnet_zoo.integrations.boxmot import BoxmotAppearanceModel

    net, frames, detections = appearance_scene
    export_model(net, tmp_path / 'osnet_x0_25_test.onnx', fmt='onnx')
    theirs = ReID(weights=tmp_path / 'osnet_x0_25_test.onnx', device='cpu', half=False).model
    boxes = detections[-1][:, :4] + np.float32([0.3, -0.2, 0.4, 0.1])  # fractions of a pixel: the same rounding
    ours = BoxmotAppearanceModel(net, device='cpu').get_features(boxes, frames[-1])
    assert _cosines(ours, theirs.get_features(boxes, frames[-1])).min() >= 0.99999
    # the antialiased resize sees other pixels in the downscaled people
    antialiased = BoxmotAppearanceModel(net, device='cpu', resize='antialias').get_features(boxes, frames[-1])
    assert _cosines(antialiased[:PEOPLE], ours[:PEOPLE]).max() < 0.9999


def test_export_names_and_the_docs_table_follow_boxmots_catalogue():
    """BOXMOT_DOWNLOAD_NAMES is boxmot's list of names it downloads by, and docs/trackers.md's table maps each of its
    OSNet names to the tag of ours that is the same Drive file, with both class counts."""
    _boxmot_or_skip()
    from boxmot.reid.core.catalog import NR_CLASSES_DICT, TRAINED_URLS
    from osnet_zoo.inference.export import BOXMOT_DOWNLOAD_NAMES
    from osnet_zoo.weights.manifest import PACKAGED_MANIFEST, load_manifest

    assert set(TRAINED_URLS) == BOXMOT_DOWNLOAD_NAMES
    ours = {entry.upstream.get('gdrive_id'): entry for entry in load_manifest(PACKAGED_MANIFEST).entries.values()}
    expected = []
    for name, url in TRAINED_URLS.items():
        if name.startswith('osnet'):
            entry = ours[url.split('id=')[1]]
            guessed = next(NR_CLASSES_DICT[k] for k in sorted(NR_CLASSES_DICT, key=len, reverse=True) if k in name)
            expected.append(f'| `{name}` | `{entry.architecture}.{entry.tag}` | {entry.num_classes} | {guessed} |')
    page = (REPO / 'docs' / 'trackers.md').read_text()
    table = [line for line in page.splitlines() if line.startswith('| `osnet') and line.count('|') == 5]
    assert table == expected
