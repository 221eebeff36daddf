"""Which inference path runs the model: ``backend='auto'``, the default of ``FeatureExtractor``,
``python -m osnet_zoo.extract`` and ``python -m osnet_zoo.evaluate``, picks the fastest one measured for the
device and precision (benchmarks/RESULTS.md), so that users get it without reading the options:

* CPU, fp32: onnxruntime, running the BN-folded ONNX export of the model (checked against PyTorch once,
  then cached on disk: :mod:`osnet_zoo.inference.onnx_runtime`). With the openvino package installed, OpenVINO
  instead where a timing of both on this machine, for this model, threads and batch, finds it faster: measured
  once at first use and remembered on disk (:mod:`osnet_zoo.inference.backend_choice`). Without the onnx /
  onnxruntime packages, or when the model cannot be exported, the optimised PyTorch model, with a one-line
  notice.
* CPU, bf16 / fp16: the optimised PyTorch model (onnxruntime runs fp32 here).
* CUDA: the optimised PyTorch model (BN folded, channels_last; ``optimize_for_inference``), with a CUDA
  graph captured for the batch size where the caller sends full batches of it (``fixed_batch``: a folder,
  a dataset); never a graph for the varying batches of a tracker's frames.
* other devices: the plain PyTorch model.

``backend='torch'`` (with ``optimize`` / ``compile`` / ``cuda_graph`` as asked), ``backend='onnxruntime'`` and
``backend='openvino'`` (the checked IR, cached: :mod:`osnet_zoo.inference.openvino_cache`) choose explicitly;
``optimize``, ``compile`` or ``cuda_graph`` with ``'auto'`` mean the PyTorch path.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
from typing import Any, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from ..precision import QUANTIZED, resolve_dtype
from ..threads import compute_threads
from .backend_choice import TIMING_BATCH, backend_choice_key, read_choice, time_runtimes, write_choice
from .model import resolve_preprocessing
from .onnx_runtime import OnnxRuntimeModel
from .openvino_cache import cached_openvino_model
from .openvino_runtime import INSTALL_OPENVINO, openvino_available
from .optimize import optimize_for_inference
from .quantize import CALIBRATION_SIZE, DEFAULT_ENGINE, default_engine, engine_available, int8_runtime

__all__ = ['BACKENDS', 'BACKEND_HELP', 'BackendPlan', 'select_backend', 'build_runtime', 'missing_onnx_packages']

_logger = logging.getLogger(__name__)

BACKENDS = ('auto', 'torch', 'onnxruntime', 'openvino')
BACKEND_HELP = ('auto (default): the fastest path measured for the device: onnxruntime on the CPU in fp32 (the '
                'ONNX export is checked against PyTorch once and cached in $OSNET_ZOO_CACHE, ~/.cache/osnet_zoo), '
                'or OpenVINO where it is installed and a one-time timing on this machine finds it faster; '
                'the optimised PyTorch model on CUDA and in bf16 / fp16; torch: the PyTorch model as it is; '
                'onnxruntime: onnxruntime on the CPU (fp32); openvino: OpenVINO on the CPU (fp32; pip install '
                '"osnet-zoo[openvino]")')
_notices_given = set()


@dataclasses.dataclass(frozen=True)
class BackendPlan:
    """What runs the model: ``backend`` 'torch', 'onnxruntime' or 'openvino'; for torch, ``optimize``
    (``optimize_for_inference``) and ``cuda_graph`` (a graph for the batch size); ``requested`` is the
    ``backend=`` asked for, ``reason`` why this plan, in words; ``candidates``: the CPU runtimes
    :func:`build_runtime` times on this machine to pick the faster (``backend`` runs when the timing fails)."""
    requested: str
    backend: str
    optimize: bool = False
    cuda_graph: bool = False
    reason: str = ''
    candidates: Tuple[str, ...] = ()
    int8: bool = False  # a quantized model (osnet_zoo.inference.quantize) run by ``backend``

    def describe(self) -> str:
        """'onnxruntime', 'openvino', 'onnxruntime (int8)', 'torch (optimized)', 'torch (optimized, CUDA graph)'
        or 'torch'."""
        if self.int8:
            return f'{self.backend} (int8)'
        if self.backend != 'torch' or not self.optimize:
            return self.backend
        return 'torch (optimized, CUDA graph)' if self.cuda_graph else 'torch (optimized)'


def missing_onnx_packages() -> List[str]:
    """Which of onnx and onnxruntime cannot be imported (the onnxruntime backend needs both)."""
    return [name for name in ('onnx', 'onnxruntime') if importlib.util.find_spec(name) is None]


def _notice(message: str) -> None:
    """One line on stderr (through logging), once per process and message."""
    if message not in _notices_given:
        _notices_given.add(message)
        _logger.warning(message)


def _int8_plan(backend: str, device: torch.device, torch_options: bool) -> BackendPlan:
    """``precision='int8'``: the quantized model on the CPU, by the engine ``backend`` names ('auto': the one
    measured faster, :data:`osnet_zoo.inference.quantize.DEFAULT_ENGINE`, where the int8 extra is installed)."""
    if device.type != 'cpu' or backend == 'torch' or torch_options:
        raise ValueError("precision='int8' runs a quantized model on the CPU, through onnxruntime or OpenVINO "
                         "(backend 'auto', 'onnxruntime' or 'openvino'), without optimize / compile / cuda_graph; "
                         f'got device {device}, backend {backend!r}'
                         + (', torch options' if torch_options else '') + '.')
    if backend == 'auto':
        engine = default_engine()
        if engine != DEFAULT_ENGINE:
            _notice(f'osnet_zoo: INT8 runs through onnxruntime; the {DEFAULT_ENGINE} engine, measured faster, needs '
                    'nncf and openvino: pip install "osnet-zoo[int8]"')
            return BackendPlan(backend, engine, int8=True, reason='int8: nncf / openvino not installed')
        return BackendPlan(backend, engine, int8=True, reason=f'int8: {engine} (NNCF) measured fastest on the CPU')
    if not engine_available(backend):
        raise ValueError('INT8 through OpenVINO needs the openvino and nncf packages: pip install "osnet-zoo[int8]".')
    return BackendPlan(backend, backend, int8=True, reason='int8: asked for')


def select_backend(backend: str = 'auto', device: Union[str, torch.device] = 'cpu', precision: str = 'fp32',
                   optimize: bool = False, compile: Union[bool, str] = False, cuda_graph: bool = False,
                   fixed_batch: bool = False) -> BackendPlan:
    """The plan for ``backend`` ('auto', 'torch' or 'onnxruntime') on ``device`` in ``precision`` (see the
    module docstring); ``fixed_batch``: the caller sends full batches of one size (a CUDA graph is safe).
    Raises ValueError for a combination that cannot run."""
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {", ".join(map(repr, BACKENDS))}, got {backend!r}.')
    device = torch.device(device)
    dtype = resolve_dtype(precision)
    if cuda_graph and device.type != 'cuda':
        raise ValueError(f'cuda_graph=True needs a CUDA device, got {device}.')
    torch_options = bool(optimize or compile or cuda_graph)
    if precision in QUANTIZED:
        return _int8_plan(backend, device, torch_options)
    if backend in ('onnxruntime', 'openvino'):
        if device.type != 'cpu' or dtype != torch.float32 or torch_options:
            raise ValueError(f"backend={backend!r} runs on the CPU in fp32, without optimize / compile / "
                             f'cuda_graph ({backend} does its own graph optimisation).')
        missing = missing_onnx_packages()  # OpenVINO converts the ONNX export
        if backend == 'openvino' and not openvino_available():
            raise ValueError(f"backend='openvino' needs the openvino package, which is not installed: "
                             f'{INSTALL_OPENVINO}.')
        if missing:
            raise ValueError(f"backend='onnxruntime' needs the {' and '.join(missing)} package(s): "
                             f"pip install {' '.join(missing)}.")
        return BackendPlan(backend, backend, reason='asked for')
    if backend == 'torch' or torch_options:
        return BackendPlan(backend, 'torch', optimize=torch_options, cuda_graph=cuda_graph,
                           reason='asked for' if backend == 'torch' else 'optimize / compile / cuda_graph asked for')
    if device.type == 'cpu' and dtype == torch.float32:
        missing = missing_onnx_packages()
        if not missing and openvino_available():
            return BackendPlan(backend, 'onnxruntime', candidates=('onnxruntime', 'openvino'),
                               reason='CPU, fp32: onnxruntime or OpenVINO, whichever a timing here finds faster')
        if not missing:
            return BackendPlan(backend, 'onnxruntime', reason='CPU, fp32: onnxruntime measured fastest')
        _notice(f"osnet_zoo: {' and '.join(missing)} not installed, so the optimised PyTorch model runs instead "
                f"of onnxruntime (the fastest CPU path): pip install {' '.join(missing)}")
        return BackendPlan(backend, 'torch', optimize=True, reason=f"{' and '.join(missing)} not installed")
    if device.type == 'cpu':
        return BackendPlan(backend, 'torch', optimize=True, reason=f'CPU, {precision}: onnxruntime runs fp32')
    if device.type == 'cuda':
        return BackendPlan(backend, 'torch', optimize=True, cuda_graph=fixed_batch,
                           reason='CUDA: BN folded, channels_last' + (', a CUDA graph for the batch size'
                                                                      if fixed_batch else ''))
    return BackendPlan(backend, 'torch', reason=f'{device.type}: no faster path measured')


def _cpu_runtime(name: str, net: nn.Module, threads: Optional[int], spinning: bool,
                 input_size: Optional[Tuple[int, int, int]]) -> nn.Module:
    if name == 'openvino':
        return cached_openvino_model(net, threads=threads, input_size=input_size)
    return OnnxRuntimeModel(net, threads=threads, spinning=spinning, input_size=input_size)


def _measured_cpu_runtime(net: nn.Module, plan: BackendPlan, batch_size: int,
                          input_size: Optional[Tuple[int, int, int]], threads: Optional[int],
                          spinning: bool) -> Tuple[nn.Module, BackendPlan]:
    """The faster of ``plan.candidates`` for ``net`` on this machine, and its plan: the choice recorded for this
    machine, model, threads and batch (:mod:`osnet_zoo.inference.backend_choice`), else a timing of each on a
    batch of ``min(batch_size, TIMING_BATCH)`` random inputs, recorded for the next process."""
    size = tuple(input_size or resolve_preprocessing(net)['input_size'])
    batch = max(1, min(int(batch_size), TIMING_BATCH))
    key = backend_choice_key(net, size, batch, compute_threads(torch.get_num_threads(), explicit=threads),
                             plan.candidates)
    record = read_choice(key)
    if record is not None:
        chosen = record['backend']
        runtime = _cpu_runtime(chosen, net, threads, spinning, size)
    else:
        runtimes = {name: _cpu_runtime(name, net, threads, spinning, size) for name in plan.candidates}
        example = torch.randn(batch, *size, generator=torch.Generator().manual_seed(0))
        timings = time_runtimes(runtimes, example)
        chosen = min(timings, key=timings.get)
        record = write_choice(key, chosen, timings)
        runtime = runtimes[chosen]
    times = record['ms_per_crop']
    others = ', '.join(f'{name} {times[name]:.3g}' for name in plan.candidates if name != chosen)
    reason = (f"CPU, fp32: {chosen} timed fastest here at batch {batch} ({chosen} {times[chosen]:.3g} ms per crop, "
              f"{others}; measured {record['measured']}, kept in {record['path']})")
    return runtime, dataclasses.replace(plan, backend=chosen, candidates=(), reason=reason)


def build_runtime(net: nn.Module, plan: BackendPlan, device: Union[str, torch.device], precision: str = 'fp32',
                  batch_size: int = 64, input_size: Optional[Tuple[int, int, int]] = None,
                  threads: Optional[int] = None, spinning: bool = False,
                  compile: Union[bool, str] = False, calibration: Any = None,
                  calibration_size: int = CALIBRATION_SIZE) -> Tuple[nn.Module, BackendPlan]:
    """The module that runs ``net`` (an eval-mode embedding model) under ``plan``, and the plan it runs
    (another one when an automatic onnxruntime plan fell back to PyTorch because the model could not be
    exported or failed the check, a one-line notice saying so; or the faster one of ``plan.candidates``, timed on
    this machine). Call the module with a float32 NCHW batch.

    ``batch_size`` / ``input_size`` size the CUDA graph; ``threads`` and ``spinning`` configure onnxruntime
    (spinning threads slow down CPU work between the calls, such as preprocessing); ``compile`` is passed to
    ``optimize_for_inference``. The optimised and onnxruntime paths leave ``net`` as it is; the plain torch
    path moves ``net`` itself to the device and dtype (callers pass their own copy). An int8 plan quantizes
    ``net`` with ``calibration`` (:func:`osnet_zoo.inference.quantize.int8_runtime`, cached).
    """
    device = torch.device(device)
    dtype = resolve_dtype(precision)
    if plan.int8:
        prep = resolve_preprocessing(net, {'input_size': input_size} if input_size else None)
        return int8_runtime(net, calibration, engine=plan.backend, calibration_size=calibration_size,
                            threads=threads, spinning=spinning, preprocessing=prep), plan
    if plan.candidates:
        try:
            return _measured_cpu_runtime(net, plan, batch_size, input_size, threads, spinning)
        except Exception as e:  # the exporters and runtimes raise many types: the ordinary plan still runs
            reason = ' '.join(str(e).split())[:200]
            _notice(f'osnet_zoo: timing {" and ".join(plan.candidates)} failed ({type(e).__name__}: {reason}); '
                    f'running {plan.backend}.')
            plan = dataclasses.replace(plan, candidates=())
    if plan.backend == 'openvino':
        return cached_openvino_model(net, threads=threads, input_size=input_size), plan
    if plan.backend == 'onnxruntime':
        try:
            return OnnxRuntimeModel(net, threads=threads, spinning=spinning, input_size=input_size), plan
        except Exception as e:  # the exporter and onnxruntime raise many types; the PyTorch model still runs
            if plan.requested != 'auto':
                raise
            reason = ' '.join(str(e).split())[:200]
            _notice(f'osnet_zoo: {type(net).__name__} could not run through onnxruntime ({type(e).__name__}: '
                    f'{reason}); running the optimised PyTorch model instead.')
            plan = dataclasses.replace(plan, backend='torch', optimize=True, reason=f'ONNX export failed: {reason}')
    if plan.optimize:
        return optimize_for_inference(net, precision=dtype, device=device, compile=compile,
                                      cuda_graph_batch_sizes=(batch_size,) if plan.cuda_graph else (),
                                      input_size=input_size), plan
    return net.to(device=device, dtype=dtype).eval(), plan
