"""The search space of the OSNet-AIN paper (section 3.3) as a weight-sharing supernet.

Each of the six omni-scale blocks (conv2 x2, conv3 x2, conv4 x2) is a :class:`SearchBlock`: one set of
convolution weights and four candidates that differ only in where instance norm sits,

    ``plain``      conv3 output -> BN,  residual add, ReLU
    ``in_in``      conv3 output -> IN,  residual add, ReLU
    ``in_out``     conv3 output -> BN,  residual add, IN, ReLU
    ``in_in_out``  conv3 output -> IN,  residual add, IN, ReLU

(``osnet_zoo.models.osnet.BLOCK_NORMS``). The candidates share the IN modules too: the IN on the conv3
output is the same module in ``in_in`` and ``in_in_out``, the output IN the same in ``in_out`` and
``in_in_out``. So a candidate's parameters have exactly the names and shapes of the corresponding plain
``OmniScaleBlock`` (``conv3.bn`` BN or IN, ``norm_out``), which is what makes the derived child loadable.

A block's output is ``sum_k alpha_k * candidate_k(x)``; ``alpha`` is drawn per step from a Gumbel-softmax
over the position's architecture parameters ``pi`` (eq. 7-8). Two modes:

* ``'all'`` (faithful): every candidate is computed and mixed with the soft ``alpha``.
* ``'sampled'`` (memory-light): one candidate is drawn (hard Gumbel-softmax) and only it is computed;
  its output is scaled by the straight-through one-hot value, so ``pi`` still gets a gradient.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from osnet_zoo.models.osnet import BLOCK_NORMS, OmniScaleBlock, OSNet, osnet_arch

__all__ = ['CANDIDATES', 'SEARCH_MODES', 'SearchBlock', 'SuperNet', 'temperature_at', 'sample_alphas']

CANDIDATES = BLOCK_NORMS  # ('plain', 'in_in', 'in_out', 'in_in_out')
SEARCH_MODES = ('all', 'sampled')
_IN_IN = (False, True, False, True)  # candidate k normalises the conv3 output with IN
_IN_OUT = (False, False, True, True)  # candidate k applies IN after the residual add


def temperature_at(epoch: int, initial: float = 10.0, halve_every: int = 20, floor: float = 1.0) -> float:
    """Gumbel-softmax temperature at (0-based) ``epoch``: ``initial``, halved every ``halve_every`` epochs,
    never below ``floor`` (10, 5, 2.5, 1.25, 1, 1, ... in the paper)."""
    if halve_every < 1:
        raise ValueError(f'halve_every must be >= 1, got {halve_every}.')
    return max(floor, initial * 0.5 ** (epoch // halve_every))


def sample_alphas(pi: torch.Tensor, temperature: float, hard: bool = False) -> torch.Tensor:
    """One Gumbel-softmax draw of the mixing weights, one row per position (same shape as ``pi``).

    ``hard`` gives one-hot rows whose gradient is that of the soft sample (straight-through).
    """
    return F.gumbel_softmax(pi.float(), tau=temperature, hard=hard, dim=-1)


class SearchBlock(nn.Module):
    """An omni-scale block whose IN placement is one of four candidates mixed by ``alpha``.

    Built from a plain :class:`OmniScaleBlock`, whose modules it keeps under the same names (``conv1``,
    ``streams``, ``gate``, ``conv3``, ``downsample``); it adds ``in_in`` (IN on the conv3 output) and
    ``norm_out`` (IN after the residual add).
    """

    def __init__(self, block: OmniScaleBlock):
        super().__init__()
        if block.norm != 'plain':
            raise ValueError(f'SearchBlock wraps a plain OmniScaleBlock, got norm={block.norm!r}.')
        out_chs = block.conv3.conv.out_channels
        self.conv1, self.streams, self.gate = block.conv1, block.streams, block.gate
        self.conv3, self.downsample, self.act = block.conv3, block.downsample, block.act
        self.in_in = nn.InstanceNorm2d(out_chs, affine=True)
        self.norm_out = nn.InstanceNorm2d(out_chs, affine=True)
        self.mode = 'all'
        self.alpha: Optional[torch.Tensor] = None  # (4,) weights for the next forward, set by SuperNet

    def _trunk(self, x: torch.Tensor):
        shortcut = self.downsample(x)
        x = self.conv1(x)
        y = None
        for stream in self.streams:
            g = self.gate(stream(x))
            y = g if y is None else y + g
        return self.conv3.conv(y), shortcut

    def candidate(self, k: int, z: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """Candidate ``k``'s output from the conv3 output ``z`` (before its norm) and the shortcut."""
        y = (self.in_in(z) if _IN_IN[k] else self.conv3.bn(z)) + shortcut
        return self.act(self.norm_out(y) if _IN_OUT[k] else y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chs, H, W) -> (B, out_chs, H, W): the candidates mixed by ``alpha`` (in the
        ``'sampled'`` mode only the drawn one is computed)."""
        alpha = self.alpha
        if alpha is None:
            raise RuntimeError('SearchBlock.alpha is unset: run the block through SuperNet, which draws it.')
        z, shortcut = self._trunk(x)
        alpha = alpha.to(z.dtype)
        if self.mode == 'sampled':
            k = int(alpha.detach().argmax())
            # alpha[k] is 1 in value; its straight-through gradient reaches every pi of the position
            return alpha[k] * self.candidate(k, z, shortcut)
        # faithful mode: BN / IN of z and the two sums are shared between candidates
        bn_z, in_z = self.conv3.bn(z), self.in_in(z)
        pre = (bn_z + shortcut, in_z + shortcut)
        out = 0
        for k in range(len(CANDIDATES)):
            y = pre[int(_IN_IN[k])]
            out = out + alpha[k] * F.relu(self.norm_out(y) if _IN_OUT[k] else y)
        return out


class SuperNet(nn.Module):
    """OSNet whose six blocks are :class:`SearchBlock` s, with architecture parameters ``pi`` (6 x 4).

    In training mode every forward draws ``alpha`` by Gumbel-softmax at ``temperature`` (``hard`` in the
    ``'sampled'`` mode); in eval mode each position uses its argmax candidate (the derived child), unless
    ``fixed_alphas`` is set, which is then used in both modes. ``forward_features`` / ``forward_head`` /
    ``get_classifier`` follow ``OSNet``, so the training and evaluation helpers take it as they are.
    """

    def __init__(self, width: float = 1.0, num_classes: int = 1000, conv1_in: bool = True, mode: str = 'all',
                 **osnet_kwargs: Any):
        super().__init__()
        if mode not in SEARCH_MODES:
            raise ValueError(f'Unknown search mode {mode!r}; expected one of {SEARCH_MODES}.')
        arch = osnet_arch(width, 'osnet', conv1_in=conv1_in, **osnet_kwargs)
        self.net = OSNet(num_classes=num_classes, **arch)
        self.positions: List[str] = []
        self.blocks = []  # plain list: the modules are registered inside self.net
        for stage in ('conv2', 'conv3', 'conv4'):
            seq = getattr(self.net, stage)
            for i in range(len(seq)):
                seq[i] = SearchBlock(seq[i])
                self.blocks.append(seq[i])
                self.positions.append(f'{stage}.{i}')
        self.net._init_weights()  # the added IN modules get the same initialisation as the rest
        self.pi = nn.Parameter(torch.zeros(len(self.blocks), len(CANDIDATES)))
        self.temperature = 10.0
        self.fixed_alphas: Optional[torch.Tensor] = None
        self.set_mode(mode)

    @property
    def mode(self) -> str:
        """The search mode, ``'all'`` or ``'sampled'`` (change it with :meth:`set_mode`)."""
        return self._mode

    def set_mode(self, mode: str) -> None:
        """Set the search mode of the supernet and of every block."""
        if mode not in SEARCH_MODES:
            raise ValueError(f'Unknown search mode {mode!r}; expected one of {SEARCH_MODES}.')
        self._mode = mode
        for b in self.blocks:
            b.mode = mode

    def weight_parameters(self) -> List[nn.Parameter]:
        """Network weights (everything but ``pi``)."""
        return list(self.net.parameters())

    def probabilities(self) -> torch.Tensor:
        """softmax(pi) per position, (6, 4)."""
        return self.pi.detach().float().softmax(-1)

    def choices(self) -> List[str]:
        """The derived child: argmax pi per position, as block-norm names."""
        return [CANDIDATES[int(k)] for k in self.pi.detach().argmax(-1)]

    def _draw(self) -> torch.Tensor:
        if self.fixed_alphas is not None:
            return self.fixed_alphas.to(self.pi.device)
        if not self.training:
            return F.one_hot(self.pi.detach().argmax(-1), len(CANDIDATES)).float()
        return sample_alphas(self.pi, self.temperature, hard=self._mode == 'sampled')

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Draw ``alpha`` for every block, then images (B, 3, H, W) -> the conv5 map
        (B, C, H/16, W/16)."""
        alphas = self._draw()
        for b, a in zip(self.blocks, alphas):
            b.alpha = a
        return self.net.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The conv5 map -> logits, or the embedding with ``pre_logits`` (``OSNet.forward_head``)."""
        return self.net.forward_head(x, pre_logits=pre_logits)

    def get_classifier(self) -> nn.Module:
        """The classifier of the wrapped OSNet."""
        return self.net.get_classifier()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> logits (B, num_classes), or the embedding when ``num_classes=0``."""
        return self.forward_head(self.forward_features(x))


def child_state_dict(supernet: SuperNet, choices: Sequence[str]) -> Dict[str, torch.Tensor]:
    """The supernet's weights renamed for the plain ``OSNet`` with ``block_norms=choices`` (inherit weights):
    a block choosing ``in_in`` takes ``in_in`` as its ``conv3.bn``; ``norm_out`` exists only where chosen."""
    out: Dict[str, torch.Tensor] = {}
    prefixes = {f'{p}.': c for p, c in zip(supernet.positions, choices)}
    for key, value in supernet.net.state_dict().items():
        block = next((p for p in prefixes if key.startswith(p)), None)
        if block is None:
            out[key] = value
            continue
        choice, rest = prefixes[block], key[len(block):]
        uses_in_in, uses_out = choice in ('in_in', 'in_in_out'), choice in ('in_out', 'in_in_out')
        if rest.startswith('in_in.'):
            if uses_in_in:
                out[block + 'conv3.bn.' + rest[len('in_in.'):]] = value
        elif rest.startswith('conv3.bn.'):
            if not uses_in_in:
                out[key] = value
        elif rest.startswith('norm_out.'):
            if uses_out:
                out[key] = value
        else:
            out[key] = value
    return out
