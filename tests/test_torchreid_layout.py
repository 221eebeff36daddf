"""The torchreid writer: the inverse of checkpoint_filter_fn, for the nine reference variants."""
import json

import pytest
import timm
import torch
from safetensors.torch import load_file

import osnet_zoo
from osnet_zoo import cli
from osnet_zoo.models.osnet import OSNET_ARCHS
from osnet_zoo.models.torchreid_layout import (
    reference_architecture, save_torchreid_checkpoint, to_torchreid_state_dict, torchreid_checkpoint,
)


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter and buffer random, so that a swapped or dropped tensor shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.1)
            else:
                t.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))
    return model


@pytest.mark.parametrize('architecture', sorted(OSNET_ARCHS))
def test_writes_the_reference_layout_and_reloads_bit_identically(torchreid_fixtures, architecture, tmp_path):
    reference = json.loads((torchreid_fixtures / 'keys.json').read_text())[architecture]
    model = randomised(timm.create_model(architecture, num_classes=1000))
    path = tmp_path / f'{architecture}_test.pt'
    save_torchreid_checkpoint(model, path)

    stored = torch.load(path, map_location='cpu', weights_only=True)  # no pickled code needed
    # torchreid's checkpoint shape: the tensors under state_dict, what the file is beside them
    assert set(stored) == {'state_dict', 'model_name', 'num_classes'}
    assert stored['model_name'] == architecture and stored['num_classes'] == 1000
    tensors = stored['state_dict']
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    # exactly the reference keys, in the reference order, with its shapes
    assert [(k, list(v.shape)) for k, v in tensors.items()] == list(reference.items())

    fresh = timm.create_model(architecture, num_classes=1000)
    osnet_zoo.load_osnet_checkpoint(fresh, path, strict=True)
    original, reloaded = model.state_dict(), fresh.state_dict()
    assert list(original) == list(reloaded)
    for key in original:
        assert torch.equal(original[key], reloaded[key]), key


@pytest.mark.parametrize('variant', ['osnet_x0_25', 'osnet_ain_x0_25', 'osnet_ibn_x1_0'])
def test_reference_files_round_trip_to_themselves(torchreid_fixtures, variant):
    """A real reference state dict -> our model -> the writer gives back the same tensors under the same keys."""
    original = load_file(torchreid_fixtures / f'{variant}.safetensors')
    model = timm.create_model(variant, num_classes=11)
    osnet_zoo.load_osnet_checkpoint(model, torchreid_fixtures / f'{variant}.safetensors', strict=True)
    written = torchreid_checkpoint(model)
    tensors = written['state_dict']
    assert set(tensors) == set(original)
    for key, value in original.items():
        assert torch.equal(tensors[key], value), key


def test_without_classifier_and_headless(tmp_path):
    model = randomised(timm.create_model('osnet_ain_x0_25', num_classes=7))
    path = tmp_path / 'osnet_ain_x0_25_market1501.pt'
    checkpoint = save_torchreid_checkpoint(model, path, classifier=False)
    assert 'num_classes' not in checkpoint and not any(k.startswith('classifier.') for k in checkpoint)
    headless = osnet_zoo.load_osnet_checkpoint(timm.create_model('osnet_ain_x0_25', num_classes=0), path)
    x = torch.rand(2, 3, 256, 128)
    with torch.no_grad():
        model.eval()
        assert torch.equal(headless.eval()(x), model.forward_head(model.forward_features(x), pre_logits=True))
    # a model without a classifier writes none either
    assert not any(k.startswith('classifier.') for k in torchreid_checkpoint(headless))


def test_refuses_what_the_reference_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match='none of the reference variants'):
        reference_architecture(osnet_zoo.osnet_ain(width=0.25, num_classes=0, feature_dim=256))
    with pytest.raises(ValueError, match='none of the reference variants'):  # a NAS-style IN placement
        torchreid_checkpoint(timm.create_model('osnet_x0_25', num_classes=0, block_norms=('in_out',) * 6))
    with pytest.raises(ValueError, match='is built as osnet_x0_25, not osnet_x0_5'):
        torchreid_checkpoint(timm.create_model('osnet_x0_25', num_classes=0), architecture='osnet_x0_5')
    with pytest.raises(ValueError, match='ends in .pt'):
        save_torchreid_checkpoint(timm.create_model('osnet_x0_25', num_classes=0), tmp_path / 'x.pth')
    with pytest.raises(ValueError, match='no reference'):
        to_torchreid_state_dict({}, 'resnet50')
    with pytest.raises(TypeError, match='needs an OSNet'):
        torchreid_checkpoint(torch.nn.Linear(2, 2))


@pytest.mark.parametrize('variant', ['osnet_x0_25', 'osnet_ain_x0_25'])
def test_weights_convert_to_torchreid_gives_back_the_reference_file(torchreid_fixtures, variant, tmp_path):
    """`python -m osnet_zoo.weights convert --to torchreid` on a reference-layout file writes the same keys and
    the same tensors back, with the architecture named in the file."""
    from osnet_zoo.weights.__main__ import main as weights_cli

    source = torchreid_fixtures / f'{variant}.safetensors'
    out = tmp_path / f'{variant}_mydata.pt'
    assert weights_cli(['convert', str(source), '--to', 'torchreid', '--model', variant, '--output', str(out)]) == 0
    written = torch.load(out, weights_only=True)
    reference = load_file(str(source))
    assert written['model_name'] == variant and written['num_classes'] == reference['classifier.weight'].shape[0]
    tensors = written['state_dict']
    assert set(tensors) == set(reference)  # (safetensors files keep keys sorted; the order is keys.json's test)
    assert all(torch.equal(tensors[k], reference[k]) for k in reference)
    metadata = json.loads(out.with_name(out.name + '.metadata.json').read_text())  # what boxmot reads first
    assert metadata['model_name'] == variant and metadata['num_classes'] == written['num_classes']
    headless = tmp_path / f'{variant}_headless.pt'
    assert weights_cli(['convert', str(source), '--to', 'torchreid', '--model', variant, '--output', str(headless),
                        '--no-classifier']) == 0
    assert not any(k.startswith('classifier.') for k in torch.load(headless, weights_only=True)['state_dict'])
    assert cli.run(lambda: weights_cli(['convert', str(source), '--to', 'torchreid', '--model', variant,
                                        '--output', str(tmp_path / 'wrong.onnx')])) == 1
