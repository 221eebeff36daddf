"""Training settings: one :class:`TrainConfig`, from the defaults, a recipe (YAML) and the command line.

The papers' recipes ship in ``osnet_zoo/train/recipes/*.yaml``, each citing its source. A recipe sets any
training option; every option given on the command line overrides it. ``resolve_config`` returns the one
config object the training loop reads, and ``config.json`` in the run folder records it. The architecture
search's selection trains its children with a recipe too, so the recipes sit below both ``train`` and ``nas``.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import yaml

from .. import cli
from .settings import TRAIN_SETTINGS, config_class, option_name, resume_rule

__all__ = ['RECIPES_DIR', 'TrainConfig', 'RECIPE_KEYS', 'list_recipes', 'load_recipe', 'resolve_config',
           'resume_config', 'RESUME_CURRENT', 'RESUME_CHANGEABLE', 'check_channel_values']

RECIPES_DIR = Path(__file__).parents[1] / 'train' / 'recipes'  # beside the command that runs them


TrainConfig = config_class('TrainConfig', TRAIN_SETTINGS, module=__name__, doc="""Everything a training run uses,
one field per :data:`~osnet_zoo.engine.settings.TRAIN_SETTINGS` entry (its type, default and bounds, checked on
construction: the first bad value is a ``ValueError`` naming the option). ``to_dict()`` is the run's record.""")

RECIPE_KEYS = tuple(s.name for s in TRAIN_SETTINGS if s.recipe)


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
RESUME_CURRENT = resume_rule(TRAIN_SETTINGS, 'current')
# ... these may be changed by giving them (the learning-rate schedule is rebuilt for lr / epochs) ...
RESUME_CHANGEABLE = resume_rule(TRAIN_SETTINGS, 'changeable')
# ... and every other option is the checkpoint's: giving another value is refused.
_option = option_name


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
