"""`python -m osnet_zoo.visualize`: the papers' analysis figures, for any model and any images (the CLI of
:mod:`osnet_zoo.inference.figures`, which computes and draws them).

actmap      activation maps of the last convolutional feature maps (conv5, ``model.forward_features``):
            the sum of absolute values over channels, then spatial L2 normalisation, upsampled to the
            input and overlaid on each image as a colour map (red = high). ``--compare`` puts a second
            model beside the first (the papers compare OSNet with the single-scale T = 1 baseline).
gates       the aggregation-gate analysis: the gating vectors of the streams in the last omni-scale block
            (one per stream, from the shared ``ChannelGate``), concatenated per image, clustered with
            k-means (no cluster left empty, even when many images share one gate vector); the images
            closest to each cluster centre are shown, one row per cluster. Uses the whole split unless
            --max-images says otherwise.
attributes  the attribute picture (ICCV 2019, Fig. 7) of a model trained with ``--recipe attributes_pa100k``:
            test images of PA-100K, each with the predicted likelihood of every attribute it has, green
            where it is right at 50%, red where it is not.

Examples::

    # activation maps of 32 query images of Market1501, OSNet beside its T = 1 baseline
    python -m osnet_zoo.visualize actmap --model osnet_x1_0 --checkpoint osnet_x1_0_market.pth \\
        --compare osnet_x1_0 --compare-checkpoint osnet_t1_market.pth --compare-args num_streams=1 \\
        --dataset market1501 --root ~/data --split query --max-images 32 --output runs/actmap

    # the same for your own crops (files or folders), with pretrained weights from the Hub
    python -m osnet_zoo.visualize actmap --model osnet_x1_0.msmt17_combineall crops/ person.jpg

    # gate clusters of the Market1501 query set: 6 clusters, the 15 images nearest each centre
    python -m osnet_zoo.visualize gates --model osnet_x1_0.msmt17_combineall \\
        --dataset market1501 --root ~/data --split query --clusters 6 --output runs/gates

    # try it without any download: random weights on the synthetic dataset (generated on first use)
    python -m osnet_zoo.visualize gates --model osnet_x0_25 --no-pretrained --root /tmp/data --clusters 3

    # Fig. 7: likelihoods on the ground-truth attributes of 6 PA-100K test images (a run of attributes_pa100k)
    python -m osnet_zoo.visualize attributes --run runs/pa100k --root ~/data --max-images 6

Outputs (in ``--output``): ``actmap`` writes ``actmaps.png`` (a title, the colour scale, then a grid: the
images, then one row of maps per model) and ``maps/NNNN_<image>.png`` (per image: the image, then its map for
each model, then a colour bar); ``gates`` writes ``gate_clusters.png`` (a title and legend, then the clusters,
each image's distance to the centre under it) and ``gate_clusters.json`` (every image's cluster and distance to
the centre, and each cluster's nearest images); ``attributes`` writes ``attributes.png`` and
``attributes.json`` (per image its ground-truth attributes with their probabilities).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from . import cli
from .data import ReIDItem
from .precision import autocast_dtype
from .inference import apply_run_record, build_embedding_model
from .inference.figures import SPLITS, collect_items, input_size, run_actmap, run_attributes, run_gates
from .models.osnet import MIN_INPUT_SIZE

__all__ = ['get_args_parser', 'main']

# the figures read OSNet's blocks (the omni-scale blocks, their aggregation gates)
WHY_OSNET = "the visualisations read OSNet's blocks (osnet_* models)"


# ----------------------------------------------------------------------------------------------- the CLI

def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m osnet_zoo.visualize {actmap,gates}``."""
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group('model and images')
    g.add_argument('images', nargs='*', metavar='IMAGE_OR_FOLDER',
                   help='image files or folders (searched recursively); without them, --dataset is used')
    g.add_argument('--model',
                   help="osnet_* name; with a tag (osnet_x1_0.msmt17_combineall) for pretrained weights, or with "
                        "--checkpoint (default: a training run's own architecture)")
    g.add_argument('--checkpoint', help='checkpoint file to load (safetensors, .pth, .pth.tar; any OSNet layout), or '
                                        'a training run (its folder, final/ or final/model.safetensors: its '
                                        'architecture, input size and mean/std are used)')
    g.add_argument('--model-args', nargs='+', default=[], metavar='KEY=VALUE',
                   help='architecture arguments for --model, e.g. num_streams=1 (the T = 1 baseline)')
    g.add_argument('--no-pretrained', action='store_true', help='random weights (to try the pipeline only)')
    g.add_argument('--dataset', help='dataset name: market1501, dukemtmcreid, msmt17, cuhk03, synthetic, ... '
                                     '(default synthetic, generated under --root on first use), or a path to a '
                                     'CSV listing or a dataset folder (docs/data.md)')
    g.add_argument('--root', default=cli.DEFAULT_DATA_ROOT,
                   help='folder holding the datasets (default: $OSNET_ZOO_DATA or ~/.cache/osnet_zoo/data)')
    g.add_argument('--split', default='query', choices=SPLITS, help='dataset split to show (default query)')
    r = common.add_argument_group('running')
    r.add_argument('--output', help='output folder (default runs/visualize/<command>)')
    r.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                   help='cpu, cuda, cuda:1, ... (default: cuda if available)')
    cli.add_precision(r, help='forward-pass precision: fp32, or bf16 / fp16 autocast')
    r.add_argument('--batch-size', type=int, default=32, help='images per forward pass (default: 32)')
    r.add_argument('--workers', type=int, default=2, help='data-loading processes (default 2)')
    r.add_argument('--height', type=int, help="input height (default: the model's pretrained_cfg, 256)")
    r.add_argument('--width', type=int, help="input width (default: the model's pretrained_cfg, 128)")

    doc = __doc__.split('\n\n')
    # the module docstring's paragraph on each command ('name  text...') is that command's description
    commands = {m.group(1): m.group(2)[:1].upper() + ' '.join(m.group(2)[1:].split())
                for m in re.finditer(r'^(\w+)\s{2,}(.*?)(?=\n\w|\Z)', doc[1], re.S | re.M)}
    examples = '\n\n'.join(doc[2:])
    parser = cli.ArgumentParser(prog='python -m osnet_zoo.visualize', description='The papers\' analysis '
                                'figures (OSNet, ICCV 2019 / TPAMI 2021), for any model and any images.',
                                epilog='\n\n'.join(doc[1:]))
    sub = parser.add_subparsers(dest='command', required=True, metavar='{actmap,gates,attributes}')
    act = sub.add_parser('actmap', parents=[common],
                         help='activation maps overlaid on the images', description=commands['actmap'],
                         epilog=examples)
    act.add_argument('--compare', metavar='MODEL', help='a second model shown beside --model (same options below)')
    act.add_argument('--compare-checkpoint', help='checkpoint of the --compare model')
    act.add_argument('--compare-args', nargs='+', default=[], metavar='KEY=VALUE',
                     help='architecture arguments of the --compare model, e.g. num_streams=1')
    act.add_argument('--alpha', type=float, default=0.6, help='weight of the colour map in the overlay (0..1)')
    act.add_argument('--grid-images', type=int, default=16, help='images in the actmaps.png grid (default 16)')
    # --max-images per command: a default set on one sub-parser would reach the other through the shared
    # parent's argument (argparse's set_defaults changes the action's default, and parents share actions)
    act.add_argument('--max-images', type=int, default=32,
                     help='use this many images, spread evenly over the split (default 32)')
    gates = sub.add_parser('gates', parents=[common],
                           help='k-means clusters of the aggregation-gate vectors',
                           description=commands['gates'], epilog=examples)
    gates.add_argument('--clusters', type=int, default=6, help='k of k-means (default 6)')
    gates.add_argument('--per-cluster', type=int, default=15, help='images shown per cluster (default 15)')
    gates.add_argument('--seed', type=int, default=0, help='k-means seed (default 0)')
    gates.add_argument('--max-images', type=int,
                       help='use this many images, spread evenly over the split (default: all of them)')
    attrs = sub.add_parser('attributes',
                           help='likelihoods on the ground-truth attributes (Fig. 7)',
                           description=commands['attributes'], epilog=examples)
    attrs.add_argument('--run', required=True,
                       help='a training run of attributes_pa100k (its final/ folder is loaded), or a final/ folder')
    attrs.add_argument('--dataset', default='pa100k', choices=['pa100k'], help='attribute dataset (pa100k)')
    cli.add_root(attrs)
    attrs.add_argument('--split', default='test', choices=['train', 'val', 'test'], help='split (default test)')
    attrs.add_argument('--max-images', type=int, default=6, help='images shown, spread over the split (default 6)')
    attrs.add_argument('--threshold', type=float, default=0.5, help='probability of a positive (default 0.5)')
    cli.add_output(attrs, 'runs/visualize/attributes', 'output folder')
    cli.add_device(attrs)
    cli.add_precision(attrs, help='forward-pass precision: fp32, or bf16 / fp16 autocast')
    cli.add_batch_size(attrs, 32)
    cli.add_workers(attrs, 0, help='data-loading processes (default 0)')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the CLI; returns what was written (the gates JSON, or the actmap file list)."""
    args = get_args_parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError('--device cuda but no CUDA device is available')
    if args.command == 'attributes':
        cli.check_at_least(batch_size=(args.batch_size, 1), workers=(args.workers, 0))
        out = Path(args.output)
        result = run_attributes(args.run, args.dataset, args.root, args.split, out, device, args.max_images,
                                args.threshold, args.batch_size, args.workers, args.precision)
        print(f'wrote {out / "attributes.png"} and {out / "attributes.json"} ({len(result["images"])} images)')
        return result
    cli.check_at_least(batch_size=(args.batch_size, 1), workers=(args.workers, 0),
                       height=(args.height, MIN_INPUT_SIZE), width=(args.width, MIN_INPUT_SIZE),
                       grid_images=(getattr(args, 'grid_images', None), 1),
                       clusters=(getattr(args, 'clusters', None), 1),
                       per_cluster=(getattr(args, 'per_cluster', None), 1))
    model_args = cli.parse_key_values(args.model_args, '--model-args')
    compare_args = cli.parse_key_values(getattr(args, 'compare_args', []), '--compare-args')
    out = Path(args.output or f'runs/visualize/{args.command}')
    if out.exists() and not out.is_dir():  # before any model runs: the figures could not be written there
        raise NotADirectoryError(f'--output {out} is a file, not a folder.')
    items = collect_items(args.images, args.dataset, args.root, args.split, args.max_images)
    apply_run_record(args)  # a training run: its architecture, model args, input size and mean/std
    model = build_embedding_model(cli.check_osnet(args.model, WHY_OSNET), pretrained=not args.no_pretrained,
                                  checkpoint_path=args.checkpoint, model_args=model_args).to(device)
    size = input_size(model, args.height, args.width)
    print(f'{args.command}: {len(items)} images, model {args.model}'
          + (f' ({args.checkpoint})' if args.checkpoint else '') + f', input {size[0]}x{size[1]}, device {device}'
          + ('' if args.precision == 'fp32' else f', {args.precision}'))
    dtype = autocast_dtype(args.precision)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        return _run_command(args, items, model, size, compare_args, out, device)


def _run_command(args: argparse.Namespace, items: List[ReIDItem], model: nn.Module, size: Tuple[int, int],
                 compare_args: Dict[str, Any], out: Path, device: torch.device) -> Dict[str, Any]:
    if args.command == 'actmap':
        models = {args.model: model}
        if args.compare:
            name = ' '.join([args.compare] + args.compare_args)
            models[name if name not in models else f'{name} (2)'] = build_embedding_model(
                cli.check_osnet(args.compare, WHY_OSNET), pretrained=not args.no_pretrained,
                checkpoint_path=args.compare_checkpoint, model_args=compare_args).to(device)
        result = run_actmap(items, models, out, device, args.batch_size, args.workers, size, args.alpha,
                            args.grid_images)
        print(f'wrote {result["grid"]} and {len(result["maps"])} maps in {out / "maps"}')
    else:
        result = run_gates(items, model, out, device, args.clusters, args.per_cluster, args.seed, args.batch_size,
                           args.workers, size, model_name=args.model)
        sizes = ', '.join(str(c['size']) for c in result['clusters'])
        print(f'wrote {out / "gate_clusters.png"} and {out / "gate_clusters.json"} (cluster sizes {sizes})')
    return result


if __name__ == '__main__':
    # bad models, checkpoints, data roots, images, output folders: one line naming the thing, no traceback
    sys.exit(cli.run(main))
