"""`python -m osnet_zoo.extract`: re-ID features of a folder (or glob) of person crops, resumable.

The CLI of :mod:`osnet_zoo.inference.sharded` (the library: :func:`~osnet_zoo.inference.sharded.extract_features`,
:func:`~osnet_zoo.inference.sharded.load_features`). The images are processed in shards; each finished shard is
written atomically to ``<output>.parts/`` so that an interrupted run (Ctrl-C, a killed job, ``--max-shards``)
continues where it stopped when rerun with the same arguments. When every shard is done they are joined into
``--output``: a safetensors file with ``features`` (N, D) float32 and, in its metadata, the image paths (row
order) and how they were made. Read it back with ``osnet_zoo.inference.load_features``.

Exit status: 0 done (or already complete), 2 a bad input (one ``error: ...`` line, printed by rank 0 under
torchrun), 3 stopped by ``--max-shards`` (rerun to continue).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from . import cli
from . import distributed as du
from .data import build_dataset, data_root
from .inference import DEFAULT_MODEL, apply_run_record
from .inference.backend import BACKEND_HELP, BACKENDS
from .inference.quantize import CALIBRATION_SIZE
from .inference.sharded import extract_features, load_features

__all__ = ['get_args_parser', 'main', 'ENDING']

def _check_existing_output(out: Path) -> None:
    """An existing ``--output`` is a finished run only when it is a features file: another file is an error
    naming it (never reported "complete")."""
    try:
        load_features(out)
    except Exception as e:  # safetensors' own errors for a file of another kind
        raise FileExistsError(f'--output {out} exists and is not an osnet_zoo features file '
                              f'({cli.error_message(e)[:120]}); move it away or choose another --output '
                              '(--overwrite replaces it).') from None


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m osnet_zoo.extract``."""
    parser = cli.ArgumentParser(
        prog='python -m osnet_zoo.extract',
        description='Compute OSNet re-ID features for a folder of person crops and save them, with the image '
                    'paths, to one safetensors file.',
        epilog='examples:\n'
               '  python -m osnet_zoo.extract --model osnet_x0_25.msmt17_combineall crops/ --output feats.safetensors\n'
               '  python -m osnet_zoo.extract --model osnet_x1_0 --checkpoint osnet_x1_0_market.pth \\\n'
               '      "data/**/*.jpg" --output feats.safetensors --device cuda --precision bf16\n'
               '  # a training run (its architecture and input size from its record), on a dataset split\n'
               '  python -m osnet_zoo.extract --checkpoint runs/osnet --dataset synthetic --split gallery \\\n'
               '      --output runs/feats/gallery.safetensors\n\n'
               '  torchrun --standalone --nproc_per_node 4 -m osnet_zoo.extract crops/ --output feats.safetensors\n\n'
               'Interrupted runs resume: rerun the same command. Partial results live in OUTPUT.parts/.\n'
               'Under torchrun each rank computes every world-size-th shard; rank 0 merges (docs/cluster.md).\n'
               'Read the result: feats, paths, meta = osnet_zoo.inference.load_features("feats.safetensors")')
    parser.add_argument('sources', nargs='*', metavar='IMAGES_DIR_OR_GLOB',
                        help='folders (searched recursively), image files, or quoted glob patterns ("**" recurses); '
                             'or --dataset')
    parser.add_argument('--dataset', help='instead of IMAGES: the images of a dataset under --root (market1501, '
                                          'synthetic, ...; a synthetic set is generated on first use), or of a '
                                          'CSV listing or dataset folder given by its path (docs/data.md)')
    parser.add_argument('--split', nargs='+', default=['query', 'gallery'], choices=['query', 'gallery', 'train'],
                        help="the dataset's splits, in this order (default: query gallery)")
    cli.add_root(parser)
    cli.add_output(parser, None, 'the features file to write (.safetensors)', required=True)
    cli.add_model(parser, default=None,
                  help=f"timm model name; with a tag (osnet_x1_0.msmt17_combineall) for pretrained weights "
                       f"(default: a training run's own architecture, else {DEFAULT_MODEL})")
    parser.add_argument('--checkpoint', default=None,
                        help='local checkpoint to load instead of pretrained weights, or a training run (its folder, '
                             'final/ or final/model.safetensors: its architecture and input size are used)')
    parser.add_argument('--no-pretrained', action='store_true',
                        help='random weights, seeded (for testing the pipeline only)')
    cli.add_device(parser)
    cli.add_precision(parser, choices=cli.INFERENCE_PRECISIONS,
                      help='fp32, bf16 / fp16, or int8 (CPU: the model quantized, calibrated on --calibration)')
    cli.add_calibration(parser, CALIBRATION_SIZE)
    cli.add_batch_size(parser, 64)
    parser.add_argument('--shard-size', type=int, default=2048, help='images per resumable shard (default 2048)')
    cli.add_workers(parser, 4, help='image decoding threads (default: 4)')
    cli.add_threads(parser)
    parser.add_argument('--no-normalize', action='store_true', help='keep raw embeddings (no L2 normalisation)')
    parser.add_argument('--skip-bad', action='store_true',
                        help='skip unreadable images (listed in the metadata) instead of stopping with an error')
    parser.add_argument('--optimize', action='store_true', help='run the model through optimize_for_inference')
    parser.add_argument('--backend', default='auto', choices=BACKENDS, help=BACKEND_HELP)
    parser.add_argument('--max-shards', type=int, default=None,
                        help='stop after this many new shards (the run stays resumable)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing complete --output file')
    return parser


def _sources(args: argparse.Namespace) -> List[str]:
    """The images to embed: IMAGES, or the image files of ``--split`` of ``--dataset`` under ``--root``."""
    if bool(args.sources) == bool(args.dataset):
        raise ValueError('give image folders / files / globs, or --dataset (with --root), not both and not neither')
    if not args.sources:
        with du.main_process_first():  # a synthetic set is generated once, by rank 0
            dataset = build_dataset(args.dataset, data_root(args.root))
        return [item.path for split in args.split for item in getattr(dataset, split)]
    return args.sources


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``python -m osnet_zoo.extract``; returns the exit status (0 done, 3 stopped by ``--max-shards``); a bad
    input raises (:func:`osnet_zoo.cli.run` prints it and exits with 2: :data:`ENDING`)."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    out = Path(args.output)
    try:
        # under torchrun: join the process group (gloo on CPU, NCCL on CUDA); rank r uses cuda:LOCAL_RANK
        device = du.init_distributed(args.device)
    except (RuntimeError, ValueError) as e:
        raise RuntimeError(f'cannot join the torchrun process group: {cli.error_message(e)}') from None
    main_rank = du.is_main_process()
    threads, cpu_line = cli.set_up_threads(args.threads, args.workers, 'decoding threads')
    if main_rank:  # the start line
        print(cpu_line)
    try:
        apply_run_record(args, default_model=DEFAULT_MODEL, log=print if main_rank else None)
        sources = _sources(args)
        if out.is_dir():
            raise IsADirectoryError(f'--output {out} is a folder; name the features file to write '
                                    f'(e.g. {out / "features.safetensors"}).')
        if out.exists() and not args.overwrite:  # every rank looks before any rank can write
            _check_existing_output(out)
            if main_rank:
                print(f'{out} already exists (complete); pass --overwrite to recompute it.')
            return 0
        complete = extract_features(
            sources, out, model=args.model, pretrained=not args.no_pretrained,
            checkpoint_path=args.checkpoint, device=str(device), precision=args.precision,
            batch_size=args.batch_size, shard_size=args.shard_size, normalize=not args.no_normalize,
            skip_bad=args.skip_bad, workers=args.workers, max_shards=args.max_shards, optimize=args.optimize,
            backend=args.backend, progress=main_rank, threads=threads, spin=args.spin,
            calibration=args.calibration, calibration_size=args.calibration_size)
    finally:
        du.cleanup()
    if not main_rank:
        return 0 if complete else 3
    if not complete:
        print(f'Stopped after {args.max_shards} shard(s)' + (' per rank' if du.get_world_size() > 1 else '') +
              f'; rerun the same command to continue (partial results in {out.name}.parts/).')
        return 3
    feats, paths, meta = load_features(out)
    print(f'Wrote {out}: {feats.shape[0]} x {feats.shape[1]} features ({args.model}); '
          f'{len(meta["skipped"])} unreadable images skipped.')
    return 0


# a bad input exits with 2 (3: stopped by --max-shards); under torchrun every rank has the error
# (distributed.fail_together) and rank 0 prints it
ENDING = dict(error_status=2, same_on_every_rank=True)

if __name__ == '__main__':
    sys.exit(cli.run(main, **ENDING))
