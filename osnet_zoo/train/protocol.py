"""Run every split of a small benchmark's protocol (Table 4 of both papers) and report mean and std.

Each split is one fine-tuning run of ``python -m osnet_zoo.train`` (default recipe: small_finetune, from
the Mix4 network) in ``OUTPUT/split_NN/``, then each evaluation of that split (VIPeR: both directions) is
written to ``OUTPUT/split_NN/result_<name>.json`` (the results.json schema of train and evaluate).
Finished runs and evaluations are skipped, an interrupted training resumes from its checkpoint, so the
command can be rerun until it completes. ``OUTPUT/summary.json`` holds every evaluation and the mean and std
of Rank-1/5/10 and mAP.

Examples::

    python -m osnet_zoo.train.protocol --dataset viper --init-checkpoint runs/mix4 --root ~/datasets --output runs/viper
    python -m osnet_zoo.train.protocol --dataset grid --init-checkpoint runs/mix4 --root ~/datasets --device cuda \\
        --output runs/grid --epochs 30

Any other option goes to ``python -m osnet_zoo.train`` for every split (see its --help).
"""
from __future__ import annotations

import argparse
import json
import sys
from itertools import groupby
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from osnet_zoo import cli
from osnet_zoo.data.datasets import PROTOCOLS, ProtocolRun, aggregate_runs, format_aggregate, protocol_runs
from osnet_zoo.data.datasets.protocols import PROTOCOL_METRICS
from osnet_zoo.evaluation import evaluate_models, load_eval_splits, results_document
from osnet_zoo.files import atomic_write_json
from osnet_zoo.inference import build_embedding_model

from .options import get_args_parser as train_args_parser
from .options import parse_config
from .training import train

__all__ = ['get_args_parser', 'main', 'run_name', 'evaluate_run']


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m osnet_zoo.train.protocol`` (other options go to each training run)."""
    description, epilog = cli.describe(__doc__)
    p = cli.ArgumentParser(prog='python -m osnet_zoo.train.protocol', allow_abbrev=False, description=description,
                           epilog=epilog)
    p.add_argument('--dataset', required=True, choices=sorted(PROTOCOLS), help='the benchmark whose splits to run')
    p.add_argument('--recipe', default='small_finetune', help='training recipe of each split (default: small_finetune)')
    p.add_argument('--init-checkpoint', metavar='PATH',
                   help='the pre-trained run to fine-tune from (e.g. runs/mix4); default: the recipe\'s')
    cli.add_model(p, default=None, help="timm model of each split's training (default: the recipe's)")
    cli.add_root(p)
    cli.add_output(p, None, 'folder of the protocol: one subfolder per split, summary.json (default: runs/DATASET)')
    cli.add_device(p)
    cli.add_precision(p)
    cli.add_batch_size(p, None, help="images per training batch (default: the recipe's)")
    cli.add_workers(p)
    p.add_argument('--max-splits', type=int, default=0,
                   help='run only the first N splits (all of their evaluations); 0: all (default)')
    return p


def run_name(run: ProtocolRun) -> str:
    """``a2b`` for a VIPeR direction, ``test`` where a split has one evaluation."""
    return '_'.join(str(v) for v in run.options.values()) or 'test'


def _finished(folder: Path) -> bool:
    # save_final_model writes final/config.json after the weights: the last file of a training run
    return (folder / 'final' / 'config.json').is_file() and (folder / 'final' / 'model.safetensors').is_file()


def evaluate_run(folder: Path, dataset: str, run: ProtocolRun, root: Optional[str], device: torch.device,
                 precision: str, workers: int) -> Dict[str, Any]:
    """The results (:func:`osnet_zoo.evaluation.results_document`, plus ``split_id`` and ``options``) of a
    finished training run's final model on one evaluation of the protocol, at the run's input size and distance
    (from its config.json)."""
    cfg = json.loads((folder / 'config.json').read_text())
    model = build_embedding_model(cfg['model'], pretrained=False,
                                  checkpoint_path=folder / 'final' / 'model.safetensors',
                                  model_args=cfg.get('model_args')).to(device)
    splits = load_eval_splits([dataset], root, per_dataset={dataset: {'split_id': run.split_id, **run.options}})
    results = evaluate_models([model], splits, device, distance=cfg['distance'], size=(cfg['height'], cfg['width']),
                              batch_size=max(cfg['batch_size'], 64), workers=workers, precision=precision)
    return results_document(results, model=cfg['model'], checkpoint=str(folder / 'final' / 'model.safetensors'),
                            distance=cfg['distance'], input_size=(cfg['height'], cfg['width']), precision=precision,
                            split_id=run.split_id, options=run.options)


def read_result(path: Path, dataset: str) -> Optional[Dict[str, Any]]:
    """The result document an earlier call wrote to ``path``; None when there is none or it is not one of this
    release (truncated, ``{}``, ``[]``, flat, a distance of ``dataset`` that is not a number)."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    targets = result.get('targets') if isinstance(result, dict) else None
    metrics = targets.get(dataset) if isinstance(targets, dict) else None
    numbers = isinstance(metrics, dict) and all(
        isinstance(metrics.get(k), (int, float)) and not isinstance(metrics.get(k), bool) for k in PROTOCOL_METRICS)
    return result if numbers else None


def _line(run: ProtocolRun, r: Dict[str, Any], note: str = '') -> str:
    name = f'split {run.split_id} {run_name(run)}'
    r = next(iter(r['targets'].values()))
    return (f"{name:<16} Rank-1 {100 * r['rank1']:5.1f}  Rank-5 {100 * r['rank5']:5.1f}  "
            f"Rank-10 {100 * r['rank10']:5.1f}  mAP {100 * r['mAP']:5.1f}{note}")


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Run ``python -m osnet_zoo.train.protocol``; returns the summary it writes to ``summary.json``."""
    args, train_args = get_args_parser().parse_known_args(argv)
    out = Path(args.output or f'runs/{args.dataset}')
    runs = protocol_runs(args.dataset)
    by_split = [(s, list(group)) for s, group in groupby(runs, key=lambda r: r.split_id)]
    if args.max_splits < 0:
        raise ValueError(f'--max-splits must be >= 0, got {args.max_splits}')
    if args.max_splits:
        by_split = by_split[:args.max_splits]
    for reserved in ('--sources', '--targets', '--split-id', '--output', '--resume', '--dataset-option'):
        if any(a == reserved or a.startswith(reserved + '=') for a in train_args):
            raise ValueError(f'{reserved} is set by the protocol for each split; remove it')
    # check the forwarded options now, not after the first split has trained
    train_args_parser().parse_args(train_args)
    shared = ['--recipe', args.recipe, '--device', args.device, '--precision', args.precision, *train_args]
    if args.model:
        shared += ['--model', args.model]
    if args.batch_size is not None:
        shared += ['--batch-size', str(args.batch_size)]
    if args.root:
        shared += ['--root', args.root]
    if args.init_checkpoint:
        shared += ['--init-checkpoint', args.init_checkpoint]
    if args.workers is not None:
        shared += ['--workers', str(args.workers)]
    device = torch.device(args.device)
    workers = cli.resolve_workers(args.workers, args.device)
    results: List[Dict[str, Any]] = []
    for split_id, split_runs in by_split:
        folder = out / f'split_{split_id:02d}'
        if not _finished(folder):
            resume = ['--resume'] if (folder / 'checkpoint.pth').is_file() else []
            print(f'== {args.dataset} split {split_id}: training in {folder}', flush=True)
            train(*parse_config([*shared, '--sources', args.dataset, '--targets', args.dataset, '--split-id',
                                 str(split_id), '--output', str(folder), *resume]))
        for run in split_runs:
            path = folder / f'result_{run_name(run)}.json'
            done = read_result(path, args.dataset)
            note = '  (done before: skipped)' if done is not None else ''
            if done is None:
                # a truncated or edited result of a finished split, or one of an earlier release (flat, without
                # 'targets'): evaluated again in today's schema
                if path.exists():
                    print(f'{path} is not a result document of this release (damaged, edited or older): evaluating '
                          'again', flush=True)
                done = evaluate_run(folder, args.dataset, run, args.root, device, args.precision, workers)
                atomic_write_json(path, done)
            results.append(done)
            print(_line(run, results[-1], note), flush=True)
    aggregate = aggregate_runs([r['targets'][args.dataset] for r in results])
    summary = dict(dataset=args.dataset, num_splits=len(by_split), complete=len(by_split) == len(
        {r.split_id for r in runs}), runs=results, aggregate=aggregate)
    atomic_write_json(out / 'summary.json', summary)
    print(f'{args.dataset} ({len(results)} evaluations over {len(by_split)} splits): {format_aggregate(aggregate)}')
    print(f'Wrote {out}/summary.json')
    return summary


if __name__ == '__main__':
    sys.exit(cli.run(main))
