"""Strict loading on every path: timm's pretrained path (file overlay, any num_classes) and load_osnet_checkpoint.

A checkpoint missing conv5, missing BatchNorm running statistics, of another variant, or holding NaN/inf or
integer weights must be an error naming the keys, never a silent partial load. Only the classifier may be
dropped. The checkpoints are the reference fixtures (torchreid layouts), damaged on purpose.
"""
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from osnet_zoo.weights import CheckpointError, load_osnet_checkpoint

X = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope='module')
def x0_25(torchreid_fixtures):
    return load_file(torchreid_fixtures / 'osnet_x0_25.safetensors')


def _save(tmp_path, name, state_dict):
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    return path


def _timm_file(path, arch='osnet_x0_25', **kwargs):
    return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)


def _embedding(model):
    with torch.inference_mode():
        return model.eval().forward_head(model.forward_features(X), pre_logits=True)


def _damaged(sd, drop=(), change=None):
    out = {k: v for k, v in sd.items() if not any(k.startswith(d) or d in k for d in drop)}
    if change:
        out.update(change(out))
    return out


CASES = {
    'missing conv5': (dict(drop=('conv5.',)), r'missing keys: \[.*conv5\.conv\.weight'),
    'missing BN running statistics': (dict(drop=('running_mean', 'running_var')), r'missing keys: .*running_mean'),
    'NaN weights': (dict(change=lambda sd: {'conv5.conv.weight': torch.full_like(sd['conv5.conv.weight'],
                                                                                  float('nan'))}),
                    r'conv5\.conv\.weight: NaN or inf'),
    'inf running var': (dict(change=lambda sd: {'fc.1.running_var': torch.full_like(sd['fc.1.running_var'],
                                                                                    float('inf'))}),
                        r'fc\.1\.running_var: NaN or inf'),
    'integer weights': (dict(change=lambda sd: {'conv1.conv.weight': sd['conv1.conv.weight'].to(torch.int8)}),
                        r'conv1\.conv\.weight: torch\.int8 where the model holds torch\.float32'),
}


@pytest.mark.parametrize('case', list(CASES))
@pytest.mark.parametrize('num_classes', [0, 11, 751])
def test_timm_file_overlay_refuses_partial_or_bad_checkpoints(tmp_path, x0_25, case, num_classes):
    kwargs, msg = CASES[case]
    path = _save(tmp_path, 'bad.safetensors', _damaged(x0_25, **kwargs))
    with pytest.raises(CheckpointError, match=msg) as err:
        _timm_file(path, num_classes=num_classes)
    assert str(path) in str(err.value)  # the file is named


@pytest.mark.parametrize('case', list(CASES))
def test_load_osnet_checkpoint_refuses_the_same(tmp_path, x0_25, case):
    kwargs, msg = CASES[case]
    path = _save(tmp_path, 'bad.safetensors', _damaged(x0_25, **kwargs))
    for strict in (True, False):
        with pytest.raises(CheckpointError, match=msg):
            load_osnet_checkpoint(timm.create_model('osnet_x0_25', num_classes=11), path, strict=strict)


def test_another_variant_is_refused_whatever_num_classes(tmp_path, torchreid_fixtures):
    ain = torchreid_fixtures / 'osnet_ain_x0_25.safetensors'
    for num_classes in (0, 11, 100):
        with pytest.raises(CheckpointError, match=r'does not fit this model \(osnet_x0_25\).*conv3\.bn\.running_mean'):
            _timm_file(ain, num_classes=num_classes)
    ibn = torchreid_fixtures / 'osnet_ibn_x1_0.safetensors'
    with pytest.raises(CheckpointError, match=r'unexpected keys.*norm_out'):
        _timm_file(ibn, arch='osnet_x1_0', num_classes=0)


def test_only_the_classifier_may_be_dropped(tmp_path, x0_25, torchreid_fixtures):
    reference = load_osnet_checkpoint(timm.create_model('osnet_x0_25', num_classes=11), x0_25)
    path = torchreid_fixtures / 'osnet_x0_25.safetensors'
    for num_classes in (0, 11, 751):
        model = _timm_file(path, num_classes=num_classes)
        assert torch.equal(_embedding(model), _embedding(reference))
        if num_classes == 11:
            assert torch.equal(model.classifier.weight, reference.classifier.weight)
    # a headless checkpoint (no classifier) loads into any head size, and is an error only when strict
    headless = _save(tmp_path, 'headless.safetensors', _damaged(x0_25, drop=('classifier.',)))
    model = _timm_file(headless)
    assert model.num_classes == 0 and torch.equal(_embedding(model), _embedding(reference))
    assert torch.equal(_embedding(_timm_file(headless, num_classes=5)), _embedding(reference))
    load_osnet_checkpoint(timm.create_model('osnet_x0_25', num_classes=5), headless, strict=False)
    with pytest.raises(CheckpointError, match=r'missing keys: \[.classifier\.weight'):
        load_osnet_checkpoint(timm.create_model('osnet_x0_25', num_classes=11), headless, strict=True)
    # BN counters are not weights: a checkpoint without them loads (older PyTorch wrote none)
    no_counters = _save(tmp_path, 'nocount.safetensors', _damaged(x0_25, drop=('num_batches_tracked',)))
    assert torch.equal(_embedding(_timm_file(no_counters, num_classes=0)), _embedding(reference))


def test_in_chans_adaptation_still_works_and_is_strict_elsewhere(torchreid_fixtures, x0_25):
    path = torchreid_fixtures / 'osnet_x0_25.safetensors'
    gray = _timm_file(path, num_classes=0, in_chans=1)
    assert torch.allclose(gray.conv1.conv.weight[:, 0], x0_25['conv1.conv.weight'].sum(1))
    with pytest.raises(CheckpointError,
                       match=r'conv1\.conv\.weight: checkpoint \(16, 3, 7, 7\) vs model \(16, 1, 7, 7\)'):
        load_osnet_checkpoint(timm.create_model('osnet_x0_25', num_classes=11, in_chans=1), path)
