"""The options of ``python -m osnet_zoo.train`` (a library module: the protocol of the small benchmarks parses
the options it forwards with it too). Its --help ends with the rest of this docstring.

Examples::

    python -m osnet_zoo.train                                   # synthetic demo, CPU, a few minutes
    python -m osnet_zoo.train --recipe imagenet_finetune --root ~/datasets --sources market1501
    python -m osnet_zoo.train --recipe cross_domain_msmt17 --root ~/datasets --device cuda --precision bf16
    python -m osnet_zoo.train --recipe mix4 --root ~/datasets --device cuda --output runs/mix4
    python -m osnet_zoo.train --recipe attributes_pa100k --root ~/datasets --device cuda --output runs/pa100k
    python -m osnet_zoo.train --recipe cifar10 --root ~/datasets --device cuda \\
        --model-args layers=[3,8,6] stem=cifar num_streams=1 aggregation=add
    python -m osnet_zoo.train --model resnet50 --pretrained none --sources market1501 --root ~/datasets
    python -m osnet_zoo.train --recipe small_finetune --sources viper --targets viper --split-id 3 \\
        --init-checkpoint runs/mix4 --root ~/datasets --output runs/viper/split_03
    torchrun --nproc_per_node 8 -m osnet_zoo.train --recipe scratch --root ~/datasets --device cuda

Any recipe value can be overridden by its command-line option. Every epoch an atomic checkpoint is written
to ``OUTPUT/checkpoint.pth``; ``--resume`` continues from it.
"""
from __future__ import annotations

import argparse
from typing import List, Optional, Sequence, Tuple

from osnet_zoo import cli
from osnet_zoo.engine.recipes import TrainConfig, list_recipes, resolve_config
from osnet_zoo.engine.settings import TRAIN_GROUPS, TRAIN_SETTINGS, add_options

__all__ = ['get_args_parser', 'given_options', 'parse_config']

DESCRIPTION = 'Train OSNet for person re-identification.'


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m osnet_zoo.train``."""
    p = cli.ArgumentParser(
        prog='python -m osnet_zoo.train',
        description=DESCRIPTION + ' Shipped recipes: ' + ', '.join(list_recipes()) + '.',
        epilog=cli.describe(__doc__)[1])
    add_options(p, TRAIN_SETTINGS, TRAIN_GROUPS)  # one option per declared setting (engine/settings.py)
    return p


def given_options(argv: Optional[List[str]]) -> List[str]:
    """The config keys that ``argv`` (the command line) sets explicitly, defaults aside."""
    parser = get_args_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return sorted(vars(parser.parse_args(argv)))


def parse_config(argv: Optional[Sequence[str]] = None) -> Tuple[TrainConfig, List[str]]:
    """The run's config from the command line ``argv`` (the recipe, then the options), and the options the
    command line names (what ``--resume`` may change)."""
    args = get_args_parser().parse_args(argv)
    args.workers = cli.resolve_workers(args.workers, args.device)
    return resolve_config(args), given_options(list(argv) if argv is not None else None)
