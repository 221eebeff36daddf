"""Wall time of `python -m osnet_zoo.extract` in 1 process and under `torchrun --nproc_per_node 2` (CPU, gloo).

Both configurations run on the same synthetic crops, interleaved (1, 2, 1, 2, ...), each with
``OMP_NUM_THREADS=<threads per process>``, and every 2-process output is checked bit-identical to the
1-process one. Start-up (imports, model build, process group) is included: it is what a user waits for.

    PYTHONPATH=. python benchmarks/bench_extract_ddp.py --images 300 --repeats 3 --model osnet_x0_25
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from osnet_zoo.inference import load_features

REPO = Path(__file__).resolve().parents[1]


def make_crops(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        h, w = int(rng.integers(96, 320)), int(rng.integers(40, 140))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f'{i:05d}.jpg', quality=90)


def run_extract(work: Path, nproc: int, out: str, args: argparse.Namespace) -> float:
    launcher = ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(nproc)] if nproc > 1 else []
    cmd = [sys.executable, *launcher, '-m', 'osnet_zoo.extract', 'crops', '--output', out, '--model', args.model,
           '--no-pretrained', '--device', 'cpu', '--batch-size', str(args.batch_size), '--shard-size',
           str(args.shard_size), '--workers', '1']
    env = {**os.environ, 'OMP_NUM_THREADS': str(args.threads), 'PYTHONPATH': str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f'error: {nproc}-process run failed:\n{proc.stderr[-3000:]}')
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--images', type=int, default=300)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--model', default='osnet_x0_25')
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--shard-size', type=int, default=64)
    p.add_argument('--threads', type=int, default=1, help='OMP_NUM_THREADS of every process')
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix='bench_extract_ddp_'))
    try:
        make_crops(work / 'crops', args.images)
        times = {1: [], 2: []}
        for r in range(args.repeats):
            for nproc in (1, 2):
                out = f'feats_{nproc}_{r}.safetensors'
                times[nproc].append(run_extract(work, nproc, out, args))
                print(f'repeat {r}: {nproc} process(es) {times[nproc][-1]:.2f} s', flush=True)
            one, two = (load_features(work / f'feats_1_{r}.safetensors'),
                        load_features(work / f'feats_2_{r}.safetensors'))
            assert torch.equal(one[0], two[0]) and one[1] == two[1], 'the 2-process features differ'
        m1, m2 = statistics.median(times[1]), statistics.median(times[2])
        print(f'{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
              f'torch {torch.__version__}; {args.images} crops, {args.model}, batch {args.batch_size}, '
              f'shard {args.shard_size}, OMP_NUM_THREADS={args.threads}')
        print(f'1 process: median {m1:.2f} s ({", ".join(f"{t:.2f}" for t in times[1])})')
        print(f'2 processes: median {m2:.2f} s ({", ".join(f"{t:.2f}" for t in times[2])})')
        print(f'speed-up 2 over 1: {m1 / m2:.2f}x (outputs bit-identical)')
    finally:
        shutil.rmtree(work)


if __name__ == '__main__':
    main()
