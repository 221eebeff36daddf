"""Pieces of the training script that are not the loop itself: recipes, optimisers, schedules,
atomic checkpoints, logs and curves. Kept beside ``train.py`` so the loop stays readable."""
from __future__ import annotations

import json
import math
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import numpy as np
import torch
import torch.nn as nn

__all__ = ['RECIPES_DIR', 'list_recipes', 'load_recipe', 'build_optimizer', 'build_scheduler',
           'atomic_torch_save', 'save_training_state', 'load_training_state', 'rng_state', 'set_rng_state',
           'append_jsonl', 'read_jsonl', 'plot_curves', 'seed_everything']

RECIPES_DIR = Path(__file__).parent / 'recipes'


def list_recipes() -> List[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob('*.yaml'))


def load_recipe(name_or_path: str) -> Dict[str, Any]:
    """A shipped recipe by name (``scratch``, ``imagenet_finetune``, ...) or a YAML file path."""
    import yaml
    path = Path(name_or_path)
    if not path.is_file():
        path = RECIPES_DIR / f'{name_or_path}.yaml'
    if not path.is_file():
        raise FileNotFoundError(
            f'Recipe {name_or_path!r} not found: neither a file nor one of the shipped recipes {list_recipes()}.')
    with open(path) as f:
        recipe = yaml.safe_load(f) or {}
    if not isinstance(recipe, dict):
        raise ValueError(f'Recipe {path} must be a YAML mapping of option: value, got {type(recipe).__name__}.')
    return recipe


def build_optimizer(name: str, params: Iterable[nn.Parameter], lr: float, weight_decay: float,
                    momentum: float = 0.9, amsgrad: bool = True) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if name == 'sgd':
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=False)
    if name == 'adam':  # AMSGrad is Adam with amsgrad=True, as in the papers
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, amsgrad=amsgrad)
    if name == 'adamw':
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, amsgrad=amsgrad)
    raise ValueError(f"Unknown optimizer {name!r}; expected 'sgd', 'adam' or 'adamw'.")


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, epochs: int, stepsize: Optional[List[int]] = None,
                    gamma: float = 0.1) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule: 'multistep' (×gamma at ``stepsize`` epochs), 'cosine' (to 0 over ``epochs``), 'constant'."""
    if name == 'multistep':
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(stepsize or []), gamma=gamma)
    if name == 'cosine':
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 0.5 * (1 + math.cos(math.pi * e / epochs)))
    if name == 'constant':
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    raise ValueError(f"Unknown lr_scheduler {name!r}; expected 'multistep', 'cosine' or 'constant'.")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> Dict[str, Any]:
    """RNG states as tensors and plain values only, so checkpoints load with ``weights_only=True``."""
    np_state = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        'python': [version, list(internal), gauss_next],
        'numpy_keys': torch.from_numpy(np_state[1].astype(np.int64)),
        'numpy_pos': int(np_state[2]),
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))
    np.random.set_state(('MT19937', state['numpy_keys'].numpy().astype(np.uint32), state['numpy_pos'], 0, 0.0))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a crash never leaves a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + '.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_training_state(path: Path, **state: Any) -> None:
    atomic_torch_save(state, path)


def load_training_state(path: Path) -> Dict[str, Any]:
    """Load a checkpoint written by ``save_training_state`` (tensors and plain values: weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'Cannot resume: checkpoint {path} does not exist.')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise RuntimeError(f'Cannot resume from {path}: not a readable osnet_zoo training checkpoint ({e}).') from e


def append_jsonl(path: Path, record: Dict[str, Any]) -> None:
    with open(path, 'a') as f:
        f.write(json.dumps(record) + '\n')


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_curves(records: List[Dict[str, Any]], out_png: Path) -> None:
    """Loss, accuracy and (where evaluated) Rank-1 / mAP per epoch, one PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    train = [r for r in records if r.get('kind') == 'train']
    evals = [r for r in records if r.get('kind') == 'eval']
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ep = [r['epoch'] for r in train]
    for key in ('loss', 'loss_ce', 'loss_triplet', 'loss_dml'):
        if train and key in train[0]:
            axes[0].plot(ep, [r[key] for r in train], marker='o', ms=3, label=key)
    axes[0].set(title='training loss', xlabel='epoch')
    axes[0].legend()
    axes[1].plot(ep, [100 * r['acc'] for r in train], marker='o', ms=3)
    axes[1].set(title='training accuracy (%)', xlabel='epoch')
    for target in sorted({r['target'] for r in evals}):
        rs = [r for r in evals if r['target'] == target]
        axes[2].plot([r['epoch'] for r in rs], [100 * r['rank1'] for r in rs], marker='o', label=f'{target} R1')
        axes[2].plot([r['epoch'] for r in rs], [100 * r['mAP'] for r in rs], marker='s', ls='--',
                     label=f'{target} mAP')
    axes[2].set(title='evaluation (%)', xlabel='epoch')
    if evals:
        axes[2].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
