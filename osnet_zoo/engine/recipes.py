"""Training settings: one :class:`TrainConfig`, from the defaults, a recipe (YAML) and the command line.

The papers' recipes ship in ``osnet_zoo/train/recipes/*.yaml``, each citing its source. A recipe sets any
training option; every option given on the command line overrides it. ``resolve_config`` returns the one
config object the training loop reads, and ``config.json`` in the run folder records it. The architecture
search's selection trains its children with a recipe too, so the recipes sit below both ``train`` and ``nas``.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

from .. import cli
from ..cli import PRECISIONS
from ..data.labelled import LABELLED_AUGMENTATIONS
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, TRAIN_AUGMENTATIONS
from ..models.osnet import MIN_INPUT_SIZE
from .optim import OPTIMIZERS, SCHEDULERS

__all__ = ['RECIPES_DIR', 'TrainConfig', 'RECIPE_KEYS', 'list_recipes', 'load_recipe', 'resolve_config',
           'resume_config', 'RESUME_CURRENT', 'RESUME_CHANGEABLE', 'check_channel_values']

RECIPES_DIR = Path(__file__).parents[1] / 'train' / 'recipes'  # beside the command that runs them


@dataclass
class TrainConfig:
    """Everything a training run uses. The first group is what a recipe may set; the rest is engineering
    (where and how the run executes), set on the command line only."""
    # --- recipe options
    model: str = 'osnet_x0_25'
    pretrained: Optional[str] = None
    sources: List[str] = field(default_factory=lambda: ['synthetic'])
    targets: List[str] = field(default_factory=lambda: ['synthetic'])
    # the small benchmarks' split (viper, grid, cuhk01) and other reader options (viper: direction=a2b|b2a)
    split_id: Optional[int] = None
    dataset_options: Dict[str, Any] = field(default_factory=dict)
    # start from these weights (a run folder, its final/ folder or any checkpoint); classifier re-initialised
    init_checkpoint: Optional[str] = None
    # extra arguments of timm.create_model (e.g. num_streams=1, the T = 1 baseline)
    model_args: Dict[str, Any] = field(default_factory=dict)
    combineall: bool = False
    height: int = 256
    width: int = 128
    epochs: int = 10
    batch_size: int = 64
    optim: str = 'adam'
    amsgrad: bool = True
    momentum: float = 0.9
    lr: float = 0.0015
    weight_decay: float = 5e-4
    lr_scheduler: str = 'cosine'
    stepsize: List[int] = field(default_factory=list)
    gamma: float = 0.1
    fixbase_epochs: int = 0
    transforms: List[str] = field(default_factory=lambda: ['random_flip'])
    label_smooth: float = 0.1
    triplet_weight: float = 0.0
    margin: float = 0.3
    num_instances: int = 4
    dml: bool = False
    eval_freq: int = 0
    distance: str = 'euclidean'
    # pixel normalisation (ICCV 2019 supplementary, Table 12a): ImageNet's statistics, or a dataset's own
    # (python -m osnet_zoo.data stats --dataset NAME --root ROOT computes them)
    mean: List[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: List[float] = field(default_factory=lambda: list(IMAGENET_STD))
    # entropy maximisation (Table 12c): the loss is L_ID - entropy_weight * entropy of the predictions
    entropy_weight: float = 0.0
    citation: Optional[str] = None
    # --- engineering (command line only)
    recipe: str = 'synthetic'
    root: Optional[str] = None
    workers: int = 0
    device: str = 'cpu'
    precision: str = 'fp32'
    channels_last: bool = False
    compile: bool = False
    output: str = 'runs/osnet'
    resume: Optional[str] = None
    overwrite: bool = False  # move a run already in ``output`` aside instead of refusing the folder
    seed: int = 1
    deterministic: bool = False
    tensorboard: bool = False
    max_steps_per_epoch: int = 0

    def __post_init__(self) -> None:
        check_config(self)

    def to_dict(self) -> Dict[str, Any]:
        """Every field as a plain dict (what a run's config.json and checkpoints store)."""
        return dataclasses.asdict(self)


# The one schema of every option: (kind, lowest value or allowed values). A value of the wrong type or out of
# range is refused naming the option, before any work: a recipe's ``stepsize: ten`` or ``batch_size: 8.5`` never
# reaches the training loop. Two plausible spellings are accepted: a single epoch for ``stepsize`` and a single
# name for a list of names (``sources: market1501``).
_SCHEMA: Dict[str, tuple] = {
    'model': ('str', None), 'pretrained': ('str?', None), 'sources': ('names', None), 'targets': ('names', None),
    'split_id': ('int?', 0), 'dataset_options': ('dict', None), 'init_checkpoint': ('str?', None),
    'model_args': ('dict', None), 'combineall': ('bool', None), 'height': ('int', MIN_INPUT_SIZE),
    'width': ('int', MIN_INPUT_SIZE), 'epochs': ('int', 1), 'batch_size': ('int', 1), 'optim': ('str', OPTIMIZERS),
    'amsgrad': ('bool', None), 'momentum': ('float', 0), 'lr': ('float', 0), 'weight_decay': ('float', 0),
    'lr_scheduler': ('str', SCHEDULERS), 'stepsize': ('ints', 1), 'gamma': ('float', 0),
    'fixbase_epochs': ('int', 0), 'label_smooth': ('float', 0),
    # the re-ID augmentations, and those of the attribute / classification runs (osnet_zoo.data.labelled)
    'transforms': ('names', tuple(dict.fromkeys(TRAIN_AUGMENTATIONS + LABELLED_AUGMENTATIONS))),
    'mean': ('rgb', 0), 'std': ('rgb', 0), 'entropy_weight': ('float', 0),
    'triplet_weight': ('float', 0), 'margin': ('float', 0), 'num_instances': ('int', 1), 'dml': ('bool', None),
    'eval_freq': ('int', 0), 'distance': ('str', ('euclidean', 'cosine')), 'citation': ('str?', None),
    'recipe': ('str', None), 'root': ('str?', None), 'workers': ('int', 0), 'device': ('str', None),
    'precision': ('str', PRECISIONS), 'channels_last': ('bool', None), 'compile': ('bool', None),
    'output': ('str', None), 'resume': ('str?', None), 'overwrite': ('bool', None),
    'seed': ('int', 0), 'deterministic': ('bool', None),
    'tensorboard': ('bool', None), 'max_steps_per_epoch': ('int', 0),
}
_EXPECTED = {'str': 'a string', 'str?': 'a string (or null)', 'names': 'a list of names', 'int': 'an integer',
             'int?': 'an integer (or null)', 'ints': 'a list of integers (epochs)', 'float': 'a number',
             'bool': 'true or false', 'dict': 'a mapping of KEY: VALUE', 'rgb': 'three numbers (R, G, B) in 0..1'}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked(key: str, value: Any) -> Any:
    """``value`` of option ``key`` as the schema wants it (a lone epoch or name becomes a list), or a
    ``ValueError`` naming the option, the value and what it must be."""
    kind, limit = _SCHEMA[key]
    if (kind == 'ints' and _is_int(value)) or (kind == 'names' and isinstance(value, str)):
        value = [value]  # stepsize: 60, sources: market1501
    if kind == 'float' and _is_int(value):
        value = float(value)
    ok = {'str': lambda v: isinstance(v, str), 'str?': lambda v: v is None or isinstance(v, str),
          'names': lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
          'int': _is_int, 'int?': lambda v: v is None or _is_int(v),
          'ints': lambda v: isinstance(v, (list, tuple)) and all(_is_int(x) for x in v),
          'float': lambda v: isinstance(v, float) and v == v, 'bool': lambda v: isinstance(v, bool),
          'dict': lambda v: isinstance(v, dict),
          'rgb': lambda v: isinstance(v, (list, tuple)) and len(v) == 3
          and all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1 for x in v)}[kind](value)
    where = f'option {key!r} ({_option(key)})'
    if not ok:
        raise ValueError(f'{where}: expected {_EXPECTED[kind]}, got {value!r} ({type(value).__name__}).')
    if isinstance(limit, tuple):
        bad = [v for v in (value if isinstance(value, (list, tuple)) else [value]) if v not in limit]
        if bad:
            raise ValueError(f'{where}: {bad[0]!r} is not one of {", ".join(limit)}.')
    elif limit is not None and value is not None:
        bad = [v for v in (value if isinstance(value, (list, tuple)) else [value]) if v < limit]
        if bad:
            raise ValueError(f'{where} must be >= {limit}, got {bad[0]!r}.')
    if kind == 'rgb':
        value = [float(v) for v in value]
    if kind in ('ints', 'names'):
        value = list(value)
        if kind == 'names' and not value and key != 'transforms':
            raise ValueError(f'{where}: expected at least one name, got an empty list.')
    return value


def check_config(cfg: 'TrainConfig') -> None:
    """Check (and normalise in place) every option of ``cfg`` against the schema; the first bad one is a
    ``ValueError`` naming it."""
    for key in _SCHEMA:
        setattr(cfg, key, _checked(key, getattr(cfg, key)))


_ENGINEERING_START = 'recipe'
RECIPE_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig)[
    :[f.name for f in dataclasses.fields(TrainConfig)].index(_ENGINEERING_START)])


def list_recipes() -> List[str]:
    """Names of the shipped recipes."""
    return sorted(p.stem for p in RECIPES_DIR.glob('*.yaml'))


def load_recipe(name_or_path: str) -> Dict[str, Any]:
    """A shipped recipe by name (``scratch``, ``imagenet_finetune``, ...) or a YAML file path, as a dict of
    option: value; an unknown option is an error naming it."""
    path = Path(name_or_path)
    if not path.is_file():
        path = RECIPES_DIR / f'{name_or_path}.yaml'
    if not path.is_file():
        raise FileNotFoundError(
            f'Recipe {name_or_path!r} not found: neither a file nor one of the shipped recipes {list_recipes()}.')
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f'Recipe {path} is not valid YAML: {" ".join(str(e).split())}') from None
    if not isinstance(recipe, dict):
        raise ValueError(f'Recipe {path} must be a YAML mapping of option: value, got {type(recipe).__name__}.')
    unknown = set(recipe) - set(RECIPE_KEYS)
    if unknown:
        raise ValueError(f'Recipe {name_or_path!r} has unknown options {sorted(unknown)}; '
                         f'known: {sorted(RECIPE_KEYS)}.')
    return recipe


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the recipe's values, then every option given on the command line (not None)."""
    values = dict(load_recipe(args.recipe))
    values.update({k: v for k, v in vars(args).items()
                   if k in TrainConfig.__dataclass_fields__ and v is not None})
    values['model_args'] = cli.parse_key_values(values.get('model_args'), '--model-args')
    values['dataset_options'] = cli.parse_key_values(values.get('dataset_options'), '--dataset-option')
    for key in ('pretrained', 'init_checkpoint'):
        if values.get(key) in ('none', ''):
            values[key] = None
    for key in ('mean', 'std'):
        values[key] = check_channel_values(values.get(key, getattr(TrainConfig, key, None)), key)
    try:
        return TrainConfig(**values)
    except ValueError as e:
        raise ValueError(f'{e} (from the recipe {args.recipe!r} or the command line)') from None


def check_channel_values(value: Any, key: str) -> List[float]:
    """A recipe's or the command line's ``mean`` / ``std``: three numbers (RGB, on the 0..1 scale; std
    positive), else a ValueError naming the option."""
    if value is None:
        return list(TrainConfig.__dataclass_fields__[key].default_factory())
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != 3 or (key == 'std' and min(numbers) <= 0) or not all(0 <= v <= 1 for v in numbers):
        raise ValueError(f'--{key} {value!r}: expected three numbers (R G B) in 0..1'
                         + (', each above 0' if key == 'std' else '')
                         + ' (python -m osnet_zoo.data stats computes a dataset\'s).')
    return numbers


# On --resume, where this process runs always comes from the current command line (or its defaults) ...
RESUME_CURRENT = ('workers', 'device', 'output', 'resume', 'overwrite', 'root')
# ... these may be changed by giving them (the learning-rate schedule is rebuilt for lr / epochs) ...
RESUME_CHANGEABLE = ('lr', 'epochs', 'eval_freq', 'precision', 'tensorboard', 'compile', 'channels_last',
                     'deterministic', 'max_steps_per_epoch')
# ... and every other option is the checkpoint's: giving another value is refused.


def _option(key: str) -> str:
    return '--' + key.replace('_', '-')


def resume_config(recorded: Mapping[str, Any], cfg: TrainConfig, given: Sequence[str]) -> TrainConfig:
    """The config a resumed run continues with: the checkpoint's ``recorded`` config, with the options of
    ``RESUME_CURRENT`` from ``cfg`` (the current command line) and those of ``RESUME_CHANGEABLE`` that the
    command line gives (``given``: the options it names). Any other given option whose value differs from
    the recorded one is a ``ValueError`` naming it and both values."""
    fields = TrainConfig.__dataclass_fields__
    try:
        base = TrainConfig(**{k: v for k, v in recorded.items() if k in fields})
    except ValueError as e:
        raise ValueError(f'the checkpoint\'s recorded config is damaged or was edited: {e}') from None
    changes = {k: getattr(cfg, k) for k in RESUME_CURRENT}
    refused = []
    for key in sorted(set(given) & set(fields) - set(RESUME_CURRENT)):
        new, old = getattr(cfg, key), getattr(base, key)
        if new == old:
            continue
        if key in RESUME_CHANGEABLE:
            changes[key] = new
        else:
            refused.append(f'{_option(key)} {new!r} (the checkpoint\'s run used {old!r})')
    if refused:
        raise ValueError(f'--resume continues the checkpoint\'s run, which cannot change {"; ".join(refused)}. '
                         f'On resume only {", ".join(map(_option, RESUME_CHANGEABLE))} may change; for another '
                         'setting start a new run (another --output), e.g. from these weights with --init-checkpoint.')
    return dataclasses.replace(base, **changes)
