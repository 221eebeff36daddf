"""Benchmark: crops in, features out — what a tracker pays per frame for re-ID features.

A synthetic 1080p BGR frame (as OpenCV delivers it) and ``--crops`` person boxes of random size (heights
``--min-height``..``--max-height`` px, width 0.35-0.5 of the height) are turned into L2-normalised
embeddings by:

    baseline      the usual hand-written pipeline, same run: per crop BGR->RGB, PIL image, torchvision
                  Resize(256x128) + ToTensor + Normalize, stack, the plain eager fp32 model, F.normalize
    extractor     osnet_zoo.FeatureExtractor(model, channel_order='bgr', backend='torch') — the plain fp32
                  eager model (the reference of "min cos eager")
    optimized     FeatureExtractor(..., backend='torch', optimize=True)
    onnxruntime   FeatureExtractor(..., backend='onnxruntime') (CPU)
    default       FeatureExtractor(model, channel_order='bgr'): no backend option, what users get
                  (backend='auto')
    crop_by_hand  the frame and its xyxy boxes: slice each crop by hand, then FeatureExtractor (default)
    from_boxes    the frame and its xyxy boxes: FeatureExtractor.from_boxes (clip, skip, one batched call)

Each variant's features are compared with the first variant's and with the eager extractor's (minimum
cosine similarity), then the variants are timed in interleaved rounds (median reported), end to end and,
for the extractors, the preprocessing alone (``extractor.preprocess``); ``x fastest`` is each extractor's
time over the fastest extractor's of the same run. ``--crops`` takes several box counts (``1,16``: batch 1
and 16-box frames). Random weights with trained-like BN statistics.

``--construction-rounds N`` also times building the default extractor in fresh processes: the first one
with an empty ``$OSNET_ZOO_CACHE`` (export to ONNX and check) and a second one with the cache it left
(N rounds, alternating, median).

Examples::

    python benchmarks/bench_extractor.py --models osnet_x0_25,osnet_x1_0 --crops 1,16 --threads 2 \\
        --variants extractor,optimized,onnxruntime,default --construction-rounds 3
    python benchmarks/bench_extractor.py --device cuda --crops 64 --variants baseline,extractor,optimized,default
    python benchmarks/bench_extractor.py --models osnet_x0_25 --crops 64 --variants crop_by_hand,from_boxes
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import timm  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision import transforms as T  # noqa: E402

import osnet_zoo  # noqa: E402,F401  (registers the models)
from osnet_zoo import FeatureExtractor  # noqa: E402
from osnet_zoo.files import atomic_write_json  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import _randomise_statistics  # noqa: E402

VARIANTS = ['baseline', 'extractor', 'optimized', 'onnxruntime', 'default', 'crop_by_hand', 'from_boxes']
# the extractor variants that differ only by backend: "x fastest" compares them
BACKEND_VARIANTS = ('extractor', 'optimized', 'onnxruntime', 'default')
REPO = Path(__file__).resolve().parents[1]
# built in a fresh process: the model (seeded, so the weights digest is the same in each), then the timed extractor
CONSTRUCTION = """
import json, sys, time, timm, torch
sys.path.insert(0, {bench!r})
import osnet_zoo
from bench_inference import _randomise_statistics
torch.set_num_threads({threads})
torch.manual_seed(0)
model = timm.create_model({name!r}, num_classes=0).eval()
_randomise_statistics(model)
t0 = time.perf_counter()
extractor = osnet_zoo.FeatureExtractor(model, device='cpu')
seconds = time.perf_counter() - t0
print(json.dumps(dict(seconds=seconds, backend=extractor.plan.describe(),
                      cache_hit=getattr(extractor.model, 'cache_hit', None))))
"""


def make_frame_and_crops(n: int, min_h: int, max_h: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)  # BGR, as from cv2.VideoCapture
    crops, boxes = [], []
    for _ in range(n):
        h = int(rng.integers(min_h, max_h + 1))
        w = max(8, int(h * rng.uniform(0.35, 0.5)))
        y, x = int(rng.integers(0, 1080 - h)), int(rng.integers(0, 1920 - w))
        crops.append(frame[y:y + h, x:x + w])  # views into the frame, as trackers slice them
        boxes.append((x, y, x + w, y + h))
    return frame, crops, np.array(boxes, dtype=np.float32).reshape(-1, 4)


def baseline_pipeline(model: torch.nn.Module, device: torch.device) -> Callable:
    transform = T.Compose([T.Resize((256, 128)), T.ToTensor(),
                           T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])

    @torch.inference_mode()
    def run(crops: List[np.ndarray]) -> torch.Tensor:
        batch = torch.stack([transform(Image.fromarray(np.ascontiguousarray(c[..., ::-1]))) for c in crops])
        return F.normalize(model(batch.to(device)), dim=1)
    return run


def time_construction(name: str, rounds: int, threads: int) -> Dict[str, Any]:
    """Seconds to build the default extractor in a fresh process with an empty ONNX cache ('first') and with
    the cache the first one left ('cached'), ``rounds`` times alternating; also the whole process's wall time."""
    code = CONSTRUCTION.format(bench=str(Path(__file__).resolve().parent), threads=threads or torch.get_num_threads(),
                               name=name)
    runs: Dict[str, List[Dict[str, Any]]] = {'first': [], 'cached': []}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix='bench_extractor_cache_') as cache:
            env = {**os.environ, 'OSNET_ZOO_CACHE': cache, 'PYTHONPATH': str(REPO)}
            for kind in ('first', 'cached'):
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                                      check=True)
                run = json.loads(proc.stdout.strip().splitlines()[-1])
                run['process_seconds'] = time.perf_counter() - t0
                runs[kind].append(run)
    row: Dict[str, Any] = dict(model=name, runs=runs)
    for kind, kind_runs in runs.items():
        row[f'{kind}_s_median'] = statistics.median(r['seconds'] for r in kind_runs)
        row[f'{kind}_process_s_median'] = statistics.median(r['process_seconds'] for r in kind_runs)
    row['cache_hits'] = [r['cache_hit'] for r in runs['cached']]
    print(f"\n{name}: default FeatureExtractor construction, fresh process ({rounds} round(s), median): "
          f"first {row['first_s_median']:.2f} s (process {row['first_process_s_median']:.1f} s), "
          f"cached {row['cached_s_median']:.2f} s (process {row['cached_process_s_median']:.1f} s); "
          f"backend {runs['first'][0]['backend']}, cache hits {row['cache_hits']}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default='osnet_x0_25,osnet_x1_0')
    parser.add_argument('--variants', default=','.join(VARIANTS))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--crops', default='16', help='person boxes per frame; several: 1,16 (default 16)')
    parser.add_argument('--min-height', type=int, default=100)
    parser.add_argument('--max-height', type=int, default=400)
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--iters', type=int, default=3, help='frames per round')
    parser.add_argument('--threads', type=int, default=0, help='CPU threads for torch and onnxruntime (0: default)')
    parser.add_argument('--construction-rounds', type=int, default=0,
                        help='also time the default extractor\'s construction in fresh processes, first and '
                             'cached (CPU; 0: skip)')
    parser.add_argument('--json', help='write the results here')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    crop_counts = [int(n) for n in str(args.crops).split(',')]
    variants = args.variants.split(',')
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f'unknown variants {unknown}; choose from {VARIANTS}')
    results: Dict[str, Any] = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        machine=platform.processor() or platform.machine(), cpus=os.cpu_count(), load_average=os.getloadavg(),
        torch=torch.__version__, device=str(device), config=vars(args), rows=[], construction=[])
    for name in args.models.split(','):
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=0).eval()
        _randomise_statistics(model)
        model.to(device)
        extractors: Dict[str, FeatureExtractor] = {}
        for v in variants:
            if v == 'baseline':
                continue
            kw = dict(optimized=dict(backend='torch', optimize=True), extractor=dict(backend='torch'),
                      default={}, crop_by_hand={}, from_boxes={},
                      onnxruntime=dict(backend='onnxruntime', threads=args.threads or None))[v]
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                extractors[v] = FeatureExtractor(model, device=device, batch_size=max(crop_counts + [1]),
                                                 channel_order='bgr', **kw)
        for n_crops in crop_counts:
            rows = time_variants(name, model, device, variants, extractors, n_crops, args, sync)
            results['rows'].extend(rows.values())
        if args.construction_rounds and device.type == 'cpu':
            results['construction'].append(time_construction(name, args.construction_rounds, args.threads))
    results['load_average_end'] = os.getloadavg()
    print(f"\nload average {results['load_average'][0]:.2f} at the start, {results['load_average_end'][0]:.2f} "
          f'at the end ({os.cpu_count()} CPUs)')
    if args.json:
        atomic_write_json(args.json, results, indent=2)
        print(f'wrote {args.json}')


def time_variants(name: str, model: torch.nn.Module, device: torch.device, variants: List[str],
                  extractors: Dict[str, FeatureExtractor], n_crops: int, args: argparse.Namespace,
                  sync: Callable) -> Dict[str, Dict[str, Any]]:
    """One model, one box count: features compared, then every variant timed in interleaved rounds."""
    frame, crops, boxes = make_frame_and_crops(n_crops, args.min_height, args.max_height)
    runners: Dict[str, Callable] = {}
    preprocess: Dict[str, Callable] = {}
    for v in variants:
        if v == 'baseline':
            runners[v] = baseline_pipeline(model, device)
        elif v == 'crop_by_hand':  # the per-frame work a tracker writes itself: slice, then extract
            runners[v] = lambda _, ext=extractors[v]: ext([frame[int(y0):int(y1), int(x0):int(x1)]
                                                         for x0, y0, x1, y1 in boxes])
        elif v == 'from_boxes':
            runners[v] = lambda _, ext=extractors[v]: ext.from_boxes(frame, boxes)[0]
        else:
            runners[v] = extractors[v]
            preprocess[v] = extractors[v].preprocess
    reference = runners[variants[0]](crops).float().cpu()
    eager = runners['extractor'](crops).float().cpu() if 'extractor' in runners else None
    rows = {}
    for v, fn in runners.items():
        for _ in range(2):
            out = fn(crops).float().cpu()
        rows[v] = dict(model=name, crops=n_crops, variant=v, min_cosine_vs_first=F.cosine_similarity(
            out, reference).min().item(), frame_ms=[], preprocess_ms=[],
            backend=extractors[v].plan.describe() if v in extractors else 'torch (hand-written)')
        if eager is not None:
            rows[v]['min_cosine_vs_eager'] = F.cosine_similarity(out, eager).min().item()
    for _ in range(args.rounds):
        for v, fn in runners.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(args.iters):
                fn(crops)
            sync()
            rows[v]['frame_ms'].append((time.perf_counter() - t0) / args.iters * 1000)
            if v in preprocess:
                t0 = time.perf_counter()
                for _ in range(args.iters):
                    preprocess[v](crops)
                sync()
                rows[v]['preprocess_ms'].append((time.perf_counter() - t0) / args.iters * 1000)
    for row in rows.values():
        row['frame_ms_median'] = statistics.median(row['frame_ms'])
        row['preprocess_ms_median'] = statistics.median(row['preprocess_ms']) if row['preprocess_ms'] else None
    base = rows[variants[0]]['frame_ms_median']
    fastest = min((rows[v]['frame_ms_median'] for v in BACKEND_VARIANTS if v in rows), default=None)
    print(f'\n{name}, {n_crops} crop(s) per frame ({device})')
    print(f"{'variant':14s} {'backend':18s} {'ms/frame':>9s} {'ms/crop':>8s} {'preproc ms':>10s} {'x first':>8s} "
          f"{'x fastest':>9s} {'min cos':>9s} {'cos eager':>9s}")
    for v, row in rows.items():
        row['speedup_vs_first'] = base / row['frame_ms_median']
        row['ratio_to_fastest'] = row['frame_ms_median'] / fastest if fastest and v in BACKEND_VARIANTS else None
        pre = f"{row['preprocess_ms_median']:.1f}" if row['preprocess_ms_median'] is not None else '-'
        vs_fastest = f"{row['ratio_to_fastest']:.2f}x" if row['ratio_to_fastest'] is not None else '-'
        vs_eager = f"{row['min_cosine_vs_eager']:.6f}" if 'min_cosine_vs_eager' in row else '-'
        print(f"{v:14s} {row['backend']:18s} {row['frame_ms_median']:9.1f} {row['frame_ms_median'] / n_crops:8.2f} "
              f"{pre:>10s} {row['speedup_vs_first']:7.2f}x {vs_fastest:>9s} {row['min_cosine_vs_first']:9.6f} "
              f"{vs_eager:>9s}")
    return rows


if __name__ == '__main__':
    main()
