"""Which CPU runtime is faster for a model on this machine, measured once and remembered on disk.

``backend='auto'`` on the CPU in fp32 runs onnxruntime; with the openvino package installed, it times both
runtimes on the model at first use (a few interleaved runs of one batch, a few seconds) and keeps the faster.
Which one wins depends on the processor (OpenVINO's CPU kernels target x86 vector units; on some processors
and batch sizes onnxruntime is as fast), the threads, the model and the batch, so the result is kept in
``$OSNET_ZOO_CACHE/backend/<key>.json`` (by default ``~/.cache/osnet_zoo/backend``) under a key over the CPU
model and count, the CPU budget and threads, the model's structure, the input size, the batch and the
onnxruntime / openvino / torch / osnet_zoo versions: any of them changing measures again.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import statistics
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn

from .._version import __version__
from ..files import atomic_write_json
from ..threads import cpu_budget
from ..weights.cache import cache_root

__all__ = ['backend_choice_dir', 'backend_choice_key', 'read_choice', 'write_choice', 'time_runtimes',
           'TIMING_BATCH']

_CHOICE_FORMAT = 1
# the largest batch timed: a larger one ranks the runtimes as this one does (benchmarks/RESULTS.md) and costs more
TIMING_BATCH = 16


def backend_choice_dir() -> Path:
    """Where the measured choices are kept: ``backend/`` in the package's cache."""
    return cache_root() / 'backend'


def _cpu_model() -> str:
    """The processor's name (``model name`` in /proc/cpuinfo), else what platform reports."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.lower().startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> Optional[str]:
    try:
        return version(package)
    except PackageNotFoundError:  # not installed: part of the key as such
        return None


def backend_choice_key(model: nn.Module, input_size: Tuple[int, int, int], batch: int, threads: int,
                       candidates: Tuple[str, ...]) -> Dict[str, Any]:
    """What the choice between ``candidates`` for ``model`` depends on (see the module docstring)."""
    return dict(format=_CHOICE_FORMAT, candidates=list(candidates), cpu=_cpu_model(), cpu_count=os.cpu_count(),
                cpu_budget=cpu_budget(), threads=int(threads),
                structure=hashlib.sha256(repr(model).encode()).hexdigest(), input_size=list(input_size),
                batch=int(batch), onnxruntime=_version('onnxruntime'), openvino=_version('openvino'),
                torch=torch.__version__, osnet_zoo=__version__)


def _choice_path(key: Dict[str, Any], folder: Optional[Path]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return (folder or backend_choice_dir()) / f'{digest}.json'


def read_choice(key: Dict[str, Any], folder: Optional[Path] = None) -> Optional[Dict[str, Any]]:
    """The recorded choice for ``key`` (a dict with ``backend``, ``ms_per_crop``, ``measured``, ``path``), None
    when there is none or it is unreadable or for another key (then it is measured again)."""
    path = _choice_path(key, folder)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get('key') != key or record.get('backend') not in key['candidates']:
        return None
    times = record.get('ms_per_crop')
    if not isinstance(times, dict) or not all(isinstance(times.get(c), (int, float)) for c in key['candidates']):
        return None
    return {**record, 'path': str(path)}


def write_choice(key: Dict[str, Any], backend: str, ms_per_crop: Dict[str, float],
                 folder: Optional[Path] = None) -> Dict[str, Any]:
    """Record the measured choice (a cache that cannot be written costs the next process a new timing, not
    this one its result); returns the record."""
    record = dict(key=key, backend=backend, ms_per_crop=ms_per_crop,
                  measured=datetime.datetime.now().astimezone().isoformat(timespec='seconds'))
    path = _choice_path(key, folder)
    try:
        atomic_write_json(path, record, indent=1)
    except OSError:
        pass
    return {**record, 'path': str(path)}


def time_runtimes(runtimes: Dict[str, Callable[[torch.Tensor], Any]], example: torch.Tensor,
                  min_seconds: float = 2.0, max_rounds: int = 7) -> Dict[str, float]:
    """Median milliseconds per crop of each runtime on ``example``: one warm-up call each, then rounds of one
    call each, interleaved (the order alternating), until ``min_seconds`` passed with 3 rounds at least or
    ``max_rounds`` ran: a machine whose load changes meanwhile slows every runtime alike."""
    names = list(runtimes)
    for name in names:
        runtimes[name](example)
    times: Dict[str, list] = {name: [] for name in names}
    start = time.perf_counter()
    for round_ in range(max_rounds):
        for name in (names if round_ % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            runtimes[name](example)
            times[name].append(time.perf_counter() - t0)
        if round_ >= 2 and time.perf_counter() - start >= min_seconds:
            break
    return {name: 1000 * statistics.median(t) / example.shape[0] for name, t in times.items()}
