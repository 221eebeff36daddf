"""Benchmark: crops in, features out — what a tracker pays per frame for re-ID features.

A synthetic 1080p BGR frame (as OpenCV delivers it) and ``--crops`` person boxes of random size (heights
``--min-height``..``--max-height`` px, width 0.35-0.5 of the height) are turned into L2-normalised
embeddings by:

    baseline      the usual hand-written pipeline, same run: per crop BGR->RGB, PIL image, torchvision
                  Resize(256x128) + ToTensor + Normalize, stack, the plain eager fp32 model, F.normalize
    extractor     osnet_zoo.FeatureExtractor(model, channel_order='bgr') — plain model
    optimized     FeatureExtractor(..., optimize=True)
    onnxruntime   FeatureExtractor(..., backend='onnxruntime') (CPU)
    crop_by_hand  the frame and its xyxy boxes: slice each crop by hand, then FeatureExtractor (plain model)
    from_boxes    the frame and its xyxy boxes: FeatureExtractor.from_boxes (clip, skip, one batched call)

Each variant's features are compared with the baseline's (minimum cosine similarity), then the variants
are timed in interleaved rounds (median reported), end to end and, for the extractors, the preprocessing
alone (``extractor.preprocess``). Random weights with trained-like BN statistics.

Examples::

    python benchmarks/bench_extractor.py --models osnet_x0_25,osnet_x1_0 --crops 16 --threads 2
    python benchmarks/bench_extractor.py --device cuda --crops 64 --variants baseline,extractor,optimized
    python benchmarks/bench_extractor.py --models osnet_x0_25 --crops 64 --variants crop_by_hand,from_boxes
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import _randomise_statistics  # noqa: E402

VARIANTS = ['baseline', 'extractor', 'optimized', 'onnxruntime', 'crop_by_hand', 'from_boxes']


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default='osnet_x0_25,osnet_x1_0')
    parser.add_argument('--variants', default=','.join(VARIANTS))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--crops', type=int, default=16, help='person boxes per frame')
    parser.add_argument('--min-height', type=int, default=100)
    parser.add_argument('--max-height', type=int, default=400)
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--iters', type=int, default=3, help='frames per round')
    parser.add_argument('--threads', type=int, default=0, help='CPU threads for torch and onnxruntime (0: default)')
    parser.add_argument('--json', help='write the results here')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    frame, crops, boxes = make_frame_and_crops(args.crops, args.min_height, args.max_height)
    results: Dict[str, Any] = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        machine=platform.processor() or platform.machine(), cpus=os.cpu_count(), load_average=os.getloadavg(),
        torch=torch.__version__, device=str(device), config=vars(args), rows=[])
    for name in args.models.split(','):
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=0).eval()
        _randomise_statistics(model)
        model.to(device)
        runners: Dict[str, Callable] = {}
        preprocess: Dict[str, Callable] = {}
        for v in args.variants.split(','):
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                if v == 'baseline':
                    runners[v] = baseline_pipeline(model, device)
                    continue
                kw = dict(optimized=dict(optimize=True), extractor={}, crop_by_hand={}, from_boxes={},
                          onnxruntime=dict(backend='onnxruntime', threads=args.threads or None))[v]
                ext = FeatureExtractor(model, device=device, batch_size=max(args.crops, 1), channel_order='bgr', **kw)
            if v == 'crop_by_hand':  # the per-frame work a tracker writes itself: slice, then extract
                runners[v] = lambda _, ext=ext: ext([frame[int(y0):int(y1), int(x0):int(x1)]
                                                     for x0, y0, x1, y1 in boxes])
                continue
            if v == 'from_boxes':
                runners[v] = lambda _, ext=ext: ext.from_boxes(frame, boxes)[0]
                continue
            runners[v] = ext
            preprocess[v] = ext.preprocess
        reference = runners[args.variants.split(',')[0]](crops).float().cpu()
        rows = {}
        for v, fn in runners.items():
            for _ in range(2):
                out = fn(crops)
            cos = F.cosine_similarity(out.float().cpu(), reference).min().item()
            rows[v] = dict(model=name, variant=v, min_cosine_vs_first=cos, frame_ms=[], preprocess_ms=[])
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
        base = statistics.median(rows[next(iter(rows))]['frame_ms'])
        print(f'\n{name}, {args.crops} crops per frame ({device})')
        print(f"{'variant':14s} {'ms/frame':>9s} {'ms/crop':>8s} {'preproc ms':>10s} {'x first':>8s} {'min cos':>9s}")
        for v, row in rows.items():
            row['frame_ms_median'] = statistics.median(row['frame_ms'])
            row['preprocess_ms_median'] = statistics.median(row['preprocess_ms']) if row['preprocess_ms'] else None
            row['speedup_vs_first'] = base / row['frame_ms_median']
            pre = f"{row['preprocess_ms_median']:.1f}" if row['preprocess_ms_median'] is not None else '-'
            print(f"{v:14s} {row['frame_ms_median']:9.1f} {row['frame_ms_median'] / args.crops:8.2f} {pre:>10s} "
                  f"{row['speedup_vs_first']:7.2f}x {row['min_cosine_vs_first']:9.6f}")
            results['rows'].append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
