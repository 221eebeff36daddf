"""Exports meant for trackers. The check's tolerance follows the output's magnitude: an osnet_x1_0 whose embeddings
are in the hundreds (as a trained model's can be) exports, and the default CPU extractor runs it through
onnxruntime, not through the PyTorch fallback it takes when an export fails. Default names never take a name boxmot
downloads by."""
import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from osnet_zoo import FeatureExtractor
from osnet_zoo.inference.export import BOXMOT_DOWNLOAD_NAMES, check_export, default_export_name, export_model
from conftest import run_module

SCALE = 2000.0  # the embedding's BatchNorm gain: outputs of a few hundred on the check's N(0, 1) batches


def _large_output_checkpoint(path):
    torch.manual_seed(0)
    net = timm.create_model('osnet_x1_0', num_classes=0).eval()
    with torch.no_grad():
        net.fc[1].weight.mul_(SCALE)
        net.fc[1].bias.mul_(SCALE)
    save_file(net.state_dict(), path)
    return net


def test_large_outputs_export_and_run_through_onnxruntime(tmp_path):
    checkpoint = tmp_path / 'osnet_x1_0_large.safetensors'
    net = _large_output_checkpoint(checkpoint)
    run = run_module('osnet_zoo.export', '--model', 'osnet_x1_0', '--checkpoint', checkpoint, '--format', 'onnx',
                     '--output', tmp_path, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    check = json.loads((tmp_path / 'osnet_x1_0_large.onnx.json').read_text())['check']
    # outputs in the hundreds: the rounding differs by more than the old absolute 1e-4, far less relative to them
    assert check['passed'] and check['max_abs_reference'] > 100
    assert check['max_abs_diff'] > 1e-4 and check['max_abs_diff'] < 1e-5 * check['max_abs_reference']
    assert check['allowed_abs_diff'] == 1e-4 * check['max_abs_reference']
    extractor = FeatureExtractor('osnet_x1_0', device='cpu', pretrained=False, checkpoint_path=checkpoint)
    assert extractor.plan.backend in ('onnxruntime', 'openvino') and extractor.plan.reason.startswith('CPU, fp32')
    crops = torch.randint(0, 256, (3, 3, 256, 128), dtype=torch.uint8)
    reference = FeatureExtractor(net, device='cpu', backend='torch')
    assert torch.allclose(extractor(crops), reference(crops), atol=1e-5)


@pytest.mark.filterwarnings('ignore::FutureWarning')  # torch.jit's deprecation notices
def test_a_wrong_export_is_still_refused(tmp_path):
    """The relative tolerance does not wave through a file that computes something else."""
    torch.manual_seed(0)
    net = timm.create_model('osnet_x0_25', num_classes=0).eval()
    other = timm.create_model('osnet_x0_25', num_classes=0).eval()
    path = tmp_path / 'other.torchscript'
    torch.jit.save(torch.jit.trace(other, torch.randn(1, 3, 64, 32)), str(path))
    check = check_export(path, 'torchscript', net, [torch.randn(2, 3, 64, 32)], torch.float32)
    assert not check['passed'] and check['max_abs_diff'] > check['allowed_abs_diff']


def test_export_names_never_take_a_name_boxmot_downloads(tmp_path, caplog):
    torch.manual_seed(0)
    net = timm.create_model('osnet_x0_25', num_classes=0).eval()
    checkpoint = tmp_path / 'osnet_x0_25_msmt17.safetensors'  # a fine-tuned model named like the authors' file
    save_file(net.state_dict(), checkpoint)
    contract = export_model('osnet_x0_25', tmp_path, fmt='torchreid', pretrained=False, checkpoint_path=checkpoint)
    assert contract['file'] == 'osnet_x0_25_msmt17_osnetzoo.pt' and contract['file'] not in BOXMOT_DOWNLOAD_NAMES
    assert default_export_name('osnet_ain_x1_0', 'msmt17_combineall', 'torchreid') == \
        'osnet_ain_x1_0_msmt17_combineall.pt'
    # boxmot downloads only .pt names; a name given explicitly is kept, with a notice
    assert default_export_name('osnet_x0_25', 'msmt17', 'onnx') == 'osnet_x0_25_msmt17.onnx'
    assert not caplog.records
    export_model('osnet_x0_25', tmp_path / 'osnet_x0_25_msmt17.pt', fmt='torchreid', pretrained=False,
                 checkpoint_path=checkpoint)
    assert (tmp_path / 'osnet_x0_25_msmt17.pt').is_file()
    notice = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
    assert len(notice) == 1 and 'osnet_x0_25_msmt17.pt is also the name of a file boxmot downloads' in notice[0]
    assert str(tmp_path / 'osnet_x0_25_msmt17.pt') in notice[0]
