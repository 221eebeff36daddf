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
from osnet_zoo.data.datasets import PROTOCOLS
from osnet_zoo.engine import OPTIMIZERS, SCHEDULERS

from osnet_zoo.engine.recipes import TrainConfig, list_recipes, resolve_config

__all__ = ['get_args_parser', 'given_options', 'parse_config']

DESCRIPTION = 'Train OSNet for person re-identification.'


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m osnet_zoo.train``."""
    p = cli.ArgumentParser(
        prog='python -m osnet_zoo.train',
        description=DESCRIPTION + ' Shipped recipes: ' + ', '.join(list_recipes()) + '.',
        epilog=cli.describe(__doc__)[1])
    g = p.add_argument_group('recipe and data')
    g.add_argument('--recipe', default='synthetic', help='shipped recipe name or a YAML file (default: synthetic)')
    cli.add_root(g)
    g.add_argument('--sources', nargs='+', help='training datasets (several: identities relabelled per source)')
    g.add_argument('--targets', nargs='+', help='evaluation datasets')
    g.add_argument('--combineall', action=argparse.BooleanOptionalAction, default=None,
                   help='train on all splits of the sources (MSMT17 protocol of the AIN paper)')
    g.add_argument('--height', type=int, help='input height')
    g.add_argument('--width', type=int, help='input width')
    g.add_argument('--transforms', nargs='+', help='random_flip random_crop random_patch color_jitter random_erase')
    g.add_argument('--split-id', type=int, help=f'split of the multi-split benchmarks {sorted(PROTOCOLS)} (0..9)')
    g.add_argument('--mean', type=float, nargs=3, metavar=('R', 'G', 'B'),
                   help="pixel mean (0..1; default ImageNet's; python -m osnet_zoo.data stats computes a dataset's)")
    g.add_argument('--std', type=float, nargs=3, metavar=('R', 'G', 'B'), help="pixel std (default ImageNet's)")
    g.add_argument('--dataset-option', dest='dataset_options', nargs='+', metavar='KEY=VALUE',
                   help="other options of those readers, e.g. VIPeR's direction=b2a (cam_b queries)")
    cli.add_workers(g)
    g = p.add_argument_group('model')
    cli.add_model(g, default=None, help='timm model name, e.g. osnet_x1_0, osnet_ain_x1_0, or any timm backbone '
                                        '(resnet50, mobilenetv2_100: its pooled features; default: the recipe\'s)')
    g.add_argument('--pretrained', help="pretrained tag to start from (e.g. 'imagenet'); 'none' for random")
    g.add_argument('--init-checkpoint', metavar='PATH',
                   help='start from these weights: a training run folder (its final/model.safetensors, else its '
                        'checkpoint.pth), a final/ folder or a checkpoint file; a classifier of another class '
                        'count is re-initialised')
    g.add_argument('--model-args', nargs='+', metavar='KEY=VALUE',
                   help='extra timm.create_model arguments, e.g. num_streams=1 (the T = 1 baseline)')
    g = p.add_argument_group('optimisation (default: the recipe\'s)')
    g.add_argument('--epochs', type=int)
    cli.add_batch_size(g, None, help='images per optimisation step over all processes (the global batch; split '
                       'evenly across torchrun processes)')
    g.add_argument('--optim', choices=OPTIMIZERS)
    g.add_argument('--lr', type=float)
    g.add_argument('--weight-decay', type=float)
    g.add_argument('--lr-scheduler', choices=SCHEDULERS)
    g.add_argument('--stepsize', type=int, nargs='+', help='multistep milestones (epochs)')
    g.add_argument('--gamma', type=float, help='multistep decay factor')
    g.add_argument('--fixbase-epochs', type=int, help='first epochs train only the classifier')
    g.add_argument('--label-smooth', type=float)
    g.add_argument('--entropy-weight', type=float,
                   help='entropy maximisation: subtract this times the entropy of the predictions (0: off)')
    g.add_argument('--triplet-weight', type=float, help='weight of the hard-mining triplet loss (0: off)')
    g.add_argument('--margin', type=float, help='triplet margin')
    g.add_argument('--num-instances', type=int, help='images per identity in a batch (identity sampler)')
    g.add_argument('--dml', action=argparse.BooleanOptionalAction, default=None,
                   help='deep mutual learning of two networks; test features concatenate both')
    g = p.add_argument_group('evaluation')
    g.add_argument('--eval-freq', type=int, help='evaluate every N epochs (0: only at the end)')
    g.add_argument('--distance', choices=['euclidean', 'cosine'])
    g = p.add_argument_group('engineering')
    cli.add_device(g)
    cli.add_precision(g)
    cli.add_threads(g)
    g.add_argument('--channels-last', action='store_true', help='channels_last memory format')
    g.add_argument('--compile', action='store_true', help='torch.compile the model')
    cli.add_output(g, 'runs/osnet', 'folder for checkpoints, logs, curves, final model')
    g.add_argument('--resume', nargs='?', const='auto', default=None,
                   help='resume from OUTPUT/checkpoint.pth (or the given checkpoint) with the settings it recorded; '
                        'only --lr, --epochs, --eval-freq, --precision and engineering options may change')
    g.add_argument('--overwrite', action='store_true', default=None,
                   help='when --output holds another run (other settings, a search, or an unfinished run without '
                        '--resume), move it aside to OUTPUT.replaced-<time> and start afresh (default: refuse)')
    g.add_argument('--seed', type=int, default=1, help='random seed (default: 1)')
    g.add_argument('--deterministic', action='store_true', help='deterministic algorithms (exact resume)')
    g.add_argument('--tensorboard', action='store_true', help='also log to TensorBoard (needs tensorboard)')
    g.add_argument('--max-steps-per-epoch', type=int, default=0, help='cap iterations per epoch (smoke tests)')
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
