"""Benchmark: top-k search of 1,000 queries in a memory-mapped gallery of 1,000,000 512-d features
(``osnet_zoo.inference.search``): the exact index against the approximate ones, recall@k against the exact answer.

The gallery is written to disk in ``extract``'s features-file format (streamed, never whole in memory) and
memory-mapped by ``map_features``, as ``python -m osnet_zoo.search --gallery FEATURES`` reads it. Each index runs
in a fresh process, so its build time, search time and peak memory (RSS, ``ru_maxrss``; the memory-mapped pages it
touched count) are its own. The exact index (faiss ``IndexFlatIP``) is the baseline: its answer is the truth of
recall@k, and the approximate times are also given as ratios to it, measured in the same run.

Two galleries (``--data``):

* ``iid``: rows drawn uniformly on the sphere, queries too: the worst case for any approximate index (a query's
  nearest rows are barely nearer than the rest, so no partition or graph narrows the search much);
* ``clustered``: re-ID-shaped random features: ``--rows / 10`` random identity centres, each with 10 rows
  (centre + ``--noise`` x a random vector: cosine about 1 / (1 + noise^2) within an identity, 0.8 at the
  default 0.5), queries new draws of random identities.

Examples::

    python benchmarks/bench_search.py                                  # both galleries, 1M x 512, 1,000 queries
    python benchmarks/bench_search.py --data clustered --noise 0.3 --nprobe 16 32 64 --skip-numpy
    python benchmarks/bench_search.py --rows 2000 --queries 20 --nlist 16 --nprobe 4 16 --json out.json  # tiny
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
from typing import Dict

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from osnet_zoo.inference.search import IndexOptions, build_index  # noqa: E402
from osnet_zoo.inference.sharded import map_features  # noqa: E402

CHUNK = 65536


def _header(rows: int, dim: int, metadata: Dict[str, str]) -> bytes:
    """A safetensors header for one float32 ``features`` tensor, padded to 8 bytes as the writers pad it."""
    header = json.dumps({'__metadata__': metadata,
                         'features': {'dtype': 'F32', 'shape': [rows, dim], 'data_offsets': [0, rows * dim * 4]}},
                        separators=(',', ':')).encode()
    header += b' ' * (-len(header) % 8)
    return len(header).to_bytes(8, 'little') + header


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_gallery(path: Path, rows: int, dim: int, kind: str, seed: int, noise: float) -> np.ndarray:
    """Stream a gallery of ``rows`` features into ``path`` (extract's format); returns the identity centres
    (clustered) or an empty array (iid), from which the queries are drawn."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, rows // 10), dim), dtype=np.float32) if kind == 'clustered' else \
        np.zeros((0, dim), np.float32)
    paths = [f'gallery/{i:07d}.jpg' for i in range(rows)]
    metadata = {'format': 'osnet_zoo.features/1', 'model': 'random', 'checkpoint': '', 'precision': 'fp32',
                'normalized': 'true', 'num_images': str(rows), 'preprocessing': 'null', 'skipped': '[]',
                'paths': json.dumps(paths)}
    with open(path, 'wb') as f:
        f.write(_header(rows, dim, metadata))
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            x = rng.standard_normal((n, dim), dtype=np.float32)
            if kind == 'clustered':
                x *= noise
                x += centres[np.arange(start, start + n) // 10 % len(centres)]
            f.write(_unit(x).tobytes())
    return centres


def make_queries(count: int, dim: int, centres: np.ndarray, seed: int, noise: float) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((count, dim), dtype=np.float32)
    if len(centres):
        x *= noise
        x += centres[rng.integers(0, len(centres), count)]
    return _unit(x)


def child(spec: Dict) -> Dict:
    """One index in this process: build it on the memory-mapped gallery, search at each setting, save the
    answers; returns the times and the peak RSS."""
    gallery, _, _ = map_features(spec['gallery'])
    queries = np.load(spec['queries'])
    t0 = time.perf_counter()
    options = IndexOptions(kind=spec['kind'], engine=spec['engine'], nlist=spec.get('nlist'),
                           hnsw_m=spec.get('hnsw_m', 32), ef_construction=spec.get('ef_construction', 80))
    index = build_index(gallery, options, log=lambda line: None)
    build_s = time.perf_counter() - t0
    searches = []
    for knob in spec.get('knobs') or [None]:
        if knob is not None:
            index.options = IndexOptions(**{**options.__dict__, spec['knob_name']: knob})
        t0 = time.perf_counter()
        result = index.search(queries, spec['topk'])
        searches.append(dict(knob=knob, search_s=time.perf_counter() - t0, index=result.index))
        np.save(f'{spec["answers"]}_{knob}.npy', result.indices)
    return dict(build_s=build_s, searches=searches,
                peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20)


def run_child(spec: Dict) -> Dict:
    proc = subprocess.run([sys.executable, __file__, '--child', json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f'{spec["name"]} failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(b)) / len(b) for a, b in zip(found, truth)]))


def bench_gallery(args: argparse.Namespace, kind: str, work: Path) -> Dict:
    """Write one gallery, run the exact baseline and each approximate index on it; recall and ratios."""
    gallery = work / f'{kind}.safetensors'
    t0 = time.perf_counter()
    centres = write_gallery(gallery, args.rows, args.dim, kind, args.seed, args.noise)
    write_s = time.perf_counter() - t0
    np.save(work / f'{kind}_queries.npy', make_queries(args.queries, args.dim, centres, args.seed, args.noise))
    common = dict(gallery=str(gallery), queries=str(work / f'{kind}_queries.npy'), topk=args.topk)
    specs = [dict(name='exact_faiss', kind='exact', engine='faiss'),
             *([] if args.skip_numpy else [dict(name='exact_numpy', kind='exact', engine='numpy')]),
             dict(name='ivf', kind='ivf', engine='faiss', nlist=args.nlist, knob_name='nprobe', knobs=args.nprobe)]
    if args.hnsw_ef:
        specs.append(dict(name='hnsw', kind='hnsw', engine='faiss', hnsw_m=args.hnsw_m, knob_name='ef_search',
                          knobs=args.hnsw_ef))
    runs = {}
    for spec in specs:
        spec.update(common, answers=str(work / f'{kind}_{spec["name"]}'))
        runs[spec['name']] = run_child(spec)
        print(f'{kind} {spec["name"]}: {json.dumps(runs[spec["name"]])}', flush=True)
    truth = np.load(work / f'{kind}_exact_faiss_None.npy')
    base = runs['exact_faiss']['searches'][0]['search_s']
    for name, res in runs.items():
        for s in res['searches']:
            s['recall_at_k'] = recall(np.load(work / f'{kind}_{name}_{s["knob"]}.npy'), truth)
            s['search_ratio_to_exact'] = s['search_s'] / base
    gallery.unlink()  # the next gallery's disk
    return dict(write_s=write_s, runs=runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--rows', type=int, default=1_000_000)
    p.add_argument('--dim', type=int, default=512)
    p.add_argument('--queries', type=int, default=1000)
    p.add_argument('--topk', type=int, default=10)
    p.add_argument('--data', nargs='+', default=['iid', 'clustered'], choices=['iid', 'clustered'])
    p.add_argument('--noise', type=float, default=0.5,
                   help='clustered: the noise of an identity\'s rows, relative to its centre (default 0.5)')
    p.add_argument('--skip-numpy', action='store_true', help='no exact numpy search (the faiss one stays)')
    p.add_argument('--nlist', type=int, default=1024, help='IVF lists (default 1024)')
    p.add_argument('--nprobe', type=int, nargs='+', default=[16, 64, 256, 1024], help='IVF lists searched')
    p.add_argument('--hnsw-m', type=int, default=32)
    p.add_argument('--hnsw-ef', type=int, nargs='*', default=[],
                   help='HNSW efSearch values (default: none, no HNSW: its build is slow on a small CPU)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--workdir', default=None, help='where the galleries are written (default: a temporary folder)')
    p.add_argument('--json', default=None, help='write the results here')
    p.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        results = {kind: bench_gallery(args, kind, Path(tmp)) for kind in args.data}
    document = dict(settings={k: v for k, v in vars(args).items() if k != 'child'}, results=results,
                    machine=f'{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}',
                    load_average=os.getloadavg(), date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))
    text = json.dumps(document, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)


if __name__ == '__main__':
    main()
