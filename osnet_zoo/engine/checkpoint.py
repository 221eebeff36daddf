"""The run folder of a training (or a search): the checkpoint, the metrics log, seeding, resume.

Training and the architecture search share this bookkeeping and one checkpoint format:

* ``checkpoint.pth`` holds everything needed to continue (``model``, ``optimizer``, ``scheduler``, ``scaler``,
  ``rng``, ``epoch``, plus what the caller adds), written atomically every epoch unless the weights became
  NaN/inf, and read back with ``torch.load(weights_only=True)``;
* ``metrics.jsonl`` gets one line per epoch (and per evaluation), always *after* that epoch's checkpoint, so a
  logged epoch has its checkpoint; a resumed run drops the lines of epochs after the checkpoint it continues;
* ``run.json`` says what the folder holds (the kind of run and the settings that define it), so that no other
  job writes over it: :func:`claim_run_folder` refuses a folder holding another run unless asked to resume
  it (``--resume``) or to move it aside (``--overwrite``).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from ..files import atomic_torch_save, atomic_write_json, atomic_write_text, describe_write_failure
from ..weights.io import CheckpointError, read_checkpoint

__all__ = ['CHECKPOINT_KEYS', 'divergence_message', 'seed_everything', 'rng_state', 'set_rng_state', 'save_training_state',
           'load_training_state', 'restore_training_state', 'RunFolder', 'append_jsonl', 'read_jsonl',
           'training_labels_digest', 'RUN_FILE', 'recorded_run', 'claim_run_folder', 'refuse_run_folder']


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


# ----------------------------------------------------------------------------------------------- what a folder holds

RUN_FILE = 'run.json'
# files a run writes: a folder holding one of them holds a run (written before run.json existed, or by a run)
_RUN_FILES = ('checkpoint.pth', 'metrics.jsonl', 'config.json', 'results.json', 'final', 'seeds.json',
              'genotype.json')


def _legacy_kind(folder: Path, settings: Optional[Dict[str, Any]]) -> str:
    """The kind of a run folder written without ``run.json``, from its files."""
    if isinstance(settings, dict) and 'seeds' in settings and 'select_recipe' in settings:
        return 'nas search'
    if isinstance(settings, dict) and 'model' in settings or (folder / 'final').is_dir():
        return 'train'
    return 'unrecognised'


def _a(kind: str) -> str:
    return ('an ' if kind[:1] in 'aeiou' else 'a ') + kind


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return None


def recorded_run(folder: Union[str, Path]) -> Optional[Dict[str, Any]]:
    """What the run folder ``folder`` holds: ``{'kind', 'settings', 'progress'}`` (``settings`` from its
    ``run.json``, else its ``config.json``; ``progress``: whether it saved a checkpoint), or None when it
    holds no run (no folder, an empty one, or only the ``run.json`` of a run that wrote nothing yet)."""
    folder = Path(folder)
    if not folder.is_dir() or not (any((folder / f).exists() for f in _RUN_FILES) or any(folder.glob('seed_*'))):
        return None
    record = _read_json(folder / RUN_FILE)
    config = _read_json(folder / 'config.json')
    if isinstance(record, dict) and isinstance(record.get('kind'), str) and isinstance(record.get('settings'), dict):
        kind, settings = record['kind'], record['settings']
    else:
        kind, settings = _legacy_kind(folder, config), config if isinstance(config, dict) else {}
    progress = any(folder.glob('checkpoint.pth')) or any(folder.glob('seed_*/checkpoint.pth'))
    return dict(kind=kind, settings=settings, progress=progress)


def _aside(folder: Path) -> Path:
    stamp = time.strftime('%Y%m%d-%H%M%S')
    aside, n = folder.with_name(f'{folder.name}.replaced-{stamp}'), 1
    while aside.exists():
        n += 1
        aside = folder.with_name(f'{folder.name}.replaced-{stamp}-{n}')
    return aside


def _differences(recorded: Dict[str, Any], settings: Dict[str, Any], ignore: Sequence[str]) -> List[str]:
    """``key recorded -> new`` for each setting (but ``ignore``) whose recorded value differs (as JSON)."""
    plain = json.loads(json.dumps(settings, default=str))
    return [f'{k} {recorded[k]!r} there, {plain[k]!r} here' for k in sorted(plain)
            if k in recorded and k not in ignore and recorded[k] != plain[k]]


def claim_run_folder(folder: Union[str, Path], kind: str, settings: Dict[str, Any], *, resume: bool,
                     overwrite: bool, finished: bool = False, resumable: Sequence[str] = (),
                     writer: bool = True) -> str:
    """Take ``folder`` for a run of ``kind`` (``'train'``, ``'nas search'``) defined by ``settings``, never
    writing over another job's files; records ``run.json`` (on the ``writer``, the main process). Returns:

    * ``'new'``: the folder holds no run, or a run of this kind and these settings that saved no checkpoint,
      or (``overwrite``) the run it held was moved aside to ``FOLDER.replaced-<time>``: start afresh;
    * ``'continue'``: it holds this run and ``resume`` asks to continue it, or it is ``finished`` (the caller
      then treats it as resumed: nothing is trained again).

    Anything else is a FileExistsError naming the folder and the two options (``--resume``, ``--overwrite``):
    a run of another kind, of other settings (compared on the keys of ``settings``, but with ``resume`` not
    those in ``resumable``: what a resumed run may change), or one with checkpoints when ``resume`` is not
    given.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f'--output {folder} is a file, not a folder: pass a folder for the run.')
    found = recorded_run(folder)
    if found is not None and overwrite:
        if writer:
            aside = _aside(folder)
            folder.rename(aside)
            print(f'--overwrite: moved the {found["kind"]} run that was in {folder} aside to {aside}')
        found = None
    aside_hint = f'--overwrite to move it aside (to {folder}.replaced-<time>) and start afresh'
    if found is not None:
        if found['kind'] != kind:
            raise FileExistsError(f'--output {folder} holds {_a(found["kind"])} run, not {_a(kind)} run, and is not '
                                  f'overwritten: pass {aside_hint}, or another --output (--resume continues only '
                                  'a run of the same kind).')
        differ = _differences(found['settings'], settings, resumable if resume else ())
        if differ:
            raise FileExistsError(f'--output {folder} holds {_a(kind)} run of other settings ({"; ".join(differ[:3])})'
                                  f' and is not overwritten: '
                                  + ('--resume continues it only with its recorded settings; ' if resume else '')
                                  + f'pass {aside_hint}, or another --output.')
        if not resume and found['progress'] and not finished:
            raise FileExistsError(f'--output {folder} holds {_a(kind)} run with checkpoints and is not overwritten: '
                                  f'pass --resume to continue it, {aside_hint}, or another --output.')
    if writer:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / RUN_FILE, dict(kind=kind, settings=json.loads(json.dumps(settings, default=str))))
    return 'continue' if found is not None and (resume or (finished and found['progress'])) else 'new'


def refuse_run_folder(folder: Union[str, Path], command: str, writes: Sequence[str]) -> None:
    """Refuse an ``--output`` of ``command`` that holds a training or search run whose files ``writes`` (the
    names ``command`` writes there) would replace: a FileExistsError naming the folder and the files."""
    found = recorded_run(folder)
    clash = [name for name in writes if (Path(folder) / name).exists()]
    if found is not None and found['kind'] in ('train', 'nas search') and clash:
        raise FileExistsError(f'--output {folder} holds {_a(found["kind"])} run: {command} would replace its '
                              f'{", ".join(clash)}; pass another --output.')
