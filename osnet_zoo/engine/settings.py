"""Every training setting, declared once: a :class:`Setting` (name, kind, default, bounds, help, where it shows on
the command line, what ``--resume`` may do with it) in :data:`TRAIN_SETTINGS`.

From that one list come the config class (:func:`config_class`, i.e. ``TrainConfig`` and the record a run's
``config.json`` stores), the recipe check (:func:`check_value`: a wrong type or a value out of bounds is one line
naming the option), the command line (:func:`add_options`) and the resume rules (:func:`resume_rule`). Adding a
training option is one ``Setting`` here plus the code that uses it (docs/architecture.md shows an example).
The architecture search declares its own list with the same class and functions
(:data:`osnet_zoo.nas.search.SEARCH_SETTINGS`).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .. import cli
from ..cli import PRECISIONS
from ..data.datasets import PROTOCOLS
from ..data.labelled import LABELLED_AUGMENTATIONS
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, TRAIN_AUGMENTATIONS
from ..models.osnet import MIN_INPUT_SIZE
from .optim import OPTIMIZERS, SCHEDULERS

__all__ = ['Setting', 'TRAIN_SETTINGS', 'TRAIN_GROUPS', 'KINDS', 'check_value', 'config_class', 'add_options',
           'option_name', 'resume_rule']

# kind -> (what a value must be, in words; the Python type the config field holds)
KINDS: Dict[str, Tuple[str, Any]] = {
    'str': ('a string', str), 'str?': ('a string (or null)', Optional[str]), 'names': ('a list of names', List[str]),
    'int': ('an integer', int), 'int?': ('an integer (or null)', Optional[int]),
    'float?': ('a number (or null)', Optional[float]),
    'ints': ('a list of integers (epochs)', List[int]), 'float': ('a number', float), 'bool': ('true or false', bool),
    'dict': ('a mapping of KEY: VALUE', Dict[str, Any]), 'rgb': ('three numbers (R, G, B) in 0..1', List[float])}

# what a kind is on the command line (argparse keywords); a setting's own ``cli`` keywords come on top
_CLI_KINDS: Dict[str, Dict[str, Any]] = {
    'int': dict(type=int), 'int?': dict(type=int), 'float': dict(type=float), 'float?': dict(type=float),
    'names': dict(nargs='+'),
    'ints': dict(type=int, nargs='+'), 'rgb': dict(type=float, nargs=3, metavar=('R', 'G', 'B')),
    'dict': dict(nargs='+', metavar='KEY=VALUE')}


@dataclass(frozen=True)
class Setting:
    """One training setting.

    ``bounds``: the lowest value (numbers, and each number of a list), or the allowed values (a tuple), or None;
    ``above``: the value must lie above the lowest one, not reach it. ``empty_ok``: a list of names may be empty.
    ``group``: its ``--help`` group; None keeps it off the command line (a recipe sets it). ``cli``: extra
    argparse keywords (``metavar``, ``dest`` for a flag spelled otherwise, ``default``), or a function adding the
    option shared by every verb (``cli.add_device``). ``recipe``: a recipe may set it (else: command line only,
    where the run executes). ``resume``: on ``--resume``, 'fixed' (the checkpoint's value; another one is
    refused), 'changeable' (a given value wins) or 'current' (always this command line's)."""
    name: str
    kind: str
    default: Any
    bounds: Union[None, int, float, Tuple[str, ...]] = None
    above: bool = False
    empty_ok: bool = False
    help: Optional[str] = None
    group: Optional[str] = None
    cli: Union[Mapping[str, Any], Callable[[Any], None]] = field(default_factory=dict)
    recipe: bool = True
    resume: str = 'fixed'


def _augmentations() -> Tuple[str, ...]:
    """The re-ID augmentations, and those of the attribute / classification runs (osnet_zoo.data.labelled)."""
    return tuple(dict.fromkeys(TRAIN_AUGMENTATIONS + LABELLED_AUGMENTATIONS))


DATA, MODEL, OPTIM, EVAL, ENGINEERING = ('recipe and data', 'model', 'optimisation (default: the recipe\'s)',
                                         'evaluation', 'engineering')
TRAIN_GROUPS = (DATA, MODEL, OPTIM, EVAL, ENGINEERING)  # the order of ``python -m osnet_zoo.train --help``

TRAIN_SETTINGS: Tuple[Setting, ...] = (
    # --- what a recipe may set (the command line overrides it)
    Setting('model', 'str', 'osnet_x0_25', group=MODEL, cli=lambda g: cli.add_model(
        g, default=None, help='timm model name, e.g. osnet_x1_0, osnet_ain_x1_0, or any timm backbone '
                              '(resnet50, mobilenetv2_100: its pooled features; default: the recipe\'s)')),
    Setting('pretrained', 'str?', None, group=MODEL,
            help="pretrained tag to start from (e.g. 'imagenet'); 'none' for random"),
    Setting('sources', 'names', ['synthetic'], group=DATA,
            help='training datasets (several: identities relabelled per source): names, or paths to a CSV listing or a '
                 'dataset folder of your own images (docs/data.md)'),
    Setting('targets', 'names', ['synthetic'], group=DATA,
            help='evaluation datasets: names, or paths to a CSV listing or a dataset folder (docs/data.md)'),
    Setting('split_id', 'int?', None, 0, group=DATA,
            help=f'split of the multi-split benchmarks {sorted(PROTOCOLS)} (0..9)'),
    Setting('dataset_options', 'dict', {}, group=DATA, cli=dict(dest='dataset_options', flag='--dataset-option'),
            help="other options of those readers, e.g. VIPeR's direction=b2a (cam_b queries)"),
    Setting('init_checkpoint', 'str?', None, group=MODEL, cli=dict(metavar='PATH'),
            help='start from these weights: a training run folder (its final/model.safetensors, else its '
                 'checkpoint.pth), a final/ folder or a checkpoint file; a classifier of another class count is '
                 're-initialised'),
    Setting('model_args', 'dict', {}, group=MODEL,
            help='extra timm.create_model arguments, e.g. num_streams=1 (the T = 1 baseline)'),
    Setting('combineall', 'bool', False, group=DATA,
            help='train on all splits of the sources (MSMT17 protocol of the AIN paper)'),
    Setting('height', 'int', 256, MIN_INPUT_SIZE, group=DATA, help='input height'),
    Setting('width', 'int', 128, MIN_INPUT_SIZE, group=DATA, help='input width'),
    Setting('epochs', 'int', 10, 1, group=OPTIM, resume='changeable', help='training epochs'),
    Setting('batch_size', 'int', 64, 1, group=OPTIM, cli=lambda g: cli.add_batch_size(
        g, None, help='images per optimisation step over all processes (the global batch; split evenly across '
                      'torchrun processes)')),
    Setting('optim', 'str', 'adam', OPTIMIZERS, group=OPTIM, help='optimiser'),
    Setting('amsgrad', 'bool', True, help="Adam's AMSGrad variant (a recipe's setting)"),
    Setting('momentum', 'float', 0.9, 0, help="SGD's momentum (a recipe's setting)"),
    Setting('lr', 'float', 0.0015, 0, group=OPTIM, resume='changeable', help='learning rate'),
    Setting('weight_decay', 'float', 5e-4, 0, group=OPTIM, help='weight decay'),
    Setting('lr_scheduler', 'str', 'cosine', SCHEDULERS, group=OPTIM, help='learning-rate schedule'),
    Setting('stepsize', 'ints', [], 1, group=OPTIM, help='multistep milestones (epochs)'),
    Setting('gamma', 'float', 0.1, 0, group=OPTIM, help='multistep decay factor'),
    Setting('fixbase_epochs', 'int', 0, 0, group=OPTIM, help='first epochs train only the classifier'),
    Setting('transforms', 'names', ['random_flip'], _augmentations(), group=DATA, empty_ok=True,
            help='random_flip random_crop random_patch color_jitter random_erase'),
    Setting('label_smooth', 'float', 0.1, 0, group=OPTIM, help='label smoothing of the identity loss'),
    Setting('triplet_weight', 'float', 0.0, 0, group=OPTIM, help='weight of the hard-mining triplet loss (0: off)'),
    Setting('margin', 'float', 0.3, 0, group=OPTIM, help='triplet margin'),
    Setting('num_instances', 'int', 4, 1, group=OPTIM, help='images per identity in a batch (identity sampler)'),
    Setting('dml', 'bool', False, group=OPTIM,
            help='deep mutual learning of two networks; test features concatenate both'),
    Setting('eval_freq', 'int', 0, 0, group=EVAL, resume='changeable',
            help='evaluate every N epochs (0: only at the end)'),
    Setting('distance', 'str', 'euclidean', ('euclidean', 'cosine'), group=EVAL, help='distance between features'),
    # pixel normalisation (ICCV 2019 supplementary, Table 12a): ImageNet's statistics, or a dataset's own
    Setting('mean', 'rgb', list(IMAGENET_MEAN), 0, group=DATA,
            help="pixel mean (0..1; default ImageNet's; python -m osnet_zoo.data stats computes a dataset's)"),
    Setting('std', 'rgb', list(IMAGENET_STD), 0, group=DATA, help="pixel std (default ImageNet's)"),
    # entropy maximisation (Table 12c): the loss is L_ID - entropy_weight * entropy of the predictions
    Setting('entropy_weight', 'float', 0.0, 0, group=OPTIM,
            help='entropy maximisation: subtract this times the entropy of the predictions (0: off)'),
    Setting('citation', 'str?', None, help="the recipe's source (paper, table)"),
    # --- engineering: where and how the run executes (command line only)
    Setting('recipe', 'str', 'synthetic', group=DATA, recipe=False, cli=dict(default='synthetic'),
            help='shipped recipe name or a YAML file (default: synthetic)'),
    Setting('root', 'str?', None, group=DATA, recipe=False, resume='current', cli=cli.add_root),
    Setting('workers', 'int', 0, 0, group=DATA, recipe=False, resume='current', cli=cli.add_workers),
    Setting('device', 'str', 'cpu', group=ENGINEERING, recipe=False, resume='current', cli=cli.add_device),
    Setting('precision', 'str', 'fp32', PRECISIONS, group=ENGINEERING, recipe=False, resume='changeable',
            cli=lambda g: (cli.add_precision(g), cli.add_threads(g))),  # --threads: the process, not the run
    Setting('channels_last', 'bool', False, group=ENGINEERING, recipe=False, resume='changeable',
            help='channels_last memory format'),
    Setting('compile', 'bool', False, group=ENGINEERING, recipe=False, resume='changeable',
            help='torch.compile the model'),
    Setting('output', 'str', 'runs/osnet', group=ENGINEERING, recipe=False, resume='current',
            cli=lambda g: cli.add_output(g, 'runs/osnet', 'folder for checkpoints, logs, curves, final model')),
    Setting('resume', 'str?', None, group=ENGINEERING, recipe=False, resume='current',
            cli=dict(nargs='?', const='auto', default=None),
            help='resume from OUTPUT/checkpoint.pth (or the given checkpoint) with the settings it recorded; '
                 'only --lr, --epochs, --eval-freq, --precision and engineering options may change'),
    Setting('overwrite', 'bool', False, group=ENGINEERING, recipe=False, resume='current',
            help='when --output holds another run (other settings, a search, or an unfinished run without '
                 '--resume), move it aside to OUTPUT.replaced-<time> and start afresh (default: refuse)'),
    Setting('seed', 'int', 1, 0, group=ENGINEERING, recipe=False, cli=dict(default=1),
            help='random seed (default: 1)'),
    Setting('deterministic', 'bool', False, group=ENGINEERING, recipe=False, resume='changeable',
            help='deterministic algorithms (exact resume)'),
    Setting('tensorboard', 'bool', False, group=ENGINEERING, recipe=False, resume='changeable',
            help='also log to TensorBoard (needs tensorboard)'),
    Setting('max_steps_per_epoch', 'int', 0, 0, group=ENGINEERING, recipe=False, resume='changeable',
            cli=dict(default=0), help='cap iterations per epoch (smoke tests)'),
)


def option_name(name: str) -> str:
    """A setting's command-line spelling: ``batch_size`` -> ``--batch-size``."""
    return '--' + name.replace('_', '-')


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind_ok(kind: str, v: Any) -> bool:
    return {'str': lambda: isinstance(v, str), 'str?': lambda: v is None or isinstance(v, str),
            'names': lambda: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
            'int': lambda: _is_int(v), 'int?': lambda: v is None or _is_int(v),
            'ints': lambda: isinstance(v, (list, tuple)) and all(_is_int(x) for x in v),
            'float': lambda: isinstance(v, float) and v == v, 'float?': lambda: v is None or _kind_ok('float', v),
            'bool': lambda: isinstance(v, bool),
            'dict': lambda: isinstance(v, dict),
            'rgb': lambda: isinstance(v, (list, tuple)) and len(v) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1 for x in v)}[kind]()


def check_value(setting: Setting, value: Any) -> Any:
    """``value`` of ``setting`` as its kind wants it (a lone epoch or name becomes a list: ``stepsize: 60``,
    ``sources: market1501``), or a ``ValueError`` naming the option, the value and what it must be."""
    kind, limit, key = setting.kind, setting.bounds, setting.name
    if (kind == 'ints' and _is_int(value)) or (kind == 'names' and isinstance(value, str)):
        value = [value]
    if kind in ('float', 'float?') and _is_int(value):
        value = float(value)
    where = f'option {key!r} ({option_name(key)})'
    if not _kind_ok(kind, value):
        raise ValueError(f'{where}: expected {KINDS[kind][0]}, got {value!r} ({type(value).__name__}).')
    each = value if isinstance(value, (list, tuple)) else [value]
    if isinstance(limit, tuple):
        bad = [v for v in each if v not in limit]
        if bad:
            raise ValueError(f'{where}: {bad[0]!r} is not one of {", ".join(limit)}.')
    elif limit is not None and value is not None:
        bad = [v for v in each if v < limit or (setting.above and v == limit)]
        if bad:
            raise ValueError(f'{where} must be {">" if setting.above else ">="} {limit}, got {bad[0]!r}.')
    if kind == 'rgb':
        value = [float(v) for v in value]
    if kind in ('ints', 'names'):
        value = list(value)
        if kind == 'names' and not value and not setting.empty_ok:
            raise ValueError(f'{where}: expected at least one name, got an empty list.')
    return value


def config_class(name: str, settings: Sequence[Setting], doc: str, module: str) -> type:
    """A dataclass with one field per setting (its kind's type, its default; a list or dict default is copied
    per instance) whose construction checks every value (:func:`check_value`), the first bad one a
    ``ValueError`` naming it; ``to_dict()`` is the record (a run's config.json). ``module``: where it lives."""
    def field_of(s: Setting) -> Tuple[str, Any, Any]:
        if isinstance(s.default, (list, dict)):
            return s.name, KINDS[s.kind][1], field(default_factory=lambda d=s.default: copy.deepcopy(d))
        return s.name, KINDS[s.kind][1], field(default=s.default)

    def __post_init__(self) -> None:
        for s in settings:
            setattr(self, s.name, check_value(s, getattr(self, s.name)))

    def to_dict(self) -> Dict[str, Any]:
        """Every setting as a plain dict (what a run's config.json and checkpoints store)."""
        return dataclasses.asdict(self)

    cls = dataclasses.make_dataclass(name, [field_of(s) for s in settings], namespace=dict(
        __post_init__=__post_init__, to_dict=to_dict, __doc__=doc))
    cls.__module__ = module  # where it is imported from (docs, pickles, reprs)
    return cls


def _add_option(group: Any, s: Setting) -> None:
    if callable(s.cli):
        s.cli(group)
        return
    extra = dict(s.cli)
    flag = extra.pop('flag', option_name(s.name))
    if s.kind == 'bool':
        # a recipe's switch has --x / --no-x (None: the recipe's); an engineering switch is only --x
        action = argparse.BooleanOptionalAction if s.recipe else 'store_true'
        kwargs: Dict[str, Any] = dict(action=action, default=None if s.recipe else False)
    else:
        kwargs = dict(_CLI_KINDS.get(s.kind, {}), default=None)
        if s.kind == 'str' and isinstance(s.bounds, tuple):
            kwargs['choices'] = list(s.bounds)
    kwargs.update(extra, help=s.help)
    group.add_argument(flag, **kwargs)


def add_options(parser: argparse.ArgumentParser, settings: Sequence[Setting],
                groups: Sequence[str]) -> Dict[str, Any]:
    """One command-line option per setting that has a ``group``, in the argument groups ``groups`` (in that
    order; returned by title, for options that are not settings). A recipe's option defaults to None (not
    given: the recipe's value stands)."""
    made = {name: parser.add_argument_group(name) for name in groups}
    for s in settings:
        if s.group is not None:
            _add_option(made[s.group], s)
    return made


def resume_rule(settings: Sequence[Setting], rule: str) -> Tuple[str, ...]:
    """The names of the settings whose ``resume`` is ``rule`` ('current', 'changeable' or 'fixed')."""
    return tuple(s.name for s in settings if s.resume == rule)
