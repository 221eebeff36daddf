"""Benchmark: the CPU deployment runtimes side by side — ms per crop of the network alone (a normalised float32
batch in, features out), for each model and batch size, interleaved, as ratios to onnxruntime fp32 of the same run.

Engines (:data:`ENGINES`, one builder each: add a row there to add an engine):

    onnxruntime_fp32   the onnxruntime path (``OnnxRuntimeModel``: BN-folded ONNX, spinning off as the extractor)
    openvino_fp32      the OpenVINO path (the checked IR, ``OpenVinoModel``: fp32 accuracy hints)
    auto               what ``backend='auto'`` builds on this machine for this model, threads and batch (its
                       one-time timing runs, and is recorded, while the engines are built)
    int8_onnx          INT8 by onnxruntime's static quantization (QDQ, per-channel; ``QuantizedModel``)
    int8_openvino      INT8 by NNCF, the IR run by ``OpenVinoModel`` (fp32 hints, as boxmot runs it)

The INT8 engines calibrate on ``--calibration`` (default: synthetic person crops at the timed input size; the
timing does not depend on which crops). ``--runs`` adds accuracy: each engine built from a trained run's model
(at the run's input size), the INT8 ones calibrated on the run's training images, and evaluated on the run's own
split (Rank-1 / mAP, as ``export --int8`` reports them), one run per model.

The baseline of the ratios is :data:`BASELINE`; ``x fastest`` is each engine's time over the fastest engine's
at the same model and batch (the issue asks ``auto`` to stay within 1.15 of it). Every engine's features are
compared with the PyTorch fp32 model's (minimum cosine). Random weights with trained-like BN statistics. The
runtimes' files go to a temporary ``$OSNET_ZOO_CACHE`` unless ``--cache`` names one.

Examples::

    python benchmarks/bench_deploy.py                                      # x0_25 and x1_0, batch 1 and 16
    python benchmarks/bench_deploy.py --models osnet_x0_25 --batch-sizes 1,16 --rounds 5 --threads 2
    python benchmarks/bench_deploy.py --runs runs/x0_25,runs/x1_0       # and Rank-1 / mAP of trained runs
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import timm  # noqa: E402

import osnet_zoo  # noqa: E402,F401  (registers the models)
from osnet_zoo.files import atomic_write_json  # noqa: E402
from osnet_zoo.inference.backend import build_runtime, select_backend  # noqa: E402
from osnet_zoo.inference.onnx_runtime import OnnxRuntimeModel  # noqa: E402
from osnet_zoo.inference.openvino_cache import cached_openvino_model  # noqa: E402
from osnet_zoo.models.embedding import Embedder  # noqa: E402
from osnet_zoo.data import make_synthetic_reid  # noqa: E402
from osnet_zoo.evaluation.reid import evaluate_models  # noqa: E402
from osnet_zoo.inference.model import build_embedding_model, resolve_preprocessing  # noqa: E402
from osnet_zoo.inference.quantize import int8_runtime, run_datasets, run_folder  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import _randomise_statistics  # noqa: E402

# name -> build(embedding model, threads, largest batch, calibration) -> a callable on a float32 NCHW batch giving
# (N, D) features
Builder = Callable[[nn.Module, int, int, Any], Callable[[torch.Tensor], torch.Tensor]]
ENGINES: Dict[str, Builder] = {
    'onnxruntime_fp32': lambda net, threads, batch, cal: OnnxRuntimeModel(net, threads=threads, spinning=False),
    'openvino_fp32': lambda net, threads, batch, cal: cached_openvino_model(net, threads=threads),
    'auto': lambda net, threads, batch, cal: build_runtime(net, select_backend('auto'), 'cpu', batch_size=batch,
                                                           threads=threads)[0],
    'int8_onnx': lambda net, threads, batch, cal: int8_runtime(net, cal, engine='onnxruntime', threads=threads,
                                                               preprocessing=resolve_preprocessing(net)),
    'int8_openvino': lambda net, threads, batch, cal: int8_runtime(net, cal, engine='openvino', threads=threads,
                                                                   preprocessing=resolve_preprocessing(net)),
}
BASELINE = 'onnxruntime_fp32'


def _describe(engine: Any) -> str:
    return type(engine).__name__


def time_engines(engines: Dict[str, Callable], x: torch.Tensor, rounds: int, iters: int,
                 warmup: int) -> Dict[str, float]:
    """Median ms per crop of each engine on ``x``: ``warmup`` calls each, then ``rounds`` rounds of ``iters``
    calls per engine, the engines interleaved (their order alternating each round)."""
    names = list(engines)
    for name in names:
        for _ in range(warmup):
            engines[name](x)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            for _ in range(iters):
                engines[name](x)
            times[name].append((time.perf_counter() - t0) / iters)
    return {name: 1000 * statistics.median(t) / x.shape[0] for name, t in times.items()}


def bench_model(name: str, engine_names: List[str], batch_sizes: List[int], args: argparse.Namespace) -> List[dict]:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=0).eval()
    _randomise_statistics(model)
    model.pretrained_cfg = {**model.pretrained_cfg, 'input_size': (3, args.height, args.width)}  # what engines export
    reference = Embedder(model, normalize=False).eval()
    threads = args.threads or torch.get_num_threads()
    engines = {e: ENGINES[e](model, threads, max(batch_sizes), args.calibration) for e in engine_names}
    rows = []
    for batch in batch_sizes:
        x = torch.randn(batch, 3, args.height, args.width, generator=torch.Generator().manual_seed(batch))
        with torch.inference_mode():
            expected = reference(x)
        cosine = {e: F.cosine_similarity(engine(x).float(), expected).min().item() for e, engine in engines.items()}
        ms = time_engines(engines, x, args.rounds, args.iters, args.warmup)
        fastest = min(ms.values())
        for e in engine_names:
            row = dict(model=name, batch=batch, engine=e, runtime=_describe(engines[e]), ms_per_crop=ms[e],
                       ratio_to_baseline=ms[e] / ms[BASELINE] if BASELINE in ms else None,
                       ratio_to_fastest=ms[e] / fastest, min_cosine_vs_torch=cosine[e])
            rows.append(row)
            base = f"{row['ratio_to_baseline']:.2f}" if row['ratio_to_baseline'] is not None else '-'
            print(f'{name:<12} batch {batch:>3}  {e:<18} {row["runtime"]:<16} {ms[e]:8.2f} ms/crop  '
                  f'x baseline {base:>5}  x fastest {row["ratio_to_fastest"]:.2f}  min cos {cosine[e]:.6f}',
                  flush=True)
    return rows


def synthetic_crops(folder: Path, height: int, width: int) -> Path:
    """Person-like synthetic crops (the synthetic Market-1501 layout's training images) to calibrate on."""
    make_synthetic_reid(folder, num_train_ids=16, num_test_ids=2, height=height, width=width, seed=11)
    return folder / 'bounding_box_train'


def run_accuracy(run: str, engine_names: List[str], threads: int) -> List[dict]:
    """Rank-1 / mAP (percent) of each engine on a trained run's own evaluation split, at its input size and
    distance, the INT8 engines calibrated on the run's training images."""
    model = build_embedding_model(None, pretrained=False, checkpoint_path=run)
    prep = resolve_preprocessing(model)
    _, splits, config = run_datasets(run_folder(run))
    rows = []
    for e in engine_names:
        engine = ENGINES[e](model, threads, 32, run)
        module = engine if isinstance(engine, nn.Module) else _Wrapped(engine)
        result = evaluate_models([module], splits, torch.device('cpu'), distance=config.get('distance') or 'euclidean',
                                 size=tuple(prep['input_size'][1:]), mean=prep['mean'], std=prep['std'],
                                 batch_size=32)
        for target, r in result.items():
            rows.append(dict(run=run, model=config['model'], input_size=list(prep['input_size'][1:]), engine=e,
                             target=target, rank1=100 * r['rank1'], mAP=100 * r['mAP']))
            print(f"{config['model']:<12} {run}  {e:<18} {target}: Rank-1 {100 * r['rank1']:5.1f}%  "
                  f"mAP {100 * r['mAP']:5.1f}%", flush=True)
    return rows


class _Wrapped(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default='osnet_x0_25,osnet_x1_0')
    parser.add_argument('--engines', default=','.join(ENGINES), help=f'from {list(ENGINES)}')
    parser.add_argument('--batch-sizes', default='1,16')
    parser.add_argument('--height', type=int, default=256)
    parser.add_argument('--width', type=int, default=128)
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--iters', type=int, default=3, help='calls per engine and round')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=0, help='CPU threads of every engine (0: torch\'s count)')
    parser.add_argument('--cache', help='$OSNET_ZOO_CACHE for the exported files (default: a temporary folder)')
    parser.add_argument('--json', help='write the results here')
    parser.add_argument('--calibration', help='INT8 engines: crops to calibrate on (default: synthetic crops)')
    parser.add_argument('--runs', default='', help='trained runs (comma-separated) for Rank-1 / mAP per engine')
    args = parser.parse_args()
    engine_names = args.engines.split(',')
    unknown = sorted(set(engine_names) - set(ENGINES))
    if unknown:
        parser.error(f'unknown engines {unknown}; choose from {list(ENGINES)}')
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix='bench_deploy_')
    os.environ['OSNET_ZOO_CACHE'] = args.cache or tmp.name
    if not args.calibration and any(e.startswith('int8') for e in engine_names):
        args.calibration = str(synthetic_crops(Path(tmp.name) / 'calibration', args.height, args.width))
    results: Dict[str, Any] = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        machine=platform.processor() or platform.machine(), cpus=os.cpu_count(), load_average=os.getloadavg(),
        torch=torch.__version__, config=vars(args), baseline=BASELINE, rows=[])
    for name in args.models.split(','):
        results['rows'].extend(bench_model(name, engine_names, [int(b) for b in args.batch_sizes.split(',')], args))
    results['accuracy'] = [row for run in filter(None, args.runs.split(','))
                           for row in run_accuracy(run, engine_names, args.threads or torch.get_num_threads())]
    results['load_average_end'] = os.getloadavg()
    # a busy machine slows every engine, not alike: the load says how far the ratios can be trusted
    print(f"\n{results['cpus']} CPUs, 1-minute load {results['load_average'][0]:.2f} -> "
          f"{results['load_average_end'][0]:.2f}" + (f'; results in {args.json}' if args.json else ''))
    if args.json:
        atomic_write_json(args.json, results, indent=2)


if __name__ == '__main__':
    main()
