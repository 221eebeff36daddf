"""Pedestrian attribute metrics as defined for PA-100K (Li et al., "A richly annotated dataset for pedestrian
attribute recognition", arXiv:1603.07054, Sec. 4; used by HydraPlus-Net and the OSNet paper, Table 7).

Predictions are thresholded at 0.5 (probability). Label-based: mA, the mean over attributes of the average
of the true-positive rate and the true-negative rate. Instance-based, averaged over images: accuracy
|Y ∩ P| / |Y ∪ P|, precision |Y ∩ P| / |P|, recall |Y ∩ P| / |Y|; F1 = 2 Prec Rec / (Prec + Rec) of those
means. A ratio with an empty denominator (an image with no predicted, or no true, attribute; an attribute
with no positive or no negative test image) counts as 0, so it never inflates a figure.
"""
from __future__ import annotations

from typing import Dict

import torch

__all__ = ['attribute_metrics', 'ATTRIBUTE_METRICS']

ATTRIBUTE_METRICS = ('mA', 'accuracy', 'precision', 'recall', 'f1')


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(1), torch.zeros_like(num))


def attribute_metrics(probabilities: torch.Tensor, labels: torch.Tensor,
                      threshold: float = 0.5) -> Dict[str, object]:
    """``probabilities`` and 0/1 ``labels`` (N, A) -> mA, accuracy, precision, recall, f1 (fractions) and
    ``per_attribute_mA`` (A values)."""
    if probabilities.shape != labels.shape or probabilities.ndim != 2:
        raise ValueError(f'attribute_metrics: probabilities {tuple(probabilities.shape)} and labels '
                         f'{tuple(labels.shape)} must both be (images, attributes)')
    pred = (probabilities.double() >= threshold).double()
    gt = labels.double()
    pos, neg = gt.sum(0), (1 - gt).sum(0)
    tpr = _ratio((pred * gt).sum(0), pos)
    tnr = _ratio(((1 - pred) * (1 - gt)).sum(0), neg)
    per_attribute = (tpr + tnr) / 2
    inter = (pred * gt).sum(1)
    union = ((pred + gt) > 0).double().sum(1)
    accuracy = _ratio(inter, union).mean()
    precision = _ratio(inter, pred.sum(1)).mean()
    recall = _ratio(inter, gt.sum(1)).mean()
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else torch.zeros(())
    return dict(mA=float(per_attribute.mean()), accuracy=float(accuracy), precision=float(precision),
                recall=float(recall), f1=float(f1), per_attribute_mA=per_attribute.tolist())
