"""Inference-time rewrites of OSNet that keep its output (within the precision's tolerance).

* **BatchNorm folding** — every eval-mode BatchNorm that directly follows a conv (or the Linear of the
  embedding head) is folded into that layer's weight and bias. Instance norm depends on the image and is
  left alone, so the IBN / AIN blocks keep their IN layers.
* **Stream batching** — the T streams of an omni-scale block are run level by level: the first Lite 3x3 of
  all streams share their input, so their pointwise convs become one conv with T times the outputs; the
  deeper levels become grouped convs. 10 sequential Lite layers (T=4) become 4 wider ones.
* **Lite 3x3 merging** (optional) — a pointwise conv (no bias) followed by a depthwise 3x3 equals one dense
  3x3 conv whose weight is their product. It costs 9x the pointwise mult-adds but runs as one implicit-GEMM
  kernel; worth it only where memory traffic, not arithmetic, is the limit (large GPU batches).
* **Triton depthwise** (optional, CUDA) — each level's depthwise 3x3 + bias + ReLU as one kernel.
* channels_last, bf16 / fp16, ``torch.compile`` and, on CUDA, graphs captured for fixed batch sizes.
"""
from __future__ import annotations

import copy
import logging
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.osnet import ChannelGate, LiteConv3x3, OmniScaleBlock
from ..precision import QUANTIZED, resolve_dtype

__all__ = [
    'optimize_for_inference', 'fold_batchnorm', 'batch_streams', 'InferenceModel', 'CudaGraphRunner',
    'StreamBatchedOmniScaleBlock', 'LiteLevel',
]

_logger = logging.getLogger(__name__)



# ---------------------------------------------------------------------------------------------- BN folding

def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> Tuple[torch.Tensor, torch.Tensor]:
    # float64 so that folding adds no rounding beyond the final cast
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


def _foldable(bn: nn.Module, channels: int) -> bool:
    return (isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.track_running_stats
            and bn.running_mean is not None and bn.num_features == channels)


def _fold_into(layer: Union[nn.Conv2d, nn.Linear], bn: nn.modules.batchnorm._BatchNorm) -> None:
    """layer <- bn(layer(.)), in place; the layer gains a bias if it had none."""
    scale, shift = _bn_scale_shift(bn)
    weight = layer.weight.detach().double()
    bias = layer.bias.detach().double() if layer.bias is not None else torch.zeros_like(scale)
    new_weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
    new_bias = bias * scale + shift
    dtype, device = layer.weight.dtype, layer.weight.device
    layer.weight = nn.Parameter(new_weight.to(dtype), requires_grad=False)
    layer.bias = nn.Parameter(new_bias.to(dtype=dtype, device=device), requires_grad=False)


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold every eval-mode BatchNorm that directly follows a conv / Linear into it (BN -> Identity).

    Covered: modules with ``conv`` + ``bn`` children (OSNet's ConvNormAct), ``conv_dw`` + ``bn``
    (LiteConv3x3), and consecutive (Conv2d, BatchNorm2d) / (Linear, BatchNorm1d) children of an
    ``nn.Sequential`` (the embedding head). Instance norm is never folded: its statistics come from the
    image. The model must be in eval mode (train-mode BN uses batch statistics, which cannot be folded).
    """
    if model.training:
        raise ValueError('fold_batchnorm needs an eval-mode model (call model.eval() first): train-mode '
                         'BatchNorm normalises with batch statistics, which cannot be folded into weights.')
    if not inplace:
        model = copy.deepcopy(model)
    for module in list(model.modules()):
        for conv_name in ('conv', 'conv_dw'):
            conv, bn = getattr(module, conv_name, None), getattr(module, 'bn', None)
            if isinstance(conv, nn.Conv2d) and _foldable(bn, conv.out_channels):
                _fold_into(conv, bn)
                module.bn = nn.Identity()
        if isinstance(module, nn.Sequential):
            children = list(module._modules.items())
            for (_, layer), (bn_name, bn) in zip(children, children[1:]):
                out = layer.out_channels if isinstance(layer, nn.Conv2d) else getattr(layer, 'out_features', -1)
                if isinstance(layer, (nn.Conv2d, nn.Linear)) and _foldable(bn, out):
                    _fold_into(layer, bn)
                    module._modules[bn_name] = nn.Identity()
    return model


# ------------------------------------------------------------------------------------------ stream batching

LEVEL_INPUTS = ('shared', 'grouped', 'dense')


class LiteLevel(nn.Module):
    """``len(pw_weights)`` Lite 3x3 layers side by side: 1x1 -> depthwise 3x3 (+ folded BN bias) -> ReLU.

    ``level_input`` says what the layers read:

    * 'shared': all read the same input (one 1x1 conv with the outputs stacked);
    * 'grouped': layer g reads the g-th channel chunk of its input (a grouped 1x1 conv);
    * 'dense': the input is the previous level's whole output, whose first chunk (the stream that ended)
      is not read: layer g reads chunk g + 1 through a block-diagonal dense 1x1 conv (zeros elsewhere).
      More mult-adds, but no channel slicing and one dense GEMM: meant for GPUs.

    With ``merged`` the two convs are one dense 3x3 conv (grouped like the 1x1) with weight
    ``dw[o] * pw[o, i]`` (exact: the pointwise conv has no bias, so its zero padding commutes with it).
    With ``triton_depthwise`` the depthwise conv, its bias and the ReLU run as one Triton kernel on CUDA
    channels_last tensors (``triton_kernels.depthwise3x3_bias_relu``; PyTorch elsewhere).
    """

    def __init__(self, pw_weights: Sequence[torch.Tensor], dw_weights: Sequence[torch.Tensor],
                 dw_biases: Sequence[torch.Tensor], level_input: str = 'grouped', merged: bool = False,
                 triton_depthwise: bool = False):
        super().__init__()
        if merged and triton_depthwise:
            raise ValueError('merged Lite layers have no separate depthwise conv for the Triton kernel.')
        self.triton_depthwise = triton_depthwise
        if level_input not in LEVEL_INPUTS:
            raise ValueError(f'level_input must be one of {LEVEL_INPUTS}, got {level_input!r}.')
        if merged and level_input == 'dense':
            raise ValueError('merged Lite layers cannot read a dense level input (9x the block-diagonal work).')
        layers = len(pw_weights)
        out_chs, in_chs = pw_weights[0].shape[:2]
        pw = torch.cat(list(pw_weights), 0)  # (G*C, Cin, 1, 1)
        dw = torch.cat(list(dw_weights), 0)  # (G*C, 1, 3, 3)
        bias = torch.cat(list(dw_biases), 0)
        groups = layers if level_input == 'grouped' else 1
        if level_input == 'dense':
            dense = pw.new_zeros(layers * out_chs, (layers + 1) * in_chs, 1, 1)
            for g, w in enumerate(pw_weights):
                dense[g * out_chs:(g + 1) * out_chs, (g + 1) * in_chs:(g + 2) * in_chs] = w
            pw = dense
        in_total = pw.shape[1] * groups
        self.level_input = level_input
        self.merged = merged
        if merged:
            self.conv = nn.Conv2d(in_total, layers * out_chs, 3, padding=1, groups=groups, bias=True)
            weight = (dw.double() * pw.double()).to(pw.dtype)  # (G*C, Cin, 3, 3)
            self.conv.weight = nn.Parameter(weight, requires_grad=False)
            self.conv.bias = nn.Parameter(bias.clone(), requires_grad=False)
            self.conv_pw = self.conv_dw = None
        else:
            self.conv = None
            self.conv_pw = nn.Conv2d(in_total, layers * out_chs, 1, groups=groups, bias=False)
            self.conv_pw.weight = nn.Parameter(pw.clone(), requires_grad=False)
            self.conv_dw = nn.Conv2d(layers * out_chs, layers * out_chs, 3, padding=1,
                                     groups=layers * out_chs, bias=True)
            self.conv_dw.weight = nn.Parameter(dw.clone(), requires_grad=False)
            self.conv_dw.bias = nn.Parameter(bias.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) for 'shared', (B, G*Cin, H, W) for 'grouped' or (B, (G+1)*Cin, H, W) for
        'dense' -> the G layers' activated outputs stacked on channels, (B, G*C, H, W)."""
        if self.conv is not None:
            return F.relu(self.conv(x))
        if self.triton_depthwise:
            from .triton_kernels import depthwise3x3_bias_relu  # optional dependency: imports triton, only on use
            return depthwise3x3_bias_relu(self.conv_pw(x), self.conv_dw.weight, self.conv_dw.bias)
        return F.relu(self.conv_dw(self.conv_pw(x)))


def _lite_parts(lite: LiteConv3x3) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not isinstance(lite.bn, nn.Identity) or lite.conv_dw.bias is None:
        raise ValueError('Stream batching needs the BatchNorm of every Lite 3x3 folded first (fold_batchnorm).')
    return lite.conv_pw.weight.detach(), lite.conv_dw.weight.detach(), lite.conv_dw.bias.detach()


class StreamBatchedOmniScaleBlock(nn.Module):
    """An omni-scale block computed level by level (same output as the BN-folded ``OmniScaleBlock``).

    Level l runs the l-th Lite layer of every stream that has one: level 0 shares its input (one 1x1 conv
    to T*C channels), level l >= 1 is a grouped conv over the streams still running (or, with
    ``dense_levels``, a block-diagonal dense conv over the whole previous level, see ``LiteLevel``). The
    stream that ends at a level is gated; the gate (shared by all streams) runs once on the stacked stream
    descriptors.

    With ``max_batched_work`` the block keeps the plain (folded) block too and runs it when the block's
    mid activation (batch x mid channels x height x width) has more elements than that: level by level
    pays off on the CPU for small convs only.
    """

    def __init__(self, block: OmniScaleBlock, merge_lite: bool = False, dense_levels: bool = False,
                 triton_depthwise: bool = False, max_batched_work: Optional[int] = None):
        super().__init__()
        if not block.primary_design:
            raise ValueError(
                'Stream batching rewrites the primary omni-scale block (Lite 3x3 streams of depth 1..T, one unified '
                f'channel gate); this block is a Table 5 ablation ({block.design}): call optimize_for_inference '
                'with stream_batching=False.')
        streams = [list(s) for s in block.streams]
        depths = [len(s) for s in streams]
        if depths != list(range(1, len(streams) + 1)):
            raise ValueError(f'Expected streams of depth 1..T, got depths {depths}.')
        num_streams = len(streams)
        self.conv1 = block.conv1
        self.conv3 = block.conv3
        self.downsample = block.downsample
        self.norm_out = block.norm_out
        self.mid_chs = block.conv1.conv.out_channels
        self.max_batched_work = max_batched_work
        self.plain = block if max_batched_work is not None else None
        levels = []
        for level in range(num_streams):
            parts = [_lite_parts(streams[s][level]) for s in range(level, num_streams)]
            pw, dw, bias = zip(*parts)
            level_input = 'shared' if level == 0 else 'dense' if dense_levels else 'grouped'
            levels.append(LiteLevel(pw, dw, bias, level_input=level_input, merged=merge_lite,
                                    triton_depthwise=triton_depthwise))
        self.levels = nn.ModuleList(levels)
        self.dense_levels = dense_levels
        gate: ChannelGate = block.gate
        self.gate_fc1 = nn.Linear(gate.fc1.in_channels, gate.fc1.out_channels)
        self.gate_fc2 = nn.Linear(gate.fc2.in_channels, gate.fc2.out_channels)
        for lin, conv in ((self.gate_fc1, gate.fc1), (self.gate_fc2, gate.fc2)):
            lin.weight = nn.Parameter(conv.weight.detach().flatten(1).clone(), requires_grad=False)
            lin.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chs, H, W) -> (B, out_chs, H, W), as the block it replaces (which it
        runs instead above ``max_batched_work``)."""
        if self.plain is not None and x.shape[0] * self.mid_chs * x.shape[2] * x.shape[3] > self.max_batched_work:
            return self.plain(x)
        shortcut = self.downsample(x)
        x = self.conv1(x)
        c = self.mid_chs
        outs = []
        for level in self.levels:
            x = level(x)
            outs.append(x[:, :c])
            if not self.dense_levels:
                x = x[:, c:]
        desc = torch.stack([o.mean((2, 3)) for o in outs], 1)  # (B, T, C)
        w = torch.sigmoid(self.gate_fc2(F.relu(self.gate_fc1(desc))))
        y = outs[0] * w[:, 0, :, None, None]
        for t in range(1, len(outs)):
            y = y + outs[t] * w[:, t, :, None, None]
        y = self.conv3(y) + shortcut
        return F.relu(self.norm_out(y))


def batch_streams(model: nn.Module, merge_lite: bool = False, dense_levels: bool = False,
                  triton_depthwise: bool = False, inplace: bool = False,
                  max_batched_work: Optional[int] = None) -> nn.Module:
    """Replace every (BN-folded) ``OmniScaleBlock`` by a ``StreamBatchedOmniScaleBlock``."""
    if not inplace:
        model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, OmniScaleBlock):
                setattr(module, name, StreamBatchedOmniScaleBlock(child, merge_lite, dense_levels, triton_depthwise,
                                                                  max_batched_work))
    return model


# On the 2-core CPU, level-by-level blocks won for osnet_x0_25 up to batch 8 (mid activations up to 2^18
# elements), were even for osnet_x1_0 at batch 1 and lost at batch 4 and 16 (2^19 elements and more); on the
# H100 they lost at batch 256 (benchmarks/RESULTS.md).
CPU_MAX_BATCHED_WORK = 2 ** 18


# ---------------------------------------------------------------------------------------- runtime wrapper

class CudaGraphRunner:
    """Replays a CUDA graph of ``module`` captured for one fixed input shape, dtype and memory format.

    Inputs are copied into a static buffer; the output is cloned out of the graph's static buffer (the next
    replay overwrites it).
    """

    def __init__(self, module: nn.Module, example: torch.Tensor, warmup: int = 3):
        if example.device.type != 'cuda':
            raise ValueError(f'CUDA graphs need a CUDA input, got one on {example.device}.')
        self.shape = tuple(example.shape)
        self.static_input = example.clone()
        side = torch.cuda.Stream(device=example.device)
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(warmup):  # compiles / autotunes / picks cuDNN algorithms before the capture
                module(self.static_input)
        torch.cuda.current_stream(example.device).wait_stream(side)
        torch.cuda.synchronize(example.device)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph):
            self.static_output = module(self.static_input)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.static_input.copy_(x)
        self.graph.replay()
        return self.static_output.clone()


class InferenceModel(nn.Module):
    """What ``optimize_for_inference`` returns: casts the input to the model's device, dtype and memory
    format, runs the (rewritten, possibly compiled) model or a captured CUDA graph, returns float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, device: torch.device, channels_last: bool,
                 micro_batch: Optional[int] = None):
        super().__init__()
        self.model = model
        self.micro_batch = micro_batch
        self.dtype = dtype
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.compiled: Optional[nn.Module] = None  # see set_compiled
        self.freezing = False
        self.graphs: Dict[Tuple[int, ...], CudaGraphRunner] = {}
        self.pretrained_cfg = getattr(model, 'pretrained_cfg', None)

    def set_compiled(self, compiled: Optional[nn.Module], freezing: bool = False) -> None:
        """Run ``compiled`` instead of the eager model; ``freezing``: compile with inductor's freezing
        (constant folding, oneDNN weight pre-packing and conv+pointwise fusion on CPU)."""
        # kept out of the module tree: the compiled wrapper shares (and would duplicate) the parameters
        object.__setattr__(self, 'compiled', compiled)
        self.freezing = freezing

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` moved to the model's device, dtype and memory format."""
        return x.to(device=self.device, dtype=self.dtype, memory_format=self.memory_format)

    def capture_cuda_graph(self, batch_size: int, input_size: Tuple[int, int, int]) -> None:
        """Capture a CUDA graph for inputs of shape (batch_size, *input_size); later calls with exactly
        that shape replay it."""
        example = torch.zeros((batch_size, *input_size), device=self.device, dtype=self.dtype)
        example = example.contiguous(memory_format=self.memory_format)
        runner = CudaGraphRunner(self._run, example)
        self.graphs[runner.shape] = runner

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.micro_batch and x.shape[0] > self.micro_batch:
            return torch.cat([self._run_one(chunk) for chunk in x.split(self.micro_batch)])
        return self._run_one(x)

    def _run_one(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is None:
            return self.model(x)
        if self.freezing:
            # compilation is lazy (first call, new shapes) and reads the global config, not compile options
            import torch._inductor.config as inductor_config
            with inductor_config.patch(freezing=True):
                return self.compiled(x)
        return self.compiled(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) on any device, in any dtype -> the model's output in float32, from a
        captured CUDA graph where one matches the input shape."""
        x = self.prepare(x)
        runner = self.graphs.get(tuple(x.shape))
        out = runner(x) if runner is not None else self._run(x)
        return out.float()


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device('cpu')


def _resolve_stream_batching(stream_batching: Union[bool, str], device: torch.device, fold_bn: bool, merge_lite: bool,
                             dense_levels: bool, triton_depthwise: bool) -> Tuple[bool, Optional[int]]:
    """``optimize_for_inference``'s stream batching, checked against the rewrites that need it: (on or off,
    the per-call work up to which a block is stream-batched; None: always)."""
    if stream_batching not in (True, False, 'auto'):
        raise ValueError(f"stream_batching must be True, False or 'auto', got {stream_batching!r}.")
    level_rewrites = merge_lite or dense_levels or triton_depthwise
    if level_rewrites and stream_batching is False:
        raise ValueError('merge_lite, dense_levels and triton_depthwise rewrite the stream-batched levels: '
                         'set stream_batching=True.')
    max_batched_work = None
    if stream_batching == 'auto':
        stream_batching = bool(level_rewrites) or (fold_bn and device.type == 'cpu')
        if stream_batching and not level_rewrites:
            max_batched_work = CPU_MAX_BATCHED_WORK
    if stream_batching and not fold_bn:
        raise ValueError('stream_batching, merge_lite, dense_levels and triton_depthwise need fold_bn=True '
                         '(they rebuild BN-folded layers).')
    if merge_lite and triton_depthwise:
        raise ValueError('merge_lite leaves no depthwise conv for triton_depthwise.')
    if merge_lite and dense_levels:
        raise ValueError('merge_lite and dense_levels do not combine (9x the block-diagonal work).')
    return bool(stream_batching), max_batched_work


def _check_runtime(device: torch.device, compile: Union[bool, str], cuda_graph_batch_sizes: Sequence[int],
                   micro_batch: Optional[int]) -> None:
    """``optimize_for_inference``'s run-time options (graphs, compilation, micro-batches), checked together."""
    if cuda_graph_batch_sizes and device.type != 'cuda':
        raise ValueError(f'CUDA graphs need a CUDA device; this model runs on {device}.')
    if cuda_graph_batch_sizes and compile in ('reduce-overhead', 'max-autotune'):
        raise ValueError(f'compile mode {compile!r} captures its own CUDA graphs; use it without '
                         'cuda_graph_batch_sizes, or a mode without graphs (e.g. max-autotune-no-cudagraphs).')
    if micro_batch is not None and micro_batch < 1:
        raise ValueError(f'micro_batch must be >= 1, got {micro_batch}.')


def optimize_for_inference(
        model: nn.Module,
        precision: Union[str, torch.dtype] = 'fp32',
        device: Union[str, torch.device, None] = None,
        fold_bn: bool = True,
        stream_batching: Union[bool, str] = 'auto',
        merge_lite: bool = False,
        dense_levels: bool = False,
        triton_depthwise: bool = False,
        channels_last: bool = True,
        compile: Union[bool, str] = False,
        cuda_graph_batch_sizes: Sequence[int] = (),
        input_size: Optional[Tuple[int, int, int]] = None,
        micro_batch: Optional[int] = None,
) -> InferenceModel:
    """Return a copy of ``model`` rewritten for fast inference; the original is not modified.

    Args:
        model: an OSNet (or any module; the OSNet-specific rewrites only touch OSNet blocks).
        precision: 'fp32', 'bf16' or 'fp16' (weights and activations are cast; the output is float32).
        device: where to run (default: where the model is).
        fold_bn: fold BatchNorm into the preceding conv / Linear (exact up to rounding).
        stream_batching: run each omni-scale block's streams level by level as wider / grouped convs
            (exact up to rounding; needs ``fold_bn``). 'auto' (default): on the CPU per block and call, where
            the block's activations are small (where it was measured to pay); never on CUDA; always when
            ``merge_lite`` / ``dense_levels`` / ``triton_depthwise`` ask for the level-by-level form.
        merge_lite: merge each Lite 3x3's pointwise and depthwise convs into one dense 3x3 conv
            (exact up to rounding, 9x the pointwise mult-adds; for memory-bound GPUs; needs ``stream_batching``).
        dense_levels: stream-batched levels read the whole previous level through block-diagonal dense
            1x1 convs (more mult-adds, no channel slicing; for GPUs; needs ``stream_batching``, not
            ``merge_lite``).
        triton_depthwise: run each level's depthwise 3x3 + bias + ReLU as one Triton kernel on CUDA
            (channels_last; PyTorch fallback elsewhere; needs ``stream_batching``, not ``merge_lite``).
        channels_last: NHWC memory format.
        compile: ``torch.compile`` the model: True (default mode, with inductor freezing on CPU) or a mode
            string, e.g. 'max-autotune-no-cudagraphs'. Compilation happens on the first call.
        cuda_graph_batch_sizes: on CUDA, capture a graph per batch size (inputs of shape
            (B, *input_size)); calls with another shape run normally.
        input_size: (C, H, W) for graph capture (default: the model's ``pretrained_cfg`` input size).
        micro_batch: run larger batches as chunks of this size (inside one CUDA graph when captured), so
            that a block's activations can stay in the GPU's L2 cache between kernels.

    Returns:
        An ``InferenceModel``: call it with a float image batch (any dtype / device / layout) and it
        returns float32 features. Run it under ``torch.inference_mode()``.
    """
    if isinstance(precision, str) and precision in QUANTIZED:  # resolve_dtype maps it to its float32 input
        raise ValueError(f'optimize_for_inference casts the PyTorch model (fp32, bf16, fp16); precision {precision!r} is '
                         "a quantized model: FeatureExtractor(precision='int8') or export --int8.")
    dtype = resolve_dtype(precision)
    device = torch.device(device) if device is not None else _model_device(model)
    stream_batching, max_batched_work = _resolve_stream_batching(stream_batching, device, fold_bn, merge_lite,
                                                                 dense_levels, triton_depthwise)
    _check_runtime(device, compile, cuda_graph_batch_sizes, micro_batch)
    pretrained_cfg = getattr(model, 'pretrained_cfg', None)
    net = copy.deepcopy(model).eval()
    if fold_bn:
        net = fold_batchnorm(net, inplace=True)
    if stream_batching:
        net = batch_streams(net, merge_lite=merge_lite, dense_levels=dense_levels,
                            triton_depthwise=triton_depthwise, inplace=True, max_batched_work=max_batched_work)
    net = net.to(device=device, dtype=dtype)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)
    if pretrained_cfg is not None:
        net.pretrained_cfg = pretrained_cfg
    wrapper = InferenceModel(net, dtype, device, channels_last, micro_batch).eval()
    if compile:
        mode = None if compile is True else compile
        wrapper.set_compiled(torch.compile(net, mode=mode, dynamic=False), freezing=device.type == 'cpu')
    if cuda_graph_batch_sizes:
        if input_size is None:
            input_size = tuple((pretrained_cfg or {}).get('input_size', (3, 256, 128)))
        for batch_size in cuda_graph_batch_sizes:
            wrapper.capture_cuda_graph(int(batch_size), tuple(input_size))
    return wrapper
