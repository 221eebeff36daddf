"""Category recognition metrics: top-k accuracy and error rate (CIFAR: Tables 8-9; ImageNet: Table 10)."""
from __future__ import annotations

from typing import Dict, Sequence

import torch

__all__ = ['topk_correct', 'classification_metrics']


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> Dict[int, int]:
    """How many of the (N,) ``labels`` are among the k highest of the (N, C) ``logits``, for each k
    (k larger than C counts every image)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == labels[:, None]
    return {k: int(hit[:, :k].any(1).sum()) for k in ks}


def classification_metrics(correct: Dict[int, int], total: int) -> Dict[str, float]:
    """top1, top5 (fractions) and error (1 - top1, the CIFAR tables' figure) from :func:`topk_correct` sums."""
    if total < 1:
        raise ValueError('classification_metrics: no images were scored')
    top1 = correct[1] / total
    return dict(top1=top1, top5=correct.get(5, correct[1]) / total, error=1.0 - top1, num_images=total)
