"""Optimisers and per-epoch learning-rate schedules of the recipes."""
from __future__ import annotations

import math
import warnings
from typing import Iterable, List, Optional

import torch
import torch.nn as nn

__all__ = ['OPTIMIZERS', 'SCHEDULERS', 'build_optimizer', 'build_scheduler']

OPTIMIZERS = ('sgd', 'adam', 'adamw')
SCHEDULERS = ('multistep', 'cosine', 'constant')


def build_optimizer(name: str, params: Iterable[nn.Parameter], lr: float, weight_decay: float,
                    momentum: float = 0.9, amsgrad: bool = True) -> torch.optim.Optimizer:
    """'sgd' (with ``momentum``), 'adam' or 'adamw' (AMSGrad with ``amsgrad``, as in the papers) over the
    parameters that require gradients."""
    params = [p for p in params if p.requires_grad]
    if name == 'sgd':
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=False)
    if name == 'adam':
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, amsgrad=amsgrad)
    if name == 'adamw':
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, amsgrad=amsgrad)
    raise ValueError(f'Unknown optimizer {name!r}; expected one of {OPTIMIZERS}.')


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, epochs: int, stepsize: Optional[List[int]] = None,
                    gamma: float = 0.1, start_epoch: int = 0) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule: 'multistep' (×gamma at ``stepsize`` epochs), 'cosine' (to 0 over ``epochs``), 'constant'.

    ``start_epoch`` > 0 fast-forwards it to that epoch from the groups' ``initial_lr`` (a resumed run whose
    learning rate or length changed rebuilds its schedule this way)."""
    if name == 'multistep':
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(stepsize or []), gamma=gamma)
    elif name == 'cosine':
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 0.5 * (1 + math.cos(math.pi * e / epochs)))
    elif name == 'constant':
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    else:
        raise ValueError(f'Unknown lr_scheduler {name!r}; expected one of {SCHEDULERS}.')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # "step() before optimizer.step()": intended here
        for _ in range(start_epoch):
            scheduler.step()
    return scheduler
