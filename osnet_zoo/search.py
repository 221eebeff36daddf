"""`python -m osnet_zoo.search`: the nearest gallery images of each query image, as JSON, CSV and a picture.

The CLI of :mod:`osnet_zoo.inference.search`. The queries are image files, folders (searched recursively), glob
patterns, or a CSV listing (its ``query`` rows); the gallery is a folder, a CSV listing (its ``gallery`` rows) or
a features file written by ``python -m osnet_zoo.extract``, which is memory-mapped, never loaded whole. The
model is given as in every command: ``--checkpoint`` (a checkpoint file, or a training run: its folder,
``final/`` or ``final/model.safetensors``, whose record gives the architecture and input size) and/or ``--model``.
A features file made by another model, checkpoint or preprocessing is refused.

The distance is the cosine distance (evaluate's default): ``1 - <q, g>`` on L2-normalised features. The index
(docs/search.md): ``--index exact`` (default; faiss's flat index when faiss is installed,
``pip install "osnet-zoo[search]"``, else a chunked numpy search, the same answer), or an approximate faiss
index for very large galleries: ``--index ivf`` (``--nlist``, ``--nprobe``) or ``--index hnsw`` (``--hnsw-m``,
``--ef-construction``, ``--ef-search``).

Writes to ``--output``: ``results.json`` (the settings, then per query its ranked matches), ``results.csv``
(``query,rank,gallery,distance,gallery_pid,gallery_camid``; the identity and camera where a CSV listing gives
them) and ``ranked.png`` (the first ``--figure-queries`` queries and their matches).

Examples::

    python -m osnet_zoo.search --checkpoint runs/osnet --query person.jpg --gallery crops/ --topk 10 \\
        --output runs/search
    python -m osnet_zoo.extract --checkpoint runs/osnet crops/ --output gallery.safetensors
    python -m osnet_zoo.search --checkpoint runs/osnet --query queries/ --gallery gallery.safetensors \\
        --index ivf --nprobe 64 --output runs/search
    python -m osnet_zoo.search --model osnet_x1_0.msmt17_combineall --query mydata.csv --gallery mydata.csv
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import cli
from .data import find_images
from .data.datasets.listing import read_listing
from .inference import DEFAULT_MODEL, FeatureExtractor, apply_run_record
from .inference.backend import BACKEND_HELP, BACKENDS
from .inference.search import (
    ENGINES, INDEXES, IndexOptions, SearchItem, build_index, check_features_source, embed_images,
    ranked_lists_figure, result_rows, write_results,
)
from .inference.sharded import map_features

__all__ = ['get_args_parser', 'main']


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m osnet_zoo.search``."""
    description, epilog = cli.describe(__doc__)
    p = cli.ArgumentParser(prog='python -m osnet_zoo.search', description=description, epilog=epilog)
    p.add_argument('--query', nargs='+', required=True, metavar='IMAGES_OR_CSV',
                   help='query images: files, folders, quoted glob patterns, or one CSV listing (its query rows)')
    p.add_argument('--gallery', required=True, metavar='FOLDER_CSV_OR_FEATURES',
                   help='a folder of images, a CSV listing (its gallery rows) or an extract features file '
                        '(.safetensors)')
    p.add_argument('--topk', type=int, default=10, help='matches per query (default: 10)')
    cli.add_output(p, 'runs/search', 'output folder')
    p.add_argument('--checkpoint', help='checkpoint file, or a training run (its folder, final/ or '
                                        'final/model.safetensors: its architecture and input size are used)')
    cli.add_model(p, default=None, help=f"timm model name; with a tag (osnet_x1_0.msmt17_combineall) for pretrained "
                                        f"weights (default: a training run's own architecture, else {DEFAULT_MODEL})")
    p.add_argument('--no-pretrained', action='store_true',
                   help='random weights, seeded as extract seeds them (for trying the pipeline only)')
    index = p.add_argument_group('index (docs/search.md)')
    index.add_argument('--index', default='exact', choices=INDEXES,
                       help='exact (default), or an approximate faiss index: ivf or hnsw')
    index.add_argument('--engine', default='auto', choices=ENGINES,
                       help='auto (default): faiss when installed, else numpy (exact only); faiss; numpy')
    index.add_argument('--nlist', type=int, help='ivf: lists (default: sqrt(gallery size))')
    index.add_argument('--nprobe', type=int, help='ivf: lists searched per query (default: nlist / 8)')
    index.add_argument('--hnsw-m', type=int, default=32, help='hnsw: links per node (default: 32)')
    index.add_argument('--ef-construction', type=int, default=80, help='hnsw: build candidates (default: 80)')
    index.add_argument('--ef-search', type=int, default=128, help='hnsw: search candidates (default: 128)')
    index.add_argument('--chunk-rows', type=int, default=65536,
                       help='gallery rows read from disk at a time (default: 65536)')
    p.add_argument('--figure-queries', type=int, default=8, help='queries in ranked.png (0: no picture; default: 8)')
    cli.add_device(p)
    cli.add_precision(p)
    p.add_argument('--backend', default='auto', choices=BACKENDS, help=BACKEND_HELP)
    cli.add_batch_size(p, 64)
    cli.add_workers(p, 4, help='image decoding threads (default: 4)')
    cli.add_threads(p)
    return p


def _listing_items(path: str, split: str, option: str) -> List[SearchItem]:
    """The ``split`` rows of a CSV listing (checked as a dataset), with their identity and camera."""
    items = [SearchItem(it.path, it.pid, it.camid) for it in getattr(read_listing(path), split)]
    if not items:
        raise ValueError(f'{option} {path}: the listing has no {split} rows')
    return items


def _is_listing(path: str) -> bool:
    return path.lower().endswith('.csv')


def _query_items(sources: Sequence[str]) -> List[SearchItem]:
    """``--query``: one CSV listing, or image files / folders / globs."""
    if len(sources) == 1 and _is_listing(sources[0]):
        return _listing_items(sources[0], 'query', '--query')
    listed = [s for s in sources if _is_listing(s)]
    if listed:
        raise ValueError(f'--query {listed[0]}: a CSV listing is the only --query when given (no other images)')
    return [SearchItem(p) for p in find_images(sources)]


def _gallery(source: str) -> Tuple[List[SearchItem], Optional[np.ndarray], dict]:
    """``--gallery``: its items, and for a features file its memory-mapped features and metadata."""
    if source.lower().endswith('.safetensors'):
        if not os.path.isfile(source):
            raise FileNotFoundError(f'--gallery {source}: no such features file')
        features, paths, meta = map_features(source)
        if not len(paths):
            raise ValueError(f'--gallery {source}: the features file holds no images')
        return [SearchItem(p) for p in paths], features, meta
    if _is_listing(source):
        return _listing_items(source, 'gallery', '--gallery'), None, {}
    if not os.path.isdir(source):
        raise FileNotFoundError(f'--gallery {source}: not a folder, a CSV listing (.csv) or an extract features '
                                'file (.safetensors)')
    return [SearchItem(p) for p in find_images([source])], None, {}


def _extractor(args: argparse.Namespace, threads: int) -> FeatureExtractor:
    if args.no_pretrained and not args.checkpoint:
        torch.manual_seed(0)  # the random weights extract --no-pretrained has, so its features files match
    return FeatureExtractor(args.model, device=args.device, precision=args.precision, batch_size=args.batch_size,
                            pretrained=not (args.no_pretrained or args.checkpoint), checkpoint_path=args.checkpoint,
                            backend=args.backend, fixed_batch=True, threads=threads, spin=args.spin,
                            workers=args.workers)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``python -m osnet_zoo.search``; a bad input raises (:func:`osnet_zoo.cli.run` prints one line)."""
    args = get_args_parser().parse_args(argv)
    cli.check_at_least(topk=(args.topk, 1), batch_size=(args.batch_size, 1), figure_queries=(args.figure_queries, 0),
                       workers=(args.workers, 0))
    options = IndexOptions(kind=args.index, engine=args.engine, nlist=args.nlist, nprobe=args.nprobe,
                           hnsw_m=args.hnsw_m, ef_construction=args.ef_construction, ef_search=args.ef_search,
                           chunk_rows=args.chunk_rows)
    out = Path(args.output)
    if out.is_file():
        raise NotADirectoryError(f'--output {out} is a file; name a folder to write the results into')
    threads, cpu_line = cli.set_up_threads(args.threads, args.workers, 'decoding threads')
    print(cpu_line)
    apply_run_record(args, default_model=DEFAULT_MODEL)
    queries = _query_items(args.query)  # every input is checked before the model is built
    gallery, features, meta = _gallery(args.gallery)
    extractor = _extractor(args, threads)
    if features is not None:
        check_features_source(args.gallery, meta, features.shape[1], extractor, args.checkpoint)
    else:
        features = embed_images(extractor, [g.path for g in gallery], args.workers, desc='gallery')
    query_features = embed_images(extractor, [q.path for q in queries], args.workers, desc='query')
    index = build_index(features, options, progress=True)
    result = index.search(query_features, args.topk, progress=True)
    for note in result.notes:
        print(note)
    info = dict(model=args.model, checkpoint=args.checkpoint, distance='cosine', topk=args.topk,
                index=result.index, gallery=args.gallery, gallery_size=len(gallery),
                preprocessing=extractor.preprocessing)
    written = list(write_results(result_rows(result, queries, gallery), queries, out, info))
    if args.figure_queries:
        written.append(ranked_lists_figure(result, queries, gallery, out / 'ranked.png', args.figure_queries,
                                           args.topk, title=f'{args.model}: the nearest of {len(gallery)} images'))
    print(f'{len(queries)} queries x {len(gallery)} gallery images, top {result.indices.shape[1]}, '
          f'{result.index}; wrote {", ".join(map(str, written))}')
    return 0


if __name__ == '__main__':
    sys.exit(cli.run(main))
