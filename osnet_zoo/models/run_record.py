"""The record a trained model carries: what every command needs to use it as it was trained and evaluated.

``python -m osnet_zoo.train`` writes ``OUTPUT/final/model.safetensors`` and, beside it, ``config.json`` (timm's
Hub format, as ``python -m osnet_zoo.weights convert`` writes it too): the architecture and its arguments
(``model_args``), the input size, mean/std and interpolation (``pretrained_cfg``) and the ``distance`` the
run evaluated with. :func:`read_run_record` finds that record from any of the three names a user has for the
model (the run folder, its ``final/``, or ``final/model.safetensors``); the model builder
(:func:`osnet_zoo.inference.build_embedding_model`) and :func:`apply_run_record` (the commands' options) read
it, so that evaluate, extract, export, visualize and ``FeatureExtractor`` use the trained input size and
distance, not the 256x128 / cosine defaults.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import timm

__all__ = ['RunRecord', 'read_run_record', 'require_run_record', 'apply_run_record', 'check_preprocessing',
           'WEIGHTS_FILE', 'RECORD_FILE']

WEIGHTS_FILE = 'model.safetensors'
RECORD_FILE = 'config.json'
# pretrained_cfg entries that say how images are prepared for the model
_PREPROCESSING_KEYS = ('input_size', 'interpolation', 'mean', 'std', 'crop_pct', 'crop_mode')


@dataclass(frozen=True)
class RunRecord:
    """A trained model's folder (``final/``): its weights and what its ``config.json`` records."""

    folder: Path
    architecture: str
    model_args: Dict[str, Any] = field(default_factory=dict)  # beyond the standard architecture (num_classes dropped)
    preprocessing: Dict[str, Any] = field(default_factory=dict)  # input_size (3, H, W), interpolation, mean, std, ...
    distance: Optional[str] = None  # 'euclidean' / 'cosine', as the run evaluated; None when not recorded
    tag: Optional[str] = None

    @property
    def weights(self) -> Path:
        return self.folder / WEIGHTS_FILE

    @property
    def config(self) -> Path:
        return self.folder / RECORD_FILE

    @property
    def input_hw(self) -> Optional[Tuple[int, int]]:
        size = self.preprocessing.get('input_size')
        return (int(size[1]), int(size[2])) if size else None

    def describe(self) -> str:
        """``osnet_x0_25, input 128x64, mean [...] std [...], euclidean distance`` (what was trained)."""
        parts = [self.architecture + (' ' + ' '.join(f'{k}={v}' for k, v in self.model_args.items())
                                      if self.model_args else '')]
        if self.input_hw:
            parts.append('input {}x{}'.format(*self.input_hw))
        if self.preprocessing.get('mean'):
            parts.append(f"mean {list(self.preprocessing['mean'])} std {list(self.preprocessing['std'])}")
        if self.distance:
            parts.append(f'{self.distance} distance')
        return ', '.join(parts)


def _read_config(path: Path) -> Optional[Dict[str, Any]]:
    """The content of a model folder's config.json, None when it is no model record (e.g. a run's own
    config.json, which holds the training options)."""
    try:
        config = json.loads(path.read_text(encoding='utf-8'))
    except OSError as e:
        raise OSError(f'cannot read the model record {path}: {e.strerror or e}') from e
    except ValueError as e:
        raise ValueError(f'the model record {path} is not valid JSON ({e}); it should hold the architecture, '
                         'model_args and pretrained_cfg that python -m osnet_zoo.train writes') from None
    if not isinstance(config, dict) or 'architecture' not in config:
        return None
    if not isinstance(config.get('pretrained_cfg', {}), dict) or not isinstance(config.get('model_args', {}), dict):
        raise ValueError(f'the model record {path} has a pretrained_cfg or model_args that is not a mapping')
    return config


def _numbers(value: Any, count: int) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == count
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))


def check_preprocessing(prep: Mapping[str, Any], where: Union[str, os.PathLike]) -> None:
    """The one check of how images are prepared for a model (what a run record's ``pretrained_cfg`` holds and
    what an export writes): ``input_size`` three positive integers (C, H, W), ``mean`` three finite numbers,
    ``std`` three finite numbers above 0, ``interpolation`` a name. A ValueError names the key and ``where``
    (the file)."""
    size = prep.get('input_size')
    if size is not None and not (_numbers(size, 3) and all(isinstance(v, int) and v > 0 for v in size)):
        raise ValueError(f'{where}: input_size {size!r} is not three positive integers (channels, height, width); '
                         'the file is damaged or was edited')
    for key in ('mean', 'std'):
        value = prep.get(key)
        if value is not None and not (_numbers(value, 3) and (key == 'mean' or min(value) > 0)):
            raise ValueError(f'{where}: {key} {value!r} is not three finite numbers (R, G, B)'
                             + (' above 0' if key == 'std' else '') + '; the file is damaged or was edited')
    interpolation = prep.get('interpolation')
    if interpolation is not None and not (isinstance(interpolation, str) and interpolation):
        raise ValueError(f'{where}: interpolation {interpolation!r} is not a name (bilinear, bicubic, ...)')


def _record(folder: Path, config: Dict[str, Any]) -> RunRecord:
    cfg = config.get('pretrained_cfg') or {}
    architecture = config['architecture']
    if not isinstance(architecture, str) or not timm.is_model(architecture.split('.')[0]):
        raise ValueError(f'{folder / RECORD_FILE}: architecture {architecture!r} is not a timm model name '
                         f'(e.g. osnet_x1_0); the file is damaged or was edited')
    check_preprocessing(cfg, folder / RECORD_FILE)
    # the classifier is not part of an embedding model; 'avg' pooling is every OSNet's own default
    model_args = {k: v for k, v in (config.get('model_args') or {}).items()
                  if k != 'num_classes' and not (k == 'global_pool' and v == 'avg')}
    distance = config.get('distance')
    if distance is not None and distance not in ('euclidean', 'cosine'):
        raise ValueError(f"the model record {folder / RECORD_FILE} has distance {distance!r}; expected 'euclidean' "
                         "or 'cosine'")
    return RunRecord(folder=folder, architecture=str(config['architecture']), model_args=model_args,
                     preprocessing={k: cfg[k] for k in _PREPROCESSING_KEYS if cfg.get(k) is not None},
                     distance=distance, tag=cfg.get('tag'))


def read_run_record(path: Union[str, os.PathLike]) -> Optional[RunRecord]:
    """The record of the trained model that ``path`` names, or None when ``path`` is a checkpoint file that
    carries none (a torchreid ``.pth``, a file without ``config.json`` beside it).

    ``path`` may be a training run folder (its ``final/`` is used), a model folder (``config.json`` and
    ``model.safetensors``, as ``final/`` or ``weights convert`` write it), or that folder's
    ``model.safetensors``. A folder that is neither is an error naming what it lacks, as is a run that has not
    written its final model yet.
    """
    path = Path(os.fspath(path)).expanduser()
    if path.is_file():
        config_path = path.parent / RECORD_FILE
        if path.name != WEIGHTS_FILE or not config_path.is_file():
            return None
        config = _read_config(config_path)
        return _record(path.parent, config) if config is not None else None
    if not path.is_dir():
        return None
    if (path / RECORD_FILE).is_file():
        config = _read_config(path / RECORD_FILE)
        if config is None and (path / WEIGHTS_FILE).is_file():  # a model folder whose record lost its key
            raise ValueError(f'{path / RECORD_FILE}: no architecture (a timm model name, e.g. osnet_x1_0) beside '
                             f'{WEIGHTS_FILE}; the file is damaged or was edited')
        if config is not None:
            if not (path / WEIGHTS_FILE).is_file():
                raise FileNotFoundError(f'model folder {path} has a {RECORD_FILE} but no {WEIGHTS_FILE}')
            return _record(path, config)
    if (path / 'final').is_dir():
        return read_run_record(path / 'final')
    if (path / 'checkpoint.pth').is_file():
        raise FileNotFoundError(f'training run {path} has no final/{WEIGHTS_FILE} yet (the run has not finished): '
                                f'resume it (python -m osnet_zoo.train --output {path} --resume), or pass its '
                                f'{path / "checkpoint.pth"} with --model')
    raise FileNotFoundError(f'folder {path} is neither a training run (no final/) nor a model folder '
                            f'({RECORD_FILE} + {WEIGHTS_FILE}); give a checkpoint file, the run folder or its final/')


def require_run_record(path: Union[str, os.PathLike], option: str) -> RunRecord:
    """:func:`read_run_record` for an option that must name a trained model (``--run``, ``--checkpoint`` of a
    classifier): a file that carries no record is an error naming ``option`` too."""
    record = read_run_record(path)
    if record is None:
        raise FileNotFoundError(f'{option} {path}: neither a finished training run (RUN/final/) nor a model folder '
                                f'({RECORD_FILE} + {WEIGHTS_FILE}) or its {WEIGHTS_FILE}')
    return record


# option -> (the argparse dest, how to read the recorded value)
_RECORDED_OPTIONS: Dict[str, Tuple[str, Callable[[RunRecord], Any]]] = {
    '--model': ('model', lambda r: r.architecture),
    '--model-args': ('model_args', lambda r: r.model_args),
    '--height': ('height', lambda r: r.input_hw[0] if r.input_hw else None),
    '--width': ('width', lambda r: r.input_hw[1] if r.input_hw else None),
    '--distance': ('distance', lambda r: r.distance),
}


def _same(option: str, given: Any, recorded: Any) -> bool:
    if option == '--model':
        return str(given).split('.')[0] == recorded
    if option == '--model-args':  # KEY=VALUE strings: the same when each names the recorded value
        pairs = dict(str(item).partition('=')[::2] for item in given)
        return all(k in recorded and json.dumps(recorded[k]) in (v, json.dumps(v)) for k, v in pairs.items())
    return given == recorded


def apply_run_record(args: argparse.Namespace, default_model: Optional[str] = None,
                     log: Optional[Callable[[str], None]] = print) -> Optional[RunRecord]:
    """For a command line: when ``args.checkpoint`` names a trained model with a record (a run folder, its
    ``final/`` or ``final/model.safetensors``), take the options the user left out (``--model``,
    ``--model-args``, ``--height``, ``--width``, ``--distance``, where the command has them) from the record, point
    ``args.checkpoint`` at the weights file, and ``log`` one line: what the record says and which explicit
    options override it. Without a record, a missing ``--model`` becomes ``default_model``, or is an error
    when there is none. Returns the record (None without one)."""
    checkpoint = getattr(args, 'checkpoint', None)
    record = read_run_record(checkpoint) if checkpoint else None
    if record is None:
        if getattr(args, 'model', None) is None:
            if default_model is None:
                raise ValueError('--model is required, unless --checkpoint names a training run (its folder, final/ '
                                 'or final/model.safetensors), whose config.json names the architecture')
            args.model = default_model
        return None
    args.checkpoint = str(record.weights)
    overridden = []
    for option, (dest, read) in _RECORDED_OPTIONS.items():
        if not hasattr(args, dest):
            continue
        given, recorded = getattr(args, dest), read(record)
        if given is None or given == [] or given == {}:
            if option != '--model-args':  # the builder takes the recorded architecture arguments itself
                setattr(args, dest, recorded)
        elif recorded is not None and not _same(option, given, recorded):
            shown = ' '.join(given) if isinstance(given, list) else given
            overridden.append(f'{option} {shown} (recorded: {recorded})')
    if log is not None:
        log(f'model from the run record {record.config}: {record.describe()}'
            + (f'; overridden by {", ".join(overridden)}' if overridden else ''))
    return record
