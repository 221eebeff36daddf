"""The search space of the OSNet-AIN paper (section 3.3, Fig. 5) as a supernet of separate candidate blocks.

Each of the six omni-scale positions (conv2 x2, conv3 x2, conv4 x2) is a :class:`SearchBlock` holding four
complete :class:`OmniScaleBlock` s, one per IN placement, each with its own parameters (no convolution,
norm or gate is shared between candidates):

    ``plain``      conv3 output -> BN,  residual add, ReLU
    ``in_in``      conv3 output -> IN,  residual add, ReLU
    ``in_out``     conv3 output -> BN,  residual add, IN, ReLU
    ``in_in_out``  conv3 output -> IN,  residual add, IN, ReLU

(``osnet_zoo.models.osnet.BLOCK_NORMS``). A position's output is eq. (5), ``y = sum_w alpha_w * w(x)``, with
``alpha`` drawn every step by eq. (8):

    ``alpha = softmax((log pi + z) / lambda)``,  ``z ~ Gumbel(0, 1)``,

where ``pi`` are non-negative weights, ``pi = relu(w)`` with ``w`` a learnable (6, 4) tensor initialised to
ones (so ``log pi`` is ``log(relu(w) + EPS)``, finite where relu clips a weight to zero). The derived child
takes, per position, the candidate with the largest weight, and inherits that candidate's weights as they are
(:func:`child_state_dict`).

Two modes:

* ``'all'``: every candidate is computed and mixed with the soft ``alpha`` (eq. 5 and 8, as in the paper).
* ``'sampled'``: a memory option, not the paper's: one candidate per position is drawn (the argmax of the same
  eq. (8) sample) and only it is computed; its output is scaled by the straight-through one-hot value, so
  ``w`` still gets a gradient (through the soft sample), as in hard Gumbel-softmax.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from osnet_zoo.models.osnet import BLOCK_NORMS, OmniScaleBlock, OSNet, osnet_arch

__all__ = ['CANDIDATES', 'SEARCH_MODES', 'EPS', 'SearchBlock', 'SuperNet', 'temperature_at', 'gumbel_noise',
           'eq8_alphas', 'sample_alphas', 'child_state_dict']

CANDIDATES = BLOCK_NORMS  # ('plain', 'in_in', 'in_out', 'in_in_out')
SEARCH_MODES = ('all', 'sampled')
EPS = 1e-12  # log(pi + EPS): a weight clipped to zero by relu gives a very small, finite log-probability


def temperature_at(epoch: int, initial: float = 10.0, halve_every: int = 20, floor: float = 1.0) -> float:
    """Gumbel-softmax temperature at (0-based) ``epoch``: ``initial``, halved every ``halve_every`` epochs,
    never below ``floor`` (10, 5, 2.5, 1.25, 1, 1, ... in the paper)."""
    if halve_every < 1:
        raise ValueError(f'halve_every must be >= 1, got {halve_every}.')
    return max(floor, initial * 0.5 ** (epoch // halve_every))


def gumbel_noise(shape: Sequence[int], device: Optional[torch.device] = None) -> torch.Tensor:
    """``z = -log(-log(u))``, ``u ~ Uniform(0, 1)`` (section 3.3), float32, from torch's global generator."""
    u = torch.rand(tuple(shape), device=device).clamp_min(torch.finfo(torch.float32).tiny)  # rand may give 0
    return -torch.log(-torch.log(u))


def log_pi(weights: torch.Tensor) -> torch.Tensor:
    """``log pi`` of eq. (8) from the learnable weights: ``pi = relu(weights)`` is non-negative."""
    return torch.log(F.relu(weights.float()) + EPS)


def eq8_alphas(weights: torch.Tensor, z: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. (8) for a given Gumbel draw ``z``: ``softmax((log pi + z) / temperature)`` over the last dim."""
    return ((log_pi(weights) + z.float()) / temperature).softmax(-1)


def sample_alphas(weights: torch.Tensor, temperature: float, hard: bool = False,
                  z: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One draw of the mixing weights by eq. (8), one row per position (same shape as ``weights``).

    ``z`` is the Gumbel noise (drawn when not given). ``hard`` gives one-hot rows (the argmax of the soft
    sample) whose gradient is that of the soft sample (straight-through).
    """
    if z is None:
        z = gumbel_noise(weights.shape, weights.device)
    soft = eq8_alphas(weights, z, temperature)
    if not hard:
        return soft
    one_hot = F.one_hot(soft.detach().argmax(-1), soft.shape[-1]).to(soft.dtype)
    return one_hot - soft.detach() + soft


class SearchBlock(nn.Module):
    """One searchable position: four separate :class:`OmniScaleBlock` s (``candidates[k]`` has the IN
    placement ``CANDIDATES[k]``), mixed by ``alpha``.

    ``block_kwargs`` are those of ``OmniScaleBlock`` (streams, reductions, ablation design), the same for
    every candidate.
    """

    def __init__(self, in_chs: int, out_chs: int, **block_kwargs: Any):
        super().__init__()
        self.candidates = nn.ModuleList(
            [OmniScaleBlock(in_chs, out_chs, norm=c, **block_kwargs) for c in CANDIDATES])
        self.mode = 'all'
        self.alpha: Optional[torch.Tensor] = None  # (4,) weights for the next forward, set by SuperNet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chs, H, W) -> (B, out_chs, H, W): eq. (5) with ``alpha``. In the ``'sampled'`` mode, or
        when ``alpha`` is an exact one-hot without a gradient (the derived child at evaluation), only the chosen
        candidate is computed."""
        alpha = self.alpha
        if alpha is None:
            raise RuntimeError('SearchBlock.alpha is unset: run the block through SuperNet, which draws it.')
        if self.mode == 'sampled' or (not alpha.requires_grad and int((alpha != 0).sum()) == 1):
            k = int(alpha.detach().argmax())
            # alpha[k] is 1 in value; its straight-through gradient reaches every weight of the position
            return alpha[k].to(x.dtype) * self.candidates[k](x)
        out = 0
        for k, block in enumerate(self.candidates):
            out = out + alpha[k].to(x.dtype) * block(x)
        return out


class SuperNet(nn.Module):
    """OSNet whose six blocks are :class:`SearchBlock` s, with the architecture weights ``arch_weights``
    (``w``, 6 x 4, initialised to ones; ``pi = relu(w)``).

    In training mode every forward draws ``alpha`` by eq. (8) at ``temperature`` (one-hot straight-through in
    the ``'sampled'`` mode); in eval mode each position uses its argmax candidate (the derived child), unless
    ``fixed_alphas`` is set, which is then used in both modes. The last draw is kept in ``last_alphas``.
    ``forward_features`` / ``forward_head`` / ``get_classifier`` follow ``OSNet``, so the training and
    evaluation helpers take it as they are.
    """

    def __init__(self, width: float = 1.0, num_classes: int = 1000, conv1_in: bool = True, mode: str = 'all',
                 **osnet_kwargs: Any):
        super().__init__()
        if mode not in SEARCH_MODES:
            raise ValueError(f'Unknown search mode {mode!r}; expected one of {SEARCH_MODES}.')
        arch = osnet_arch(width, 'osnet', conv1_in=conv1_in, **osnet_kwargs)
        self.net = OSNet(num_classes=num_classes, **arch)
        a = self.net.arch
        block_kw = {k: a[k] for k in ('num_streams', 'bottleneck_reduction', 'gate_reduction', 'conv_type',
                                      'stream_depths', 'aggregation', 'gate_type')}
        self.positions: List[str] = []
        self.blocks: List[SearchBlock] = []  # plain list: the modules are registered inside self.net
        for s, stage in enumerate(('conv2', 'conv3', 'conv4')):
            seq = getattr(self.net, stage)
            for i in range(len(seq)):
                in_chs = a['channels'][s] if i == 0 else a['channels'][s + 1]
                seq[i] = SearchBlock(in_chs, a['channels'][s + 1], **block_kw)
                self.blocks.append(seq[i])
                self.positions.append(f'{stage}.{i}')
        self.net._init_weights()  # every candidate gets OSNet's initialisation, each its own random draw
        self.arch_weights = nn.Parameter(torch.ones(len(self.blocks), len(CANDIDATES)))
        self.temperature = 10.0
        self.fixed_alphas: Optional[torch.Tensor] = None
        self.last_alphas: Optional[torch.Tensor] = None
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
        """Network weights (everything but the architecture weights)."""
        return list(self.net.parameters())

    def arch_parameters(self) -> List[nn.Parameter]:
        """The architecture weights ``w`` (``pi = relu(w)``)."""
        return [self.arch_weights]

    @property
    def pi(self) -> torch.Tensor:
        """The paper's non-negative architecture weights ``pi = relu(w)``, (6, 4), detached."""
        return F.relu(self.arch_weights.detach().float())

    def probabilities(self) -> torch.Tensor:
        """The categorical distribution that eq. (8) relaxes, ``pi / sum(pi)`` per position (6, 4): the
        probability that a position's Gumbel draw picks each candidate as the temperature goes to 0."""
        return log_pi(self.arch_weights.detach()).softmax(-1)

    def choices(self) -> List[str]:
        """The derived child (section 3.3, "Search Outcome"): the candidate with the largest weight per
        position, as block-norm names (the argmax of ``w``, which is that of ``pi`` unless relu clips a
        whole row to zero, where ``w`` still breaks the tie)."""
        return [CANDIDATES[int(k)] for k in self.arch_weights.detach().argmax(-1)]

    def _draw(self) -> torch.Tensor:
        if self.fixed_alphas is not None:
            return self.fixed_alphas.to(self.arch_weights.device)
        if not self.training:
            return F.one_hot(self.arch_weights.detach().argmax(-1), len(CANDIDATES)).float()
        return sample_alphas(self.arch_weights, self.temperature, hard=self._mode == 'sampled')

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Draw ``alpha`` for every block, then images (B, 3, H, W) -> the conv5 map
        (B, C, H/16, W/16)."""
        alphas = self._draw()
        self.last_alphas = alphas.detach()
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
    """The supernet's weights for the plain ``OSNet`` with ``block_norms=choices``: each position's chosen
    candidate, renamed from ``<position>.candidates.<k>.`` to ``<position>.``, its tensors as they are; the
    other candidates are dropped. Everything outside the positions is copied unchanged."""
    if len(choices) != len(supernet.positions) or any(c not in CANDIDATES for c in choices):
        raise ValueError(f'choices must name one of {CANDIDATES} for each of the {len(supernet.positions)} '
                         f'positions, got {list(choices)}.')
    keep = {f'{p}.candidates.{CANDIDATES.index(c)}.': f'{p}.' for p, c in zip(supernet.positions, choices)}
    positions = tuple(f'{p}.candidates.' for p in supernet.positions)
    out: Dict[str, torch.Tensor] = {}
    for key, value in supernet.net.state_dict().items():
        if not key.startswith(positions):
            out[key] = value
            continue
        prefix = next((k for k in keep if key.startswith(k)), None)
        if prefix is not None:
            out[keep[prefix] + key[len(prefix):]] = value
    return out
