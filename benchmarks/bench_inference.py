"""Inference speed of OSNet: our deployment paths against the plain eager model, measured in the same run.

For each model and batch size every selected variant is built, checked against the plain fp32 model on the
same input, then timed in interleaved rounds (one round of each variant in turn, so that load from other
jobs hits all of them alike); the table reports the median round. Ratios are against the ``eager``
baseline (the plain timm model, fp32, NCHW) of the same run.

Examples:

    # CPU, batch 1, the deployment paths that apply to a CPU
    python benchmarks/bench_inference.py --device cpu --models osnet_x1_0 --batch-sizes 1 \\
        --variants eager,ours,ours_compile,onnxruntime --threads 2

    # GPU: everything the issue asks for in one run (about 5-8 minutes on an H100), JSON into --out
    python benchmarks/bench_inference.py --preset gpu --out results/

Variants (names for --variants):
    eager              the plain model, fp32, NCHW (the baseline)
    eager_cl           the plain model in --precision, channels_last
    ours               optimize_for_inference: BN folded, streams batched, channels_last, --precision
    ours_fold          BN folded, channels_last, --precision (no stream batching)
    ours_auto          optimize_for_inference's default: stream batching chosen per call (CPU), off on CUDA
    ours_compile       ours + torch.compile (CPU: inductor with freezing)
    ours_graph         ours, CUDA graph (GPU)
    ours_compile_graph ours + torch.compile + CUDA graph (GPU)
    ours_fold_compile_graph   the same without stream batching (GPU)
    ours_merge_compile_graph  ours + merged Lite 3x3 (one dense 3x3 conv) + torch.compile + CUDA graph (GPU)
    ours_dense_compile_graph  ours with block-diagonal dense 1x1 convs per level (no channel slicing) +
                              torch.compile + CUDA graph (GPU)
    ours_dense         ours with dense levels (any device)
    ours_triton_graph  ours with the Triton depthwise 3x3 + bias + ReLU kernel, CUDA graph (GPU)
    ours_triton_compile_graph  the same + torch.compile
    ours_mb64_compile_graph   ours_compile_graph run as micro-batches of 64 inside one graph (GPU; keeps
                              activations in L2)
    ours_autotune_graph       ours + torch.compile(mode='max-autotune-no-cudagraphs') + CUDA graph (GPU; slow
                              to compile)
    onnxruntime        the BN-folded model exported to ONNX, onnxruntime CPU provider, fp32 (CPU);
                       FeatureExtractor(backend='onnxruntime')
    onnxruntime_int8   that ONNX model statically quantised by onnxruntime (uint8 activations, int8
                       per-channel weights, calibrated on the benchmark's random inputs) — an experiment,
                       not a library path: does int8 pay on this CPU?
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import timm  # noqa: E402

import osnet_zoo  # noqa: E402,F401  (registers the models)
from osnet_zoo.files import atomic_write_json  # noqa: E402
from osnet_zoo.inference import optimize_for_inference  # noqa: E402
from osnet_zoo.inference.onnx_runtime import OnnxRuntimeModel  # noqa: E402
from osnet_zoo.inference.optimize import resolve_dtype  # noqa: E402

CPU_VARIANTS = ['eager', 'ours_fold', 'ours', 'ours_compile', 'onnxruntime']
GPU_VARIANTS = ['eager', 'eager_cl', 'ours_graph', 'ours_triton_graph', 'ours_compile_graph',
                'ours_triton_compile_graph', 'ours_dense_compile_graph', 'ours_merge_compile_graph',
                'ours_mb64_compile_graph', 'ours_fold_compile_graph']
PRESETS = {
    # The GPU goals (osnet_x1_0, osnet_x0_25 at batch 256 in bf16) first, then the alternatives and
    # AIN: each torch.compile costs about a minute, and the run should stay under 8 minutes. Each group is
    # timed against its own eager baseline.
    'gpu': dict(device='cuda', batch_sizes=[256], precision='bf16', rounds=5, iters=10, budget_s=330,
                check_extractor=True,
                plan=[('osnet_x1_0', ['eager', 'eager_cl', 'ours_graph', 'ours_triton_graph', 'ours_compile_graph',
                                      'ours_triton_compile_graph']),
                      ('osnet_x0_25', ['eager', 'ours_graph', 'ours_triton_graph', 'ours_compile_graph',
                                       'ours_triton_compile_graph']),
                      ('osnet_x1_0', ['eager', 'ours_dense_compile_graph', 'ours_merge_compile_graph',
                                      'ours_mb64_compile_graph', 'ours_fold_compile_graph']),
                      ('osnet_x0_25', ['eager', 'ours_mb64_compile_graph', 'ours_dense_compile_graph']),
                      ('osnet_ain_x1_0', ['eager', 'ours_compile_graph'])]),
    'cpu': dict(device='cpu', batch_sizes=[1], precision='fp32', rounds=7, iters=10, budget_s=1800,
                plan=[('osnet_x1_0', CPU_VARIANTS)]),
}
# variants that only make sense on one device type
GPU_ONLY = ('graph',)
CPU_ONLY = ('onnxruntime', 'onnxruntime_int8')


class Timer:
    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def __call__(self, fn: Callable[[], Any], iters: int) -> float:
        self.sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        self.sync()
        return time.perf_counter() - t0


def _onnxruntime_int8(model: nn.Module, batch: int, input_size, threads: int) -> Callable:
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = OnnxRuntimeModel(model, threads=threads)
    folder = fp32.path.parent
    quant_pre_process(str(fp32.path), str(folder / 'pre.onnx'))
    gen = torch.Generator().manual_seed(2)
    calibration = iter([{fp32.input_name: torch.randn(batch, *input_size, generator=gen).numpy()} for _ in range(8)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(calibration, None)

    quantize_static(str(folder / 'pre.onnx'), str(folder / 'int8.onnx'), Reader(), quant_format=QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(folder / 'int8.onnx'), options, providers=['CPUExecutionProvider'])

    def run(x: torch.Tensor, _keep=fp32) -> torch.Tensor:  # _keep: the temporary folder lives with the runner
        out = session.run([fp32.output_name], {fp32.input_name: np.ascontiguousarray(x.float().cpu().numpy())})[0]
        return torch.from_numpy(out)
    return run


def build_variant(name: str, model: nn.Module, device: torch.device, precision: str, batch: int,
                  input_size, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable taking the fp32 NCHW batch on ``device`` (what a user holds) and returning features."""
    if name == 'onnxruntime_int8':
        if device.type != 'cpu':
            raise ValueError('onnxruntime_int8 is benchmarked on the CPU')
        return _onnxruntime_int8(model, batch, input_size, threads)
    dtype = resolve_dtype(precision)
    if name == 'eager':
        net = model.to(device)
        return lambda x: net(x)
    if name == 'eager_cl':
        net = copy.deepcopy(model).to(device=device, dtype=dtype, memory_format=torch.channels_last)
        return lambda x: net(x.to(dtype=dtype, memory_format=torch.channels_last)).float()
    if name == 'onnxruntime':
        if device.type != 'cpu' or precision != 'fp32':
            raise ValueError('onnxruntime is benchmarked on the CPU in fp32')
        return OnnxRuntimeModel(model, threads=threads)
    if not name.startswith('ours'):
        raise ValueError(f'unknown variant {name!r}')
    parts = name.split('_')[1:]
    known = {'fold', 'auto', 'compile', 'graph', 'merge', 'dense', 'triton', 'mb64', 'autotune'}
    if set(parts) - known:
        raise ValueError(f'unknown variant {name!r}')
    graph = 'graph' in parts
    if graph and device.type != 'cuda':
        raise ValueError('CUDA graphs need a CUDA device')
    compile_mode: Any = False
    if 'autotune' in parts:
        compile_mode = 'max-autotune-no-cudagraphs'
    elif 'compile' in parts:
        compile_mode = True
    micro = 64 if 'mb64' in parts else None
    fast = optimize_for_inference(
        model, precision=precision, device=device,
        stream_batching='auto' if 'auto' in parts else 'fold' not in parts, merge_lite='merge' in parts,
        dense_levels='dense' in parts, triton_depthwise='triton' in parts,
        compile=compile_mode, micro_batch=micro,
        cuda_graph_batch_sizes=(batch,) if graph else (), input_size=input_size)
    return lambda x: fast(x)


def _compare(out: torch.Tensor, ref: torch.Tensor) -> Dict[str, float]:
    out, ref = out.float().cpu(), ref.float().cpu()
    rel = ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()
    cos = nn.functional.cosine_similarity(out, ref, dim=1).min().item()
    return dict(max_rel_err=rel, min_cosine=cos)


def run(args: argparse.Namespace) -> Dict[str, Any]:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    # every variant compiles its own copy of the same classes: room for all of them in dynamo's cache
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    started = time.perf_counter()
    env = dict(
        date=datetime.date.today().isoformat(), command=' '.join([Path(sys.argv[0]).name] + sys.argv[1:]),
        torch=torch.__version__, timm=timm.__version__, python=platform.python_version(),
        device=torch.cuda.get_device_name(device) if device.type == 'cuda' else _cpu_name(),
        cpu_count=os.cpu_count(), torch_threads=threads,
        loadavg_start=os.getloadavg() if hasattr(os, 'getloadavg') else None)
    results: Dict[str, Any] = dict(env=env, rows=[])
    out_path = None
    if args.out:
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
        out_path = out_dir / f'bench_inference_{device.type}_{stamp}.json'

    def save() -> None:
        if out_path is not None:
            atomic_write_json(out_path, results, indent=1)

    for model_name, variants in args.plan:
        if 'eager' not in variants:
            variants = ['eager'] + list(variants)  # the baseline of every ratio
        torch.manual_seed(0)
        model = timm.create_model(model_name, num_classes=0).eval()
        _randomise_statistics(model)
        input_size = tuple(model.pretrained_cfg['input_size'])
        for batch in args.batch_sizes:
            x = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(1)).to(device)
            with torch.inference_mode():
                reference = model.to(device)(x).float()
            runners: Dict[str, Callable] = {}
            rows: Dict[str, Dict[str, Any]] = {}
            for name in variants:
                row = dict(model=model_name, batch=batch, variant=name, device=device.type,
                           precision={'eager': 'fp32', 'onnxruntime': 'fp32',
                                      'onnxruntime_int8': 'int8'}.get(name, args.precision))
                rows[name] = row
                results['rows'].append(row)
                if (device.type == 'cpu' and any(k in name for k in GPU_ONLY)) or \
                        (device.type == 'cuda' and name in CPU_ONLY):
                    row['status'] = 'skipped (not for this device)'
                    continue
                if time.perf_counter() - started > args.budget_s:
                    row['status'] = f'skipped (time budget {args.budget_s}s spent)'
                    continue
                t0 = time.perf_counter()
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter('ignore')
                        fn = build_variant(name, model, device, row['precision'], batch, input_size, threads)
                        with torch.inference_mode():
                            for _ in range(args.warmup):
                                out = fn(x)
                            Timer(device).sync()
                    row.update(_compare(out, reference))
                    row['build_and_warmup_s'] = round(time.perf_counter() - t0, 1)
                    runners[name] = fn
                    row['status'] = 'ok'
                except Exception as e:  # record and go on: one broken variant must not lose the others
                    row['status'] = f'error: {type(e).__name__}: {e}'
                    row['traceback'] = traceback.format_exc(limit=6)
                    print(f'[{model_name} b{batch} {name}] {row["status"]}', file=sys.stderr)
                save()
            timer = Timer(device)
            times: Dict[str, List[float]] = {name: [] for name in runners}
            with torch.inference_mode():
                for _ in range(args.rounds):
                    for name, fn in runners.items():
                        times[name].append(timer(lambda: fn(x), args.iters))
            base = statistics.median(times['eager']) if 'eager' in times else None
            for name, ts in times.items():
                med = statistics.median(ts)
                row = rows[name]
                row['ms_per_batch'] = round(med / args.iters * 1000, 3)
                row['ms_per_img'] = round(med / args.iters / batch * 1000, 4)
                row['img_per_s'] = round(batch * args.iters / med, 1)
                row['rounds_ms_per_batch'] = [round(t / args.iters * 1000, 3) for t in ts]
                if base is not None:
                    row['speedup_vs_eager'] = round(base / med, 3)
            runners.clear()
            torch._dynamo.reset()  # the next group compiles afresh; nothing of this group runs again
            if device.type == 'cuda':
                torch.cuda.empty_cache()
            save()
            print_table([rows[name] for name in variants])
    if args.check_extractor:
        results['extractor_check'] = check_extractor(device, args.precision)
        print('FeatureExtractor check:', json.dumps(results['extractor_check']))
    env['loadavg_end'] = os.getloadavg() if hasattr(os, 'getloadavg') else None
    env['wall_s'] = round(time.perf_counter() - started, 1)
    save()
    if out_path is not None:
        print(f'JSON: {out_path}')
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


def check_extractor(device: torch.device, precision: str) -> Dict[str, Any]:
    """End to end on ``device``: FeatureExtractor (optimised, CUDA graph on CUDA) vs the plain fp32 one on
    the CPU, on random uint8 crops of assorted sizes (a partial last chunk included)."""
    from osnet_zoo import FeatureExtractor
    try:
        torch.manual_seed(0)
        model = timm.create_model('osnet_x0_25', num_classes=0).eval()
        _randomise_statistics(model)
        gen = torch.Generator().manual_seed(3)
        sizes = zip(torch.randint(64, 400, (40,), generator=gen), torch.randint(32, 200, (40,), generator=gen))
        crops = [torch.randint(0, 256, (3, int(h), int(w)), dtype=torch.uint8, generator=gen) for h, w in sizes]
        reference = FeatureExtractor(model, device='cpu', batch_size=16)(crops)
        fast = FeatureExtractor(model, device=device, precision=precision, batch_size=16, optimize=True,
                                cuda_graph=device.type == 'cuda')
        t0 = time.perf_counter()
        got = fast(crops).cpu()
        cos = nn.functional.cosine_similarity(got, reference).min().item()
        return dict(status='ok', rows=int(got.shape[0]), min_cosine_vs_cpu_fp32=cos,
                    seconds_for_40_crops=round(time.perf_counter() - t0, 3), passed=cos > 0.99)
    except Exception as e:
        return dict(status=f'error: {type(e).__name__}: {e}', traceback=traceback.format_exc(limit=6))


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            names = [ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')]
        return f'{names[0]} x{len(names)}' if names else platform.processor() or 'cpu'
    except OSError:
        return platform.processor() or 'cpu'


def _randomise_statistics(model: nn.Module) -> None:
    """Trained-like BN statistics (fresh ones are identities), so that BN folding is really exercised and
    embeddings have realistic magnitudes; speed does not depend on the values."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                if isinstance(m, nn.BatchNorm1d):
                    m.running_var.fill_(1e-4)


def print_table(rows: List[Dict[str, Any]]) -> None:
    if not rows:
        return
    r0 = rows[0]
    print(f'\n{r0["model"]}  batch {r0["batch"]}  ({r0["device"]})')
    print(f'{"variant":<27}{"prec":<6}{"ms/img":>10}{"img/s":>12}{"vs eager":>10}{"max rel err":>13}'
          f'{"build s":>9}  status')
    for r in rows:
        if 'img_per_s' in r:
            print(f'{r["variant"]:<27}{r["precision"]:<6}{r["ms_per_img"]:>10.4f}{r["img_per_s"]:>12,.1f}'
                  f'{r.get("speedup_vs_eager", float("nan")):>9.2f}x{r["max_rel_err"]:>13.2e}'
                  f'{r["build_and_warmup_s"]:>9.1f}  ok')
        else:
            print(f'{r["variant"]:<27}{r["precision"]:<6}{"":>10}{"":>12}{"":>10}{"":>13}{"":>9}  {r["status"]}')
    sys.stdout.flush()


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog='python benchmarks/bench_inference.py', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('--preset', choices=sorted(PRESETS),
                        help='a ready-made selection (--models / --variants given too replace its plan)')
    parser.add_argument('--device', help='cpu or cuda (default cpu)')
    parser.add_argument('--models', help='comma-separated timm names (default osnet_x1_0)')
    parser.add_argument('--batch-sizes', help='comma-separated (default 1)')
    parser.add_argument('--precision', choices=['fp32', 'bf16', 'fp16'], help='precision of the non-eager variants')
    parser.add_argument('--variants', help='comma-separated; see the list above')
    parser.add_argument('--rounds', type=int, help='timed rounds per variant, interleaved (median reported)')
    parser.add_argument('--iters', type=int, help='forward passes per round')
    parser.add_argument('--warmup', type=int, default=3, help='untimed calls after building (compiles, captures)')
    parser.add_argument('--threads', type=int, default=0, help='CPU threads for torch and onnxruntime (0: default)')
    parser.add_argument('--budget-s', type=float, help='skip variants not yet built after this many seconds')
    parser.add_argument('--check-extractor', action='store_true',
                        help='also run FeatureExtractor end to end on the device against the CPU fp32 one')
    parser.add_argument('--out', help='directory for a timestamped JSON of the results (written as it goes)')
    parser.add_argument('--json', help='also write the results to this JSON file')
    args = parser.parse_args(argv)
    defaults = dict(PRESETS[args.preset] if args.preset else PRESETS['cpu'])
    plan = defaults.pop('plan')
    args.check_extractor = args.check_extractor or defaults.pop('check_extractor', False)
    for key, value in defaults.items():
        given = getattr(args, key)
        if given is None:
            setattr(args, key, value)
        elif key == 'batch_sizes':
            setattr(args, key, [int(b) for b in given.split(',')])
    if args.models or args.variants:
        models = args.models.split(',') if args.models else list(dict.fromkeys(m for m, _ in plan))
        variants = args.variants.split(',') if args.variants else None
        default = CPU_VARIANTS if args.device == 'cpu' else GPU_VARIANTS
        plan = [(m, variants or default) for m in models]
    args.plan = plan
    run(args)


if __name__ == '__main__':
    main()
