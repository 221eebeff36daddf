"""The TFLite export against PyTorch and onnxruntime: features (cosine on the same crops) and CPU speed.

    python benchmarks/bench_tflite.py [--models osnet_x0_25 osnet_x1_0] [--speed-models osnet_x0_25]
                                      [--batches 1 16] [--rounds 5] [--threads 1]

Needs the 'tflite' extra (pip install "osnet-zoo[tflite]"). For each model (random weights, BatchNorm statistics
measured on person-like crops so that different crops give different features) it exports the .tflite and the
.onnx with ``osnet_zoo.inference.export.export_model`` at 256x128, prints the conversion time, and the cosine of
the LiteRT interpreter's features to PyTorch fp32 on 16 crops (min over the crops). Then, for the speed models,
the LiteRT interpreter (XNNPACK, ``--threads``) and onnxruntime (CPU, fp32, the same number of intra-op threads)
run each batch size in turn, interleaved round by round (so load changes hit both alike); it prints the median
ms per crop of each and their ratio.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))

from osnet_zoo.inference.export import export_model  # noqa: E402
from osnet_zoo.models.embedding import Embedder  # noqa: E402
from test_boxmot import _calibrated, _cosines, _crops  # noqa: E402  (the tests' person-like crops)

SIZE = (256, 128)


def _inputs(count: int) -> torch.Tensor:
    crops = torch.from_numpy(_crops(SIZE, count, seed=5)).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return (crops - mean[:, None, None]) / std[:, None, None]


def _litert(path: Path, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    index, out = interpreter.get_input_details()[0]['index'], interpreter.get_output_details()[0]['index']
    shape = [None]

    def run(x: np.ndarray) -> np.ndarray:
        if shape[0] != x.shape:
            interpreter.resize_tensor_input(index, list(x.shape))
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        return interpreter.get_tensor(out)
    return run


def _onnxruntime(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    return lambda x: session.run(None, {'images': x})[0]


def _ms_per_crop(run, x: np.ndarray, seconds: float = 1.0) -> float:
    run(x)  # warm up (and resize)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(x)
        count += 1
    return (time.perf_counter() - start) / count / x.shape[0] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=['osnet_x0_25', 'osnet_x1_0'])
    parser.add_argument('--speed-models', nargs='+', default=['osnet_x0_25'])
    parser.add_argument('--batches', nargs='+', type=int, default=[1, 16])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix='bench_tflite_'))
    x = _inputs(16)
    for arch in args.models:
        torch.manual_seed(0)
        net = _calibrated(timm.create_model(arch, num_classes=0), SIZE, 101)
        net.pretrained_cfg = {**net.pretrained_cfg, 'input_size': (3, *SIZE)}
        start = time.perf_counter()
        export_model(net, tmp / f'{arch}.tflite', fmt='tflite')
        converted = time.perf_counter() - start
        export_model(net, tmp / f'{arch}.onnx', fmt='onnx')
        with torch.inference_mode():
            want = Embedder(net, normalize=False).eval()(x).numpy()
        got = _litert(tmp / f'{arch}.tflite', args.threads)(x.numpy())
        print(f'{arch}: export --format tflite (convert + check) {converted:.0f} s, '
              f'{(tmp / f"{arch}.tflite").stat().st_size / 1e6:.1f} MB; LiteRT vs PyTorch fp32 on 16 crops: '
              f'cosine min {_cosines(got, want).min():.7f}, max abs diff {np.abs(got - want).max():.2g}', flush=True)
        if arch not in args.speed_models:
            continue
        engines = {'LiteRT': _litert(tmp / f'{arch}.tflite', args.threads),
                   'onnxruntime': _onnxruntime(tmp / f'{arch}.onnx', args.threads)}
        for batch in args.batches:
            xb = np.ascontiguousarray(x.numpy()[np.arange(batch) % 16])
            times = {name: [] for name in engines}
            for r in range(args.rounds):
                for name in (list(engines) if r % 2 == 0 else list(engines)[::-1]):
                    times[name].append(_ms_per_crop(engines[name], xb))
            median = {name: statistics.median(t) for name, t in times.items()}
            ratio = median['LiteRT'] / median['onnxruntime']
            print(f'{arch} batch {batch}: LiteRT {median["LiteRT"]:.2f} ms/crop, onnxruntime '
                  f'{median["onnxruntime"]:.2f} ms/crop, LiteRT/onnxruntime {ratio:.2f}x '
                  f'({args.rounds} interleaved rounds, {args.threads} thread(s))', flush=True)


if __name__ == '__main__':
    main()
