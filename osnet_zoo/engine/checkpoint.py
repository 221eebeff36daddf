"""The run folder of a training (or a search): the checkpoint, the metrics log, seeding, resume.

Training and the architecture search share this bookkeeping and one checkpoint format:

* ``checkpoint.pth`` holds everything needed to continue (``model``, ``optimizer``, ``scheduler``, ``scaler``,
  ``rng``, ``epoch``, plus what the caller adds), written atomically every epoch unless the weights became
  NaN/inf, and read back with ``torch.load(weights_only=True)``;
* ``metrics.jsonl`` gets one line per epoch (and per evaluation), always *after* that epoch's checkpoint, so a
  logged epoch has its checkpoint; a resumed run drops the lines of epochs after the checkpoint it continues.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from ..files import atomic_torch_save, atomic_write_text, describe_write_failure
from ..weights.io import CheckpointError, read_checkpoint

__all__ = ['CHECKPOINT_KEYS', 'divergence_message', 'seed_everything', 'rng_state', 'set_rng_state', 'save_training_state',
           'load_training_state', 'restore_training_state', 'RunFolder', 'append_jsonl', 'read_jsonl',
           'training_labels_digest']


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy and torch (CPU and CUDA)."""
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
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))
    np.random.set_state(('MT19937', state['numpy_keys'].numpy().astype(np.uint32), state['numpy_pos'], 0, 0.0))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def save_training_state(path: Union[str, Path], **state: Any) -> None:
    """Write a training checkpoint atomically (a crash never leaves a torn file); a failed write (a full
    disk, a quota) is an OSError naming the file, and the previous checkpoint stays as it was."""
    try:
        atomic_torch_save(state, path)
    except (OSError, RuntimeError) as e:
        reason = describe_write_failure(e, Path(path).parent)
        raise OSError(f'Cannot write the checkpoint {path}: {reason}. The previous '
                      'checkpoint, if any, is unchanged.') from e


def training_labels_digest(items: Iterable[Any]) -> str:
    """sha256 of the training set's labelling: the sorted (identity label, source, image file name) of every
    item (``ReIDItem``-like: ``path``, ``pid``, ``dsetid``). Two datasets with as many identities but other
    people or images differ; moving the dataset root does not change it."""
    labels = sorted((int(it.pid), int(it.dsetid), os.path.basename(it.path)) for it in items)
    return hashlib.sha256(json.dumps(labels).encode()).hexdigest()


def non_finite_parameters(state_dict: Dict[str, torch.Tensor]) -> List[str]:
    """Names of the floating-point entries of ``state_dict`` holding NaN or inf."""
    return [k for k, v in state_dict.items()
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def divergence_message(what: str, epoch: int, step: Optional[int], checkpoint: Optional[Union[str, Path]],
                       desc: str = 'epoch') -> str:
    """The one line a diverged run ends with: where (``epoch`` 0-based, ``step`` 0-based or None for the
    epoch's end), ``what`` went non-finite, and what is on disk (the checkpoint of the epochs before, which
    the loop never overwrites with a diverged model) and what to do."""
    where = f'epoch {epoch + 1}' + (f', step {step + 1}' if step is not None else ' (at its end)')
    if checkpoint is not None and Path(checkpoint).is_file():
        of = f'of epoch {epoch}, the last finished one' if epoch > 0 else 'of an earlier run'
        on_disk = (f'the checkpoint {checkpoint} ({of}) is intact; lower the learning rate (--lr; or drop fp16) '
                   'and continue it with --resume')
    else:
        on_disk = ('no checkpoint was saved (none is written before the first epoch ends); restart with a lower '
                   'learning rate (--lr)')
    run = f'{desc}: training' if desc != 'epoch' else 'Training'
    return f'{run} diverged at {where}: {what}. Stopped: {on_disk}.'


CHECKPOINT_KEYS = ('model', 'optimizer', 'scheduler', 'rng', 'epoch')  # what every run folder's checkpoint holds


# What each entry of a training (or search) checkpoint must be: a tampered or foreign file is refused by name
# before any of it is used (an epoch of 'x' or -3, a model as a list, RNG states without their parts).
_ENTRY_TYPES = {'model': dict, 'optimizer': dict, 'scheduler': dict, 'rng': dict, 'config': dict, 'epoch': int,
                'seconds': (int, float)}
_RNG_PARTS = ('python', 'numpy_keys', 'numpy_pos', 'torch')


def _entry_problem(state: Dict[str, Any]) -> Optional[str]:
    """What is wrong with the entries of a training checkpoint, in words (None when they are sound)."""
    for key, kind in _ENTRY_TYPES.items():
        value = state.get(key)
        if key in state and (not isinstance(value, kind) or isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else ' or '.join(k.__name__ for k in kind)
            return f'its {key!r} entry is a {type(value).__name__} ({str(value)[:40]!r}), not a {names}'
    if state.get('epoch', 0) < 0:
        return f"its 'epoch' entry is {state['epoch']}, not a count of finished epochs (>= 0)"
    missing = [k for k in _RNG_PARTS if 'rng' in state and k not in state['rng']]
    if missing:
        return f"its 'rng' entry lacks {missing} (the random generator states it records)"
    return None


def load_training_state(path: Union[str, Path], required: Sequence[str] = CHECKPOINT_KEYS) -> Dict[str, Any]:
    """Load a checkpoint written by :meth:`RunFolder.end_epoch` (tensors and plain values, read with
    :func:`osnet_zoo.weights.read_checkpoint`); ``required`` names the entries it must hold
    (:data:`CHECKPOINT_KEYS` and what the caller added), each of the type the loop writes."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'Cannot resume: checkpoint {path} does not exist.')
    try:
        state = read_checkpoint(path)
    except CheckpointError as e:
        raise CheckpointError(f'Cannot resume from {path}: not a readable osnet_zoo training checkpoint ({e}).') \
            from None
    if 'state_dict' in state and not any(k in state for k in required[:1]):
        raise ValueError(f'Cannot resume from {path}: it is a torchreid checkpoint (model weights only, no optimiser '
                         'or epoch of an osnet_zoo run). Start a new run from its weights instead: --pretrained or '
                         '--init-checkpoint.')
    missing = [k for k in required if k not in state]
    if missing:
        raise ValueError(f'Cannot resume from {path}: not an osnet_zoo training checkpoint (missing {missing}).')
    problem = _entry_problem(state)
    if problem:
        raise ValueError(f'Cannot resume from {path}: {problem}; the file is damaged or was edited.')
    return state


def restore_training_state(state: Dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: Optional[Any] = None, scaler: Optional[torch.amp.GradScaler] = None) -> int:
    """Load a checkpoint's model, optimiser, scheduler (unless None: the caller rebuilds it), scaler and RNG
    states; returns the number of epochs it has done."""
    model.load_state_dict(state['model'])
    optimizer.load_state_dict(state['optimizer'])
    if scheduler is not None:
        scheduler.load_state_dict(state['scheduler'])
    if scaler is not None and state.get('scaler'):
        scaler.load_state_dict(state['scaler'])
    set_rng_state(state['rng'])
    return int(state['epoch'])


def append_jsonl(path: Union[str, Path], record: Dict[str, Any]) -> None:
    """Append ``record`` to ``path`` as one JSON line."""
    with open(path, 'a') as f:
        f.write(json.dumps(record) + '\n')


def read_jsonl(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """The records of a JSON-lines file, in order ([] when there is no file)."""
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class RunFolder:
    """A run's folder: ``checkpoint.pth`` + ``metrics.jsonl``, written checkpoint-first.

    Only the main process writes (``writer=False`` on the other DDP ranks); every rank can read.
    """

    def __init__(self, folder: Union[str, Path], writer: bool = True):
        self.folder = Path(folder)
        self.checkpoint = self.folder / 'checkpoint.pth'
        self.log = self.folder / 'metrics.jsonl'
        self.writer = writer

    def resume_state(self, path: Optional[Union[str, Path]] = None,
                     required: Sequence[str] = CHECKPOINT_KEYS) -> Dict[str, Any]:
        """The checkpoint to continue from (this folder's, or ``path``), holding the ``required`` entries."""
        return load_training_state(self.checkpoint if path is None else path, required)

    def start(self, epoch: int, reevaluate: bool = False) -> None:
        """Begin at ``epoch`` (0 for a fresh run): the log keeps only the lines of epochs up to it, and with
        ``reevaluate`` (the evaluation of ``epoch`` runs again) not that epoch's evaluation lines."""
        if not self.writer:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_jsonl(self.log)
                if r['epoch'] < epoch or (r['epoch'] == epoch and not (reevaluate and r.get('kind') == 'eval'))]
        atomic_write_text(self.log, ''.join(json.dumps(r) + '\n' for r in kept))

    def end_epoch(self, record: Dict[str, Any], *, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: Any, scaler: Optional[torch.amp.GradScaler] = None, **extra: Any) -> None:
        """The checkpoint after ``epoch`` epochs (the one format: ``model``, ``optimizer``, ``scheduler``,
        ``scaler``, ``rng``, ``epoch`` and the caller's ``extra`` entries), then its log line (``record``)."""
        if not self.writer:
            return
        weights = model.state_dict()
        bad = non_finite_parameters(weights)
        if bad:  # never overwrite the last good checkpoint with exploded weights (or running statistics)
            raise FloatingPointError(divergence_message(f'the weights became NaN/inf (e.g. {bad[0]})', epoch - 1,
                                                        None, self.checkpoint))
        save_training_state(self.checkpoint, model=weights, optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), scaler=scaler.state_dict() if scaler else None,
                            rng=rng_state(), epoch=epoch, **extra)
        append_jsonl(self.log, record)

    def log_line(self, record: Dict[str, Any]) -> None:
        """A log line that needs no checkpoint (an evaluation)."""
        if self.writer:
            append_jsonl(self.log, record)

    def records(self) -> List[Dict[str, Any]]:
        """Every line of ``metrics.jsonl``, in order ([] before the first)."""
        return read_jsonl(self.log)
