"""`python -m osnet_zoo.data`: facts about a dataset on disk (the command line of :mod:`osnet_zoo.data.stats`).

stats  a dataset's splits (identities, images, cameras: the papers' Table 2) and the per-channel pixel
       mean and standard deviation of its training images (0..1 scale), each image resized to the training
       size first (so every image weighs the same), for dataset-specific normalisation (ICCV 2019
       supplementary, Table 12a). It prints them as recipe keys and as ``--mean`` / ``--std`` options, and
       with ``--output`` writes them to a JSON file.

Examples::

    python -m osnet_zoo.data stats --dataset market1501 --root ~/datasets
    python -m osnet_zoo.data stats --dataset cifar10 --root ~/datasets --height 32 --width 32
    python -m osnet_zoo.data stats --dataset msmt17 --root ~/datasets --max-images 20000 --output msmt17_stats.json
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, Optional, Sequence

from .. import cli
from ..files import atomic_write_json
from .stats import dataset_stats

__all__ = ['get_args_parser', 'main']


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m osnet_zoo.data``."""
    description, epilog = cli.describe(__doc__)
    doc = epilog.split('\n\n')
    parser = cli.ArgumentParser(prog='python -m osnet_zoo.data', description=description, epilog=epilog)
    sub = parser.add_subparsers(dest='command', required=True, metavar='{stats}')
    # the docstring's paragraph on the command ('stats  text...') is its description
    stats = sub.add_parser('stats', help='per-channel mean / std of the training images',
                           description=' '.join(doc[0].split()[1:]).capitalize(), epilog='\n\n'.join(doc[1:]))
    stats.add_argument('--dataset', required=True, help='dataset name (market1501, msmt17, pa100k, cifar10, ...)')
    cli.add_root(stats)
    stats.add_argument('--height', type=int, default=256, help='resize height (default 256)')
    stats.add_argument('--width', type=int, default=128, help='resize width (default 128)')
    stats.add_argument('--max-images', type=int, help='use this many training images, spread over the split')
    cli.add_batch_size(stats, 64)
    cli.add_workers(stats, 0, help='data-loading processes (default 0)')
    cli.add_output(stats, None, 'JSON file to write the statistics to (default: print only)')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run ``python -m osnet_zoo.data``; returns what ``stats`` computed."""
    args = get_args_parser().parse_args(argv)
    result = dataset_stats(args.dataset, args.root, args.height, args.width, args.max_images, args.batch_size,
                           args.workers)
    mean, std = (' '.join(f'{v:.4f}' for v in result[k]) for k in ('mean', 'std'))
    print(result['summary'])
    print(f"mean/std of {result['images']} training images at {args.height}x{args.width}:")
    print(f'recipe keys:  mean: [{mean.replace(" ", ", ")}]   std: [{std.replace(" ", ", ")}]')
    print(f'options:      --mean {mean} --std {std}')
    if args.output:
        atomic_write_json(args.output, result)
        print(f'wrote {args.output}')
    return result


if __name__ == '__main__':
    sys.exit(cli.run(main))
