"""Training on the labelled tasks of the OSNet paper (ICCV 2019): person attributes (PA-100K, Sec. 4.2) and
category recognition (CIFAR-10/100, Sec. 4.3; ImageNet, Sec. 4.4).

``python -m osnet_zoo.train`` hands a run over here when its source is one of ``LABELLED_DATASETS``; the
recipes ``attributes_pa100k``, ``cifar10``, ``cifar100`` and ``imagenet`` are such runs. The run folder is
the re-ID one (config.json, checkpoint.pth + metrics.jsonl each epoch, ``--resume``, curves.png,
results.json, final/), the head is the model's classifier with one output per class or attribute, and
results.json holds the task's metrics on the test split:

* attributes: mA, accuracy, precision, recall, f1 (fractions; instance-based as defined for PA-100K) and
  the per-attribute mA, from a sigmoid on each output, trained with :class:`WeightedMultiLabelLoss`;
* classification: top1, top5 and error (1 - top1), single crop, trained with (label-smoothed)
  cross-entropy.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn as nn
from tqdm import tqdm

from .. import distributed as du
from ..data import normalize_batch
from ..data.datasets import LABELLED_DATASETS, LabelledDataset, LabelledSplit
from ..data.labelled import CROP_PCT, build_labelled_train_loader
from ..data.loader import data_root
from ..evaluation import autocast_dtype, results_document
from ..evaluation_labelled import score_labelled
from ..files import atomic_write_json
from .checkpoint import RunFolder, rng_state, seed_everything, set_rng_state
from .curves import plot_curves
from .final import save_model_folder
from .losses import CrossEntropyLabelSmooth, WeightedMultiLabelLoss, prediction_entropy
from .optim import build_optimizer, build_scheduler
from .recipes import TrainConfig

__all__ = ['is_labelled_run', 'load_labelled', 'evaluate_labelled', 'train_labelled', 'task_loss']


def is_labelled_run(cfg: TrainConfig) -> bool:
    """Whether the run trains on a labelled dataset (attributes / categories) rather than re-ID."""
    return any(s in LABELLED_DATASETS for s in cfg.sources)


def check_labelled_config(cfg: TrainConfig) -> None:
    """Refuse settings a labelled run cannot honour, naming the option."""
    if len(cfg.sources) != 1:
        raise ValueError(f'--sources {" ".join(cfg.sources)}: the attribute and classification datasets train on '
                         'one dataset at a time.')
    if list(cfg.targets) != list(cfg.sources):
        raise ValueError(f'--targets {" ".join(cfg.targets)}: a {cfg.sources[0]} run is scored on the test split '
                         f'of {cfg.sources[0]}; give --targets {cfg.sources[0]} (or leave it to the recipe).')
    for option, on in (('--dml', cfg.dml), ('--triplet-weight', cfg.triplet_weight > 0),
                       ('--combineall', cfg.combineall), ('--split-id', cfg.split_id is not None)):
        if on:
            raise ValueError(f'{option} is a re-ID option; {cfg.sources[0]} is an attribute / classification dataset.')


def labels_digest_of(split: LabelledSplit) -> str:
    """sha256 of a training split's labels and image file names (what a resumed run must train on again)."""
    h = hashlib.sha256(split.labels.numpy().tobytes())
    for path in split.paths or ():
        h.update(os.path.basename(path).encode())
    return h.hexdigest()


def load_labelled(cfg: TrainConfig) -> LabelledDataset:
    """The run's dataset, read on the main process first."""
    with du.main_process_first():
        return LABELLED_DATASETS[cfg.sources[0]](data_root(cfg.root))


def task_loss(dataset: LabelledDataset, cfg: TrainConfig) -> nn.Module:
    """The weighted multi-label loss (weights from the training labels) or label-smoothed cross-entropy."""
    if dataset.task == 'attributes':
        return WeightedMultiLabelLoss(dataset.train.labels.float().mean(0))
    return CrossEntropyLabelSmooth(cfg.label_smooth)


def evaluate_labelled(model: nn.Module, dataset: LabelledDataset, split: LabelledSplit, cfg: TrainConfig,
                      device: torch.device, epoch: Optional[int] = None) -> Dict[str, Any]:
    """The task's metrics of ``model`` on ``split`` at the run's size, mean/std and test pipeline."""
    result = score_labelled(model, dataset.task, split, device, (cfg.height, cfg.width), cfg.mean, cfg.std,
                            cfg.transforms, max(cfg.batch_size, 64), cfg.workers, cfg.precision)
    if dataset.task == 'attributes':
        result['attributes'] = list(dataset.classes)
    result['epoch'] = epoch
    return result


def _train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loader: Any, criterion: nn.Module,
                     dataset: LabelledDataset, cfg: TrainConfig, epoch: int, device: torch.device,
                     scaler: Optional[torch.amp.GradScaler]) -> Dict[str, float]:
    amp_dtype = autocast_dtype(cfg.precision)
    steps = len(loader) if not cfg.max_steps_per_epoch else min(len(loader), cfg.max_steps_per_epoch)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    sums = dict(loss=0.0, correct=0.0, n=0.0)
    bar = tqdm(loader, total=steps, desc=f'epoch {epoch + 1}/{cfg.epochs}', leave=False,
               disable=not du.is_main_process(), dynamic_ncols=True)
    step = 0
    for step, batch in enumerate(bar):
        if step >= steps:
            break
        x = normalize_batch(batch['image'].to(device, non_blocking=True), cfg.mean, cfg.std, memory_format)
        y = batch['label'].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        loss = criterion(logits, y)
        if cfg.entropy_weight and dataset.task == 'classification':
            loss = loss - cfg.entropy_weight * prediction_entropy(logits)
        if not torch.isfinite(loss):
            raise FloatingPointError(f'Loss became {loss.item()} at epoch {epoch + 1}, step {step}: stopping; '
                                     'lower the learning rate (--lr) and --resume from the last checkpoint.')
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        sums['loss'] += loss.item()
        with torch.no_grad():
            if dataset.task == 'attributes':  # label accuracy: the fraction of attributes right at 50%
                sums['correct'] += ((logits.float() >= 0) == (y >= 0.5)).float().mean(1).sum().item()
            else:
                sums['correct'] += (logits.argmax(1) == y).sum().item()
        sums['n'] += len(y)
        bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.3f}", acc=f"{sums['correct'] / sums['n']:.3f}")
    n_steps = max(min(steps, step + 1), 1)
    return dict(loss=du.reduce_mean(sums['loss'] / n_steps, device),
                acc=du.reduce_mean(sums['correct'] / max(sums['n'], 1), device))


def _summary(dataset: LabelledDataset, result: Dict[str, Any]) -> str:
    if dataset.task == 'attributes':
        return '  '.join(f'{k} {100 * result[k]:.2f}%' for k in ('mA', 'accuracy', 'precision', 'recall', 'f1'))
    return f"top-1 {100 * result['top1']:.2f}%  top-5 {100 * result['top5']:.2f}%  error {100 * result['error']:.2f}%"


def train_labelled(cfg: TrainConfig, state: Optional[Dict[str, Any]], checkpoint: Optional[Path],
                   create_models: Callable[[TrainConfig, int], List[nn.Module]]) -> Dict[str, Any]:
    """Train and test one labelled run (see the module docstring); returns ``{dataset: metrics}``.

    ``state`` is the checkpoint a ``--resume`` continues (read by the caller), ``create_models`` the
    model builder of ``python -m osnet_zoo.train`` (pretrained / --init-checkpoint / --model-args)."""
    check_labelled_config(cfg)
    device = du.init_distributed(cfg.device)
    out = Path(cfg.output)
    run = RunFolder(out, writer=du.is_main_process())
    torch.backends.cudnn.benchmark = not cfg.deterministic
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(cfg.seed)
    dataset = load_labelled(cfg)
    if du.is_main_process():
        print(dataset.summary())
    labels_digest = labels_digest_of(dataset.train)
    if state is not None:
        if state['epoch'] > cfg.epochs:
            raise ValueError(f'--epochs {cfg.epochs} is fewer than the {state["epoch"]} epochs the checkpoint '
                             f'{checkpoint} has already trained.')
        if state.get('identities') not in (None, labels_digest):
            raise ValueError(f'Cannot resume from {checkpoint}: it was trained on other {cfg.sources[0]} labels '
                             f'(root {cfg.root or "default"}); start a new run (--init-checkpoint).')
    train = build_labelled_train_loader(dataset.train, cfg.height, cfg.width, cfg.batch_size, cfg.transforms,
                                        cfg.seed, cfg.workers, pin_memory=device.type == 'cuda')
    if du.is_main_process():
        atomic_write_json(out / 'config.json', dict(cfg.to_dict(), task=dataset.task))
    model = create_models(cfg, dataset.num_classes)[0].to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    net: nn.Module = torch.compile(model) if cfg.compile else model
    if du.is_distributed():
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == 'cuda' else None)
    criterion = task_loss(dataset, cfg).to(device)
    optimizer = build_optimizer(cfg.optim, model.parameters(), cfg.lr, cfg.weight_decay, cfg.momentum, cfg.amsgrad)
    scheduler = build_scheduler(cfg.lr_scheduler, optimizer, cfg.epochs, cfg.stepsize, cfg.gamma)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == 'fp16' else None
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state['models'][0])
        optimizer.load_state_dict(state['optimizers'][0])
        scheduler.load_state_dict(state['schedulers'][0])
        if scaler is not None and state.get('scaler'):
            scaler.load_state_dict(state['scaler'])
        set_rng_state(state['rng'])
        start_epoch = state['epoch']
        if du.is_main_process():
            print(f'Resumed from {checkpoint} at epoch {start_epoch}/{cfg.epochs}')
    run.start(start_epoch, reevaluate=start_epoch == cfg.epochs)
    result: Dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        seed_everything(cfg.seed * 1000 + epoch)
        train.set_epoch(epoch)
        model.train()
        t0 = time.time()
        lr = optimizer.param_groups[0]['lr']
        stats = _train_one_epoch(net, optimizer, train.loader, criterion, dataset, cfg, epoch, device, scaler)
        scheduler.step()
        stats.update(kind='train', epoch=epoch + 1, lr=lr, seconds=time.time() - t0,
                     images_per_second=train.images_per_epoch / (time.time() - t0))
        run.end_epoch(stats, epoch=epoch + 1, models=[model.state_dict()], optimizers=[optimizer.state_dict()],
                      schedulers=[scheduler.state_dict()], scaler=scaler.state_dict() if scaler is not None else None,
                      rng=rng_state(), config=cfg.to_dict(), num_classes=dataset.num_classes,
                      identities=labels_digest)
        if du.is_main_process():
            print(f"epoch {epoch + 1}/{cfg.epochs}  loss {stats['loss']:.4f}  acc {stats['acc']:.3f}  "
                  f"{stats['images_per_second']:.0f} img/s")
        last = epoch + 1 == cfg.epochs
        if du.is_main_process() and (last or (cfg.eval_freq and (epoch + 1) % cfg.eval_freq == 0)):
            result = evaluate_labelled(model, dataset, dataset.test, cfg, device, epoch + 1)
            run.log_line(dict(kind='eval', epoch=epoch + 1, target=dataset.name,
                              **{k: v for k, v in result.items() if isinstance(v, float)}))
            print(f'{dataset.name} test: {_summary(dataset, result)}')
        du.barrier()
    train.close()
    if du.is_main_process():
        if not result:  # resumed after the last epoch: the final test was not written
            result = evaluate_labelled(model, dataset, dataset.test, cfg, device, cfg.epochs)
        results = {dataset.name: result}
        # the results.json schema of every command (evaluation.results_document); a classifier has no distance
        atomic_write_json(out / 'results.json', results_document(
            results, model=cfg.model, checkpoint=str(out / 'final' / 'model.safetensors'), distance=None,
            input_size=(cfg.height, cfg.width), precision=cfg.precision, task=dataset.task), indent=2)
        plot_curves(run.records(), out / 'curves.png')
        save_model_folder(model, cfg.model, out / 'final', (cfg.height, cfg.width), cfg.mean, cfg.std,
                          model_args=cfg.model_args, crop_pct=CROP_PCT if 'resize_crop' in cfg.transforms else 1.0,
                          notes=f'Trained on {dataset.name} ({dataset.task}); test split: {_summary(dataset, result)}.')
        print(f'{dataset.name}: {_summary(dataset, result)}')
        print(f'Wrote {out}/results.json, {out}/metrics.jsonl, {out}/curves.png, {out}/final/')
    else:
        results = {}
    du.cleanup()
    return results
