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
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from .. import distributed as du
from ..data.datasets import LABELLED_DATASETS, LabelledDataset, LabelledSplit
from ..data.labelled import CROP_PCT, build_labelled_train_loader
from ..data.loader import data_root
from ..engine import (ReIDLoss, RunFolder, WeightedMultiLabelLoss, build_optimizer, build_scheduler, start_epoch,
                      top1_correct, train_one_epoch)
from ..evaluation import results_document
from ..evaluation.labelled import score_labelled
from ..files import atomic_write_json
from .common import create_model, epoch_line, restore, set_up
from .curves import plot_curves
from .final import save_model_folder
from osnet_zoo.engine.recipes import TrainConfig

__all__ = ['is_labelled_run', 'load_labelled', 'evaluate_labelled', 'train_labelled', 'task_loss',
           'attribute_correct']


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
    """The weighted multi-label loss (weights from the training labels), or label-smoothed cross-entropy
    (minus ``--entropy-weight`` x the entropy of the predictions)."""
    if dataset.task == 'attributes':
        return WeightedMultiLabelLoss(dataset.train.labels.float().mean(0))
    return ReIDLoss(cfg.label_smooth, entropy_weight=cfg.entropy_weight)


def evaluate_labelled(model: nn.Module, dataset: LabelledDataset, split: LabelledSplit, cfg: TrainConfig,
                      device: torch.device, epoch: Optional[int] = None) -> Dict[str, Any]:
    """The task's metrics of ``model`` on ``split`` at the run's size, mean/std and test pipeline."""
    result = score_labelled(model, dataset.task, split, device, (cfg.height, cfg.width), cfg.mean, cfg.std,
                            cfg.transforms, max(cfg.batch_size, 64), cfg.workers, cfg.precision)
    if dataset.task == 'attributes':
        result['attributes'] = list(dataset.classes)
    result['epoch'] = epoch
    return result


def attribute_correct(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Label accuracy of a batch: per image, the fraction of attributes right at 50%; summed over images."""
    return float(((logits.float() >= 0) == (labels >= 0.5)).float().mean(1).sum())


def _summary(dataset: LabelledDataset, result: Dict[str, Any]) -> str:
    if dataset.task == 'attributes':
        return '  '.join(f'{k} {100 * result[k]:.2f}%' for k in ('mA', 'accuracy', 'precision', 'recall', 'f1'))
    return f"top-1 {100 * result['top1']:.2f}%  top-5 {100 * result['top5']:.2f}%  error {100 * result['error']:.2f}%"


def train_labelled(cfg: TrainConfig, state: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Train and test one labelled run (see the module docstring); returns ``{dataset: metrics}``.

    ``state`` is the checkpoint a ``--resume`` continues (:func:`~osnet_zoo.train.common.read_resume`)."""
    check_labelled_config(cfg)
    device = set_up(cfg)
    out = Path(cfg.output)
    run = RunFolder(out, writer=du.is_main_process())

    dataset = load_labelled(cfg)
    if du.is_main_process():
        print(dataset.summary())
    labels_digest = labels_digest_of(dataset.train)
    loader = build_labelled_train_loader(dataset.train, cfg.height, cfg.width, cfg.batch_size, cfg.transforms,
                                         cfg.seed, cfg.workers, pin_memory=device.type == 'cuda')

    model = create_model(cfg, dataset.num_classes).to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    net: nn.Module = torch.compile(model) if cfg.compile else model
    if du.is_distributed():
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == 'cuda' else None)
    criterion = task_loss(dataset, cfg).to(device)
    optimizer = build_optimizer(cfg.optim, model.parameters(), cfg.lr, cfg.weight_decay, cfg.momentum, cfg.amsgrad)
    scheduler = build_scheduler(cfg.lr_scheduler, optimizer, cfg.epochs, cfg.stepsize, cfg.gamma)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == 'fp16' else None

    first = 0
    if state is not None:
        first, scheduler = restore(state, cfg, model, optimizer, scheduler, scaler, dataset.num_classes,
                                   labels_digest)
    if du.is_main_process():  # after resume's checks: a refused resume changes no file
        atomic_write_json(out / 'config.json', dict(cfg.to_dict(), task=dataset.task))
    run.start(first, reevaluate=first == cfg.epochs)
    for epoch in range(first, cfg.epochs):
        stats = labelled_epoch(net, model, criterion, optimizer, scheduler, scaler, loader, dataset, cfg, epoch,
                               device)
        run.end_epoch(stats, epoch=epoch + 1, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                      config=cfg.to_dict(), num_classes=dataset.num_classes, identities=labels_digest)
        epoch_line(stats, cfg)
        if cfg.eval_freq and (epoch + 1) % cfg.eval_freq == 0 and epoch + 1 < cfg.epochs:
            log_test(model, dataset, cfg, device, epoch + 1, run)
        du.barrier()
    loader.close()
    results = {}
    if du.is_main_process():
        results = {dataset.name: log_test(model, dataset, cfg, device, cfg.epochs, run)}
        save_labelled_run(model, dataset, cfg, out, results, run)
    du.cleanup()
    return results


def labelled_epoch(net: nn.Module, model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                   scheduler: Any, scaler: Optional[torch.amp.GradScaler], loader: Any, dataset: LabelledDataset,
                   cfg: TrainConfig, epoch: int, device: torch.device) -> Dict[str, Any]:
    """Epoch ``epoch`` (seeded) of the one training loop, and its log record (the mean loss and accuracy)."""
    start_epoch(cfg.seed, epoch, loader)
    model.train()
    t0 = time.time()
    lr = optimizer.param_groups[0]['lr']
    stats = train_one_epoch(net, criterion, optimizer, loader.loader, device, epoch, cfg.epochs, scaler=scaler,
                            precision=cfg.precision, channels_last=cfg.channels_last, max_steps=cfg.max_steps_per_epoch,
                            mean=cfg.mean, std=cfg.std, target='label',
                            correct=attribute_correct if dataset.task == 'attributes' else top1_correct,
                            checkpoint=Path(cfg.output) / 'checkpoint.pth')
    scheduler.step()
    return dict(kind='train', loss=stats['loss'], acc=stats['acc'], epoch=epoch + 1, lr=lr,
                seconds=time.time() - t0, images_per_second=loader.images_per_epoch / (time.time() - t0))


def log_test(model: nn.Module, dataset: LabelledDataset, cfg: TrainConfig, device: torch.device, epoch: int,
             run: RunFolder) -> Dict[str, Any]:
    """The test split's metrics (main process), with their log line and console line."""
    if not du.is_main_process():
        return {}
    result = evaluate_labelled(model, dataset, dataset.test, cfg, device, epoch)
    run.log_line(dict(kind='eval', epoch=epoch, target=dataset.name,
                      **{k: v for k, v in result.items() if isinstance(v, float)}))
    print(f'{dataset.name} test: {_summary(dataset, result)}')
    return result


def save_labelled_run(model: nn.Module, dataset: LabelledDataset, cfg: TrainConfig, out: Path,
                      results: Dict[str, Any], run: RunFolder) -> None:
    """results.json (the schema of every command; a classifier has no distance), curves.png and final/."""
    result = results[dataset.name]
    atomic_write_json(out / 'results.json', results_document(
        results, model=cfg.model, checkpoint=str(out / 'final' / 'model.safetensors'), distance=None,
        input_size=(cfg.height, cfg.width), precision=cfg.precision, task=dataset.task), indent=2)
    plot_curves(run.records(), out / 'curves.png')
    save_model_folder(model, cfg.model, out / 'final', (cfg.height, cfg.width), cfg.mean, cfg.std,
                      model_args=cfg.model_args, crop_pct=CROP_PCT if 'resize_crop' in cfg.transforms else 1.0,
                      notes=f'Trained on {dataset.name} ({dataset.task}); test split: {_summary(dataset, result)}.')
    print(f'{dataset.name}: {_summary(dataset, result)}')
    print(f'Wrote {out}/results.json, {out}/metrics.jsonl, {out}/curves.png, {out}/final/')
