"""Benchmark: re-ID evaluation at MSMT17 size (11,659 queries x 82,161 gallery, 512-d), ours vs an argsort baseline.

Measured, each in a fresh process so that peak memory is its own:

1. ranking: CMC + mAP + mINP from a float32 distance matrix, ``osnet_zoo.metrics.evaluate_rank`` against
   ``evaluate_rank_argsort`` (numpy argsort of every row, then a walk per query: what the reference
   evaluators do). The numbers must be identical.
2. features -> metrics, distances included: ``evaluate_features`` against "full distance matrix, then the
   argsort evaluator".
3. optionally (``--rerank-scale``), k-reciprocal re-ranking at MSMT17 size or a fraction, time and peak memory.

The features are synthetic but shaped like a trained model's on MSMT17: 3,060 identities over 15 cameras,
identity centre + camera bias + noise (``--noise`` sets the difficulty; the default gives mAP near 50%).
Our ranking cost grows with how deep the hardest true matches sit, so the script prints mAP/mINP too;
``--noise 10`` (nearly random features) is the worst case.

Examples::

    python benchmarks/bench_eval.py                      # full size, CPU (several minutes on 2 cores)
    python benchmarks/bench_eval.py --scale 0.1          # quick check at a tenth of the size
    python benchmarks/bench_eval.py --device cuda --skip-baseline   # GPU figures (features on the GPU)
    python benchmarks/bench_eval.py --skip-baseline --rerank-scale 0.25   # re-ranking time and memory
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / 'tests'))  # the test-only rank oracle
from osnet_zoo.metrics import evaluate_features, evaluate_rank, pairwise_distance  # noqa: E402
from _oracle import evaluate_rank_argsort  # noqa: E402

MSMT17 = dict(num_query=11659, num_gallery=82161, num_ids=3060, num_cams=15)


def make_features(num_query: int, num_gallery: int, num_ids: int, num_cams: int, dim: int, noise: float,
                  seed: int) -> dict:
    """Identity centres + camera bias + noise, L2-normalised; every identity spans 2-6 cameras."""
    rng = np.random.default_rng(seed)

    def spread(total: int) -> np.ndarray:  # total images over identities, as evenly as possible
        counts = np.full(num_ids, total // num_ids)
        counts[rng.choice(num_ids, total - counts.sum(), replace=False)] += 1
        return np.repeat(np.arange(num_ids), counts)

    q_pids, g_pids = spread(num_query), spread(num_gallery)
    cams_of = [rng.choice(num_cams, rng.integers(2, min(6, num_cams) + 1), replace=False) for _ in range(num_ids)]
    q_cams = np.array([rng.choice(cams_of[p]) for p in q_pids])
    g_cams = np.array([rng.choice(cams_of[p]) for p in g_pids])
    gen = torch.Generator().manual_seed(seed)
    centres, cam_bias = torch.randn(num_ids, dim, generator=gen), torch.randn(num_cams, dim, generator=gen)

    def feats(pids, cams):
        x = centres[pids] + noise * torch.randn(len(pids), dim, generator=gen) + 0.5 * cam_bias[cams]
        return torch.nn.functional.normalize(x, dim=1).numpy()

    return dict(qf=feats(q_pids, q_cams), gf=feats(g_pids, g_cams), q_pids=q_pids, g_pids=g_pids,
                q_camids=q_cams, g_camids=g_cams)


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _peak_gb(device: str) -> dict:
    out = {'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}
    if device.startswith('cuda'):
        out['peak_gpu_gb'] = torch.cuda.max_memory_allocated() / 2 ** 30
    return out


def _summary(res: dict) -> dict:
    cmc = res['cmc']
    return {'R1': float(cmc[0]), 'R5': float(cmc[4]), 'R10': float(cmc[9]), 'R20': float(cmc[19]),
            'mAP': res['mAP'], 'mINP': res['mINP'], 'num_valid_queries': res['num_valid_queries'],
            'cmc': [float(c) for c in cmc]}


def _warm_up(device: str, fn, first, rest, ids) -> None:
    """On a GPU, run once on 256 queries (CUDA context, kernels), then count peak memory from zero."""
    if device.startswith('cuda'):
        fn(first[:256], *rest, ids[0][:256], ids[1], ids[2][:256], ids[3])
        _sync(device)
        torch.cuda.reset_peak_memory_stats()


def run_phase(phase: str, data_path: str, device: str, distance: str) -> dict:
    """One measurement in this (fresh) process; returns timings, peak memory and the metrics."""
    data = dict(np.load(data_path))
    ids = [data[k] for k in ('q_pids', 'g_pids', 'q_camids', 'g_camids')]
    out: dict = {'phase': phase}
    qf, gf = torch.from_numpy(data['qf']), torch.from_numpy(data['gf'])
    if device.startswith('cuda') and phase != 'baseline-rank':
        qf, gf = qf.to(device), gf.to(device)
    if phase in ('ours-rank', 'baseline-rank'):
        t0 = time.perf_counter()
        dist = pairwise_distance(qf, gf, distance)  # computed on the device, returned on the CPU
        out['distance_s'] = time.perf_counter() - t0
        if phase == 'ours-rank' and device.startswith('cuda'):
            dist = dist.to(device)
            _warm_up(device, evaluate_rank, dist, [], ids)
        else:
            dist = dist.numpy()
        fn = evaluate_rank if phase == 'ours-rank' else evaluate_rank_argsort
        t0 = time.perf_counter()
        res = fn(dist, *ids)
        _sync(device)
        out['rank_s'] = time.perf_counter() - t0
    elif phase == 'ours-features':
        _warm_up(device, lambda q, g, *a: evaluate_features(q, g, *a, distance=distance), qf, [gf], ids)
        t0 = time.perf_counter()
        res = evaluate_features(qf, gf, *ids, distance=distance)
        _sync(device)
        out['features_to_metrics_s'] = time.perf_counter() - t0
    elif phase == 'ours-rerank':
        from osnet_zoo.metrics import re_ranking
        t0 = time.perf_counter()
        dist = re_ranking(qf, gf, distance=distance)
        _sync(device)
        out['rerank_s'] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = evaluate_rank(dist, *ids)
        out['rank_after_rerank_s'] = time.perf_counter() - t0
    else:
        raise ValueError(f'unknown phase {phase}')
    out.update(_peak_gb(device))
    out['metrics'] = _summary(res)
    return out


def _scaled(scale: float) -> dict:
    """MSMT17's counts times ``scale`` (cameras stay 15)."""
    return {k: v if k == 'num_cams' else max(1, int(round(v * scale))) for k, v in MSMT17.items()}


def _subprocess(phase: str, data_path: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, '--phase', phase, '--data', data_path, '--device', args.device,
           '--distance', args.distance]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f'phase {phase} failed:\n{proc.stderr}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _same_numbers(a: dict, b: dict) -> bool:
    return a['cmc'] == b['cmc'] and a['mAP'] == b['mAP'] and a['mINP'] == b['mINP'] \
        and a['num_valid_queries'] == b['num_valid_queries']


def _gpu_note(res: dict) -> str:
    return f', peak GPU {res["peak_gpu_gb"]:.2f} GiB' if 'peak_gpu_gb' in res else ''


def _section_rank(data_path: str, sizes: dict, args: argparse.Namespace, results: dict) -> None:
    ours = _subprocess('ours-rank', data_path, args)
    gib = sizes['num_query'] * sizes['num_gallery'] * 4 / 2 ** 30
    print(f'\n[1] ranking from a float32 distance matrix ({gib:.2f} GiB; computing it took '
          f'{ours["distance_s"]:.2f} s)')
    m = ours['metrics']
    print(f'    metrics: R1 {m["R1"]:.2%}  R5 {m["R5"]:.2%}  R10 {m["R10"]:.2%}  mAP {m["mAP"]:.2%}  '
          f'mINP {m["mINP"]:.2%}  ({m["num_valid_queries"]} valid queries)')
    print(f'    ours     {ours["rank_s"]:8.2f} s   peak RSS {ours["peak_rss_gb"]:.2f} GiB (matrix included)'
          + _gpu_note(ours))
    results['ours_rank'] = ours
    if not args.skip_baseline:
        base = _subprocess('baseline-rank', data_path, args)
        same = _same_numbers(ours['metrics'], base['metrics'])
        print(f'    baseline {base["rank_s"]:8.2f} s   peak RSS {base["peak_rss_gb"]:.2f} GiB')
        print(f'    speed-up {base["rank_s"] / ours["rank_s"]:.1f}x; identical numbers: {same}')
        results.update(baseline_rank=base, rank_speedup=base['rank_s'] / ours['rank_s'], rank_identical=same)


def _section_features(data_path: str, args: argparse.Namespace, results: dict) -> None:
    feats = _subprocess('ours-features', data_path, args)
    print('\n[2] features -> metrics, distances included')
    print(f'    ours     {feats["features_to_metrics_s"]:8.2f} s   peak RSS {feats["peak_rss_gb"]:.2f} GiB'
          + _gpu_note(feats))
    results['ours_features'] = feats
    if 'ours_rank' in results:
        print(f'    same numbers as [1]: {_same_numbers(feats["metrics"], results["ours_rank"]["metrics"])}')
    if 'baseline_rank' in results:
        base = results['baseline_rank']
        base_total = base['distance_s'] + base['rank_s']
        print(f'    baseline {base_total:8.2f} s   (full distance matrix {base["distance_s"]:.2f} s + argsort '
              f'evaluator {base["rank_s"]:.2f} s)')
        print(f'    speed-up {base_total / feats["features_to_metrics_s"]:.1f}x')
        results['features_speedup'] = base_total / feats['features_to_metrics_s']


def _section_rerank(path: str, args: argparse.Namespace, results: dict) -> None:
    sub = _scaled(args.rerank_scale)
    np.savez(path, **make_features(**sub, dim=args.dim, noise=args.noise, seed=args.seed))
    rr = _subprocess('ours-rerank', path, args)
    print(f'\n[3] k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3), {sub["num_query"]:,} x '
          f'{sub["num_gallery"]:,}')
    print(f'    re-ranking {rr["rerank_s"]:.2f} s, then ranking {rr["rank_after_rerank_s"]:.2f} s; peak RSS '
          f'{rr["peak_rss_gb"]:.2f} GiB' + _gpu_note(rr))
    print(f'    mAP {rr["metrics"]["mAP"]:.2%} (R1 {rr["metrics"]["R1"]:.2%})')
    results['rerank'] = {'sizes': sub, **rr}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument('--scale', type=float, default=1.0,
                   help='fraction of MSMT17 query/gallery/identity counts (e.g. 0.1 for a quick check)')
    p.add_argument('--dim', type=int, default=512)
    p.add_argument('--noise', type=float, default=2.1, help='feature noise (2.1: mAP ~50%%; 10: random)')
    p.add_argument('--distance', default='cosine', choices=['cosine', 'euclidean'])
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (ours runs there; the baseline is CPU)")
    p.add_argument('--skip-baseline', action='store_true', help='skip the argsort baseline (minutes at full size)')
    p.add_argument('--rerank-scale', type=float, default=0.0,
                   help='also time k-reciprocal re-ranking at this fraction of MSMT17 size (1 = full; 0 = skip)')
    p.add_argument('--only', choices=['rank', 'features', 'rerank'],
                   help='run one measurement only (with --rerank-scale for rerank)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', help='write all figures to this JSON file')
    p.add_argument('--phase', help=argparse.SUPPRESS)
    p.add_argument('--data', help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.phase:  # child process: one measurement, JSON on the last stdout line
        print(json.dumps(run_phase(args.phase, args.data, args.device, args.distance)))
        return

    sizes = _scaled(args.scale)
    print(f'bench_eval: {sizes["num_query"]:,} queries x {sizes["num_gallery"]:,} gallery, {args.dim}-d, '
          f'{sizes["num_ids"]:,} ids, {sizes["num_cams"]} cameras, distance={args.distance}, device={args.device}')
    print(f'machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}'
          + (f', {torch.cuda.get_device_name()}' if args.device.startswith('cuda') else ''))
    results: dict = {'sizes': sizes, 'dim': args.dim, 'noise': args.noise, 'distance': args.distance,
                     'device': args.device, 'date': time.strftime('%Y-%m-%d')}
    with tempfile.TemporaryDirectory() as tmp:
        data_path = os.path.join(tmp, 'features.npz')
        if args.only != 'rerank':
            np.savez(data_path, **make_features(**sizes, dim=args.dim, noise=args.noise, seed=args.seed))
        if args.only in (None, 'rank'):
            _section_rank(data_path, sizes, args, results)
        if args.only in (None, 'features'):
            _section_features(data_path, args, results)
        if args.rerank_scale and args.only in (None, 'rerank'):
            _section_rerank(os.path.join(tmp, 'rerank.npz'), args, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f'\nwrote {args.json}')


if __name__ == '__main__':
    main()
