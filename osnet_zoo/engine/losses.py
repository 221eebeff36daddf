"""Training losses: batch-hard triplet, deep mutual learning (and :class:`MutualLearning`, its two networks
as one module), the entropy maximisation regulariser, :class:`ReIDLoss` (the criterion of the training loop
that combines them with label-smoothed cross-entropy), and the weighted multi-label loss (attributes)."""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['HardTripletLoss', 'mutual_learning_loss', 'prediction_entropy', 'MutualLearning', 'Losses', 'ReIDLoss',
           'WeightedMultiLabelLoss']


class HardTripletLoss(nn.Module):
    """Triplet loss with batch-hard mining (Hermans et al. 2017): for each anchor, its farthest positive
    and nearest negative in the batch, euclidean distance, margin ranking.

    Needs batches with several images per identity (an identity sampler, P x K).
    """

    def __init__(self, margin: float = 0.3):
        super().__init__()
        self.margin = margin

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, D) and identity labels (B,) -> the mean hinge loss over the anchors with a
        positive and a negative in the batch, a float32 scalar; a ValueError when there are none."""
        x = features.float()
        dist = torch.cdist(x, x).clamp_min(1e-12)
        same = targets[:, None] == targets[None, :]
        hardest_pos = dist.masked_fill(~same, float('-inf')).amax(1)
        hardest_neg = dist.masked_fill(same, float('inf')).amin(1)
        valid = torch.isfinite(hardest_neg) & (same.sum(1) > 1)
        if not bool(valid.any()):
            raise ValueError(
                'HardTripletLoss needs every batch to hold at least two identities with two or more images each; '
                'use the identity sampler (num_instances >= 2).')
        return F.relu(hardest_pos[valid] - hardest_neg[valid] + self.margin).mean()


def mutual_learning_loss(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Deep mutual learning (Zhang et al. CVPR'18): KL(p_b || p_a) for network a, with b's prediction held
    fixed as the target. Call it twice with the arguments swapped for the two networks."""
    log_pa = F.log_softmax(logits_a.float(), dim=1)
    pb = F.softmax(logits_b.detach().float(), dim=1)
    return F.kl_div(log_pa, pb, reduction='batchmean')


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """The mean entropy -sum_c p_c log p_c of the softmax predictions (B, C), a float32 scalar.

    The OSNet paper's supplementary (Table 12c) trains with L_ID - lambda_e * L_Entropy: subtracting it
    (``--entropy-weight lambda_e``) penalises confident predictions."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return -(log_p.exp() * log_p).sum(1).mean()


class MutualLearning(nn.Module):
    """Deep mutual learning's networks as one module (one optimiser, one scheduler, one state dict): its
    forward returns the list of every network's output; :attr:`nets` holds the networks."""

    def __init__(self, nets: Sequence[nn.Module]):
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Images -> ``[net(x) for net in nets]``."""
        return [net(x) for net in self.nets]

    @staticmethod
    def first_network(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The first network's entries of a :class:`MutualLearning` state dict; any other state dict as is."""
        prefix = 'nets.0.'
        first = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        return first or dict(state_dict)


class Losses(NamedTuple):
    """What :class:`ReIDLoss` returns: ``total`` to back-propagate, the logged ``parts`` (detached; ``loss``
    is the total per network) and the ``logits`` the training accuracy is measured on."""
    total: torch.Tensor
    parts: Dict[str, torch.Tensor]
    logits: torch.Tensor


Output = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


class ReIDLoss(nn.Module):
    """Label-smoothed cross-entropy (``nn.CrossEntropyLoss(label_smoothing=...)``: eps / num_classes spread
    over every class, as torchreid's; computed in fp32, since under autocast a log-softmax over many
    identities loses precision in bf16), minus ``entropy_weight`` x the entropy of the predictions, plus
    ``triplet_weight`` x the batch-hard triplet loss on the embeddings, plus mutual learning between the
    networks of a :class:`MutualLearning` output (a list of two).

    An output is the logits, or ``(embedding, logits)`` (the triplet loss needs the embedding). Category
    recognition uses it too (its outputs are logits)."""

    def __init__(self, label_smooth: float = 0.1, triplet_weight: float = 0.0, margin: float = 0.3,
                 entropy_weight: float = 0.0):
        super().__init__()
        self.ce = nn.CrossEntropyLoss(label_smoothing=label_smooth)
        self.triplet = HardTripletLoss(margin) if triplet_weight > 0 else None
        self.triplet_weight = triplet_weight
        self.entropy_weight = entropy_weight

    def forward(self, outputs: Union[Output, List[Output]], targets: torch.Tensor) -> Losses:
        """The losses of one network's output, or of every network of a mutual-learning list."""
        per_net = outputs if isinstance(outputs, list) else [outputs]
        logits = [out[1] if isinstance(out, tuple) else out for out in per_net]
        n = len(per_net)
        parts: Dict[str, torch.Tensor] = {}

        def log(name: str, value: torch.Tensor) -> None:
            parts[name] = parts.get(name, 0) + value.detach() / n

        losses = []
        for i, out in enumerate(per_net):
            loss_ce = self.ce(logits[i].float(), targets)
            loss = loss_ce
            if self.entropy_weight:  # entropy maximisation (ICCV 2019 supplementary, Table 12c)
                entropy = prediction_entropy(logits[i])
                loss = loss - self.entropy_weight * entropy
                log('loss_entropy', entropy)
            log('loss_ce', loss_ce)
            if self.triplet is not None:
                loss_tri = self.triplet(out[0], targets)
                log('loss_triplet', loss_tri)
                loss = loss + self.triplet_weight * loss_tri
            if n == 2:
                loss_dml = mutual_learning_loss(logits[i], logits[1 - i])
                log('loss_dml', loss_dml)
                loss = loss + loss_dml
            losses.append(loss)
        total = sum(losses)
        parts['loss'] = total.detach() / n
        return Losses(total, parts, logits[0])


class WeightedMultiLabelLoss(nn.Module):
    """Weighted sigmoid cross-entropy over attributes (DeepMAR: Li, Chen and Huang, "Multi-attribute learning
    for pedestrian attribute recognition in surveillance scenarios", ACPR 2015), the loss the OSNet paper uses
    on PA-100K (Sec. 4.2).

    Attribute l has weight w_l = exp(-p_l / sigma^2), p_l its fraction of positive training images
    (sigma = 1, as DeepMAR): rare attributes weigh more. The loss is the mean of
    w_l * BCE(logit, label) over images and attributes (torchreid's attribute recognition, on which the
    paper's code is based, averages over both).
    """

    def __init__(self, positive_ratio: torch.Tensor, sigma: float = 1.0):
        super().__init__()
        ratio = torch.as_tensor(positive_ratio, dtype=torch.float32)
        if ratio.ndim != 1 or bool(((ratio < 0) | (ratio > 1)).any()):
            raise ValueError('WeightedMultiLabelLoss: positive_ratio must be one fraction in [0, 1] per attribute')
        self.register_buffer('weight', torch.exp(-ratio / sigma ** 2))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Logits and 0/1 targets (B, A) -> the mean weighted loss, a float32 scalar."""
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float(),
                                                  weight=self.weight.expand_as(logits))
