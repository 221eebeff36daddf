"""Loading checkpoints: wrappers, prefixes, classifier handling, wrong variants, refusing pickled code."""
import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from osnet_zoo.weights import CheckpointError, load_osnet_checkpoint, read_checkpoint


@pytest.fixture(scope='module')
def ref_sd(torchreid_fixtures):
    return load_file(torchreid_fixtures / 'osnet_x0_25.safetensors')


def _embedding(model, x):
    with torch.no_grad():
        return model.eval().forward_head(model.forward_features(x), pre_logits=True)


def test_engine_checkpoint_reads_with_numpy_scalars_only(torchreid_fixtures):
    ckpt = read_checkpoint(torchreid_fixtures / 'osnet_x0_25_engine_checkpoint.pth.tar')
    assert ckpt['epoch'] == 150
    assert isinstance(ckpt['rank1'], np.floating)  # the numpy scalar that plain weights_only refuses
    assert all(k.startswith('module.') for k in ckpt['state_dict'])


def test_module_prefix_and_wrapper_in_pth(tmp_path, ref_sd):
    path = tmp_path / 'ddp.pth'
    torch.save({'state_dict': {'module.' + k: v for k, v in ref_sd.items()}, 'epoch': 3}, path)
    a = load_osnet_checkpoint(timm.create_model('osnet_x0_25', num_classes=11), path)
    b = load_osnet_checkpoint(timm.create_model('osnet_x0_25', num_classes=11), ref_sd)
    x = torch.randn(2, 3, 128, 64)
    assert torch.equal(_embedding(a, x), _embedding(b, x))


def test_classifier_of_other_size_dropped_or_error(ref_sd):
    model = timm.create_model('osnet_x0_25', num_classes=751)
    before = model.classifier.weight.clone()
    load_osnet_checkpoint(model, ref_sd, strict=False)  # 11-way classifier in the checkpoint
    assert torch.equal(model.classifier.weight, before)
    assert torch.equal(model.fc[0].weight, ref_sd['fc.0.weight'])
    with pytest.raises(CheckpointError, match='11 classes but the model has 751'):
        load_osnet_checkpoint(timm.create_model('osnet_x0_25', num_classes=751), ref_sd, strict=True)


def test_wrong_variant_names_the_keys(torchreid_fixtures, ref_sd):
    with pytest.raises(CheckpointError, match=r'shape mismatches .*conv1\.conv\.weight'):
        load_osnet_checkpoint(timm.create_model('osnet_x1_0', num_classes=11), ref_sd)
    ibn = load_file(torchreid_fixtures / 'osnet_ibn_x1_0.safetensors')
    with pytest.raises(CheckpointError, match=r'unexpected keys.*norm_out'):
        load_osnet_checkpoint(timm.create_model('osnet_x1_0', num_classes=11), ibn)
    ain = load_file(torchreid_fixtures / 'osnet_ain_x0_25.safetensors')
    with pytest.raises(CheckpointError, match=r'missing keys: .*conv3\.bn\.running_mean'):
        load_osnet_checkpoint(timm.create_model('osnet_x0_25', num_classes=11), ain)


def test_not_an_osnet_checkpoint(tmp_path):
    path = tmp_path / 'resnet.safetensors'
    save_file({'layer1.0.conv1.weight': torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError, match='Not an OSNet checkpoint.*layer1.0.conv1.weight'):
        load_osnet_checkpoint(timm.create_model('osnet_x0_25'), path)


class Payload:
    def __reduce__(self):
        return (print, ('pwned',))


def test_pickled_code_is_refused_not_run(tmp_path, capsys):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': Payload()}, path)
    with pytest.raises(CheckpointError, match='Refusing to load .*evil.pth'):
        read_checkpoint(path)
    assert 'pwned' not in capsys.readouterr().out


def test_missing_truncated_and_corrupt_files(tmp_path, ref_sd):
    with pytest.raises(CheckpointError, match='not found: .*nope.pth'):
        read_checkpoint(tmp_path / 'nope.pth')
    good = tmp_path / 'w.safetensors'
    save_file(ref_sd, str(good))
    cut = tmp_path / 'cut.safetensors'
    cut.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match='cut.safetensors'):
        read_checkpoint(cut)
    pth = tmp_path / 'w.pth'
    torch.save(ref_sd, pth)
    cut_pth = tmp_path / 'cut.pth'
    cut_pth.write_bytes(pth.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match='cut.pth'):
        read_checkpoint(cut_pth)
