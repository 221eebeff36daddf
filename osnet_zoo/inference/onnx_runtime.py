"""Running OSNet through onnxruntime (CPU): the fastest CPU path we measured (see benchmarks/RESULTS.md).

The ONNX file a runtime model needs is exported and checked against PyTorch once, then kept in a cache
on disk (``$OSNET_ZOO_CACHE/onnx``, by default ``~/.cache/osnet_zoo/onnx``), so that the next process
with the same model starts without exporting. An entry is named by a key over everything that shapes the
graph: the weights (sha256 of the state dict), the module structure, the input size, the opset, the export
options and the torch / osnet_zoo versions. Beside ``<entry>.onnx`` the export's contract and a
``<entry>.onnx.cache.json`` record (the key, the file's sha256, the passed check) are written, each
atomically and the record last; an entry whose record is missing, unreadable, for another key or whose
file no longer has the recorded sha256 is exported again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn

from .._version import __version__
from ..files import atomic_write_json
from ..threads import compute_threads
from ..weights import file_sha256, model_digest
from ..weights.cache import CACHE_ENV, cache_root
from .export import INPUT_NAME, OUTPUT_NAME, export_model
from .model import resolve_preprocessing

__all__ = ['OnnxRuntimeModel', 'ort_session', 'onnx_cache_dir', 'onnx_cache_key', 'DEFAULT_OPSET']

_logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
# bump when the runtime's export changes in a way the key does not see
_CACHE_FORMAT = 1


def onnx_cache_dir() -> Path:
    """Where the runtime's checked exports are kept: ``onnx/`` in the package's cache (``$OSNET_ZOO_CACHE``, else
    ``~/.cache/osnet_zoo``; the weights cache shares it)."""
    return cache_root() / 'onnx'


def onnx_cache_key(model: nn.Module, input_size: Tuple[int, int, int], opset: int = DEFAULT_OPSET) -> Dict[str, Any]:
    """What the runtime's ONNX graph of ``model`` depends on: the weights digest, the module structure (its
    repr: layer types, shapes, strides), the input size, the opset, the export options and the versions of
    torch (its exporter writes the graph) and osnet_zoo (the export code)."""
    return dict(format=_CACHE_FORMAT, weights=model_digest(model),
                structure=hashlib.sha256(repr(model).encode()).hexdigest(), input_size=list(input_size),
                opset=opset, dynamic_batch=True, bn_folded=True, normalized=False, dtype='float32',
                torch=torch.__version__, osnet_zoo=__version__)


def _entry_name(model: nn.Module, key: Dict[str, Any], suffix: str = '.onnx') -> str:
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    name = str(cfg.get('architecture') or type(model).__name__.lower())
    name = ''.join(c if c.isalnum() or c in '_-' else '_' for c in name)
    return f"{name}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]}{suffix}"


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + '.cache.json')


def _read_entry(path: Path, key: Dict[str, Any],
                digest: Callable[[Path], str] = file_sha256) -> Tuple[Optional[Dict[str, Any]], str]:
    """The contract of a usable cache entry, or (None, why it is not usable; '' when it does not exist);
    ``digest``: what the record's sha256 is of (the file; an OpenVINO entry: its folder's files)."""
    record_file = _record_path(path)
    if record_file.is_dir():
        return None, f'{record_file.name} is a folder, not a record'
    if not record_file.is_file():
        return None, ''
    try:
        record = json.loads(record_file.read_text())
        problem = _record_problem(record)
        if problem:
            return None, f'its record {record_file.name} {problem}'
        if record.get('key') != key:
            return None, 'its record is for another model or setting'
        if not (path.is_file() or (path.is_dir() and digest is not file_sha256)):  # a folder: another digest
            return None, f'{path.name} is missing'
        if digest(path) != record.get('sha256'):
            return None, f'{path.name} does not have the sha256 its record holds'
        contract = record['contract']
        if not contract['check']['passed']:
            return None, 'its check did not pass'
        return contract, ''
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f'its record {record_file.name} is unreadable ({type(e).__name__}: {e})'


def _record_problem(record: Any) -> str:
    """What is wrong with the layout of a cache record, in words ('' when it has what the entry needs)."""
    if not isinstance(record, dict):
        return f'is a {type(record).__name__}, not a mapping'
    contract = record.get('contract')
    if not isinstance(contract, dict) or not isinstance(record.get('sha256'), str):
        return 'lacks its sha256 or contract'
    shape = (contract.get('output') or {}).get('shape') if isinstance(contract.get('output'), dict) else None
    if not (isinstance(shape, list) and len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 0):
        return "lacks the contract's output shape"
    if not isinstance(contract.get('check'), dict):
        return "lacks the contract's check"
    return ''


def _remove_entry(path: Path) -> None:
    """Remove a damaged cache entry (its file and record; a folder in the place of either) so that it is
    written again; what cannot be removed is left to the export's own error."""
    for item in (path, _record_path(path)):
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item, ignore_errors=True)
        elif item.exists() or item.is_symlink():
            try:
                item.unlink()
            except OSError:
                pass


def ort_session(path: Union[str, os.PathLike], threads: Optional[int] = None, spinning: bool = False) -> Any:
    """An onnxruntime CPU session of ``path``, all graph optimisations on, on ``threads`` intra-op threads
    (default: :func:`osnet_zoo.threads.compute_threads`), its waiting workers sleeping unless ``spinning``."""
    import onnxruntime as ort  # a dependency; imported here so that the torch paths do not load it
    options = ort.SessionOptions()
    options.intra_op_num_threads = compute_threads(torch.get_num_threads(), explicit=threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for pool in ('intra_op', 'inter_op'):  # waiting workers sleep unless asked to spin
        options.add_session_config_entry(f'session.{pool}.allow_spinning', '1' if spinning else '0')
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


class OnnxRuntimeModel(nn.Module):
    """An embedding model exported to ONNX (BN folded, dynamic batch, fp32; checked against PyTorch by
    ``osnet_zoo.export``) and run by an onnxruntime CPU session. Call it with a float32 NCHW batch.

    ``cache_hit`` says whether the file came from the on-disk cache, ``build_seconds`` how long getting a
    checked file and its session took.
    """

    def __init__(self, model: nn.Module, threads: Optional[int] = None,
                 path: Union[str, os.PathLike, None] = None, spinning: bool = True,
                 cache: Union[bool, str, os.PathLike] = True, input_size: Optional[Tuple[int, int, int]] = None,
                 opset: int = DEFAULT_OPSET):
        """
        Args:
            model: the embedding model (an nn.Module returning (N, D) features).
            threads: onnxruntime intra-op threads (default: ``torch.get_num_threads()`` capped to the CPUs this
                process may use, :func:`osnet_zoo.threads.compute_threads`; ``OMP_NUM_THREADS`` set: torch's
                count as it is).
            path: export to this .onnx file (checked, not cached).
            spinning: let onnxruntime's worker threads busy-wait between and after runs
                (``session.intra_op.allow_spinning`` and ``session.inter_op.allow_spinning``). Lowest latency
                for back-to-back runs on an idle machine; turn it off when other CPU work runs between the calls
                (preprocessing) or beside them (other processes), which spinning threads slow down
                (benchmarks/RESULTS.md, issue 31).
            cache: True: keep the checked export in :func:`onnx_cache_dir` and reuse it; a folder:
                cache there; False: export to a temporary folder, kept while this object lives.
            input_size: (C, H, W) of the graph (default: the model's ``pretrained_cfg``, 3x256x128).
            opset: the ONNX opset of the export.
        """
        super().__init__()
        import onnxruntime as ort  # a dependency; imported here so that the torch paths do not load it
        start = time.perf_counter()
        self.input_size = tuple(input_size or resolve_preprocessing(model)['input_size'])
        self.cache_hit = False
        self._tmpdir: Optional[tempfile.TemporaryDirectory] = None
        session = None
        if path is not None:
            self.path = Path(path)
            self.contract = self._export(model, self.path, opset)
        elif cache is False:
            self.path, self.contract = self._export_to_tmp(model, opset)
        else:
            folder = Path(cache) if not isinstance(cache, bool) else onnx_cache_dir()
            key = onnx_cache_key(model, self.input_size, opset)
            self.path = folder / _entry_name(model, key)
            contract, damaged = _read_entry(self.path, key)
            if contract is not None:
                try:
                    session = self._session(ort, threads, spinning)
                    self.contract, self.cache_hit = contract, True
                except Exception as e:  # onnxruntime's errors are its own classes: a file it cannot load
                    damaged = f'onnxruntime cannot load it ({" ".join(str(e).split())[:160]})'
            if session is None:
                if damaged:
                    _logger.warning('osnet_zoo: the cached ONNX export %s is damaged (%s); exporting it again.',
                                    self.path, damaged)
                    _remove_entry(self.path)
                self.contract = self._export_cached(model, key, opset)
        self.session = session or self._session(ort, threads, spinning)
        self.input_name, self.output_name = INPUT_NAME, OUTPUT_NAME
        self.num_features = int(self.contract['output']['shape'][1])
        self.build_seconds = time.perf_counter() - start

    def _export(self, model: nn.Module, path: Path, opset: int) -> Dict[str, Any]:
        return export_model(model, path, fmt='onnx', dynamic_batch=True, opset=opset, input_size=self.input_size)

    def _export_to_tmp(self, model: nn.Module, opset: int) -> Tuple[Path, Dict[str, Any]]:
        self._tmpdir = tempfile.TemporaryDirectory(prefix='osnet_zoo_onnx_')
        path = Path(self._tmpdir.name) / 'model.onnx'
        return path, self._export(model, path, opset)

    def _export_cached(self, model: nn.Module, key: Dict[str, Any], opset: int) -> Dict[str, Any]:
        """Export and check into the cache entry, then write its record; a cache folder that cannot be
        written to costs the cache, not the model (a temporary folder is used, with a one-line notice)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            contract = self._export(model, self.path, opset)
            atomic_write_json(_record_path(self.path),
                              dict(key=key, sha256=file_sha256(self.path), contract=contract), indent=1)
            return contract
        except OSError as e:
            _logger.warning('osnet_zoo: cannot write the ONNX cache in %s (%s); exporting to a temporary folder '
                            '(set %s to a writable folder to keep it).', self.path.parent,
                            ' '.join(str(e).split())[:160], CACHE_ENV)
            self.path, contract = self._export_to_tmp(model, opset)
            return contract

    def _session(self, ort: Any, threads: Optional[int], spinning: bool) -> Any:
        return ort_session(self.path, threads, spinning)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A float NCHW batch (any device / dtype) -> float32 features (N, D) on the CPU."""
        x = x.detach().to('cpu', torch.float32).contiguous()
        return torch.from_numpy(self.session.run([self.output_name], {self.input_name: x.numpy()})[0])

    def extra_repr(self) -> str:
        return f'path={str(self.path)!r}, cache_hit={self.cache_hit}'
