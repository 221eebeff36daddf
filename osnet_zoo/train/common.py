"""The steps that every training run takes (re-ID in ``training.py``, attributes and categories in
``labelled.py``): set-up, the model (through the package's one builder), resume, the frozen-backbone epochs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from osnet_zoo import distributed as du
from osnet_zoo.engine import (MutualLearning, build_scheduler, load_training_state, restore_training_state,
                              seed_everything)
from osnet_zoo.models.builder import create_model as build_model
from osnet_zoo.models.run_record import require_run_record
from osnet_zoo.weights import CheckpointError, read_checkpoint

from osnet_zoo.engine.recipes import TrainConfig, resume_config

__all__ = ['set_up', 'read_resume', 'restore', 'create_model', 'networks', 'resolve_init_checkpoint',
           'init_weights', 'set_fixbase', 'tensorboard_writer', 'epoch_line']


def set_up(cfg: TrainConfig) -> torch.device:
    """The process's device (DDP when launched by torchrun), cuDNN's mode and the seed."""
    device = du.init_distributed(cfg.device)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    seed_everything(cfg.seed)
    return device


def read_resume(cfg: TrainConfig, given: Sequence[str]) -> Tuple[TrainConfig, Optional[Dict[str, Any]]]:
    """With ``--resume``, the checkpoint and the config the run continues with (the checkpoint's settings;
    what may change on resume: :func:`~osnet_zoo.engine.recipes.resume_config`); else ``(cfg, None)``. Read
    before anything slow, so that a wrong ``--resume`` fails at once."""
    if not cfg.resume:
        return cfg, None
    checkpoint = Path(cfg.output) / 'checkpoint.pth' if cfg.resume == 'auto' else Path(cfg.resume)
    state = load_training_state(checkpoint)
    state['path'] = str(checkpoint)
    if isinstance(state.get('config'), dict):
        cfg = resume_config(state['config'], cfg, given)
    return cfg, state


def restore(state: Dict[str, Any], cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any, scaler: Optional[torch.amp.GradScaler], num_classes: int,
            identities: str) -> Tuple[int, Any]:
    """All of resume: continue the checkpoint ``state`` (from :func:`read_resume`). Refuse more epochs done
    than ``--epochs`` or other training labels, load every state, and rebuild the schedule from the new values
    when ``--lr`` or ``--epochs`` changed. Returns the epochs done and the scheduler."""
    checkpoint = state['path']
    if cfg.epochs < state['epoch']:
        raise ValueError(f'--epochs {cfg.epochs} is fewer than the {state["epoch"]} epochs the checkpoint {checkpoint} '
                         'has already trained.')
    recorded_ids = state.get('identities')
    if (recorded_ids is not None and recorded_ids != identities) or state.get('num_classes', num_classes) != num_classes:
        raise ValueError(
            f'Cannot resume from {checkpoint}: the training labels of --sources {" ".join(cfg.sources)} '
            f'(root {cfg.root or "default"}: {num_classes} identities or classes, labels digest {identities[:12]}) '
            f'differ from those the checkpoint was trained on ({state.get("num_classes", "?")}, digest '
            f'{str(recorded_ids)[:12]}). Resume on the same dataset, or start a new run from its weights '
            '(--init-checkpoint).')
    recorded = state.get('config') or {}
    changed = any(k in recorded and recorded[k] != getattr(cfg, k) for k in ('lr', 'epochs'))
    epoch = restore_training_state(state, model, optimizer, None if changed else scheduler, scaler)
    if changed:  # a new learning rate or length: the schedule restarts from the new values at this epoch
        scale = cfg.lr / recorded['lr'] if recorded.get('lr') else None
        for g in optimizer.param_groups:
            g['lr'] = g['initial_lr'] = g.get('initial_lr', g['lr']) * scale if scale else cfg.lr
        scheduler = build_scheduler(cfg.lr_scheduler, optimizer, cfg.epochs, cfg.stepsize, cfg.gamma, epoch)
    if du.is_main_process():
        print(f'Resumed from {checkpoint} at epoch {epoch}/{cfg.epochs} (lr {cfg.lr:g})')
    return epoch, scheduler


def create_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The network (with ``--dml`` two, as one :class:`~osnet_zoo.engine.MutualLearning` module), from
    ``cfg.pretrained`` or ``cfg.init_checkpoint`` weights when set, built with ``cfg.model_args`` by the
    package's one model builder (:func:`osnet_zoo.models.builder.create_model`)."""
    if cfg.pretrained and cfg.init_checkpoint:
        raise ValueError(f'--pretrained {cfg.pretrained} and --init-checkpoint {cfg.init_checkpoint} both set the '
                         'starting weights; give one (--pretrained none to start from the checkpoint).')
    name = cfg.model + (f'.{cfg.pretrained}' if cfg.pretrained else '')
    file, weights = init_weights(cfg.init_checkpoint) if cfg.init_checkpoint else (None, None)
    try:
        models = [build_model(name, num_classes, pretrained=bool(cfg.pretrained), checkpoint=weights,
                              model_args=cfg.model_args) for _ in range(2 if cfg.dml else 1)]
    except CheckpointError as e:
        if file is None:  # the weights of --pretrained (the recipe's or the command line's) failed
            raise CheckpointError(f'--pretrained {cfg.pretrained} (the starting weights of {name}; set by the '
                                  f'recipe {cfg.recipe!r} unless given): {e} To start from random weights, pass '
                                  '--pretrained none.') from None
        raise CheckpointError(f'--init-checkpoint {file}: {e} (is --model / --model-args the one it was '
                              f'trained with?)') from None
    return MutualLearning(models) if cfg.dml else models[0]


def networks(model: nn.Module) -> List[nn.Module]:
    """The trained networks of ``model``: both of a mutual-learning pair, else the model itself."""
    return list(model.nets) if isinstance(model, MutualLearning) else [model]


def resolve_init_checkpoint(path: str) -> Path:
    """The weights file ``--init-checkpoint`` names: the file itself, a run that has not finished its
    ``checkpoint.pth``, else the trained model the run folder (or its ``final/``) holds, found as every command
    finds it (:func:`~osnet_zoo.models.run_record.read_run_record`)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.is_dir():
        raise FileNotFoundError(f'--init-checkpoint {path}: no such file or folder')
    if (p / 'checkpoint.pth').is_file() and not (p / 'final').is_dir():
        return p / 'checkpoint.pth'  # a run that has not written its final model: its last checkpoint
    return require_run_record(p, '--init-checkpoint').weights


def init_weights(path: str) -> Tuple[Path, Dict[str, Any]]:
    """The file ``path`` names (see :func:`resolve_init_checkpoint`) and the weights it holds: of a training
    checkpoint.pth, its (first) network's."""
    file = resolve_init_checkpoint(path)
    state = read_checkpoint(file)
    if 'optimizer' in state and isinstance(state.get('model'), dict):  # our checkpoint.pth: its first network
        state = MutualLearning.first_network(state['model'])
    elif isinstance(state.get('models'), list) and state['models']:  # a checkpoint.pth of an earlier release
        state = state['models'][0]
    return file, state


def set_fixbase(models: Sequence[nn.Module], frozen: bool) -> None:
    """While ``frozen``, only the classifier trains; the backbone is frozen and kept in eval mode."""
    for model in models:
        head = model.pretrained_cfg.get('classifier', 'classifier') if hasattr(model, 'pretrained_cfg') \
            else 'classifier'  # timm models name it: classifier, fc, head.fc, ...
        for name, p in model.named_parameters():
            p.requires_grad_(not frozen or name.startswith(head + '.'))
        model.train()
        if frozen:
            for name, m in model.named_modules():
                if name and not (name == head or name.startswith(head + '.') or head.startswith(name + '.')):
                    m.eval()


def tensorboard_writer(cfg: TrainConfig, out: Path) -> Any:
    """A TensorBoard writer into ``out/tensorboard`` with ``--tensorboard`` (main process), else None."""
    if not (cfg.tensorboard and du.is_main_process()):
        return None
    from torch.utils.tensorboard import SummaryWriter  # optional dependency (checked before any work)
    return SummaryWriter(str(out / 'tensorboard'))


def epoch_line(stats: Dict[str, Any], cfg: TrainConfig, writer: Any = None) -> None:
    """The epoch's line on the console (and its TensorBoard scalars), on the main process."""
    if not du.is_main_process():
        return
    if writer:
        for k, v in stats.items():
            if isinstance(v, float):
                writer.add_scalar(f'train/{k}', v, stats['epoch'])
    print(f"epoch {stats['epoch']}/{cfg.epochs}  loss {stats['loss']:.4f}  acc {stats['acc']:.3f}  "
          f"{stats['images_per_second']:.0f} img/s")
