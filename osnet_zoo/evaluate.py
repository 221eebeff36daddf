"""`python -m osnet_zoo.evaluate`: evaluate an OSNet on re-ID benchmarks (CMC, mAP, mINP), with pictures.

The command line only: the CLI of osnet_zoo.evaluation (features, metrics, the results.json schema, the feature
cache) and osnet_zoo.evaluation.labelled (--task classification / attributes).

Examples::

    python -m osnet_zoo.evaluate --model osnet_ain_x1_0.msmt17_combineall \\
        --dataset market1501 dukemtmcreid --root ~/data
    python -m osnet_zoo.evaluate --model osnet_x0_25 --checkpoint model.pth --dataset synthetic --root /tmp/data
    python -m osnet_zoo.evaluate --checkpoint runs/osnet --dataset synthetic    # a training run, as it was trained
    python -m osnet_zoo.evaluate --checkpoint runs/mine    # on the targets the run itself was evaluated on
    python -m osnet_zoo.evaluate --task classification --model osnet_x1_0.imagenet --dataset imagenet --root ~/data
    python -m osnet_zoo.evaluate --task classification --checkpoint runs/cifar10/final --dataset cifar10 --root ~/data

A training run (its folder, ``final/`` or ``final/model.safetensors``) describes itself: the architecture,
input size, mean/std and distance come from its ``final/config.json``; an explicit ``--model``, ``--height``,
``--width`` or ``--distance`` overrides them, and the command says so. Without ``--dataset`` it is evaluated
on the targets its training run recorded (a CSV listing of your own images included), with the run's ``--root``.

For each target dataset it extracts query and gallery embeddings (progress bars), ranks the gallery for
every query under the dataset's protocol, prints R1/R5/R10/R20, mAP and mINP, and writes to ``--output``:
``results.json`` (the schema of docs/evaluation.md, shared with train), ``cmc.png`` (the CMC curves) and
``ranked_<dataset>.png`` (queries with their top-10, true matches framed green, false red). Extracted features
are cached in the output folder, keyed on the images (path, size, mtime), the weights, the preprocessing,
flip and precision, so a run that stops (or a second run with ``--rerank``) picks up where
it was; it prints "features from cache: ..." when it does.

Under torchrun every process embeds a share of each split (the features equal a one-process run's); rank 0
computes the metrics and writes the files: ``torchrun --nproc_per_node 2 -m osnet_zoo.evaluate ...``
(see docs/cluster.md).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch

from . import cli
from . import distributed as du
from .data import IMAGENET_MEAN, IMAGENET_STD, build_dataset, data_root
from .data.datasets import LABELLED_DATASETS, dataset_file_tag
from .engine.checkpoint import refuse_run_folder
from .evaluation import cached_split_features, rank_split, results_document, target_metrics
from .evaluation.labelled import load_classifier, score_labelled
from .files import atomic_write_json
from .inference import apply_run_record, build_embedding_model, build_runtime, select_backend
from .inference.backend import BACKEND_HELP, BACKENDS
from .inference.quantize import CALIBRATION_SIZE, default_calibration, run_targets
from .metrics import pairwise_distance
from .metrics.plots import pick_queries, plot_cmc, ranked_results_grid, summary_line
from .models.osnet import MIN_INPUT_SIZE
from .precision import QUANTIZED
from .weights import model_digest

__all__ = ['main', 'get_args_parser', 'evaluate_labelled_cli', 'ENDING']


def evaluate_labelled_cli(args: argparse.Namespace, device: torch.device) -> Dict:
    """``--task classification|attributes``: score the classifier on the test split of each ``--dataset``
    with its pretrained_cfg preprocessing (the ImageNet classifiers: 224 centre crop of the 256x256 image);
    results.json holds top1/top5/error (or the attribute metrics) per dataset."""
    model = load_classifier(args.model, args.checkpoint).eval().to(device)
    cfg = model.pretrained_cfg
    size = (args.height or cfg['input_size'][1], args.width or cfg['input_size'][2])
    crop = ('resize_crop',) if cfg.get('crop_pct', 1.0) < 1.0 else ()
    out = Path(args.output)
    targets: Dict[str, Dict] = {}
    # the results.json of every command (evaluation.results_document); a classifier has no distance
    summary = results_document(targets, model=args.model, checkpoint=args.checkpoint, distance=None, input_size=size,
                               precision=args.precision, task=args.task, crop_pct=cfg.get('crop_pct', 1.0),
                               device=str(device))
    for name in args.dataset:
        if name not in LABELLED_DATASETS:
            raise ValueError(f'--dataset {name}: not a {args.task} dataset; choose from '
                             f'{", ".join(sorted(LABELLED_DATASETS))}')
        ds = LABELLED_DATASETS[name](data_root(args.root))
        expected = 'attributes' if args.task == 'attributes' else 'classification'
        if ds.task != expected:
            raise ValueError(f'--dataset {name} is a {ds.task} dataset, not one for --task {args.task}')
        if model.num_classes != ds.num_classes:
            raise ValueError(f'the model has {model.num_classes} outputs, {name} has {ds.num_classes} '
                             f'{"attributes" if ds.task == "attributes" else "classes"}')
        print(ds.summary())
        r = score_labelled(model, ds.task, ds.test, device, size, cfg['mean'], cfg['std'], crop, args.batch_size,
                           args.workers, args.precision, crop_pct=cfg.get('crop_pct', 1.0))
        targets[name] = r
        print(f'{name}: ' + ('  '.join(f'{k} {100 * r[k]:.2f}%' for k in ('top1', 'top5', 'error'))
                             if ds.task == 'classification' else
                             '  '.join(f'{k} {100 * r[k]:.2f}%' for k in ('mA', 'accuracy', 'precision', 'recall',
                                                                            'f1'))))
    atomic_write_json(out / 'results.json', summary, indent=1)
    print(f'wrote {out / "results.json"}')
    return summary


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m osnet_zoo.evaluate``."""
    description, epilog = cli.describe(__doc__)
    p = cli.ArgumentParser(prog='python -m osnet_zoo.evaluate', description=description, epilog=epilog)
    cli.add_model(p, default=None,
                  help="osnet_* name; with a tag (osnet_x1_0.msmt17_combineall) for pretrained weights, or with "
                       "--checkpoint (default: a training run's own architecture)")
    p.add_argument('--checkpoint', help='checkpoint file to load (safetensors, .pth, .pth.tar), or a training run '
                                        '(its folder, final/ or final/model.safetensors)')
    p.add_argument('--no-pretrained', action='store_true',
                   help='random weights, seeded (to try the pipeline only; as extract, export and visualize)')
    p.add_argument('--task', default='reid', choices=['reid', 'classification', 'attributes'],
                   help='reid (default); classification: single-crop top-1/top-5 on a class dataset (imagenet val '
                        'folders, cifar10, cifar100) with the classifier; attributes: the PA-100K metrics')
    p.add_argument('--dataset', nargs='+', default=None,
                   help='target dataset(s): market1501, dukemtmcreid, msmt17, cuhk03 (= cuhk03_detected), '
                        'cuhk03_labeled, synthetic, synthetic_b, a registered reader, or a path to a CSV listing or '
                        'a dataset folder of your own images (docs/data.md) (default: the targets a training run given '
                        'as --checkpoint was evaluated on, with its --root; else synthetic)')
    cli.add_root(p)
    p.add_argument('--distance', default=None, choices=['cosine', 'euclidean'],
                   help="distance: cosine or squared euclidean (default: a training run's own, else cosine)")
    p.add_argument('--rerank', action='store_true', help='k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)')
    p.add_argument('--flip', action='store_true', help='average the features of each image and its mirror')
    p.add_argument('--cuhk03-single-shot', action='store_true',
                   help='CUHK03 classic single-gallery-shot CMC (10 seeded draws)')
    cli.add_device(p)
    cli.add_precision(p, choices=cli.INFERENCE_PRECISIONS,
                      help='feature extraction precision: fp32, bf16 / fp16 autocast, or int8 (CPU: the model '
                           'quantized, calibrated on --calibration)')
    cli.add_calibration(p, CALIBRATION_SIZE)
    p.add_argument('--backend', default='auto', choices=BACKENDS, help=BACKEND_HELP)
    cli.add_batch_size(p, 128)
    cli.add_workers(p, 2, help='data-loading worker processes (default: 2)')
    cli.add_threads(p)
    p.add_argument('--height', type=int, help="input height (default: the model's pretrained_cfg or run record, 256)")
    p.add_argument('--width', type=int, help="input width (default: the model's pretrained_cfg or run record, 128)")
    p.add_argument('--max-rank', type=int, default=50, help='longest CMC rank reported (default: 50)')
    cli.add_output(p, 'runs/evaluate', 'output folder')
    return p


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    """Run ``python -m osnet_zoo.evaluate``; returns the results on rank 0 (``{}`` on the other ranks). A bad
    input raises on every rank: :func:`osnet_zoo.cli.run` prints it once (:data:`ENDING`)."""
    args = get_args_parser().parse_args(argv)
    # before anything is built: a 0 here would silently mean the default (--height) or divide by zero
    cli.check_at_least(height=(args.height, MIN_INPUT_SIZE), width=(args.width, MIN_INPUT_SIZE),
                       batch_size=(args.batch_size, 1), max_rank=(args.max_rank, 1))
    if args.no_pretrained and args.task != 'reid':
        raise ValueError(f'--no-pretrained: --task {args.task} scores a trained classifier (give --checkpoint); '
                         'random weights are for trying the re-ID pipeline (--task reid)')
    refuse_run_folder(args.output, 'evaluate', ('results.json', 'cmc.png'))  # never a training run's results
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError('--device cuda but no CUDA device is available')
    # under torchrun: join the process group (gloo on CPU, NCCL on CUDA); rank r uses cuda:LOCAL_RANK
    device = du.init_distributed(args.device)
    args.threads, args.cpu_line = cli.set_up_threads(args.threads, args.workers)
    _default_datasets(args)
    try:
        if args.task != 'reid':  # classifiers: osnet_zoo.evaluation.labelled
            return evaluate_labelled_cli(args, device) if du.is_main_process() else {}
        return _evaluate(args, device)
    finally:
        du.cleanup()


def _default_datasets(args: argparse.Namespace) -> None:
    """Without ``--dataset``: a training run's own targets (and its ``--root`` unless one is given), so a run
    trained on a CSV listing is evaluated on it, not on the synthetic set; else ``synthetic``."""
    if args.dataset is not None:
        return
    recorded = run_targets(args.checkpoint) if args.task == 'reid' and args.checkpoint else None
    if recorded is None:
        args.dataset = ['synthetic']
        return
    args.dataset, root, folder = recorded
    args.root = args.root if args.root is not None else root
    if du.is_main_process():
        print(f'--dataset from the training run {folder / "config.json"}: {" ".join(args.dataset)}'
              + (f' (root {args.root})' if args.root else ''))


def _build(args: argparse.Namespace, device: torch.device) -> Tuple[torch.nn.Module, torch.nn.Module, Dict, Dict]:
    """The model of ``--model`` / ``--checkpoint`` (the one builder, ``build_embedding_model``), what runs it
    (``--backend``), the embedding options and the parts of the feature-cache key; fills in ``args.height``,
    ``args.width`` and ``args.distance`` from the model's preprocessing and the run record."""
    apply_run_record(args, log=print if du.is_main_process() else None)  # a training run: architecture, size, ...
    args.distance = args.distance or 'cosine'
    arch = cli.check_osnet(args.model, 're-ID evaluation takes an OSNet embedding').split('.')[0]
    if args.no_pretrained:
        torch.manual_seed(0)  # random weights, the same on every rank (and so the same cached features)
    model = build_embedding_model(arch if args.checkpoint else args.model,
                                  pretrained=not (args.checkpoint or args.no_pretrained),
                                  checkpoint_path=args.checkpoint).to(device)
    cfg = getattr(model, 'pretrained_cfg', {}) or {}
    _, cfg_h, cfg_w = cfg.get('input_size', (3, 256, 128))
    args.height, args.width = args.height or cfg_h, args.width or cfg_w
    mean, std = cfg.get('mean') or IMAGENET_MEAN, cfg.get('std') or IMAGENET_STD
    # int8: the quantized model takes and returns float32, so nothing autocasts
    options = dict(size=(args.height, args.width), mean=mean, std=std, batch_size=args.batch_size,
                   workers=args.workers, precision='fp32' if args.precision in QUANTIZED else args.precision,
                   flip=args.flip)
    # every batch but a split's last has --batch-size: on CUDA a graph for it is safe
    plan = select_backend(args.backend, device, args.precision, fixed_batch=True)
    runtime = model
    if plan.backend != 'torch' or plan.optimize:  # the plain model runs as before, under autocast
        runtime, plan = build_runtime(model, plan, device, args.precision, args.batch_size,
                                      (3, args.height, args.width), threads=args.threads,
                                      spinning=args.spin, calibration=default_calibration(
                                          args.calibration, args.checkpoint),
                                      calibration_size=args.calibration_size)
    key_parts = dict(weights_digest=model_digest(model) if du.is_main_process() else '', flip=args.flip,
                     precision=args.precision, backend=plan.describe(),
                     preprocessing=dict(input_size=[args.height, args.width], mean=list(mean), std=list(std),
                                        resize='bilinear-antialias'))
    if args.precision in QUANTIZED:  # the quantized model depends on its calibration images
        key_parts['backend'] += (f', calibrated on {args.calibration or args.checkpoint} '
                                 f'({args.calibration_size} images)')
    if du.is_main_process():
        print(f'model {args.model}' + (f' ({args.checkpoint})' if args.checkpoint else '') +
              f', input {args.height}x{args.width}, distance {args.distance}' +
              (', re-ranking' if args.rerank else '') +
              (', flip' if args.flip else '') + f', {args.precision}, device {device}, {plan.describe()}' +
              (f', {du.get_world_size()} processes' if du.get_world_size() > 1 else '') + f'; {args.cpu_line}')
    return model, runtime, options, key_parts


def _evaluate(args: argparse.Namespace, device: torch.device) -> Dict:
    """The evaluation of ``main``, on every rank: features sharded over the ranks, metrics and files on rank 0
    (the other ranks return ``{}``)."""
    main_rank = du.is_main_process()
    _, runtime, options, key_parts = _build(args, device)
    out = Path(args.output)
    if main_rank:
        out.mkdir(parents=True, exist_ok=True)
    results: Dict[str, Dict] = {}
    metrics: Dict[str, Dict] = {}
    for name in args.dataset:
        with du.main_process_first():  # a synthetic set is generated once, by rank 0
            ds = build_dataset(name, data_root(args.root))
        if main_rank:
            print(ds.summary())
        feats = {split: cached_split_features(out / f'features_{dataset_file_tag(name)}_{split}.safetensors',
                                              getattr(ds, split),
                                              key_parts, runtime, device, options, desc=f'{name} {split}')
                 for split in ('query', 'gallery')}
        if main_rank:
            results[name] = _score(args, name, ds, feats, device, out)
            metrics[name] = target_metrics(results[name], len(ds.gallery), [it.pid for it in ds.gallery])
    if not main_rank:
        return {}
    summary = results_document(metrics, model=args.model, checkpoint=args.checkpoint, distance=args.distance,
                               input_size=(args.height, args.width), precision=args.precision, flip=args.flip,
                               rerank=args.rerank)
    atomic_write_json(out / 'results.json', summary, indent=1)
    plot_cmc(results, out / 'cmc.png', title=f'{args.model}: CMC')
    print(f'wrote {out / "results.json"}, {out / "cmc.png"}, ' +
          ', '.join(str(out / f'ranked_{dataset_file_tag(n)}.png') for n in results))
    return summary


def _score(args: argparse.Namespace, name: str, ds, feats: Dict[str, torch.Tensor], device: torch.device,
           out: Path) -> Dict:
    """CMC / mAP / mINP of one dataset under its protocol (printed), and its ranked-results picture."""
    t0 = time.perf_counter()
    res, dist = rank_split(feats['query'], feats['gallery'], ds.query, ds.gallery, args.distance, device,
                           args.max_rank, args.rerank, args.cuhk03_single_shot and name.startswith('cuhk03'))
    print(summary_line(name, res) + f'  [{time.perf_counter() - t0:.2f} s]')
    picks = pick_queries(res)
    rows = dist[picks].numpy() if dist is not None else pairwise_distance(
        feats['query'][picks], feats['gallery'], args.distance).numpy()
    ranked_results_grid(rows, picks, ds.query, ds.gallery, out / f'ranked_{dataset_file_tag(name)}.png',
                        title=f'Ranked results: {args.model} on {name} (queries from the best to the worst AP)',
                        distance=('squared ' if args.distance == 'euclidean' else '') + f'{args.distance} distance'
                        + (' after re-ranking' if args.rerank else ''))
    return res


# every rank has the error (distributed.fail_together): rank 0 prints it
ENDING = dict(same_on_every_rank=True)

if __name__ == '__main__':
    sys.exit(cli.run(main, **ENDING))
