"""`python -m osnet_zoo.data`: facts about a dataset on disk (the command line of :mod:`osnet_zoo.data.stats`),
and a folder of your own images as a CSV listing.

stats  a dataset's splits (identities, images, cameras: the papers' Table 2) and the per-channel pixel
       mean and standard deviation of its training images (0..1 scale), each image resized to the training
       size first (so every image weighs the same), for dataset-specific normalisation (ICCV 2019
       supplementary, Table 12a). It prints them as recipe keys and as ``--mean`` / ``--std`` options, and
       with ``--output`` writes them to a JSON file. The dataset is a name, or a path to a CSV listing or a
       dataset folder of your own images (docs/data.md).

to-csv  a folder in the layout FOLDER/{train,query,gallery}/<person>/<images> (a camera, optionally, as a
       c<N> subfolder of the person or a c<N> token in the file name) as a CSV listing (path,pid,camid,split;
       paths relative to the listing's folder), checked as every command checks a listing: what every command
       that takes a dataset reads, and what you can edit (docs/data.md, "Your own data").

Examples::

    python -m osnet_zoo.data stats --dataset market1501 --root ~/datasets
    python -m osnet_zoo.data stats --dataset cifar10 --root ~/datasets --height 32 --width 32
    python -m osnet_zoo.data stats --dataset msmt17 --root ~/datasets --max-images 20000 --output msmt17_stats.json
    python -m osnet_zoo.data stats --dataset shop/listing.csv
    python -m osnet_zoo.data to-csv ~/photos/shop --output shop/listing.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from .. import cli
from ..files import atomic_write_json
from .datasets import dataset_from_rows, folder_rows, write_listing
from .stats import dataset_stats

__all__ = ['get_args_parser', 'main']


def _paragraph(text: str) -> str:
    """A command's paragraph of the docstring ('stats  text...') as its description: the text, capitalised."""
    words = ' '.join(text.split()[1:])
    return words[:1].upper() + words[1:]


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m osnet_zoo.data``."""
    description, epilog = cli.describe(__doc__)
    doc = epilog.split('\n\n')
    parser = cli.ArgumentParser(prog='python -m osnet_zoo.data', description=description, epilog=epilog)
    sub = parser.add_subparsers(dest='command', required=True, metavar='{stats,to-csv}')
    # the docstring's paragraph on each command ('stats  text...') is its description, the examples its epilog
    stats = sub.add_parser('stats', help='per-channel mean / std of the training images',
                           description=_paragraph(doc[0]), epilog='\n\n'.join(doc[2:]))
    stats.add_argument('--dataset', required=True,
                       help='dataset name (market1501, msmt17, pa100k, cifar10, ...), or a path to a CSV listing or '
                            'a dataset folder (docs/data.md)')
    cli.add_root(stats)
    stats.add_argument('--height', type=int, default=256, help='resize height (default 256)')
    stats.add_argument('--width', type=int, default=128, help='resize width (default 128)')
    stats.add_argument('--max-images', type=int, help='use this many training images, spread over the split')
    cli.add_batch_size(stats, 64)
    cli.add_workers(stats, 0, help='data-loading processes (default 0)')
    cli.add_output(stats, None, 'JSON file to write the statistics to (default: print only)')
    to_csv = sub.add_parser('to-csv', help='a folder of your own images as a CSV listing',
                            description=_paragraph(doc[1]), epilog='\n\n'.join(doc[2:]))
    to_csv.add_argument('folder', metavar='FOLDER', help='the folder holding train/, query/ and/or gallery/')
    cli.add_output(to_csv, None, 'the CSV listing to write (default FOLDER/listing.csv)')
    return parser


def to_csv(folder: str, output: Optional[str]) -> Dict[str, Any]:
    """``to-csv``: the listing of ``folder``, checked as a dataset, written to ``output``; returns its counts."""
    rows = folder_rows(folder)
    path = Path(output) if output else Path(folder).expanduser() / 'listing.csv'
    dataset = dataset_from_rows(rows, path.stem, Path(folder).expanduser().absolute(), path.parent)
    written = write_listing(rows, path)
    print(dataset.summary())
    print(f'wrote {written} ({len(rows)} images)')
    return dict(listing=str(written), images=len(rows))


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run ``python -m osnet_zoo.data``; returns what the command computed."""
    args = get_args_parser().parse_args(argv)
    if args.command == 'to-csv':
        return to_csv(args.folder, args.output)
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
