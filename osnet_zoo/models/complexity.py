"""Model size and cost: parameters and mult-adds (Table 1 / Table 6 of the OSNet paper)."""
from __future__ import annotations

from typing import Tuple

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['count_params', 'count_mult_adds']


def count_params(model: torch.nn.Module, exclude_classifier: bool = True) -> int:
    """Number of parameters, by default without the classifier (as the papers count them)."""
    return sum(p.numel() for n, p in model.named_parameters()
               if not (exclude_classifier and n.startswith('classifier.')))


@torch.no_grad()
def count_mult_adds(model: torch.nn.Module, input_size: Tuple[int, int] = (256, 128)) -> int:
    """Mult-adds of one image through the embedding (eval mode, no classifier).

    FlopCounterMode counts a multiply-add as two FLOPs, so the papers' mult-adds are half its total.
    """
    was_training = model.training
    model.eval()
    head = model.get_classifier() if hasattr(model, 'get_classifier') else None
    x = torch.zeros(1, getattr(model.conv1.conv, 'in_channels', 3), *input_size)
    counter = FlopCounterMode(display=False)
    with counter:
        feats = model.forward_head(model.forward_features(x), pre_logits=True) if head is not None else model(x)
    del feats
    model.train(was_training)
    return counter.get_total_flops() // 2
