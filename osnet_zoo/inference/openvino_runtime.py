"""Running an OpenVINO IR (``<name>_openvino_model/<name>.xml`` + ``.bin``) on the CPU: reading it, compiling
it for exact fp32 and the package's thread budget, and running batches (numpy or torch in, features out).

OpenVINO 2025+ runs its CPU plugin in bf16 by default where the processor has bf16 units, and may fuse
approximately: :data:`ACCURACY_HINTS` pins fp32 inference and the accuracy execution mode, so that the IR
gives PyTorch's features within the export tolerance (1e-4 of the largest output). The threads follow
:func:`osnet_zoo.threads.compute_threads` as the onnxruntime path does (``threads=`` wins, then
``OMP_NUM_THREADS``, else torch's count capped to the CPUs this process may use); one stream, one request at a
time (``PERFORMANCE_HINT`` LATENCY), as callers run one batch after the other; threads not pinned to cores
(``ENABLE_CPU_PINNING`` off, OpenVINO's Linux default is on), as torch's and onnxruntime's are not: on a machine
shared with a detector or other processes a pinned thread waits for its busy core instead of moving.

Every model compiled here shares one ``openvino.Core``, kept for the life of the process (:func:`shared_core`):
OpenVINO's CPU plugin (2026.4) gives the main thread an alternate signal stack of its own when a Core first
compiles for the CPU, and puts back the one it found when that Core goes; two Cores released in the order they
were made leave the thread on a freed stack, and the next Python signal handler (Ctrl-C, an alarm) kills the
process with SIGSEGV, without a traceback. One Core that never goes cannot do that.

Only this module and the exporter import ``openvino``; without it, :func:`require_openvino` says which extra
installs it. Turning a model into an IR (checked, cached) is :mod:`osnet_zoo.inference.openvino_cache`.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from ..threads import compute_threads

__all__ = ['ACCURACY_HINTS', 'IR_FOLDER_SUFFIX', 'INSTALL_OPENVINO', 'OpenVinoModel', 'OpenVinoMissingError',
           'openvino_available', 'require_openvino', 'ir_files', 'compile_ir', 'shared_core']

# fp32 inference, no approximate fusions (OpenVINO's CPU default is bf16 on processors that have it)
ACCURACY_HINTS = {'INFERENCE_PRECISION_HINT': 'f32', 'EXECUTION_MODE_HINT': 'ACCURACY'}
# boxmot (and Ultralytics) tell an OpenVINO export by this folder name ending
IR_FOLDER_SUFFIX = '_openvino_model'
INSTALL_OPENVINO = 'pip install "osnet-zoo[openvino]" (or pip install "openvino>=2025.2")'

PathLike = Union[str, os.PathLike]


class OpenVinoMissingError(ImportError, ValueError):
    """The openvino package is not installed (an ImportError; a ValueError too, so that the command-line
    programs print it as their one-line error)."""


def openvino_available() -> bool:
    """Whether the openvino package can be imported (found, not loaded)."""
    return importlib.util.find_spec('openvino') is not None


def require_openvino(what: str = 'OpenVINO') -> Any:
    """The ``openvino`` module; without it, an :class:`OpenVinoMissingError` in one line naming the extra that
    installs it."""
    if not openvino_available():
        raise OpenVinoMissingError(f'{what} needs the openvino package, which is not installed: {INSTALL_OPENVINO}.')
    import openvino  # optional dependency: loaded only when an IR is written or run
    return openvino


_CORE: Any = None


def shared_core() -> Any:
    """The process's one ``openvino.Core``, made on first use and never released (the module docstring says
    why a second Core released out of order is fatal)."""
    global _CORE
    if _CORE is None:
        _CORE = require_openvino().Core()
    return _CORE


def ir_files(path: PathLike) -> Tuple[Path, Path]:
    """The (.xml, .bin) of an IR given as its folder (``<name>_openvino_model``, holding one .xml) or its .xml
    / .bin file; a ValueError naming the path and the expected layout when they are not there."""
    path = Path(path)
    layout = f'expected an OpenVINO IR: a <name>{IR_FOLDER_SUFFIX} folder holding <name>.xml and <name>.bin'
    if path.is_dir():
        xmls = sorted(path.glob('*.xml'))
        if len(xmls) != 1:
            raise ValueError(f'{path}: holds {len(xmls)} .xml files ({", ".join(x.name for x in xmls) or "none"}); '
                             f'{layout}.')
        xml = xmls[0]
    elif path.suffix in ('.xml', '.bin'):
        xml = path.with_suffix('.xml')
    else:
        raise ValueError(f'{path}: not found or not an IR; {layout}.')
    missing = [p.name for p in (xml, xml.with_suffix('.bin')) if not p.is_file()]
    if missing:
        raise ValueError(f'{xml.parent}: {" and ".join(missing)} missing; {layout}.')
    return xml, xml.with_suffix('.bin')


def compile_ir(path: PathLike, threads: Optional[int] = None) -> Any:
    """An ``openvino.CompiledModel`` of the IR at ``path`` (folder, .xml or .bin) on the CPU, with
    :data:`ACCURACY_HINTS` and ``threads`` inference threads (default: :func:`compute_threads`). A file
    OpenVINO cannot read becomes a ValueError naming it."""
    xml, weights = ir_files(path)
    core = shared_core()
    try:
        network = core.read_model(model=str(xml), weights=str(weights))
        if network.inputs[0].get_partial_shape().rank.get_length() != 4 or len(network.outputs) != 1:
            raise ValueError(f'input {network.inputs[0].get_partial_shape()} and {len(network.outputs)} outputs, '
                             'expected an NCHW image batch in and one feature batch out')
        config: Dict[str, Any] = {**ACCURACY_HINTS, 'PERFORMANCE_HINT': 'LATENCY', 'ENABLE_CPU_PINNING': False,
                                  'INFERENCE_NUM_THREADS': compute_threads(torch.get_num_threads(),
                                                                           explicit=threads)}
        return core.compile_model(network, 'CPU', config)
    except (RuntimeError, ValueError) as e:  # OpenVINO raises RuntimeError for an unreadable or invalid file
        reason = ' '.join(str(e).split())[:300]
        raise ValueError(f'{xml}: OpenVINO cannot load this IR ({reason}).') from e


class OpenVinoModel(nn.Module):
    """An OpenVINO IR compiled for the CPU in exact fp32 (:data:`ACCURACY_HINTS`). Call it with a float NCHW
    batch (torch, any device / dtype) for float32 (N, D) features on the CPU; :meth:`run` takes and returns
    numpy. An IR with a fixed batch size gets the input in chunks of that size (the last one padded).

    ``path``: the IR folder (``<name>_openvino_model``), its .xml or its .bin; ``threads``: inference threads
    (default: :func:`osnet_zoo.threads.compute_threads`, as for onnxruntime).
    """

    def __init__(self, path: PathLike, threads: Optional[int] = None):
        super().__init__()
        self.path, _ = ir_files(path)
        self.compiled = compile_ir(self.path, threads)
        self.threads = int(self.compiled.get_property('INFERENCE_NUM_THREADS'))
        self.output = self.compiled.outputs[0]
        batch = self.compiled.inputs[0].get_partial_shape()[0]
        self.fixed_batch: Optional[int] = batch.get_length() if batch.is_static else None
        self.input_size = tuple(int(d.get_length()) for d in list(self.compiled.inputs[0].get_partial_shape())[1:])
        self.num_features = int(self.output.get_partial_shape()[1].get_length())
        self.cache_hit = False  # set by osnet_zoo.inference.openvino_cache when the IR came from its cache
        self.contract: Optional[Dict[str, Any]] = None

    def run(self, x: np.ndarray) -> np.ndarray:
        """A float32 NCHW numpy batch -> float32 (N, D) numpy features."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.fixed_batch is None or x.shape[0] == self.fixed_batch:
            return self.compiled({0: x})[self.output]
        n, size = x.shape[0], self.fixed_batch
        outs = []
        for start in range(0, n, size):
            chunk = x[start:start + size]
            if chunk.shape[0] < size:  # pad with the last crop: a fixed-batch IR takes exactly its size
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - chunk.shape[0], axis=0)])
            outs.append(self.compiled({0: chunk})[self.output][:min(size, n - start)])
        return np.concatenate(outs)

    def forward(self, x: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
        """A float NCHW batch (torch on any device / dtype, or numpy) -> float32 features (N, D) on the CPU."""
        if isinstance(x, torch.Tensor):
            x = x.detach().to('cpu', torch.float32).contiguous().numpy()
        return torch.from_numpy(self.run(x))

    def extra_repr(self) -> str:
        return f'path={str(self.path)!r}, threads={self.threads}, cache_hit={self.cache_hit}'
