"""optimize_for_inference: the rewritten model computes what the plain model computes (CPU)."""
import pytest
import torch
import torch.nn as nn

import osnet_zoo
from osnet_zoo.inference import (
    StreamBatchedOmniScaleBlock, batch_streams, fold_batchnorm, optimize_for_inference,
)
from osnet_zoo.inference.optimize import LiteLevel



def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial norm statistics and affines (fresh BN layers are identities, which would fold trivially)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d)):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
                    m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
    return model.eval()


# the three block types: plain, IBN (IN after the residual, `in_out`), AIN (IN inside, `in_in`)
VARIANTS = {
    'plain': lambda: osnet_zoo.osnet_x0_25(num_classes=0),
    'ibn': lambda: osnet_zoo.osnet_ibn(width=0.25, num_classes=0),
    'ain': lambda: osnet_zoo.osnet_ain(width=0.25, num_classes=0),
}


@pytest.fixture(scope='module')
def inputs():
    return torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(1))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_fold_batchnorm_exact(variant, inputs):
    model = randomized(VARIANTS[variant](), seed=len(variant))
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    # instance norm is per image: it must stay, exactly as many as before
    count_in = lambda net: sum(isinstance(m, nn.InstanceNorm2d) for m in net.modules())  # noqa: E731
    assert count_in(folded) == count_in(model) and (count_in(model) > 0) == (variant != 'plain')
    with torch.inference_mode():
        assert rel_err(folded.forward_features(inputs), model.forward_features(inputs)) < 1e-5
        assert rel_err(folded(inputs), model(inputs)) < 1e-5
    # the original keeps its BatchNorm layers
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_fold_batchnorm_needs_eval_mode():
    with pytest.raises(ValueError, match='eval'):
        fold_batchnorm(osnet_zoo.osnet_x0_25(num_classes=0).train())


@pytest.mark.parametrize('variant,mode', [('plain', 'grouped'), ('ibn', 'grouped'), ('ain', 'grouped'),
                                          ('plain', 'merged'), ('ain', 'merged'), ('ibn', 'dense'),
                                          ('ain', 'dense')])
def test_stream_batching_exact(variant, mode, inputs):
    model = randomized(VARIANTS[variant](), seed=3)
    fast = batch_streams(fold_batchnorm(model), merge_lite=mode == 'merged', dense_levels=mode == 'dense')
    blocks = [m for m in fast.modules() if isinstance(m, StreamBatchedOmniScaleBlock)]
    assert len(blocks) == 6 and all(len(b.levels) == 4 for b in blocks)
    levels = blocks[0].levels
    c = blocks[0].mid_chs
    assert [lv.level_input for lv in levels] == ['shared'] + [{'merged': 'grouped'}.get(mode, mode)] * 3
    if mode == 'merged':  # one dense 3x3 conv per level, grouped per stream after the first level
        assert [lv.conv.groups for lv in levels] == [1, 3, 2, 1]
    elif mode == 'grouped':
        assert [(lv.conv_pw.groups, lv.conv_pw.in_channels) for lv in levels] == [(1, c), (3, 3 * c), (2, 2 * c),
                                                                                   (1, c)]
    else:  # block-diagonal dense 1x1 convs over the whole previous level
        assert [(lv.conv_pw.groups, lv.conv_pw.in_channels) for lv in levels] == [(1, c), (1, 4 * c), (1, 3 * c),
                                                                                   (1, 2 * c)]
    with torch.inference_mode():
        assert rel_err(fast.forward_features(inputs), model.forward_features(inputs)) < 1e-5
        assert rel_err(fast(inputs), model(inputs)) < 1e-5


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_optimize_for_inference_fp32(variant, inputs):
    model = randomized(VARIANTS[variant](), seed=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model)
    assert fast.dtype == torch.float32 and fast.memory_format == torch.channels_last
    assert any(isinstance(m, LiteLevel) for m in fast.modules())
    conv = next(m for m in fast.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = fast(inputs)
        ref = model(inputs)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert rel_err(out, ref) < 1e-5
    after = model.state_dict()  # the original model is untouched
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_auto_stream_batching_picks_the_path_per_batch_size():
    """'auto' on the CPU: level by level while the block's mid activation is small (<= 2^18 elements), the
    plain folded block beyond. osnet_x0_25 at 128x64: widths 16, 24, 32 at 32x16, 16x8, 8x4, so 8192, 3072
    and 1024 elements per image: batch 64 runs the first stage plain, batch 128 the first two."""
    model = randomized(VARIANTS['plain'](), seed=9)
    fast = optimize_for_inference(model)
    blocks = [m for m in fast.modules() if isinstance(m, StreamBatchedOmniScaleBlock)]
    assert [b.mid_chs for b in blocks] == [16, 16, 24, 24, 32, 32]
    calls = []
    for i, b in enumerate(blocks):
        b.plain.register_forward_hook(lambda mod, args, out, i=i: calls.append(i))
    for batch, plain_blocks in ((1, []), (32, []), (64, [0, 1]), (128, [0, 1, 2, 3])):
        calls.clear()
        x = torch.randn(batch, 3, 128, 64, generator=torch.Generator().manual_seed(batch))
        with torch.inference_mode():
            assert rel_err(fast(x), model(x)) < 1e-5
        assert calls == plain_blocks, batch
    # explicit choices and CUDA's default do without the plain copies
    assert all(b.plain is None for b in optimize_for_inference(model, stream_batching=True).modules()
               if isinstance(b, StreamBatchedOmniScaleBlock))
    assert not any(isinstance(b, StreamBatchedOmniScaleBlock)
                   for b in optimize_for_inference(model, stream_batching=False).modules())
    with pytest.raises(ValueError, match="True, False or 'auto'"):
        optimize_for_inference(model, stream_batching='yes')


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_optimize_for_inference_half_precision(precision, inputs):
    model = randomized(VARIANTS['ain'](), seed=7)
    fast = optimize_for_inference(model, precision=precision)
    expected_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}[precision]
    assert all(p.dtype == expected_dtype for p in fast.parameters())
    with torch.inference_mode():
        out = fast(inputs)
        ref = model(inputs)
    assert out.dtype == torch.float32
    cos = nn.functional.cosine_similarity(out, ref, dim=1)
    assert cos.min() > 0.999, cos
    # within the precision's tolerance, but not bit-identical: the half path really ran
    assert rel_err(out, ref) < (5e-2 if precision == 'bf16' else 1e-2)
    assert not torch.equal(out, ref)


def test_optimize_for_inference_compile_cpu():
    """torch.compile (inductor, with freezing on CPU) of the folded, stream-batched, channels_last model.

    A narrow one-block-per-stage OSNet (with T=2 streams and both IN placements) keeps compilation short.
    """
    model = randomized(osnet_zoo.OSNet(channels=(16, 32, 48, 64), layers=(1, 1, 1), num_streams=2,
                                       block_norms=('in_in', 'plain', 'in_out'), conv1_in=True, num_classes=0))
    x = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(2))
    from torch._dynamo.utils import counters
    graphs_before = counters['stats']['unique_graphs']
    fast = optimize_for_inference(model, compile=True)
    assert [len(b.levels) for b in fast.modules() if isinstance(b, StreamBatchedOmniScaleBlock)] == [2, 2, 2]
    with torch.inference_mode():
        out = fast(x)
        ref = model(x)
    assert fast.compiled is not None and fast.freezing
    assert counters['stats']['unique_graphs'] > graphs_before  # dynamo captured and compiled a graph
    assert rel_err(out, ref) < 1e-4
    # the compiled module is not registered as a child: no duplicated parameters in the state dict
    assert not any(k.startswith('compiled') for k in fast.state_dict())


def test_optimize_for_inference_option_errors():
    model = osnet_zoo.osnet_x0_25(num_classes=0).eval()
    with pytest.raises(ValueError, match='CUDA'):
        optimize_for_inference(model, cuda_graph_batch_sizes=(8,))
    with pytest.raises(ValueError, match='merge_lite'):
        optimize_for_inference(model, stream_batching=False, merge_lite=True)
    with pytest.raises(ValueError, match='do not combine'):
        optimize_for_inference(model, merge_lite=True, dense_levels=True)
    with pytest.raises(ValueError, match='fold_bn'):
        optimize_for_inference(model, fold_bn=False, stream_batching=True)
    unfolded = optimize_for_inference(model, fold_bn=False)  # 'auto' then keeps the plain blocks and BN
    assert any(isinstance(m, nn.BatchNorm2d) for m in unfolded.modules())
    assert not any(isinstance(m, StreamBatchedOmniScaleBlock) for m in unfolded.modules())
    with pytest.raises(ValueError, match='precision'):
        optimize_for_inference(model, precision='int8')


def test_optimize_keeps_generic_modules_working(inputs):
    """A module with no OSNet blocks: only the generic Sequential(conv, BN) / (Linear, BN1d) folds apply."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 4), nn.BatchNorm1d(4))
    net = randomized(net)
    fast = optimize_for_inference(net)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fast.modules())
    with torch.inference_mode():
        assert rel_err(fast(inputs), net(inputs)) < 1e-5
