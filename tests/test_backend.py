"""backend='auto', the default of FeatureExtractor, extract and evaluate: which path runs where, that it gives
the fp32 eager model's features, its fallbacks, and the on-disk cache of the ONNX export behind the CPU path."""
import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import osnet_zoo
from osnet_zoo import FeatureExtractor
from osnet_zoo.inference import select_backend
from osnet_zoo.inference.export import ExportCheckError
from osnet_zoo.inference.onnx_runtime import OnnxRuntimeModel, onnx_cache_key
from conftest import run_python
from test_extractor import trained_looking


class Tiny(nn.Module):
    """A small embedding model (conv, BN, ReLU, pooling): exports and checks in a fraction of a second."""

    def __init__(self, act: type = nn.ReLU):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, bias=False), nn.BatchNorm2d(8), act(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.body(x)


class ThroughNumpy(nn.Module):
    """Half of it leaves the graph through numpy: a trace records that half as a constant, so the export
    reproduces the model on the traced batch only and fails its check on the next one."""

    def forward(self, x):
        return x.mean(dim=(2, 3)) + torch.from_numpy(x.amax(dim=(2, 3)).numpy())


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return trained_looking(Tiny())


@pytest.fixture(scope='module')
def batch():
    return torch.randn(2, 3, 256, 128, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize('backend, device, precision, options, expected', [
    ('auto', 'cpu', 'fp32', {}, ('onnxruntime', False, False)),
    ('auto', 'cpu', 'fp32', dict(fixed_batch=True), ('onnxruntime', False, False)),
    ('auto', 'cpu', 'bf16', {}, ('torch', True, False)),  # onnxruntime runs fp32 here
    ('auto', 'cpu', 'fp32', dict(optimize=True), ('torch', True, False)),  # torch options mean the torch path
    ('auto', 'cpu', 'fp32', dict(compile=True), ('torch', True, False)),
    ('auto', 'cuda', 'fp32', {}, ('torch', True, False)),  # a tracker's batches vary: no CUDA graph
    ('auto', 'cuda:1', 'bf16', dict(fixed_batch=True), ('torch', True, True)),  # a folder / dataset: a graph
    ('auto', 'cuda', 'fp16', dict(cuda_graph=True), ('torch', True, True)),
    ('auto', 'mps', 'fp32', {}, ('torch', False, False)),  # nothing measured there: the plain model
    ('torch', 'cpu', 'fp32', {}, ('torch', False, False)),
    ('torch', 'cuda', 'fp32', dict(fixed_batch=True), ('torch', False, False)),
    ('torch', 'cpu', 'fp32', dict(optimize=True), ('torch', True, False)),
    ('onnxruntime', 'cpu', 'fp32', {}, ('onnxruntime', False, False)),
])
def test_selection(backend, device, precision, options, expected):
    plan = select_backend(backend, device, precision, **options)
    assert (plan.backend, plan.optimize, plan.cuda_graph) == expected
    assert plan.requested == backend and plan.reason


def test_selection_errors():
    with pytest.raises(ValueError,
                       match="backend must be one of 'auto', 'torch', 'onnxruntime', 'openvino', got 'tensorrt'"):
        select_backend('tensorrt')
    for bad in (dict(device='cuda'), dict(precision='bf16'), dict(optimize=True)):
        with pytest.raises(ValueError, match='runs on the CPU in fp32'):
            select_backend('onnxruntime', **bad)
    with pytest.raises(ValueError, match='cuda_graph=True needs a CUDA device'):
        select_backend('auto', 'cpu', cuda_graph=True)
    with pytest.raises(ValueError, match='precision'):
        select_backend('auto', 'cpu', 'fp8')


def test_default_extractor_runs_onnxruntime_with_the_eager_features():
    torch.manual_seed(0)
    model = trained_looking(osnet_zoo.osnet_x0_25(num_classes=0))
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (int(h), int(h * 0.4), 3), dtype=np.uint8) for h in (60, 130, 250, 400)]
    default = FeatureExtractor(model, device='cpu', batch_size=3)
    # onnxruntime, or OpenVINO where it is installed and timed faster on this machine (tests/test_openvino.py)
    assert default.plan.requested == 'auto' and default.backend in ('onnxruntime', 'openvino')
    assert default.backend in repr(default)
    eager = FeatureExtractor(model, device='cpu', batch_size=3, backend='torch')
    assert (eager.plan.backend, eager.plan.optimize) == ('torch', False) and isinstance(eager.model, nn.Module)
    got, ref = default(crops, normalize=False), eager(crops, normalize=False)
    assert ref.abs().max() > 0.05 and (got - ref).abs().max() < 1e-4
    assert nn.functional.cosine_similarity(got, ref).min() >= 0.99999
    # explicit optimize keeps choosing the optimised PyTorch model
    optimized = FeatureExtractor(model, device='cpu', batch_size=3, optimize=True)
    assert optimized.plan.describe() == 'torch (optimized)'
    assert (optimized(crops, normalize=False) - ref).abs().max() < 1e-4


def test_cache_is_reused_and_a_damaged_entry_is_rebuilt(tiny, batch, tmp_path, caplog):
    folder = tmp_path / 'cache'
    first = OnnxRuntimeModel(tiny, cache=folder)
    record_file = first.path.with_name(first.path.name + '.cache.json')
    assert not first.cache_hit and first.path.parent == folder and first.path.name.startswith('tiny-')
    record = json.loads(record_file.read_text())
    assert record['key'] == onnx_cache_key(tiny, (3, 256, 128)) and record['contract']['check']['passed']
    with torch.inference_mode():
        expected = tiny(batch)
    assert (first(batch) - expected).abs().max() < 1e-5

    second = OnnxRuntimeModel(tiny, cache=folder)  # a fresh object reads the entry from disk
    assert second.cache_hit and second.path == first.path and torch.equal(second(batch), first(batch))
    assert not caplog.records

    def damaged(why: str) -> OnnxRuntimeModel:
        caplog.clear()
        again = OnnxRuntimeModel(tiny, cache=folder)
        assert not again.cache_hit and (again(batch) - expected).abs().max() < 1e-5
        assert [r.getMessage() for r in caplog.records if why in r.getMessage() and first.path.name in
                r.getMessage()], caplog.text
        assert OnnxRuntimeModel(tiny, cache=folder).cache_hit  # rebuilt: the next one reads it
        return again

    first.path.write_bytes(first.path.read_bytes()[:100])  # a torn / edited file
    damaged('does not have the sha256 its record holds')
    record_file.write_text('{"key": ')
    damaged('unreadable')
    first.path.unlink()
    damaged('is missing')
    # a file onnxruntime cannot load, whose record was rewritten to match it
    first.path.write_bytes(b'not an onnx file')
    record = json.loads(record_file.read_text())
    record['sha256'] = hashlib.sha256(b'not an onnx file').hexdigest()
    record_file.write_text(json.dumps(record))
    damaged('onnxruntime cannot load it')


def test_cache_key_covers_what_changes_the_graph(tiny):
    key = onnx_cache_key(tiny, (3, 256, 128))
    same = Tiny()
    same.load_state_dict(tiny.state_dict())
    assert onnx_cache_key(same, (3, 256, 128)) == key  # another object, the same weights and graph
    other_weights = Tiny()
    other_weights.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        other_weights.body[0].weight[0, 0, 0, 0] += 1e-3
    relu6 = Tiny(act=nn.ReLU6)  # the same state dict, another graph
    relu6.load_state_dict(tiny.state_dict())
    variants = [onnx_cache_key(other_weights, (3, 256, 128)), onnx_cache_key(relu6, (3, 256, 128)),
                onnx_cache_key(tiny, (3, 128, 64)), onnx_cache_key(tiny, (3, 256, 128), opset=18)]
    assert all(v != key for v in variants) and len({json.dumps(v, sort_keys=True) for v in variants}) == 4


def test_the_cache_lives_in_the_package_cache(tiny, monkeypatch, tmp_path):
    monkeypatch.setenv('OSNET_ZOO_CACHE', str(tmp_path / 'mine'))
    runtime = OnnxRuntimeModel(tiny)  # cache=True: $OSNET_ZOO_CACHE/onnx, beside the weights
    assert runtime.path.parent == tmp_path / 'mine' / 'onnx' and runtime.path.is_file()
    assert OnnxRuntimeModel(tiny).cache_hit


def test_an_unwritable_cache_costs_the_cache_not_the_model(tiny, batch, tmp_path, caplog):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    runtime = OnnxRuntimeModel(tiny, cache=blocker / 'cache')
    assert not runtime.cache_hit and not str(runtime.path).startswith(str(blocker))
    assert 'cannot write the ONNX cache' in caplog.text and 'OSNET_ZOO_CACHE' in caplog.text
    with torch.inference_mode():
        assert (runtime(batch) - tiny(batch)).abs().max() < 1e-5


def test_auto_falls_back_to_pytorch_when_the_export_fails_its_check(caplog):
    crop = np.random.default_rng(0).integers(0, 256, (80, 30, 3), dtype=np.uint8)
    extractor = FeatureExtractor(ThroughNumpy(), device='cpu')
    assert (extractor.plan.backend, extractor.plan.optimize) == ('torch', True)
    assert extractor.plan.reason.startswith('ONNX export failed')
    notices = [r.getMessage() for r in caplog.records if 'could not run through onnxruntime' in r.getMessage()]
    assert len(notices) == 1 and '\n' not in notices[0] and 'ExportCheckError' in notices[0]
    eager = FeatureExtractor(ThroughNumpy(), device='cpu', backend='torch')
    assert torch.allclose(extractor([crop, crop[::2]]), eager([crop, crop[::2]]), atol=1e-6)
    with pytest.raises(ExportCheckError):  # asked for explicitly: no fallback
        FeatureExtractor(ThroughNumpy(), device='cpu', backend='onnxruntime')


def test_without_onnxruntime_the_default_says_so_in_one_line():
    """A real interpreter where onnxruntime cannot be imported (as when it is not installed)."""
    code = '\n'.join([
        "import sys; sys.modules['onnxruntime'] = None  # what Python does for a blocked import",
        'import numpy as np, torch, osnet_zoo',
        'torch.manual_seed(0)',
        'model = osnet_zoo.osnet_x0_25(num_classes=0).eval()',
        'crop = np.random.default_rng(0).integers(0, 256, (90, 40, 3), dtype=np.uint8)',
        "default = osnet_zoo.FeatureExtractor(model, device='cpu')",
        "eager = osnet_zoo.FeatureExtractor(model, device='cpu', backend='torch')",
        'osnet_zoo.FeatureExtractor(model, device="cpu")  # a second one: no second notice',
        "print(default.plan.describe(), '|', float((default(crop) - eager(crop)).abs().max()))",
        'try:',
        "    osnet_zoo.FeatureExtractor(model, device='cpu', backend='onnxruntime')",
        'except ValueError as e:',
        "    print('error:', e)",
    ])
    proc = run_python('-c', code)
    assert proc.returncode == 0, proc.stderr
    notices = [line for line in proc.stderr.splitlines() if 'osnet_zoo:' in line]
    assert len(notices) == 1, proc.stderr
    assert 'onnxruntime not installed' in notices[0] and 'pip install onnxruntime' in notices[0]
    described, diff = proc.stdout.splitlines()[0].split(' | ')
    assert described == 'torch (optimized)' and float(diff) < 1e-5
    assert "error: backend='onnxruntime' needs the onnxruntime package(s): pip install onnxruntime." in proc.stdout


def test_the_clis_default_to_auto():
    from osnet_zoo.evaluate import get_args_parser as evaluate_parser
    from osnet_zoo.extract import get_args_parser as extract_parser
    assert extract_parser().parse_args(['crops', '--output', 'f.safetensors']).backend == 'auto'
    assert evaluate_parser().parse_args(['--model', 'osnet_x0_25']).backend == 'auto'
    for parser in (extract_parser(), evaluate_parser()):
        with pytest.raises(SystemExit):
            parser.parse_args(['crops', '--model', 'osnet_x0_25', '--output', 'f', '--backend', 'tensorrt'])
