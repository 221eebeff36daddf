"""Benchmark: the training data loader, ours against a loader that starts its workers every epoch.

"ours" is ``osnet_zoo.data.build_train_loader``: torchvision's JPEG decoder, augmentation in
uint8, uint8 batches (normalised on the device by the training loop), worker processes that persist
across epochs, prefetch 4 batches each, per-sample seeded augmentation (so persistence costs nothing in
exact resume), random patches cut from other training images. The baseline, measured in the same run on
the same images, is the plain loader we had before: PIL decoding, float normalisation on the workers,
workers started afresh every epoch, the default prefetch of 2, unseeded augmentation, random patches from
a per-worker pool. Both decode and augment on the workers; nothing is trained, so this is the most images
per second the loader can feed a GPU.

Reported per variant: img/s of the first epoch (worker start-up included) and the median of the later
epochs, plus, with ``--per-worker``, one worker's steady rate for each (how many cores a target rate
needs) and the time of one sample in the main process (which shows what per-sample seeding costs).

Examples::

    python benchmarks/bench_loader.py                          # CPU count workers, scratch augmentations
    python benchmarks/bench_loader.py --workers 2 --epochs 5 --per-worker --json /tmp/loader.json
    python benchmarks/bench_loader.py --workers 2 --epochs 2 --eval     # the evaluation loader too
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import torch
from torch.utils.data import DataLoader, Sampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from osnet_zoo.data import (  # noqa: E402
    EpochBatches, ImageDataset, build_dataset, build_test_transform, build_train_loader, build_train_transform,
    make_synthetic_reid, normalize_batch,
)

RECIPE_TRANSFORMS = {
    'scratch': ['random_flip', 'random_crop', 'random_patch'],
    'imagenet_finetune': ['random_flip', 'random_erase'],
    'cross_domain': ['random_flip', 'color_jitter'],
}


class _IndicesOnly(Sampler[int]):
    """The baseline's keys: the same epoch order as ours, as plain indices (no per-sample seeds)."""

    def __init__(self, inner: EpochBatches):
        self.inner = inner

    def __iter__(self):
        return (index for index, _ in self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def _ours_loader(items, cfg, seed, workers):
    train = build_train_loader(items, cfg['height'], cfg['width'], cfg['batch_size'], cfg['transforms'], seed=seed,
                               workers=workers)
    return train.loader, train.sampler


def _baseline_loader(items, cfg, seed, workers):
    transform = build_train_transform(cfg['height'], cfg['width'], cfg['transforms'])  # pool random patch
    sampler = EpochBatches(items, cfg['batch_size'], 0, seed)
    loader = DataLoader(ImageDataset(items, transform), batch_size=cfg['batch_size'], sampler=_IndicesOnly(sampler),
                        num_workers=workers, drop_last=True)
    return loader, sampler


def _epoch_rate(loader, sampler, epoch: int) -> float:
    """img/s of one epoch, iterator creation (and so any worker start-up) included."""
    sampler.set_epoch(epoch)
    n, t0 = 0, time.perf_counter()
    for batch in loader:
        n += batch['image'].shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                        help='loader worker processes for both loaders (default: the CPU count)')
    parser.add_argument('--epochs', type=int, default=5, help='epochs timed per loader, interleaved')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--size', type=int, nargs=2, default=(256, 128), metavar=('H', 'W'),
                        help='network input size the crops are resized to')
    parser.add_argument('--recipe', choices=sorted(RECIPE_TRANSFORMS), default='scratch',
                        help='whose augmentations to apply')
    parser.add_argument('--num-train-ids', type=int, default=100,
                        help='synthetic training identities (100: ~740 images, the embedded set)')
    parser.add_argument('--per-worker', action='store_true',
                        help='also time one worker, and seeding overhead in the main process')
    parser.add_argument('--eval', action='store_true',
                        help="also time the evaluation loader (extract_features's: uint8 + normalize_batch) against "
                             'the float test transform on the workers')
    parser.add_argument('--root', help='synthetic data folder (default: a temporary one)')
    parser.add_argument('--json', help='write the results here')
    args = parser.parse_args()
    torch.set_num_threads(1)

    tmp = None
    if args.root is None:
        tmp = tempfile.TemporaryDirectory(prefix='bench_loader_')
        args.root = tmp.name
    market = Path(args.root) / 'Market-1501-v15.09.15'
    if not market.exists():
        make_synthetic_reid(market, num_train_ids=args.num_train_ids, num_test_ids=2, num_distractors=0, num_junk=0)
    items = build_dataset(['market1501'], Path(args.root)).train
    cfg = dict(height=args.size[0], width=args.size[1], batch_size=args.batch_size,
               transforms=RECIPE_TRANSFORMS[args.recipe])
    print(f'{len(items)} training images (128x64 JPEG) -> {args.size[0]}x{args.size[1]}, batch {args.batch_size}, '
          f'{args.recipe} augmentations {cfg["transforms"]}, {args.workers} workers, {args.epochs} epochs')

    results: Dict[str, Any] = dict(
        date=time.strftime('%Y-%m-%d %H:%M %Z'), machine=platform.processor() or platform.machine(),
        cpus=os.cpu_count(), load_average=os.getloadavg(), torch=torch.__version__, images=len(items),
        config=dict(vars(args), root=None), variants={})

    def record(name: str, rates: List[float]) -> None:
        later = statistics.median(rates[1:]) if len(rates) > 1 else rates[0]
        results['variants'][name] = dict(epoch_rates=rates, first_epoch=rates[0], later_epochs_median=later)
        print(f'{name:34s} first epoch {rates[0]:8.0f} img/s   later epochs (median) {later:8.0f} img/s')

    # Interleave the two loaders epoch by epoch, so load from other jobs hits both alike.
    base, base_sampler = _baseline_loader(items, cfg, 0, args.workers)
    ours, ours_sampler = _ours_loader(items, cfg, 0, args.workers)
    base_rates, ours_rates = [], []
    for epoch in range(args.epochs):
        base_rates.append(_epoch_rate(base, base_sampler, epoch))
        ours_rates.append(_epoch_rate(ours, ours_sampler, epoch))
    record(f'baseline (respawn, {args.workers} workers)', base_rates)
    record(f'ours (persistent, {args.workers} workers)', ours_rates)
    del ours
    b, o = results['variants'].values()
    results['ratio_later_epochs'] = o['later_epochs_median'] / b['later_epochs_median']
    results['ratio_whole_run'] = (len(o['epoch_rates']) / sum(1 / r for r in o['epoch_rates'])) / \
                                 (len(b['epoch_rates']) / sum(1 / r for r in b['epoch_rates']))
    print(f"ours / baseline: later epochs {results['ratio_later_epochs']:.2f}x, "
          f"whole run {results['ratio_whole_run']:.2f}x")

    if args.per_worker:
        # one worker each: the steady per-core rates (the later epochs' median)
        base1, base1_sampler = _baseline_loader(items, cfg, 0, 1)
        ours1, ours1_sampler = _ours_loader(items, cfg, 0, 1)
        b1, o1 = [], []
        for epoch in range(3):
            b1.append(_epoch_rate(base1, base1_sampler, epoch))
            o1.append(_epoch_rate(ours1, ours1_sampler, epoch))
        record('baseline, 1 worker (per-core rate)', b1)
        record('ours, 1 worker (per-core rate)', o1)
        del base1, ours1
        # one sample in the main process: the baseline's pipeline, ours, ours without its per-sample seed
        keys = list(EpochBatches(items, 1, 0, 0))[:300]
        ours_ds = ImageDataset(items, build_train_transform(
            cfg['height'], cfg['width'], cfg['transforms'], patch_donors=[it.path for it in items],
            normalize=False), as_tensor=True)
        base_ds = ImageDataset(items, build_train_transform(cfg['height'], cfg['width'], cfg['transforms']))
        timings = {}
        for name, ds, ks in (('baseline', base_ds, [k for k, _ in keys]), ('ours', ours_ds, keys),
                             ('ours_unseeded', ours_ds, [k for k, _ in keys])):
            t0 = time.perf_counter()
            for k in ks:
                ds[k]
            timings[name] = (time.perf_counter() - t0) / len(ks) * 1e6
        results['main_process_us_per_sample'] = timings
        print('one sample in the main process, us: ' + ', '.join(f'{k} {v:.0f}' for k, v in timings.items()))

    if args.eval:
        # the evaluation loader: no augmentation, no shuffling; ours normalises in the loop (on the CPU here)
        def eval_rate(as_tensor: bool) -> float:
            transform = build_test_transform(*args.size, normalize=not as_tensor)
            loader = DataLoader(ImageDataset(items, transform, as_tensor=as_tensor), batch_size=args.batch_size,
                                num_workers=args.workers)
            n, t0 = 0, time.perf_counter()
            for batch in loader:
                x = normalize_batch(batch['image']) if as_tensor else batch['image']
                n += x.shape[0]
            return n / (time.perf_counter() - t0)
        base_eval, ours_eval = [], []
        for _ in range(max(2, args.epochs // 2)):
            base_eval.append(eval_rate(False))
            ours_eval.append(eval_rate(True))
        record('eval baseline (PIL, float on workers)', base_eval)
        record('eval ours (uint8, normalize_batch)', ours_eval)
        results['eval_ratio'] = statistics.median(ours_eval) / statistics.median(base_eval)
        print(f"evaluation loader, ours / baseline (median pass): {results['eval_ratio']:.2f}x")

    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
