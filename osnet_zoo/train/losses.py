"""Training losses: label-smoothed cross-entropy, batch-hard triplet, deep mutual learning, the entropy
maximisation regulariser (re-ID), and the weighted multi-label loss (attributes)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['CrossEntropyLabelSmooth', 'HardTripletLoss', 'mutual_learning_loss', 'prediction_entropy',
           'WeightedMultiLabelLoss']


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy against targets smoothed by ``epsilon`` (Szegedy et al.; ε = 0.1 in the OSNet papers)."""

    def __init__(self, epsilon: float = 0.1):
        super().__init__()
        self.epsilon = epsilon

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) and labels (B,) -> the mean loss, a float32 scalar."""
        # computed in fp32: under autocast the log-softmax over many identities loses precision in bf16
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.epsilon)


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
