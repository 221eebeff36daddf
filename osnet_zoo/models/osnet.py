"""OSNet: Omni-Scale Network for person re-identification, as timm models.

Papers:
    Zhou et al., "Omni-Scale Feature Learning for Person Re-Identification", ICCV 2019.
    Zhou et al., "Learning Generalisable Omni-Scale Representations for Person Re-Identification",
    TPAMI 2021 (OSNet-AIN).

One implementation serves every variant. A network is described by its stage widths, the number of
blocks per stage, whether conv1 uses instance norm, and a per-block instance-norm placement:

    ``plain``      no instance norm;
    ``in_in``      affine IN replaces the BN on the block's last 1x1 conv (inside the residual);
    ``in_out``     affine IN after the residual add, before the ReLU;
    ``in_in_out``  both.

OSNet-IBN and OSNet-AIN are such placements; the NAS of the AIN paper searches over them. The ablation
models of the OSNet paper's Table 5 are further block arguments (``conv_type``, ``stream_depths``,
``aggregation``, ``gate_type``), named in ``TABLE5_MODELS``; docs/architecture.md describes them all.
"""
# No ``from __future__ import annotations`` here: FX copies ``forward``'s annotations into the code it
# generates, and string annotations come out as names (``_torch_Tensor_``) TorchScript cannot resolve, which
# breaks fx-trace-then-script (timm's test_model_forward_fx_torchscript).
import inspect
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, SelectAdaptivePool2d
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from .genotype import BLOCK_NORMS, genotype_args
# models -> weights: the timm registry (default_cfgs) is generated from the weights manifest, pretrained=True
# fetches through weights.hub, and timm's loader converts a checkpoint with weights.loading.checkpoint_filter_fn
# (re-exported here, where timm's model files keep theirs). weights/__init__ imports nothing from osnet_zoo.models.
from ..weights.hub import build_pretrained
from ..weights.io import CheckpointError, classifier_rows
from ..weights.loading import checkpoint_filter_fn
from ..weights.manifest import PACKAGED_MANIFEST, WeightsEntry, load_manifest, pretrained_cfgs

__all__ = [
    'OSNet', 'OmniScaleBlock', 'LiteConv3x3', 'ChannelGate', 'StaticGate', 'BLOCK_NORMS', 'IBN_BLOCK_NORMS',
    'AIN_BLOCK_NORMS', 'CONV_TYPES', 'AGGREGATIONS', 'GATE_TYPES', 'STEMS', 'TABLE5_MODELS', 'checkpoint_filter_fn',
    'osnet_arch', 'OSNET_ARCHS', 'pretrained_fit_problem', 'MIN_INPUT_SIZE',
]

BASE_CHANNELS = (64, 256, 384, 512)
# The smallest input height / width: the stem and the transitions halve it four times, leaving >= 1 pixel.
MIN_INPUT_SIZE = 16
BASE_LAYERS = (2, 2, 2)
# Placements per block, stage-major (conv2 x2, conv3 x2, conv4 x2).
PLAIN_BLOCK_NORMS = ('plain',) * 6
IBN_BLOCK_NORMS = ('in_out', 'in_out', 'plain', 'plain', 'plain', 'plain')
AIN_BLOCK_NORMS = ('in_in', 'in_in', 'plain', 'in_in', 'in_in', 'plain')


def _norm2d(num_channels: int, instance_norm: bool) -> nn.Module:
    # The reference uses affine IN without running statistics: it normalises per image at test time too.
    return nn.InstanceNorm2d(num_channels, affine=True) if instance_norm else nn.BatchNorm2d(num_channels)


class ConvNormAct(nn.Module):
    """Conv (no bias) -> BN or affine IN -> optional ReLU."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            kernel_size: int = 1,
            stride: int = 1,
            padding: int = 0,
            instance_norm: bool = False,
            apply_act: bool = True,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = _norm2d(out_chs, instance_norm)
        self.act = nn.ReLU(inplace=True) if apply_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chs, H, W) -> (B, out_chs, H', W'), H' and W' set by kernel size, stride and padding."""
        return self.act(self.bn(self.conv(x)))


class LiteConv3x3(nn.Module):
    """Lite 3x3: 1x1 pointwise -> 3x3 depthwise -> BN -> ReLU (no norm between the two convs)."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.conv_dw = nn.Conv2d(out_chs, out_chs, 3, padding=1, groups=out_chs, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chs, H, W) -> (B, out_chs, H, W)."""
        return self.act(self.bn(self.conv_dw(self.conv_pw(x))))


class ChannelGate(nn.Module):
    """Unified aggregation gate: GAP -> 1x1 (C -> C/r) -> ReLU -> 1x1 (C/r -> C) -> sigmoid, times the input.

    ``channel_wise=False`` is Table 5's stream-wise gate: the second 1x1 has one output, a scalar weight for
    the whole stream.
    """

    def __init__(self, channels: int, reduction: int = 16, channel_wise: bool = True):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels if channel_wise else 1, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the input times its gate, (B, C, H, W)."""
        w = x.mean((2, 3), keepdim=True)
        w = torch.sigmoid(self.fc2(self.act(self.fc1(w))))
        return x * w


class StaticGate(nn.Module):
    """Learned-and-fixed gate (Table 5, model 8): a learned per-channel weight, sigmoid(w), the same for every
    input. Starts at 0.5 (w = 0)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the input times sigmoid(weight), (B, C, H, W)."""
        return x * torch.sigmoid(self.weight)


CONV_TYPES = ('lite', 'standard')
AGGREGATIONS = ('gate', 'add', 'concat')
GATE_TYPES = ('unified', 'per_stream', 'stream_wise', 'static')
STEMS = ('default', 'cifar')


def _check_choice(name: str, value: str, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f'Unknown {name} {value!r}; expected one of {choices}.')


def _stream_layer(channels: int, conv_type: str) -> nn.Module:
    if conv_type == 'lite':
        return LiteConv3x3(channels, channels)
    return ConvNormAct(channels, channels, 3, padding=1)  # 'standard': full 3x3 conv -> BN -> ReLU


def _aggregation_gate(channels: int, reduction: int, aggregation: str, gate_type: str, num_streams: int) -> nn.Module:
    if aggregation != 'gate':
        return nn.Identity()  # 'add' sums the streams as they are; 'concat' stacks them for conv3
    if gate_type == 'unified':
        return ChannelGate(channels, reduction)
    if gate_type == 'stream_wise':
        return ChannelGate(channels, reduction, channel_wise=False)
    if gate_type == 'per_stream':
        return nn.ModuleList([ChannelGate(channels, reduction) for _ in range(num_streams)])
    return nn.ModuleList([StaticGate(channels) for _ in range(num_streams)])


class OmniScaleBlock(nn.Module):
    """Omni-scale residual bottleneck.

    1x1 reduction (by ``bottleneck_reduction``), ``num_streams`` streams where stream t stacks t Lite 3x3
    layers, one aggregation gate shared by all streams, 1x1 linear projection, residual add, ReLU.
    ``norm`` places instance norm (see the module docstring).

    The ablation arguments of Table 5 change one part each (the defaults are the paper's primary block):
    ``conv_type`` 'lite' or 'standard' (full 3x3 conv); ``stream_depths`` the Lite layers of each stream
    (default 1..T); ``aggregation`` 'gate' (gated sum), 'add' (plain sum) or 'concat' (the streams
    concatenated, conv3 reads T x mid channels); ``gate_type`` (with 'gate') 'unified' (one channel-wise
    gate shared by the streams), 'per_stream' (a separate channel-wise gate per stream), 'stream_wise' (one
    shared gate giving a scalar per stream) or 'static' (a learned, input-independent channel weight per stream).
    ``drop_path`` is the probability of stochastic depth: in training, the residual branch of a sample is
    dropped (the block passes the shortcut alone) and kept branches are scaled by 1 / (1 - p), as in timm.
    """
    concat: torch.jit.Final[bool]
    gate_per_stream: torch.jit.Final[bool]

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            norm: str = 'plain',
            num_streams: int = 4,
            bottleneck_reduction: int = 4,
            gate_reduction: int = 16,
            conv_type: str = 'lite',
            stream_depths: Optional[Sequence[int]] = None,
            aggregation: str = 'gate',
            gate_type: str = 'unified',
            drop_path: float = 0.,
    ):
        super().__init__()
        _check_choice('block norm placement', norm, BLOCK_NORMS)
        _check_choice('conv_type', conv_type, CONV_TYPES)
        _check_choice('aggregation', aggregation, AGGREGATIONS)
        _check_choice('gate_type', gate_type, GATE_TYPES)
        if num_streams < 1:
            raise ValueError(f'num_streams must be >= 1, got {num_streams}.')
        if aggregation != 'gate' and gate_type != 'unified':
            raise ValueError(f"gate_type={gate_type!r} needs aggregation='gate', got aggregation={aggregation!r}.")
        depths = tuple(range(1, num_streams + 1)) if stream_depths is None else tuple(stream_depths)
        if len(depths) != num_streams or any(int(d) != d or d < 1 for d in depths):
            raise ValueError(
                f'stream_depths needs num_streams={num_streams} positive integers, got {stream_depths}.')
        mid_chs = out_chs // bottleneck_reduction
        self.norm = norm
        self.concat = aggregation == 'concat'
        self.gate_per_stream = aggregation == 'gate' and gate_type in ('per_stream', 'static')
        self.design = dict(conv_type=conv_type, stream_depths=depths, aggregation=aggregation, gate_type=gate_type)
        # The paper's primary block: the only design the stream-batched inference block (inference/optimize.py)
        # rewrites.
        self.primary_design = conv_type == 'lite' and depths == tuple(range(1, num_streams + 1)) \
            and aggregation == 'gate' and gate_type == 'unified'
        self.conv1 = ConvNormAct(in_chs, mid_chs, 1)
        self.streams = nn.ModuleList([
            nn.Sequential(*[_stream_layer(mid_chs, conv_type) for _ in range(int(depth))]) for depth in depths
        ])
        self.gate = _aggregation_gate(mid_chs, gate_reduction, aggregation, gate_type, num_streams)
        conv3_in = mid_chs * num_streams if self.concat else mid_chs
        self.conv3 = ConvNormAct(conv3_in, out_chs, 1, instance_norm=norm in ('in_in', 'in_in_out'), apply_act=False)
        # no parameters: the state_dict (and so every checkpoint) is the same with and without it
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.downsample = ConvNormAct(in_chs, out_chs, 1, apply_act=False) if in_chs != out_chs else nn.Identity()
        self.norm_out = nn.InstanceNorm2d(out_chs, affine=True) if norm in ('in_out', 'in_in_out') else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def _aggregate(self, x: torch.Tensor) -> torch.Tensor:
        # The branches are compile-time constants (Final) for TorchScript; FX and eager take one of them.
        if self.concat:
            outs: List[torch.Tensor] = []
            for stream in self.streams:
                outs.append(stream(x))
            return torch.cat(outs, 1)
        y = x
        first = True
        if self.gate_per_stream:
            for stream, gate in zip(self.streams, self.gate):
                g = gate(stream(x))
                y = g if first else y + g
                first = False
        else:
            for stream in self.streams:
                g = self.gate(stream(x))
                y = g if first else y + g
                first = False
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chs, H, W) -> (B, out_chs, H, W): the streams aggregated, conv3, plus the
        shortcut, then the output norm (if any) and ReLU."""
        shortcut = self.downsample(x)
        y = self.drop_path(self.conv3(self._aggregate(self.conv1(x)))) + shortcut
        return self.act(self.norm_out(y))


def _stage_transition(channels: int) -> nn.Sequential:
    # 1x1 conv + 2x2 average pool between stages (after conv2 and conv3).
    return nn.Sequential(ConvNormAct(channels, channels, 1), nn.AvgPool2d(2, stride=2))


def _check_arch(channels: Sequence[int], layers: Sequence[int], block_norms: Sequence[str], stem: str
                ) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[str, ...]]:
    """``channels``, ``layers`` and ``block_norms`` as tuples, refused when their lengths do not fit together."""
    channels, layers, block_norms = tuple(channels), tuple(layers), tuple(block_norms)
    if len(channels) != 4 or len(layers) != 3:
        raise ValueError(f'OSNet needs 4 channel widths and 3 stage depths, got {channels} and {layers}.')
    if len(block_norms) != sum(layers):
        raise ValueError(
            f'block_norms needs one entry per block ({sum(layers)} for layers={layers}), got {len(block_norms)}.')
    _check_choice('stem', stem, STEMS)
    return channels, layers, block_norms


def _stem(in_chans: int, out_chans: int, stem: str, instance_norm: bool) -> Tuple[nn.Module, nn.Module]:
    """(conv1, maxpool): 7x7 stride-2 conv and 3x3 stride-2 max-pool, or for 'cifar' a 3x3 stride-1 conv alone."""
    if stem == 'cifar':
        return ConvNormAct(in_chans, out_chans, 3, stride=1, padding=1, instance_norm=instance_norm), nn.Identity()
    return (ConvNormAct(in_chans, out_chans, 7, stride=2, padding=3, instance_norm=instance_norm),
            nn.MaxPool2d(3, stride=2, padding=1))


def drop_path_rates(drop_path_rate: float, num_blocks: int) -> List[float]:
    """Stochastic depth per block, rising linearly from 0 at the first block to ``drop_path_rate`` at the last
    (timm's schedule for its residual networks)."""
    if not 0. <= drop_path_rate < 1.:
        raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate}.')
    return [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]


def _stages(channels: Tuple[int, ...], layers: Tuple[int, ...], block_norms: Tuple[str, ...],
            drop_path_rate: float = 0., **block_kw: Any) -> List[nn.Sequential]:
    """conv2, conv3 and conv4: ``layers[i]`` omni-scale blocks each, placements taken from ``block_norms`` in order,
    stochastic depth rising block by block to ``drop_path_rate``."""
    norms, rates = iter(block_norms), iter(drop_path_rates(drop_path_rate, sum(layers)))
    return [nn.Sequential(*[OmniScaleBlock(channels[i] if j == 0 else channels[i + 1], channels[i + 1],
                                           norm=next(norms), drop_path=next(rates), **block_kw)
                            for j in range(depth)])
            for i, depth in enumerate(layers)]


def _feature_info(channels: Tuple[int, ...], stem: str) -> List[Dict[str, Any]]:
    """timm's feature_info: width and stride of conv1 .. conv5."""
    r = 1 if stem == 'cifar' else 4  # the stride before conv2
    names_widths = zip(('conv1', 'conv2', 'conv3', 'conv4', 'conv5'), (*channels, channels[3]))
    reductions = (max(r // 2, 1), r, 2 * r, 4 * r, 4 * r)
    return [dict(num_chs=c, reduction=red, module=m) for (m, c), red in zip(names_widths, reductions)]


class OSNet(nn.Module):
    """OSNet / OSNet-IBN / OSNet-AIN, configured by widths and instance-norm placement.

    ``forward`` returns logits. With ``num_classes=0`` it returns the re-ID embedding: the output of
    ``fc`` (Linear -> BatchNorm1d -> ReLU), before any L2 normalisation, which is what the reference
    returns in eval mode. ``forward_features`` returns the conv5 map (B, C, H/16, W/16).
    """

    def __init__(
            self,
            channels: Sequence[int] = BASE_CHANNELS,
            layers: Sequence[int] = BASE_LAYERS,
            block_norms: Sequence[str] = PLAIN_BLOCK_NORMS,
            conv1_in: bool = False,
            num_streams: int = 4,
            bottleneck_reduction: int = 4,
            gate_reduction: int = 16,
            conv_type: str = 'lite',
            stream_depths: Optional[Sequence[int]] = None,
            aggregation: str = 'gate',
            gate_type: str = 'unified',
            feature_dim: int = 512,
            stem: str = 'default',
            num_classes: int = 1000,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
    ):
        """
        Args:
            channels: widths of conv1 and of stages conv2, conv3, conv4 (conv5 keeps the last).
            layers: omni-scale blocks in conv2, conv3, conv4.
            block_norms: one placement per block, stage-major, each one of ``BLOCK_NORMS``.
            conv1_in: instance norm instead of BN in the stem conv.
            num_streams: T, the number of streams (exponents 1..T) per block.
            bottleneck_reduction: channel reduction inside a block.
            gate_reduction: channel reduction of the aggregation gate's hidden layer.
            conv_type: 'lite' (Lite 3x3: 1x1 + depthwise 3x3) or 'standard' (full 3x3 conv) in the streams.
            stream_depths: layers per stream, ``num_streams`` entries (default 1, 2, .., T); equal depths
                give Table 5's same-depth (ResNeXt-like) model.
            aggregation: how the streams are fused: 'gate' (gated sum), 'add' (sum) or 'concat'.
            gate_type: with aggregation 'gate': 'unified', 'per_stream', 'stream_wise' or 'static'
                (see ``OmniScaleBlock``; ``TABLE5_MODELS`` names the ablation models).
            feature_dim: size of the re-ID embedding (the ``fc`` head).
            stem: 'default' (7x7 stride-2 conv + 3x3 stride-2 max-pool: 1/4 resolution, Table 1) or 'cifar'
                (3x3 stride-1 conv, no max-pool) for 32x32 inputs (CIFAR, ICCV 2019 Sec. 4.3): the stages then run
                at 32, 16 and 8 pixels, the resolutions of the CIFAR ResNets the paper compares with, instead
                of a 2x2 conv5 map.
            num_classes: classifier outputs; 0 returns the embedding.
            in_chans: input channels.
            global_pool: 'avg', 'max', 'avgmax', or '' (no pooling and no embedding head:
                ``forward`` then returns the conv5 map).
            drop_rate, drop_path_rate: dropout before the classifier; stochastic depth of the blocks' residual
                branches, rising linearly from 0 (first block) to drop_path_rate (last block), off in eval mode.
        """
        super().__init__()
        channels, layers, block_norms = _check_arch(channels, layers, block_norms, stem)
        stream_depths = tuple(stream_depths) if stream_depths is not None else None
        self.arch = dict(
            channels=channels, layers=layers, block_norms=block_norms, conv1_in=conv1_in, num_streams=num_streams,
            bottleneck_reduction=bottleneck_reduction, gate_reduction=gate_reduction, conv_type=conv_type,
            stream_depths=stream_depths, aggregation=aggregation, gate_type=gate_type, feature_dim=feature_dim,
            stem=stem)
        self.num_classes, self.drop_rate, self.grad_checkpointing = num_classes, drop_rate, False

        # registered in forward order, which is the state_dict's key order and the weight init's draw order
        self.conv1, self.maxpool = _stem(in_chans, channels[0], stem, conv1_in)
        stages = _stages(channels, layers, block_norms, num_streams=num_streams,
                         bottleneck_reduction=bottleneck_reduction, gate_reduction=gate_reduction,
                         conv_type=conv_type, stream_depths=stream_depths, aggregation=aggregation,
                         gate_type=gate_type, drop_path_rate=drop_path_rate)
        self.conv2 = stages[0]
        self.pool2 = _stage_transition(channels[1])
        self.conv3 = stages[1]
        self.pool3 = _stage_transition(channels[2])
        self.conv4 = stages[2]
        self.conv5 = ConvNormAct(channels[3], channels[3], 1)

        self.num_features = channels[3]
        self.head_hidden_size = feature_dim
        self.feature_info = _feature_info(channels, stem)
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self._check_pool(global_pool)
        self.fc = nn.Sequential(nn.Linear(channels[3], feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True))
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(feature_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    @staticmethod
    def _check_pool(global_pool: str) -> None:
        if global_pool not in ('avg', 'max', 'avgmax', 'fast', 'fastavg', ''):
            raise ValueError(
                f"OSNet supports global_pool 'avg', 'max', 'avgmax' or '' (unpooled map), got {global_pool!r}: "
                'the embedding head expects pooled features of the conv5 width.')

    def _init_weights(self) -> None:
        # Same scheme as the reference: Kaiming (fan_out) convs, unit norms, N(0, 0.01) linears.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.InstanceNorm2d)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for timm's layer-wise schedules: the stem, then one group per stage
        (``coarse``) or per block; each transition pool (``poolN``) sorts right after the blocks of ``convN``."""
        return dict(
            stem=r'^conv1',
            blocks=[(r'^conv(\d+)' if coarse else r'^conv(\d+)\.(\d+)', None), (r'^pool(\d+)', (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint the blocks of conv2..conv4 in training (recompute for memory); not
        under TorchScript."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        """The classifier module, or its attribute name ``'classifier'`` with ``name_only``."""
        return 'classifier' if name_only else self.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (0 removes it); ``global_pool`` '' returns the unpooled conv5 map."""
        self.num_classes = num_classes
        if global_pool is not None:
            self._check_pool(global_pool)
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        ref = self.fc[0].weight
        self.classifier = (
            nn.Linear(self.head_hidden_size, num_classes, device=ref.device, dtype=ref.dtype)
            if num_classes > 0 else nn.Identity())

    @torch.jit.unused
    def _run_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(stage, x)
        return stage(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> the conv5 map (B, C, H/16, W/16)."""
        x = self.maxpool(self.conv1(x))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = self.pool2(checkpoint_seq(self.conv2, x))
            x = self.pool3(checkpoint_seq(self.conv3, x))
            x = checkpoint_seq(self.conv4, x)
        else:
            x = self.pool3(self.conv3(self.pool2(self.conv2(x))))
            x = self.conv4(x)
        return self.conv5(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The conv5 map -> logits (B, num_classes), or the embedding (B, feature_dim) with
        ``pre_logits`` or ``num_classes=0``; without global pooling the map comes back unchanged."""
        if self.global_pool.is_identity():
            return x  # no pooling: the embedding head needs pooled features, so it is skipped
        x = self.fc(self.global_pool(x))
        x = self.head_drop(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> logits (B, num_classes), or the embedding (B, feature_dim) when
        ``num_classes=0``."""
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Features of conv1..conv5 (reductions 2, 4, 8, 16, 16), timm's ``forward_intermediates`` contract."""
        assert output_fmt in ('NCHW',), 'Output shape must be NCHW.'
        take_indices, max_index = feature_take_indices(5, indices)
        intermediates: List[torch.Tensor] = []
        x = self.conv1(x)
        if 0 in take_indices:
            intermediates.append(x)
        x = self.maxpool(x)
        last = max_index if stop_early else 4
        if last >= 1:
            x = self._run_stage(self.conv2, x)
            if 1 in take_indices:
                intermediates.append(x)
        if last >= 2:
            x = self._run_stage(self.conv3, self.pool2(x))
            if 2 in take_indices:
                intermediates.append(x)
        if last >= 3:
            x = self._run_stage(self.conv4, self.pool3(x))
            if 3 in take_indices:
                intermediates.append(x)
        if last >= 4:
            x = self.conv5(x)
            if 4 in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the layers after the last requested intermediate (and the head)."""
        take_indices, max_index = feature_take_indices(5, indices)
        after = ('conv2', 'pool2', 'conv3', 'pool3', 'conv4', 'conv5')
        keep = {0: 0, 1: 1, 2: 3, 3: 5, 4: 6}[max_index]
        for name in after[keep:]:
            setattr(self, name, nn.Identity())
        if prune_head:
            self.reset_classifier(0, '')
            self.fc = nn.Identity()
        return take_indices


# Table 5 of the OSNet paper (ablation on Market1501, width 1.0): model number, the paper's row, and the OSNet
# arguments that build it; ``timm.create_model('osnet_x1_0', **TABLE5_MODELS[name]['model_args'])``.
TABLE5_MODELS: Dict[str, Dict[str, Any]] = {
    'primary': dict(row=1, description='T = 4 + unified AG (primary model)', model_args={}),
    'standard_conv': dict(row=2, description='T = 4 w/ full conv + unified AG',
                          model_args=dict(conv_type='standard')),
    'same_depth': dict(row=3, description='T = 4 (same depth) + unified AG',
                       model_args=dict(stream_depths=(1, 1, 1, 1))),
    'concat': dict(row=4, description='T = 4 + concatenation', model_args=dict(aggregation='concat')),
    'add': dict(row=5, description='T = 4 + addition', model_args=dict(aggregation='add')),
    'per_stream_gates': dict(row=6, description='T = 4 + separate AGs', model_args=dict(gate_type='per_stream')),
    'stream_wise_gate': dict(row=7, description='T = 4 + unified AG (stream-wise)',
                             model_args=dict(gate_type='stream_wise')),
    'static_gates': dict(row=8, description='T = 4 + learned-and-fixed gates', model_args=dict(gate_type='static')),
    't1': dict(row=9, description='T = 1', model_args=dict(num_streams=1, aggregation='add')),
    't2': dict(row=10, description='T = 2 + unified AG', model_args=dict(num_streams=2)),
    't3': dict(row=11, description='T = 3 + unified AG', model_args=dict(num_streams=3)),
}


def osnet_arch(width: float = 1.0, variant: str = 'osnet', **overrides: Any) -> Dict[str, Any]:
    """Model kwargs of a family member: ``variant`` 'osnet', 'osnet_ibn' or 'osnet_ain' at width β."""
    norms = {'osnet': (PLAIN_BLOCK_NORMS, False), 'osnet_ibn': (IBN_BLOCK_NORMS, True),
             'osnet_ain': (AIN_BLOCK_NORMS, True)}
    if variant not in norms:
        raise ValueError(f'Unknown OSNet variant {variant!r}; expected one of {sorted(norms)}.')
    if width <= 0:
        raise ValueError(f'width must be positive, got {width}.')
    block_norms, conv1_in = norms[variant]
    arch = dict(channels=tuple(int(round(c * width)) for c in BASE_CHANNELS), block_norms=block_norms,
                conv1_in=conv1_in)
    arch.update(overrides)
    return arch


OSNET_ARCHS: Dict[str, Dict[str, Any]] = {
    'osnet_x1_0': osnet_arch(1.0),
    'osnet_x0_75': osnet_arch(0.75),
    'osnet_x0_5': osnet_arch(0.5),
    'osnet_x0_25': osnet_arch(0.25),
    'osnet_ibn_x1_0': osnet_arch(1.0, 'osnet_ibn'),
    'osnet_ain_x1_0': osnet_arch(1.0, 'osnet_ain'),
    'osnet_ain_x0_75': osnet_arch(0.75, 'osnet_ain'),
    'osnet_ain_x0_5': osnet_arch(0.5, 'osnet_ain'),
    'osnet_ain_x0_25': osnet_arch(0.25, 'osnet_ain'),
}


_OSNET_DEFAULTS = {n: p.default for n, p in inspect.signature(OSNet.__init__).parameters.items()
                   if p.default is not inspect.Parameter.empty}

# OSNet arguments that change the network (not only its head size, input channels or pooling): the
# reference weights of a tag belong to the standard architecture and fit no other setting of these.
ARCHITECTURE_ARGS = ('channels', 'layers', 'block_norms', 'conv1_in', 'num_streams', 'bottleneck_reduction',
                     'gate_reduction', 'conv_type', 'stream_depths', 'aggregation', 'gate_type', 'feature_dim', 'stem')


def _loads_own_weights(pretrained_cfg: Any, overlay: Optional[Mapping[str, Any]]) -> bool:
    """Whether ``pretrained=True`` reads weights the caller named (local-dir:/hf-hub: config, a file,
    a state_dict, a Hub repo or url of an overlay) rather than a registry tag of the manifest."""
    cfg = pretrained_cfg if isinstance(pretrained_cfg, Mapping) else getattr(pretrained_cfg, '__dict__', None)
    sources = ('source', 'file', 'state_dict', 'hf_hub_id', 'url')
    return any((cfg or {}).get(k) for k in sources) or any((overlay or {}).get(k) for k in sources)


def _refuse_pretrained_ablation(variant: str, kwargs: Mapping[str, Any]) -> None:
    """``timm.create_model(tag, pretrained=True, num_streams=2)`` would meet weights of another shape:
    refuse up front, naming the arguments, instead of failing in the strict loader."""
    standard = dict(_OSNET_DEFAULTS, **OSNET_ARCHS[variant])
    changed = {k: kwargs[k] for k in ARCHITECTURE_ARGS if k in kwargs and _same(kwargs[k]) != _same(standard[k])}
    if changed:
        args = ', '.join(f'{k}={v!r}' for k, v in changed.items())
        raise ValueError(
            f'{variant}: pretrained=True loads the reference weights of the standard {variant}, which do not fit '
            f'{args}. Build the model with pretrained=False, or load weights trained with these arguments '
            f"(timm.create_model('local-dir:RUN/final', pretrained=True) or pretrained_cfg_overlay=dict(file=...)).")


def _same(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def variant_args(variant: str, pretrained: bool, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """``OSNet``'s arguments for the registered ``variant`` with the caller's ``kwargs`` on top: a NAS
    ``genotype`` (file, dict or shipped name) sets the IN placement, other stage depths get one plain placement
    per block. With ``pretrained`` (a registry tag), arguments its reference weights do not fit are refused."""
    if pretrained and not _loads_own_weights(kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay')):
        _refuse_pretrained_ablation(variant, kwargs)
    model_kwargs = dict(OSNET_ARCHS[variant])
    genotype = kwargs.pop('genotype', None)
    if genotype is not None:
        if pretrained:
            raise ValueError(f'{variant}: pretrained weights belong to its own IN placement, not to a genotype.')
        model_kwargs.update(genotype_args(genotype))  # widths come from the variant
    if 'layers' in kwargs and 'block_norms' not in kwargs and set(model_kwargs['block_norms']) == {'plain'}:
        # other stage depths (the deeper 3-8-6 OSNet of the CIFAR experiments): one placement per block
        model_kwargs['block_norms'] = ('plain',) * sum(kwargs['layers'])
    return dict(model_kwargs, **kwargs)


def _create_osnet(variant: str, pretrained: bool = False, **kwargs: Any) -> OSNet:
    # pretrained=True: the weights are fetched and checked by osnet_zoo.weights (sha256 against the manifest,
    # read without unpickling code), then timm's loader adapts them through checkpoint_filter_fn
    return build_pretrained(
        build_model_with_cfg, OSNet, variant, pretrained, check=pretrained_fit_problem,
        pretrained_filter_fn=checkpoint_filter_fn, feature_cfg=dict(out_indices=(0, 1, 2, 3, 4)),
        **variant_args(variant, pretrained, kwargs))


def pretrained_fit_problem(entry: WeightsEntry, state_dict: Mapping[str, torch.Tensor]) -> Optional[str]:
    """Why a downloaded file's tensors are not a checkpoint of manifest ``entry`` (another class count than
    recorded, or keys, shapes or values that do not fit its architecture), or None. Run before a download is
    trusted or cached, so that a wrong file is refused with its reason instead of failing later."""
    rows = classifier_rows(state_dict)
    if entry.num_classes is not None and rows != entry.num_classes:
        return f'its classifier has {rows} classes, the manifest records {entry.num_classes} for {entry.name}'
    model = OSNet(num_classes=rows, **OSNET_ARCHS[entry.architecture])
    try:
        checkpoint_filter_fn(dict(state_dict), model, drop_mismatched_classifier=False, adapt_in_chans=False)
    except CheckpointError as e:
        return str(e)
    return None


def _cfg(url: str = '', **kwargs: Any) -> Dict[str, Any]:
    return {
        'url': url,
        'num_classes': 1000,
        'input_size': (3, 256, 128),
        'pool_size': (16, 8),
        'crop_pct': 1.0,
        'crop_mode': 'squash',  # re-ID crops are resized to 256x128 without cropping
        'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'conv1.conv',
        'classifier': 'classifier',
        'paper_ids': 'arXiv:1905.00953',
        **kwargs,
    }


# The ImageNet classifiers (the ``imagenet`` tags) were trained and are scored the ImageNet way (ICCV 2019,
# Sec. 4.4): random 224x224 crops of 256x256 images, single 224x224 centre crop of the 256x256-resized image
# at test. timm's 'squash' crop mode does exactly that: resize to input_size / crop_pct (aspect not kept),
# then the centre crop.
IMAGENET_CLASSIFIER_CFG = dict(input_size=(3, 224, 224), pool_size=(14, 14), crop_pct=0.875, crop_mode='squash',
                               interpolation='bilinear')


def _manifest_cfgs() -> Dict[str, Dict[str, Any]]:
    # One tag per checkpoint of osnet_zoo/weights/weights_manifest.json, the default tag of each architecture
    # first (timm makes the first tag with weights the default).
    cfgs = pretrained_cfgs(_cfg, load_manifest(PACKAGED_MANIFEST))
    for name, cfg in cfgs.items():
        if name.endswith('.imagenet'):
            cfg.update(IMAGENET_CLASSIFIER_CFG)
    return cfgs


default_cfgs = generate_default_cfgs(_manifest_cfgs())


@register_model
def osnet_x1_0(pretrained: bool = False, **kwargs: Any) -> OSNet:
    """OSNet, width 1.0 (2.2 M params, 978.9 M mult-adds at 256x128)."""
    return _create_osnet('osnet_x1_0', pretrained, **kwargs)


@register_model
def osnet_x0_75(pretrained: bool = False, **kwargs: Any) -> OSNet:
    """OSNet, width 0.75 (1.3 M params)."""
    return _create_osnet('osnet_x0_75', pretrained, **kwargs)


@register_model
def osnet_x0_5(pretrained: bool = False, **kwargs: Any) -> OSNet:
    """OSNet, width 0.5 (0.6 M params)."""
    return _create_osnet('osnet_x0_5', pretrained, **kwargs)


@register_model
def osnet_x0_25(pretrained: bool = False, **kwargs: Any) -> OSNet:
    """OSNet, width 0.25 (0.2 M params)."""
    return _create_osnet('osnet_x0_25', pretrained, **kwargs)


@register_model
def osnet_ibn_x1_0(pretrained: bool = False, **kwargs: Any) -> OSNet:
    """OSNet-IBN: IN in conv1 and after the residual add of both conv2 blocks."""
    return _create_osnet('osnet_ibn_x1_0', pretrained, **kwargs)


@register_model
def osnet_ain_x1_0(pretrained: bool = False, **kwargs: Any) -> OSNet:
    """OSNet-AIN (searched IN placement), width 1.0."""
    return _create_osnet('osnet_ain_x1_0', pretrained, **kwargs)


@register_model
def osnet_ain_x0_75(pretrained: bool = False, **kwargs: Any) -> OSNet:
    """OSNet-AIN, width 0.75."""
    return _create_osnet('osnet_ain_x0_75', pretrained, **kwargs)


@register_model
def osnet_ain_x0_5(pretrained: bool = False, **kwargs: Any) -> OSNet:
    """OSNet-AIN, width 0.5."""
    return _create_osnet('osnet_ain_x0_5', pretrained, **kwargs)


@register_model
def osnet_ain_x0_25(pretrained: bool = False, **kwargs: Any) -> OSNet:
    """OSNet-AIN, width 0.25."""
    return _create_osnet('osnet_ain_x0_25', pretrained, **kwargs)
