"""The one training loop of ``python -m osnet_zoo.train`` (re-ID, attributes, categories) and of the
architecture search.

:func:`train_one_epoch` runs an epoch of a model under a criterion (:class:`~osnet_zoo.engine.losses.ReIDLoss`,
or any loss returning a tensor) with one optimiser; :func:`start_epoch` seeds an epoch so that a resumed run
ends where an uninterrupted one does. The search adds only its architecture step: its temperature (set by the
caller per epoch) and ``draws`` Monte-Carlo samples of the architecture per batch.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from tqdm import tqdm

from osnet_zoo import distributed as du
from osnet_zoo.data import IMAGENET_MEAN, IMAGENET_STD, device_batches
from osnet_zoo.precision import autocast_dtype

from .checkpoint import seed_everything
from .losses import Losses

__all__ = ['start_epoch', 'train_one_epoch', 'top1_correct']


def start_epoch(seed: int, epoch: int, loader: Any) -> None:
    """Seed the epoch by (seed, epoch) (each sample's augmentation is seeded by (seed, epoch, position)):
    nothing depends on whether the run was interrupted or on the loader's worker processes."""
    seed_everything(seed * 1000 + epoch)
    loader.set_epoch(epoch)


def top1_correct(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """How many of the batch's predictions (argmax of the logits) are the target class."""
    return float((logits.argmax(1) == targets).sum())


def _nan_message(loss: torch.Tensor, epoch: int, step: int, checkpoint: Optional[Path], desc: str) -> str:
    on_disk = (f'the checkpoint of the last finished epoch ({checkpoint}) is intact; lower the learning rate '
               '(--lr) or disable fp16 and --resume' if checkpoint is not None and checkpoint.is_file() else
               'no checkpoint was written yet (none is saved before the first epoch ends); '
               'restart with a lower learning rate (--lr)')
    prefix = f'{desc}: l' if desc != 'epoch' else 'L'
    return f'{prefix}oss became {loss.item()} at epoch {epoch + 1}, step {step}: stopping. {on_disk}.'


def _step(model: nn.Module, criterion: Callable[..., Any], optimizer: torch.optim.Optimizer, images: torch.Tensor,
          targets: torch.Tensor, scaler: Optional[torch.amp.GradScaler], amp_dtype: Optional[torch.dtype],
          draws: int, on_nan: Callable[[torch.Tensor], str]) -> Tuple[Losses, Dict[str, float]]:
    """One optimisation step over ``draws`` forward/backward passes (gradients averaged); the last draw's
    losses and the parts' means over the draws."""
    ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    sums: Dict[str, float] = {}
    optimizer.zero_grad(set_to_none=True)
    for draw in range(draws):
        # under DDP the gradients are all-reduced once per batch, on its last draw
        with (model.no_sync() if ddp and draw < draws - 1 else nullcontext()):
            with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = model(images)
            losses = criterion(outputs, targets)  # in fp32, outside autocast
            if not isinstance(losses, Losses):  # a plain loss (attributes): the logits are the outputs
                losses = Losses(losses, {'loss': losses.detach()}, outputs)
            total = losses.total / draws if draws > 1 else losses.total
            if not torch.isfinite(total):
                raise FloatingPointError(on_nan(total))
            (scaler.scale(total) if scaler is not None else total).backward()
        for name, value in losses.parts.items():
            sums[name] = sums.get(name, 0.0) + value.item() / draws
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return losses, sums


def train_one_epoch(
        model: nn.Module, criterion: Callable[..., Any], optimizer: torch.optim.Optimizer, loader: Any,
        device: torch.device, epoch: int, epochs: int, *, scaler: Optional[torch.amp.GradScaler] = None,
        precision: str = 'fp32', channels_last: bool = False, max_steps: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, target: str = 'pid',
        correct: Callable[[torch.Tensor, torch.Tensor], float] = top1_correct, draws: int = 1,
        checkpoint: Optional[Path] = None, desc: str = 'epoch', quiet: bool = False) -> Dict[str, float]:
    """One epoch over ``loader`` (batches of uint8 ``'image'`` and a ``target`` entry, normalised on
    ``device`` with ``mean`` / ``std``; at most ``max_steps`` batches, 0: all); returns the epoch's mean
    losses (``criterion``'s parts; ``loss`` the total) and accuracy (``correct`` counts a batch's right
    predictions) over all ranks.

    ``model`` may be wrapped in DDP; ``draws`` > 1 runs that many forward/backward passes per batch with the
    gradients averaged (a stochastic model: the supernet's architecture samples; memory stays that of one).
    A non-finite loss raises ``FloatingPointError`` saying whether ``checkpoint`` (the run's) is intact.
    """
    amp_dtype = autocast_dtype(precision)
    batches, steps = device_batches(loader, device, channels_last, max_steps, mean, std, target)
    bar = tqdm(batches, total=steps, desc=f'{desc} {epoch + 1}/{epochs}', leave=False, dynamic_ncols=True,
               disable=quiet or not du.is_main_process())
    sums: Dict[str, float] = dict(loss=0.0)
    right, seen, step = 0.0, 0, 0
    for step, (images, targets) in enumerate(bar):
        losses, parts = _step(model, criterion, optimizer, images, targets, scaler, amp_dtype, draws,
                              lambda loss: _nan_message(loss, epoch, step, checkpoint, desc))
        for name, value in parts.items():
            sums[name] = sums.get(name, 0.0) + value
        with torch.no_grad():
            right += correct(losses.logits, targets)
        seen += len(targets)
        bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.3f}", acc=f'{right / seen:.3f}')
    n_steps = max(min(steps, step + 1), 1)
    stats = {name: du.reduce_mean(value / n_steps, device) for name, value in sums.items()}
    stats['acc'] = du.reduce_mean(right / max(seen, 1), device)
    return stats
