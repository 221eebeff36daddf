"""Benchmark: the range of Rank-1 / mAP that the main job (``python -m osnet_zoo.train``, no arguments) gives.

The main job is a 10-epoch training of a small network on 749 synthetic images, scored on 142 queries: its
figures move with the seed, and with anything that changes the order of floating-point sums (the thread count,
the CPU's vector width, the BLAS library). This runs the job once per seed and thread count, each as its own
process (``--seed S`` and ``OMP_NUM_THREADS=T``; nothing else differs from the README's command), and reports
every run and the min / median / max of Rank-1 and mAP, overall and per thread count: the range a user is told
to expect. Accuracy, not speed, is the point: wall time is printed only to say what the runs cost.

Finished runs are kept under ``--work`` and not trained again (their ``results.json`` is read back), so an
interrupted benchmark continues where it stopped; ``--parallel`` runs that many jobs at once.

Examples::

    python benchmarks/bench_main_job_range.py --seeds 1 2 3 --threads 1 2 --work /tmp/main_range --json /tmp/range.json
    python benchmarks/bench_main_job_range.py --seeds 1 --threads 1 -- --epochs 2    # extra options for train
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from osnet_zoo.data.datasets.synthetic import synthetic_reid  # noqa: E402


def cpu_model() -> str:
    """The CPU's model name (lscpu's "Model name"), as RESULTS.md records the machine."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_one(work: Path, seed: int, threads: int, extra: Sequence[str]) -> Dict[str, Any]:
    """Train the main job with ``seed`` on ``threads`` threads in its own process (or read back a finished run)."""
    out = work / 'runs' / f'seed{seed}_threads{threads}'
    results = out / 'results.json'
    started = time.time()
    if not results.is_file():
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])))
        cmd = [sys.executable, '-m', 'osnet_zoo.train', '--seed', str(seed), '--root', str(work / 'data'),
               '--output', str(out), *extra]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f'seed {seed}, {threads} thread(s): {" ".join(cmd)} exited {proc.returncode}: '
                             f'{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""}')
    targets = json.loads(results.read_text())['targets']
    (name, r), = targets.items()
    return dict(seed=seed, threads=threads, target=name, rank1=100 * r['rank1'], mAP=100 * r['mAP'],
                chance_rank1=100 * r['chance_rank1'], seconds=round(time.time() - started, 1), folder=str(out))


def spread(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """min / median / max of Rank-1 and mAP over ``rows``."""
    out: Dict[str, Any] = dict(runs=len(rows))
    for key in ('rank1', 'mAP'):
        values = [r[key] for r in rows]
        out[key] = dict(min=min(values), median=statistics.median(values), max=max(values))
    return out


def main(argv: Sequence[str] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seeds', type=int, nargs='+', default=[1, 2, 3], help='training seeds (default: 1 2 3)')
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2], help='OMP_NUM_THREADS values (default: 1 2)')
    parser.add_argument('--work', type=Path, default=Path('/tmp/osnet_zoo_main_job_range'),
                        help='runs and the synthetic data go here; finished runs are reused')
    parser.add_argument('--parallel', type=int, default=1, help='jobs run at once (default: 1)')
    parser.add_argument('--json', type=Path, help='write every run and the spread here')
    parser.add_argument('extra', nargs='*', help='after --: options passed on to python -m osnet_zoo.train')
    args = parser.parse_args(argv)
    jobs = [(s, t) for t in args.threads for s in args.seeds]
    started = time.time()
    synthetic_reid(args.work / 'data')  # generated once here, not by parallel jobs racing for the folder
    with ThreadPoolExecutor(max(args.parallel, 1)) as pool:
        rows = list(pool.map(lambda job: run_one(args.work, *job, args.extra), jobs))
    print(f'{"seed":>4} {"threads":>7} {"Rank-1 %":>8} {"mAP %":>6}')
    for r in rows:
        print(f'{r["seed"]:>4} {r["threads"]:>7} {r["rank1"]:>8.1f} {r["mAP"]:>6.1f}')
    summary = dict(machine=cpu_model(), cpus=os.cpu_count(), torch=torch.__version__, extra=args.extra,
                   date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), seconds=round(time.time() - started),
                   chance_rank1=rows[0]['chance_rank1'], rows=rows, all=spread(rows),
                   per_threads={t: spread([r for r in rows if r['threads'] == t]) for t in args.threads})
    for label, s in [('all', summary['all'])] + [(f'{t} thread(s)', v) for t, v in summary['per_threads'].items()]:
        print(f'{label:>12}: Rank-1 {s["rank1"]["min"]:.1f} / {s["rank1"]["median"]:.1f} / {s["rank1"]["max"]:.1f}'
              f'   mAP {s["mAP"]["min"]:.1f} / {s["mAP"]["median"]:.1f} / {s["mAP"]["max"]:.1f}'
              f'   (min / median / max of {s["runs"]} runs)')
    print(f'chance Rank-1 {summary["chance_rank1"]:.1f}%; {summary["machine"]}, {summary["cpus"]} CPUs')
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == '__main__':
    main()
