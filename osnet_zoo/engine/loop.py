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
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.nn.utils import get_total_norm
from tqdm import tqdm

from osnet_zoo import distributed as du
from osnet_zoo.data import IMAGENET_MEAN, IMAGENET_STD, device_batches
from osnet_zoo.precision import autocast_dtype

from .checkpoint import divergence_message, seed_everything
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


def _first_non_finite(named: Iterable[Tuple[str, Optional[torch.Tensor]]]) -> Optional[str]:
    """The name of the first tensor of ``named`` holding NaN or inf (None: all finite or absent)."""
    return next((name.removeprefix('module.') for name, t in named
                 if t is not None and not bool(torch.isfinite(t).all())), None)


def _all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether every value of ``tensors`` is finite: one fused max-norm (NaN and inf propagate into it)."""
    return not tensors or bool(torch.isfinite(get_total_norm(tensors, float('inf'))))


def _check_step(model: nn.Module, loss: float, on_diverged: Callable[[str], str]) -> None:
    """After an optimiser step: the weights are finite, else FloatingPointError saying whether the gradients
    (a finite loss with NaN/inf gradients) or the step itself (finite gradients: the learning rate or the
    weight decay overflowed) made them NaN/inf. A step the fp16 scaler skipped leaves the weights finite."""
    params = [p for p in model.parameters() if p.requires_grad]
    if _all_finite([p.detach() for p in params]):
        return
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grad = _first_non_finite((n, p.grad) for n, p in named)
    if grad is not None:
        what = f'the gradients became NaN/inf (e.g. {grad}) at a finite loss ({loss:.4g})'
    else:
        what = (f'the weights became NaN/inf (e.g. {_first_non_finite(named)}) in the optimiser step, with a finite '
                f'loss ({loss:.4g}) and finite gradients (the learning rate or weight decay overflowed)')
    raise FloatingPointError(on_diverged(what))


def _eval_outputs_finite(model: nn.Module, images: torch.Tensor) -> bool:
    """Whether ``model`` in eval mode (running BN statistics, as it is tested and saved) gives finite outputs
    on ``images``, in fp32. The model is left as it was found: every module's plain attributes (its train / eval
    mode, what a forward keeps, such as a SuperNet's last architecture draw) are put back, no random state used."""
    model = getattr(model, 'module', model)  # DDP: its module (no collective in an eval forward)
    model = getattr(model, '_orig_mod', model)  # torch.compile: the eager module (no recompilation)
    saved = [(m, dict(m.__dict__)) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]), torch.autocast(images.device.type, enabled=False):
            outputs = model(images.float())
    finally:
        for m, attributes in saved:
            m.__dict__.clear()
            m.__dict__.update(attributes)
    stack, tensors = [outputs], []
    while stack:  # a tensor, or tuples / lists / dicts of them (embedding and logits, each network's)
        o = stack.pop()
        if torch.is_tensor(o):
            tensors.append(o.detach())
        elif isinstance(o, (tuple, list)):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
    return _all_finite(tensors)


def _check_epoch_end(model: nn.Module, images: Optional[torch.Tensor], loss: float, device: torch.device,
                     on_diverged: Callable[[str], str]) -> None:
    """At the end of an epoch the model must also work in eval mode: with a finite training loss its weights
    can still have grown so large that the test-time forward (running statistics instead of the batch's)
    overflows. Checked on the epoch's last batch, agreed over ranks; FloatingPointError if not."""
    if images is None:
        return
    broken = du.reduce_mean(0.0 if _eval_outputs_finite(model, images) else 1.0, device) > 0
    if broken:
        state = [v for v in model.state_dict().values() if v.is_floating_point() and v.numel()]
        largest = max((float(v.detach().abs().max()) for v in state), default=0.0)
        raise FloatingPointError(on_diverged(
            f'the model\'s outputs in eval mode (as it is tested and saved) became NaN/inf on the last batch while '
            f'the training loss stayed finite ({loss:.4g}): its weights or BatchNorm running statistics grew too '
            f'large (largest magnitude {largest:.3g})'))


def _step(model: nn.Module, criterion: Callable[..., Any], optimizer: torch.optim.Optimizer, images: torch.Tensor,
          targets: torch.Tensor, scaler: Optional[torch.amp.GradScaler], amp_dtype: Optional[torch.dtype],
          draws: int, on_diverged: Callable[[str], str]) -> Tuple[Losses, Dict[str, float]]:
    """One optimisation step over ``draws`` forward/backward passes (gradients averaged); the last draw's
    losses and the parts' means over the draws. A non-finite loss, or weights made NaN/inf by the step,
    raise FloatingPointError with ``on_diverged(what went non-finite)``."""
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
                raise FloatingPointError(on_diverged(f'the loss became {total.item()}'))
            (scaler.scale(total) if scaler is not None else total).backward()
        for name, value in losses.parts.items():
            sums[name] = sums.get(name, 0.0) + value.item() / draws
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    _check_step(model, sums['loss'] if 'loss' in sums else float(losses.total.detach()), on_diverged)
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
    A diverged run raises ``FloatingPointError`` with one line (:func:`divergence_message`): the epoch and step,
    what went non-finite (the loss; the gradients or the weights after a step; the eval-mode outputs at the
    epoch's end) and whether ``checkpoint`` (the run's, of the epochs before; never overwritten by a diverged
    model) is intact.
    """
    amp_dtype = autocast_dtype(precision)
    batches, steps = device_batches(loader, device, channels_last, max_steps, mean, std, target)
    bar = tqdm(batches, total=steps, desc=f'{desc} {epoch + 1}/{epochs}', leave=False, dynamic_ncols=True,
               disable=quiet or not du.is_main_process())
    sums: Dict[str, float] = dict(loss=0.0)
    right, seen, step = 0.0, 0, 0
    for step, (images, targets) in enumerate(bar):
        losses, parts = _step(model, criterion, optimizer, images, targets, scaler, amp_dtype, draws,
                              lambda what: divergence_message(what, epoch, step, checkpoint, desc))
        for name, value in parts.items():
            sums[name] = sums.get(name, 0.0) + value
        with torch.no_grad():
            right += correct(losses.logits, targets)
        seen += len(targets)
        bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.3f}", acc=f'{right / seen:.3f}')
    n_steps = max(min(steps, step + 1), 1)
    _check_epoch_end(model, images if seen else None, sums['loss'] / n_steps, device,
                     lambda what: divergence_message(what, epoch, None, checkpoint, desc))
    stats = {name: du.reduce_mean(value / n_steps, device) for name, value in sums.items()}
    stats['acc'] = du.reduce_mean(right / max(seen, 1), device)
    return stats
