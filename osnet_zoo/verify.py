"""`python -m osnet_zoo.verify`: calibrate "same person?": ROC, TPR at FPR, EER and a threshold beside the model.

The command line of :mod:`osnet_zoo.evaluation.verification`. The model (``--checkpoint`` a training run, as
every command takes it, or ``--model``) embeds the images of ``--dataset`` (a dataset name under ``--root``, a
CSV listing or a dataset folder: docs/data.md) with ``FeatureExtractor``, the pipeline that later uses the
threshold. The labelled pairs (``--pairs``) are by default every query image against every gallery image
(``query``, ``gallery`` or ``train``: every two images of that split); images of unknown identity (junk, pid -1)
form none. A pair's score is the cosine similarity of the two L2-normalised embeddings (one minus evaluate's
default cosine distance); same person when score >= threshold.

Examples::

    python -m osnet_zoo.verify --checkpoint runs/osnet --dataset synthetic
    python -m osnet_zoo.verify --checkpoint runs/osnet --dataset shop/listing.csv --pairs gallery --eer
    python -m osnet_zoo.verify --model osnet_x1_0.msmt17_combineall --dataset market1501 --root ~/data \\
        --target-fpr 1e-4 --output runs/verify_market

It prints the pair counts, the AUC, the EER and the TPR at FPR 1e-2, 1e-3 and 1e-4 (a rate below one false match
among the different-person pairs is reported as unresolved), and writes to ``--output`` (default: the training
run's folder): ``verification.json`` (the threshold chosen at ``--target-fpr``, default 1e-3, or at the EER with
``--eer``, its operating point, the figures, and what it is tied to: architecture, weights digest,
preprocessing), ``verification_roc.png``, ``verification_scores.png`` (the score histograms of same- and
different-person pairs) and ``verification_roc.csv`` (the ROC's corners). Then, in Python::

    FeatureExtractor(checkpoint_path='runs/osnet').load_threshold('runs/osnet').same_person(crop_a, crop_b)

The ROC is exact: scikit-learn's ``roc_curve`` with ``drop_intermediate=False`` (the CSV holds the corners,
``drop_intermediate=True``: the same polyline).
"""
from __future__ import annotations

import argparse
import csv
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from . import cli
from .data import build_dataset, data_root, read_image
from .data.datasets import ReIDItem
from .evaluation.verification import (
    PAIR_SETS, SCORE, TARGET_FPRS, OperatingPoint, Roc, check_labels, eer_point, fpr_key, operating_point,
    pair_labels, pair_scores,
    plot_roc, plot_score_histogram, resolves, roc_curve, roc_rows, threshold_record, verification_metrics,
    write_threshold_record,
)
from .files import atomic_path
from .inference import FeatureExtractor, apply_run_record
from .inference.backend import BACKEND_HELP, BACKENDS
from .inference.extractor import RESIZES

__all__ = ['get_args_parser', 'main', 'embed_items', 'choose_point']


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m osnet_zoo.verify``."""
    description, epilog = cli.describe(__doc__)
    p = cli.ArgumentParser(prog='python -m osnet_zoo.verify', description=description, epilog=epilog)
    p.add_argument('--checkpoint', help='the model whose threshold is chosen: a training run (its folder, final/ or '
                                        'final/model.safetensors), or a checkpoint file for --model')
    cli.add_model(p, default=None, help="the OSNet to verify with, when --checkpoint names no run: a timm name, "
                                        "with a tag (osnet_x1_0.msmt17_combineall) for its pretrained weights")
    p.add_argument('--no-pretrained', action='store_true', help='random weights, seeded (to try the pipeline)')
    p.add_argument('--dataset', default='synthetic',
                   help='the labelled images: a dataset name (market1501, synthetic, ...) under --root, a CSV listing '
                        '(path,pid,camid,split) or a train/query/gallery folder (docs/data.md) (default: synthetic)')
    cli.add_root(p)
    p.add_argument('--pairs', default='query-gallery', choices=PAIR_SETS,
                   help='which pairs are scored: query-gallery (every query image against every gallery image), '
                        'or every two images of one split: query, gallery, train (default: query-gallery)')
    p.add_argument('--target-fpr', type=float, default=1e-3,
                   help='the threshold accepts at most this false-match rate on the pairs, with the most true '
                        'matches (default: 1e-3)')
    p.add_argument('--eer', action='store_true',
                   help='choose the threshold at the equal error rate instead of --target-fpr')
    cli.add_output(p, None, "where verification.json and the pictures go (default: the training run's folder, "
                            "so that FeatureExtractor.load_threshold(RUN) finds it)")
    cli.add_device(p)
    cli.add_precision(p, help='feature extraction precision: fp32, or bf16 / fp16')
    p.add_argument('--backend', default='auto', choices=BACKENDS, help=BACKEND_HELP)
    p.add_argument('--resize', default='antialias', choices=RESIZES,
                   help="how crops are resized (FeatureExtractor's resize; the threshold is tied to it)")
    cli.add_batch_size(p, 64)
    cli.add_workers(p, 2, help='image decoding threads (default: 2)')
    cli.add_threads(p)
    return p


def _output(args: argparse.Namespace, record: Any) -> Path:
    """``--output``, or the training run's folder (the folder of final/, else the model folder)."""
    if args.output:
        return Path(args.output)
    if record is None:
        raise ValueError('give --output: no training run to write the threshold into (--checkpoint names no run '
                         'folder, final/ or final/model.safetensors)')
    return record.folder.parent if record.folder.name == 'final' else record.folder


def embed_items(extractor: FeatureExtractor, items: Sequence[ReIDItem], workers: int, desc: str) -> torch.Tensor:
    """Embeddings (N, D) of the images of ``items`` in order, decoded by ``workers`` threads, with a progress
    bar."""
    size = extractor.batch_size
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    feats: List[torch.Tensor] = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for chunk in tqdm(chunks, desc=desc, unit='batch', leave=False, file=sys.stderr):
            images = list(pool.map(read_image, [it.path for it in chunk]))
            feats.append(extractor(images, normalize=True).cpu())
    return torch.cat(feats) if feats else torch.zeros(0, extractor.feature_dim or 0)


def _pair_labels(ds: Any, pairs: str) -> np.ndarray:
    """The same-person labels of the ``--pairs`` of the dataset, from the identities alone."""
    if pairs == 'query-gallery':
        return pair_labels([it.pid for it in ds.query], [it.pid for it in ds.gallery])
    return pair_labels([it.pid for it in getattr(ds, pairs)])


def _pairs(extractor: FeatureExtractor, ds: Any, pairs: str, workers: int) -> Tuple[np.ndarray, np.ndarray]:
    """(scores, same) of the ``--pairs`` of the dataset."""
    if pairs == 'query-gallery':
        query = embed_items(extractor, ds.query, workers, 'query')
        gallery = embed_items(extractor, ds.gallery, workers, 'gallery')
        return pair_scores(query, [it.pid for it in ds.query], gallery, [it.pid for it in ds.gallery])
    items = getattr(ds, pairs)
    return pair_scores(embed_items(extractor, items, workers, pairs), [it.pid for it in items])


def _refuse_unresolved(target_fpr: float, num_negative: int) -> None:
    raise ValueError(f'--target-fpr {target_fpr:g} needs at least {int(np.ceil(1 / target_fpr - 1e-9)):,} '
                     f'different-person pairs to show one false match, the data has {num_negative:,}: give '
                     f'a larger --target-fpr (>= {1 / max(num_negative, 1):.2g}), more data, or --eer')


def _check_data(ds: Any, args: argparse.Namespace) -> None:
    """Before any image is embedded: pairs of both kinds, and enough different-person pairs for the target."""
    same = _pair_labels(ds, args.pairs)
    try:
        check_labels(same)
    except ValueError as e:
        raise ValueError(f'--dataset {args.dataset}, {args.pairs} pairs: {e}') from None
    if not args.eer and not resolves(int((~same).sum()), args.target_fpr):
        _refuse_unresolved(args.target_fpr, int((~same).sum()))
    print(f'{args.pairs} pairs: {int(same.sum()):,} same person, {int((~same).sum()):,} different')


def choose_point(roc: Roc, target_fpr: Optional[float]) -> Tuple[OperatingPoint, str]:
    """The operating point of the threshold: at ``target_fpr`` (None: at the EER) and its label; an unresolved
    target or one that accepts no true match is an error saying what would work."""
    if target_fpr is None:
        return eer_point(roc), 'eer'
    point = operating_point(roc, target_fpr)
    if point is None:
        _refuse_unresolved(target_fpr, roc.num_negative)
    if point.true_matches == 0:
        raise ValueError(f'at --target-fpr {target_fpr:g} no same-person pair is accepted (the highest-scoring '
                         'pairs are of different people): this threshold would reject everyone; give a larger '
                         '--target-fpr or --eer')
    return point, f'fpr<={target_fpr:g}'


def _report(metrics: Dict[str, Any], point: OperatingPoint, chosen_at: str) -> str:
    lines = [f"AUC {metrics['auc']:.4f}  EER {100 * metrics['eer']:.2f}%"]
    for target in TARGET_FPRS:
        entry = metrics['tpr_at_fpr'][fpr_key(target)]
        lines.append(f'TPR at FPR {target:g}: ' + (f"{100 * entry['tpr']:.2f}% (threshold {entry['threshold']:.6g})"
                                                   if entry['tpr'] is not None else entry['note']))
    lines.append(f'threshold {point.threshold:.6f} ({chosen_at}): accepts {point.true_matches:,} of '
                 f'{point.num_positive:,} same-person pairs (TPR {100 * point.tpr:.2f}%) and {point.false_matches:,} '
                 f'of {point.num_negative:,} different-person pairs (FPR {point.fpr:.2g})')
    return '\n'.join(lines)


def _write_csv(roc: Roc, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['threshold', 'fpr', 'tpr', 'false_matches', 'true_matches'])
        writer.writerows(roc_rows(roc))


def _extractor(args: argparse.Namespace) -> FeatureExtractor:
    """The FeatureExtractor of ``--model`` / ``--checkpoint`` (random seeded weights with ``--no-pretrained``)."""
    if args.no_pretrained:
        torch.manual_seed(0)
    return FeatureExtractor(args.model, device=args.device, precision=args.precision, batch_size=args.batch_size,
                            pretrained=not (args.checkpoint or args.no_pretrained), checkpoint_path=args.checkpoint,
                            backend=args.backend, threads=args.threads, spin=args.spin, resize=args.resize,
                            workers=args.workers, fixed_batch=True)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run ``python -m osnet_zoo.verify``; returns the written record. A bad input raises (one line via
    :func:`osnet_zoo.cli.run`)."""
    args = get_args_parser().parse_args(argv)
    if not 0 < args.target_fpr < 1:
        raise ValueError(f'--target-fpr must be a false-match rate between 0 and 1 (exclusive), e.g. 1e-3; got '
                         f'{args.target_fpr:g}')
    cli.check_at_least(batch_size=(args.batch_size, 1), workers=(args.workers, 0))
    record = apply_run_record(args)
    if record is not None and record.distance == 'euclidean':
        print('note: the run evaluates with the euclidean distance of the raw embeddings; verification scores the '
              "cosine similarity of the normalised ones (FeatureExtractor's), another ordering of the pairs")
    out = _output(args, record)
    cli.check_osnet(args.model, 'verification takes an OSNet embedding')
    ds = build_dataset(args.dataset, data_root(args.root))
    print(ds.summary())
    _check_data(ds, args)
    extractor = _extractor(args)
    print(f'model {extractor.model_name}, input {"x".join(map(str, extractor.preprocessing["input_size"][1:]))}, '
          f'{args.precision}, {extractor.plan.describe()}, pairs {args.pairs}; score: {SCORE}')
    scores, same = _pairs(extractor, ds, args.pairs, args.workers)
    roc = roc_curve(scores, same)
    metrics = verification_metrics(roc)
    point, chosen_at = choose_point(roc, None if args.eer else args.target_fpr)
    print(_report(metrics, point, chosen_at))
    document = threshold_record(
        point, chosen_at, extractor.identity, {**extractor.preprocessing, 'resize': extractor.resize},
        checkpoint=args.checkpoint, model_name=extractor.model_name, precision=args.precision,
        data=dict(dataset=str(args.dataset), pairs=args.pairs), metrics=metrics,
        roc='exact: every distinct score a threshold (scikit-learn roc_curve, drop_intermediate=False)')
    out.mkdir(parents=True, exist_ok=True)
    title = f'{extractor.model_name} on {Path(str(args.dataset)).name} ({args.pairs} pairs)'
    plot_roc(roc, out / 'verification_roc.png', chosen=point, title=f'ROC: {title}')
    plot_score_histogram(scores, same, out / 'verification_scores.png', threshold=point.threshold,
                         title=f'Pair scores: {title}')
    _write_csv(roc_curve(scores, same, drop_intermediate=True), out / 'verification_roc.csv')
    path = write_threshold_record(out, document)
    print(f'wrote {path}, {out / "verification_roc.png"}, {out / "verification_scores.png"}, '
          f'{out / "verification_roc.csv"}')
    return document


if __name__ == '__main__':
    sys.exit(cli.run(main))
