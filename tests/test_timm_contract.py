"""The timm model contract, as timm's own tests/test_models.py checks it, over timm.list_models('osnet*')."""
import pytest
import timm
import torch
from timm.models import create_feature_extractor, get_graph_node_names, get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor as tv_create_feature_extractor
from torchvision.models.feature_extraction import get_graph_node_names as tv_get_graph_node_names

import osnet_zoo  # noqa: F401  (registers the models)

MODELS = timm.list_models('osnet*')
SMALL = (2, 3, 128, 64)  # small inputs keep the suite fast; 256x128 is checked in the cfg test


def test_all_nine_registered():
    assert sorted(MODELS) == sorted([
        'osnet_x1_0', 'osnet_x0_75', 'osnet_x0_5', 'osnet_x0_25', 'osnet_ibn_x1_0',
        'osnet_ain_x1_0', 'osnet_ain_x0_75', 'osnet_ain_x0_5', 'osnet_ain_x0_25'])


@pytest.mark.parametrize('name', MODELS)
def test_forward_logits_and_embedding(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=7).eval()
    x = torch.randn(*SMALL)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (2, 7) and torch.isfinite(logits).all()
        emb = model.forward_head(model.forward_features(x), pre_logits=True)
        assert emb.shape == (2, 512)
        model.reset_classifier(0)
        assert torch.allclose(model(x), emb)
    assert model.get_classifier().__class__.__name__ == 'Identity'


@pytest.mark.parametrize('name', MODELS)
def test_backward_every_parameter_gets_a_gradient(name):
    model = timm.create_model(name, num_classes=5).train()
    out = model(torch.randn(*SMALL))
    out.mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f'parameters without gradient: {no_grad[:5]}'


@pytest.mark.parametrize('name', MODELS)
def test_default_cfg(name):
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    # an imagenet default tag (the ImageNet classifier) has ImageNet's preprocessing (ICCV 2019 Sec. 4.4):
    # the 224 centre crop of the 256x256 image; the re-ID tags resize whole to 256x128
    imagenet = cfg.get('tag') == 'imagenet'
    assert cfg['input_size'] == ((3, 224, 224) if imagenet else (3, 256, 128))
    assert cfg['pool_size'] == ((14, 14) if imagenet else (16, 8))  # conv5 is 1/16 of the input
    assert cfg['crop_pct'] == (0.875 if imagenet else 1.0) and cfg['crop_mode'] == 'squash'
    assert tuple(cfg['mean']) == timm.data.IMAGENET_DEFAULT_MEAN
    assert tuple(cfg['std']) == timm.data.IMAGENET_DEFAULT_STD
    sd = model.state_dict()
    assert cfg['first_conv'] + '.weight' in sd
    assert cfg['classifier'] + '.weight' in sd
    assert sd[cfg['classifier'] + '.weight'].shape[0] == cfg['num_classes'] == model.num_classes

    x = torch.randn(1, *cfg['input_size'])
    with torch.no_grad():
        feat = model.forward_features(x)
        assert feat.shape == (1, model.num_features, *cfg['pool_size'])
        assert model.forward_head(feat, pre_logits=True).shape == (1, model.head_hidden_size)
        model.reset_classifier(0, '')  # no pooling: the unpooled map comes out
        assert model(x).shape == feat.shape
        model.reset_classifier(0, 'avg')
        assert model(x).shape == (1, model.head_hidden_size)


@pytest.mark.parametrize('name', ['osnet_x0_25', 'osnet_ain_x0_25', 'osnet_ibn_x1_0'])
def test_in_chans(name):
    model = timm.create_model(name, in_chans=1, num_classes=3).eval()
    assert model.conv1.conv.weight.shape[1] == 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, 128, 64)).shape == (2, 3)


@pytest.mark.parametrize('name', MODELS)
def test_features_only(name):
    model = timm.create_model(name, features_only=True).eval()
    assert model.feature_info.reduction() == [2, 4, 8, 16, 16]
    with torch.no_grad():
        feats = model(torch.randn(*SMALL))
    assert len(feats) == 5
    for f, ch, red in zip(feats, model.feature_info.channels(), model.feature_info.reduction()):
        assert f.shape == (2, ch, 128 // red, 64 // red)


@pytest.mark.parametrize('name', MODELS)
def test_forward_intermediates_match_features(name):
    model = timm.create_model(name).eval()
    x = torch.randn(*SMALL)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert torch.allclose(final, model.forward_features(x))
        assert [t.shape[-1] for t in inter] == [32, 16, 8, 4, 4]
        only = model.forward_intermediates(x, indices=[1, 3], intermediates_only=True, stop_early=True)
        assert len(only) == 2 and torch.allclose(only[0], inter[1]) and torch.allclose(only[1], inter[3])
        model.prune_intermediate_layers(indices=[2])
        pruned = model.forward_intermediates(x, indices=[2], intermediates_only=True)
        assert torch.allclose(pruned[0], inter[2])


@pytest.mark.parametrize('name', ['osnet_x0_25', 'osnet_ain_x0_25', 'osnet_ibn_x1_0'])
def test_grad_checkpointing_same_gradients(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=4).train()
    x = torch.randn(*SMALL)
    model(x).sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, ref[n], rtol=1e-4, atol=1e-6), n


@pytest.mark.parametrize('name', MODELS)
def test_torchscript(name):
    model = timm.create_model(name, num_classes=3).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(*SMALL)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-5)


@pytest.mark.parametrize('name', MODELS)
def test_fx_trace(name):
    model = timm.create_model(name, num_classes=3).eval()
    train_nodes, eval_nodes = get_graph_node_names(model)
    fx_model = create_feature_extractor(model, return_nodes=[eval_nodes[-1]])
    x = torch.randn(*SMALL)
    with torch.no_grad():
        out = list(fx_model(x).values())[0]
        assert torch.allclose(out, model(x), atol=1e-5)
    fx_feats = timm.create_model(name, features_only=True, feature_cls='fx').eval()
    with torch.no_grad():
        assert [f.shape[1] for f in fx_feats(x)] == fx_feats.feature_info.channels()


def _create_fx_model(model: torch.nn.Module) -> torch.nn.Module:
    """timm's tests/test_models.py ``_create_fx_model`` (eval mode): trace with timm's no-trace leaf modules and
    functions, constant parameter shapes, and return the graph's last node."""
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                         param_shapes_constant=True)
    train_nodes, eval_nodes = tv_get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    return tv_create_feature_extractor(
        model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]],
        tracer_kwargs=tracer_kwargs)


@pytest.mark.parametrize('name', MODELS)
def test_model_forward_fx_torchscript(name):
    # timm's test of the same name: create scriptable, FX-trace, TorchScript the graph, one forward at the
    # default input size capped at 128 (3x128x128), batch 1. It also checks the result equals eager mode.
    with timm.set_scriptable(True):
        model = timm.create_model(name).eval()
    scripted = torch.jit.script(_create_fx_model(model))
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        outputs = torch.cat(tuple(scripted(x).values()))
        expected = model(x)
    assert outputs.shape == (1, model.num_classes)
    assert not torch.isnan(outputs).any()
    assert torch.allclose(outputs, expected, atol=1e-5)


def _residual_drops(model):
    """The stochastic-depth module of each omni-scale block, in forward order."""
    return [block.drop_path for stage in (model.conv2, model.conv3, model.conv4) for block in stage]


def test_drop_path_rate_is_stochastic_depth_in_training_only():
    """``drop_path_rate`` as timm's models take it: stochastic depth on each block's residual branch, rising
    linearly to the rate at the last block; in train mode whole samples' branches are dropped (the rest scaled
    by 1 / keep), in eval mode the branch passes unchanged; and the model trains (every parameter a gradient)."""
    torch.manual_seed(0)
    model = timm.create_model('osnet_x1_0', drop_path_rate=0.5, num_classes=5)
    drops = _residual_drops(model)
    rates = [getattr(d, 'drop_prob', 0.) for d in drops]
    assert rates == pytest.approx([0., 0.1, 0.2, 0.3, 0.4, 0.5])
    assert isinstance(drops[0], torch.nn.Identity)  # rate 0: no module to run
    seen = {}
    drops[-1].register_forward_hook(lambda m, inputs, out: seen.update(x=inputs[0].detach(), y=out.detach()))
    batch = torch.randn(16, 3, 64, 32)

    model.train()
    out = model(batch)
    x, y = seen['x'], seen['y']
    dropped = (y == 0).flatten(1).all(1)
    kept = torch.isclose(y, x / 0.5, rtol=1e-5, atol=1e-6).flatten(1).all(1)
    assert dropped.any() and kept.any() and bool((dropped | kept).all())
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())

    model.eval()
    with torch.no_grad():
        model(batch)
    assert torch.equal(seen['x'], seen['y'])


def test_drop_path_keeps_the_checkpoint_and_the_default_network():
    """Stochastic depth adds no parameters (checkpoints load either way), and the default is the plain network."""
    plain = timm.create_model('osnet_x0_25', num_classes=3)
    dropped = timm.create_model('osnet_x0_25', num_classes=3, drop_path_rate=0.2)
    assert list(plain.state_dict()) == list(dropped.state_dict())
    assert all(isinstance(d, torch.nn.Identity) for d in _residual_drops(plain))
    with pytest.raises(ValueError, match='drop_path_rate must be in'):
        timm.create_model('osnet_x0_25', drop_path_rate=1.0)
    torch.jit.script(dropped.eval())  # the timm contract holds with it too
