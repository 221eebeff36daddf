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
       that takes a dataset reads, and what you can edit (docs/data.md, "Your own data"). A folder of people
       not split yet, FOLDER/<person>/<images>, is split by person: --test-fraction of them (default 0.5,
       drawn with --seed) held out for testing, each with one query image per camera that has two or more of
       their images and the rest in the gallery; the others train (docs/data.md).

Examples::

    python -m osnet_zoo.data stats --dataset market1501 --root ~/datasets
    python -m osnet_zoo.data stats --dataset cifar10 --root ~/datasets --height 32 --width 32
    python -m osnet_zoo.data stats --dataset msmt17 --root ~/datasets --max-images 20000 --output msmt17_stats.json
    python -m osnet_zoo.data stats --dataset shop/listing.csv
    python -m osnet_zoo.data to-csv ~/photos/shop --output shop/listing.csv
    python -m osnet_zoo.data to-csv ~/tracks/people --test-fraction 0.3 --seed 1 --output people.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from .. import cli
from ..files import atomic_write_json
from .datasets import LISTING_SPLITS, dataset_from_rows, folder_rows, split_people, write_listing
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
    to_csv.add_argument('folder', metavar='FOLDER',
                        help='the folder holding train/, query/ and/or gallery/, or one folder per person')
    to_csv.add_argument('--test-fraction', type=float, default=None,
                        help='a folder of people not split yet: the share of them held out for testing (default 0.5)')
    to_csv.add_argument('--seed', type=int, default=0,
                        help='a folder of people not split yet: the seed that draws the test people and their '
                             'queries (default 0)')
    cli.add_output(to_csv, None, 'the CSV listing to write (default FOLDER/listing.csv)')
    return parser


def to_csv(folder: str, output: Optional[str], test_fraction: Optional[float] = None,
           seed: int = 0) -> Dict[str, Any]:
    """``to-csv``: the listing of ``folder`` (split by person first when it is one folder per person), checked as
    a dataset, written to ``output``; returns its counts (and the people of each split when it split them)."""
    root = Path(folder).expanduser().absolute()
    people = None
    if any((root / split).is_dir() for split in LISTING_SPLITS):
        if test_fraction is not None:
            raise ValueError(f'--test-fraction: {root} is split already (it has train/, query/ or gallery/); '
                             'leave the option out, or give the folder of people')
        rows = folder_rows(root)
    else:
        rows, people = split_people(root, 0.5 if test_fraction is None else test_fraction, seed)
    path = Path(output) if output else root / 'listing.csv'
    dataset = dataset_from_rows(rows, path.stem, root, path.parent)
    written = write_listing(rows, path)
    print(dataset.summary())
    if people is not None:
        print(f"split {len(people['train']) + len(people['test'])} people by --seed {seed}: "
              f"{len(people['train'])} to train, {len(people['test'])} to test ({len(dataset.query)} queries, "
              f"{len(dataset.gallery)} gallery images)"
              + (f", {len(people['left_out'])} with one image left out" if people['left_out'] else ''))
    print(f'wrote {written} ({len(rows)} images)')
    return dict(listing=str(written), images=len(rows), **({'people': people} if people is not None else {}))


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run ``python -m osnet_zoo.data``; returns what the command computed."""
    args = get_args_parser().parse_args(argv)
    if args.command == 'to-csv':
        return to_csv(args.folder, args.output, args.test_fraction, args.seed)
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
