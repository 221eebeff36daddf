"""`python -m osnet_zoo.export`: ONNX / TorchScript files that reproduce PyTorch, with their contract."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import osnet_zoo
from osnet_zoo import cli
from osnet_zoo.export import ENDING, main
from osnet_zoo.inference.export import ExportCheckError, default_export_name, export_model

from conftest import run_module


def with_statistics(model: nn.Module) -> nn.Module:
    """Norm statistics like a trained model's, with O(1) embeddings (so that a 1e-4 check means something:
    the fresh head's N(0, 0.01) Linear gives tiny ones; its BatchNorm1d variance is set to match)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d)):
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) - 0.3)
                if m.running_var is not None:
                    m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            if isinstance(m, nn.BatchNorm1d):
                m.running_var.fill_(1e-4)
    return model.eval()


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    from safetensors.torch import save_file
    path = tmp_path_factory.mktemp('export') / 'osnet_ain_x0_25_test.safetensors'
    torch.manual_seed(0)
    save_file(with_statistics(osnet_zoo.osnet_ain(width=0.25, num_classes=0)).state_dict(), str(path))
    return path


@pytest.fixture(scope='module')
def crops():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((120, 50), (256, 128), (300, 90))]


def test_onnx_cli_dynamic_batch_by_default(checkpoint, crops, tmp_path):
    import onnxruntime as ort
    # no --output: the file goes into runs/export, named <architecture>_<tag>.onnx (the tag from the
    # checkpoint's name); nothing is written into the working folder itself
    out = tmp_path / 'runs' / 'export' / 'osnet_ain_x0_25_test.onnx'
    run = run_module('osnet_zoo.export', '--model', 'osnet_ain_x0_25', '--checkpoint', checkpoint, '--format', 'onnx',
                     cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert 'PASSED' in run.stdout and 'max abs diff' in run.stdout
    assert [p.name for p in tmp_path.iterdir()] == ['runs']
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name, out.name + '.json', out.name + '.metadata.json']
    metadata = json.loads((out.parent / (out.name + '.metadata.json')).read_text())
    assert metadata == {
        'architecture': 'osnet_ain_x0_25', 'tag': 'test', 'format': 'onnx', 'file': out.name,
        'input_size': [256, 128], 'input_shape': ['batch', 3, 256, 128], 'layout': 'NCHW', 'channel_order': 'rgb',
        'pixel_scale': 255.0, 'mean': [0.485, 0.456, 0.406], 'std': [0.229, 0.224, 0.225], 'resize': 'squash',
        'interpolation': 'bilinear', 'antialias': True, 'output_dim': 512, 'normalized': False,
        'dtype': 'float32', 'dynamic_batch': True,
        # boxmot's keys: what it builds, how it resizes crops and to what size
        'model_name': 'osnet_ain_x0_25', 'num_classes': None, 'preprocess': 'resize',
        'model_kwargs_schema_version': 1, 'model_kwargs': {'img_size': [256, 128]}}
    contract = json.loads((out.parent / (out.name + '.json')).read_text())
    assert contract['input'] == {'name': 'images', 'shape': ['batch', 3, 256, 128], 'dtype': 'float32',
                                 'layout': 'NCHW', 'colour_order': 'RGB'}
    assert contract['output']['name'] == 'features' and contract['output']['shape'] == ['batch', 512]
    assert contract['preprocessing']['mean'] == [0.485, 0.456, 0.406]
    assert contract['preprocessing']['interpolation'] == 'bilinear'
    check = contract['check']
    assert check['passed'] and check['max_abs_diff'] <= 1e-4 and check['batch_sizes'] == [1, 3]
    assert check['max_abs_reference'] > 0.1  # the check compared real-sized embeddings

    # our own check: real crops, preprocessed per the contract, through onnxruntime at batch 3
    extractor = osnet_zoo.FeatureExtractor('osnet_ain_x0_25', checkpoint_path=checkpoint, device='cpu',
                                           normalize=False, backend='onnxruntime')  # not auto's timed choice
    batch = extractor.preprocess(crops).numpy()
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['images']
    assert [o.name for o in session.get_outputs()] == ['features']
    got = session.run(['features'], {'images': batch})[0]
    expected = extractor(crops).numpy()
    assert got.shape == (3, 512)
    assert np.abs(got - expected).max() <= 1e-4 and np.abs(expected).max() > 0.1


@pytest.mark.filterwarnings('ignore:.*torch.jit.load.*:FutureWarning')
def test_torchscript_with_normalisation(checkpoint, crops, tmp_path):
    # a tracker reads a .pt as a state dict: TorchScript files end in .torchscript
    with pytest.raises(ValueError, match='end in .torchscript'):
        export_model('osnet_ain_x0_25', tmp_path / 'ain.pt', fmt='torchscript', checkpoint_path=str(checkpoint))
    out = tmp_path / 'ain.torchscript'
    contract = export_model('osnet_ain_x0_25', out, fmt='torchscript', checkpoint_path=str(checkpoint),
                            normalize=True)
    metadata = json.loads((tmp_path / 'ain.torchscript.metadata.json').read_text())
    assert metadata['normalized'] is True and metadata['format'] == 'torchscript'
    assert metadata['dynamic_batch'] is True and metadata['output_dim'] == 512
    assert contract['check']['passed'] and contract['check']['runtime'].startswith('torch.jit')
    assert contract['output']['l2_normalized'] is True
    extractor = osnet_zoo.FeatureExtractor('osnet_ain_x0_25', checkpoint_path=checkpoint, device='cpu')
    loaded = torch.jit.load(str(out))
    with torch.inference_mode():
        got = loaded(extractor.preprocess(crops))
    assert torch.allclose(got.norm(dim=1), torch.ones(3), atol=1e-5)
    assert (got - extractor(crops)).abs().max() <= 1e-5


def test_onnx_half(checkpoint, tmp_path):
    import onnxruntime as ort
    out = tmp_path / 'ain_fp16.onnx'
    contract = export_model('osnet_ain_x0_25', out, fmt='onnx', half=True, batch_size=2,
                            dynamic_batch=False, checkpoint_path=str(checkpoint))
    assert json.loads((tmp_path / 'ain_fp16.onnx.metadata.json').read_text())['dynamic_batch'] is False
    assert contract['input']['dtype'] == contract['output']['dtype'] == 'float16'
    assert contract['input']['shape'] == [2, 3, 256, 128]
    check = contract['check']
    assert check['passed'] and 0 < check['max_abs_diff'] <= 1e-2 * check['max_abs_reference']
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    assert session.get_inputs()[0].type == 'tensor(float16)'


class BatchOfOneOnly(nn.Module):
    """Python logic on the batch size: tracing bakes it in for batch 1, so a dynamic-batch export is wrong."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x) * float(x.shape[0] == 1)


def export(argv) -> int:
    """The exit status of the command, in this process: ``main`` ended by ``cli.run`` as ``__main__`` ends it."""
    return cli.run(lambda: main(list(argv)), **ENDING)


def test_failed_check_is_reported(tmp_path, capsys):
    net = BatchOfOneOnly(with_statistics(osnet_zoo.osnet_x0_25(num_classes=0)))
    out = tmp_path / 'bad.onnx'
    with pytest.raises(ExportCheckError, match='differs from PyTorch'):
        export_model(net, out, fmt='onnx', dynamic_batch=True)
    contract = json.loads((tmp_path / 'bad.onnx.json').read_text())
    assert contract['check']['passed'] is False and contract['check']['max_abs_diff'] > 0.1
    # the CLI reports a missing checkpoint as an error naming it
    assert export(['--model', 'osnet_x0_25', '--checkpoint', str(tmp_path / 'nope.pth'),
                   '--output', str(tmp_path / 'x.onnx')]) == 2
    assert 'nope.pth' in capsys.readouterr().err
    # a failed check exits with 1 (a bad input: 2), its message on one error line
    assert cli.run(lambda: (_ for _ in ()).throw(ExportCheckError('bad.onnx: differs from PyTorch')), **ENDING) == 1
    assert capsys.readouterr().err == 'error: bad.onnx: differs from PyTorch\n'
    with pytest.raises(SystemExit):
        main(['--format', 'tflite'])


def test_fixed_batch_cli_and_default_names(tmp_path):
    import onnxruntime as ort
    out = tmp_path / 'fixed.onnx'
    assert export(['--model', 'osnet_x0_25', '--no-pretrained', '--fixed-batch', '--batch-size', '2',
                   '--output', str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    assert session.get_inputs()[0].shape == [2, 3, 256, 128]
    assert default_export_name('osnet_x0_25', 'msmt17_combineall', 'onnx') == 'osnet_x0_25_msmt17_combineall.onnx'
    assert default_export_name('osnet_x0_25', None, 'torchscript') == 'osnet_x0_25.torchscript'
    assert default_export_name('osnet_ain_x1_0', 'msmt17', 'torchreid') == 'osnet_ain_x1_0_msmt17_osnetzoo.pt'


def test_torchreid_cli(checkpoint, torchreid_fixtures, tmp_path, capsys):
    """The file a tracker takes as it is: a .pt state dict in the reference layout with model_name."""
    import timm
    out = tmp_path / 'osnet_ain_x0_25_test.pt'
    assert export(['--model', 'osnet_ain_x0_25', '--checkpoint', str(checkpoint), '--format', 'torchreid',
                   '--output', str(out)]) == 0
    assert 'bit-identical' in capsys.readouterr().out
    stored = torch.load(out, map_location='cpu', weights_only=True)
    assert set(stored) == {'state_dict', 'model_name'} and stored['model_name'] == 'osnet_ain_x0_25'
    reference = json.loads((torchreid_fixtures / 'keys.json').read_text())['osnet_ain_x0_25']
    tensors = {k: list(v.shape) for k, v in stored['state_dict'].items()}
    assert tensors == {k: v for k, v in reference.items() if not k.startswith('classifier.')}
    # the same embedding as the checkpoint it came from
    ours = osnet_zoo.load_osnet_checkpoint(timm.create_model('osnet_ain_x0_25', num_classes=0), checkpoint).eval()
    back = osnet_zoo.load_osnet_checkpoint(timm.create_model('osnet_ain_x0_25', num_classes=0), out).eval()
    x = torch.randn(2, 3, 256, 128)
    with torch.no_grad():
        assert torch.equal(ours(x), back(x))
    contract = json.loads((tmp_path / (out.name + '.json')).read_text())
    assert contract['check']['passed'] and contract['check']['tensors_differing'] == []
    metadata = json.loads((tmp_path / (out.name + '.metadata.json')).read_text())
    assert metadata['format'] == 'torchreid' and metadata['normalized'] is False and metadata['output_dim'] == 512
    assert metadata['model_name'] == 'osnet_ain_x0_25' and metadata['num_classes'] is None
    # errors name the thing
    assert export(['--model', 'osnet_ain_x0_25', '--checkpoint', str(checkpoint), '--format', 'torchreid',
                   '--output', str(tmp_path / 'x.pth')]) == 2
    assert 'ends in .pt' in capsys.readouterr().err
    assert export(['--model', 'osnet_ain_x0_25', '--checkpoint', str(checkpoint), '--format', 'torchreid',
                   '--with-classifier', '--output', str(tmp_path / 'y.pt')]) == 2
    assert 'has no classifier' in capsys.readouterr().err


def test_torchreid_with_classifier(torchreid_fixtures, tmp_path):
    """The reference fixture (11 classes) -> torchreid export with its classifier -> the same tensors back."""
    from safetensors.torch import load_file
    out = tmp_path / 'osnet_x0_25_fixture.pt'
    contract = export_model('osnet_x0_25', out, fmt='torchreid', with_classifier=True,
                            checkpoint_path=torchreid_fixtures / 'osnet_x0_25.safetensors')
    assert contract['entries'] == {'model_name': 'osnet_x0_25', 'num_classes': 11}
    stored = torch.load(out, map_location='cpu', weights_only=True)
    original = load_file(torchreid_fixtures / 'osnet_x0_25.safetensors')
    assert stored['model_name'] == 'osnet_x0_25' and stored['num_classes'] == 11
    assert set(stored['state_dict']) == set(original)  # (safetensors keeps keys sorted: the order is another test's)
    assert all(torch.equal(stored['state_dict'][k], v) for k, v in original.items())
    metadata = json.loads((tmp_path / (out.name + '.metadata.json')).read_text())
    assert metadata['num_classes'] == 11 and metadata['model_kwargs'] == {'img_size': [256, 128]}
