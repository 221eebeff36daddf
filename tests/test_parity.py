"""Numerical parity with the reference implementation (torchreid) on its own fixtures."""
import json

import pytest
import timm
import torch
from safetensors.torch import load_file

import osnet_zoo
from osnet_zoo.models.osnet import checkpoint_filter_fn

CASES = [
    ('osnet_x0_25', 'osnet_x0_25.safetensors'),
    ('osnet_ain_x0_25', 'osnet_ain_x0_25.safetensors'),
    ('osnet_ibn_x1_0', 'osnet_ibn_x1_0.safetensors'),
    ('osnet_x0_25', 'osnet_x0_25_engine_checkpoint.pth.tar'),
]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize('variant,weights', CASES)
def test_embedding_and_logits_match_reference(torchreid_fixtures, variant, weights):
    io = load_file(torchreid_fixtures / f'{variant}.io.safetensors')
    model = timm.create_model(variant, num_classes=11)
    osnet_zoo.load_osnet_checkpoint(model, torchreid_fixtures / weights, strict=True)
    model.eval()
    with torch.no_grad():
        emb = model.forward_head(model.forward_features(io['input']), pre_logits=True)
    assert rel_err(emb, io['features']) <= 1e-4
    # num_classes=0 returns the same embedding through forward
    headless = timm.create_model(variant, num_classes=0)
    osnet_zoo.load_osnet_checkpoint(headless, torchreid_fixtures / weights, strict=False)
    with torch.no_grad():
        assert rel_err(headless.eval()(io['input']), io['features']) <= 1e-4
    model.train()  # the reference logits were taken in train mode (batch statistics)
    with torch.no_grad():
        logits = model(io['input'])
    assert logits.shape == io['logits'].shape
    assert rel_err(logits, io['logits']) <= 1e-4


@pytest.mark.parametrize('variant', [
    'osnet_x1_0', 'osnet_x0_75', 'osnet_x0_5', 'osnet_x0_25', 'osnet_ibn_x1_0',
    'osnet_ain_x1_0', 'osnet_ain_x0_75', 'osnet_ain_x0_5', 'osnet_ain_x0_25'])
def test_reference_keys_map_for_all_variants(torchreid_fixtures, variant):
    keys = json.loads((torchreid_fixtures / 'keys.json').read_text())[variant]
    reference = {k: torch.zeros(shape) for k, shape in keys.items()}
    model = timm.create_model(variant, num_classes=1000)
    mapped = checkpoint_filter_fn(reference, model)
    ours = model.state_dict()
    assert set(mapped) == set(ours)
    assert all(mapped[k].shape == ours[k].shape for k in ours)


def test_native_state_dict_round_trips():
    model = timm.create_model('osnet_ain_x0_25', num_classes=3)
    mapped = checkpoint_filter_fn(model.state_dict(), model)
    assert mapped.keys() == model.state_dict().keys()
