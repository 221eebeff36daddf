"""An embedding model as a checked OpenVINO IR, exported once and kept on disk like the onnxruntime path's ONNX
file (:mod:`osnet_zoo.inference.onnx_runtime`, whose cache helpers this reuses): ``$OSNET_ZOO_CACHE/openvino``
(by default ``~/.cache/osnet_zoo/openvino``) holds one ``<name>-<key>_openvino_model`` folder per model and
setting (the ONNX key plus the openvino version), written by ``export_model(fmt='openvino')`` (checked against
PyTorch), and beside it a ``.cache.json`` record (the key, the sha256 of the folder's .xml and .bin, the
contract). An entry whose record is missing, unreadable, for another key, or whose files changed, or that
OpenVINO cannot load, is exported again, with a one-line notice.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch.nn as nn

from ..files import atomic_write_json
from ..weights import file_sha256
from ..weights.cache import CACHE_ENV, cache_root
from .export import export_model
from .model import resolve_preprocessing
from .onnx_runtime import DEFAULT_OPSET, _entry_name, _read_entry, _record_path, _remove_entry, onnx_cache_key
from .openvino_runtime import IR_FOLDER_SUFFIX, OpenVinoModel, ir_files, require_openvino

__all__ = ['openvino_cache_dir', 'openvino_cache_key', 'cached_openvino_model']

_logger = logging.getLogger(__name__)

# bump when the IR export changes in a way the key does not see
_IR_CACHE_FORMAT = 1


def openvino_cache_dir() -> Path:
    """Where the checked IRs are kept: ``openvino/`` in the package's cache (``$OSNET_ZOO_CACHE``, else
    ``~/.cache/osnet_zoo``)."""
    return cache_root() / 'openvino'


def openvino_cache_key(model: nn.Module, input_size: Tuple[int, int, int]) -> Dict[str, Any]:
    """What the IR of ``model`` depends on: the ONNX graph's key (weights, structure, input size, opset,
    torch and osnet_zoo versions) and the openvino version that converts it."""
    return {**onnx_cache_key(model, input_size, DEFAULT_OPSET), 'format': f'openvino-{_IR_CACHE_FORMAT}',
            'openvino': require_openvino().__version__}


def _ir_digest(folder: Path) -> str:
    """One sha256 over the IR's .xml and .bin (an OSError / ValueError when they are not there)."""
    xml, weights = ir_files(folder)
    return hashlib.sha256((file_sha256(xml) + file_sha256(weights)).encode()).hexdigest()


def _export_to_tmp(model: nn.Module, input_size: Tuple[int, int, int]) -> Tuple[Path, Dict[str, Any], Any]:
    """Export into a temporary folder: (the IR folder, its contract, the TemporaryDirectory keeping it)."""
    tmpdir = tempfile.TemporaryDirectory(prefix='osnet_zoo_openvino_')
    folder = Path(tmpdir.name) / f'model{IR_FOLDER_SUFFIX}'
    return folder, export_model(model, folder, fmt='openvino', input_size=input_size), tmpdir


def cached_openvino_model(model: nn.Module, threads: Optional[int] = None,
                          cache: Union[bool, str, os.PathLike] = True,
                          input_size: Optional[Tuple[int, int, int]] = None) -> OpenVinoModel:
    """``model`` (an eval-mode embedding model) as an :class:`OpenVinoModel` on ``threads`` threads, from its
    checked IR: reused from the cache (``cache`` True: :func:`openvino_cache_dir`; a folder: there), else
    exported and checked against PyTorch and kept there; ``cache=False``: a temporary folder, kept while the
    returned model lives. ``input_size`` (C, H, W) defaults to the model's ``pretrained_cfg``.
    ``cache_hit`` on the result says whether the IR came from the cache; ``contract`` is its export contract.
    An IR that does not match PyTorch raises ``ExportCheckError``."""
    require_openvino("backend='openvino'")
    input_size = tuple(input_size or resolve_preprocessing(model)['input_size'])
    tmpdir = None
    if cache is False:
        folder, contract, tmpdir = _export_to_tmp(model, input_size)
    else:
        key = openvino_cache_key(model, input_size)
        root = Path(cache) if not isinstance(cache, bool) else openvino_cache_dir()
        folder = root / _entry_name(model, key, IR_FOLDER_SUFFIX)
        contract, damaged = _read_entry(folder, key, digest=_ir_digest)
        if contract is not None:
            try:
                runtime = OpenVinoModel(folder, threads)
                runtime.contract, runtime.cache_hit = contract, True
                return runtime
            except ValueError as e:  # OpenVINO cannot load it: a damaged entry
                damaged = str(e)
        if damaged:
            _logger.warning('osnet_zoo: the cached OpenVINO IR %s is damaged (%s); exporting it again.', folder,
                            damaged)
            _remove_entry(folder)
        try:
            contract = export_model(model, folder, fmt='openvino', input_size=input_size)
            atomic_write_json(_record_path(folder), dict(key=key, sha256=_ir_digest(folder), contract=contract),
                              indent=1)
        except OSError as e:  # a cache folder that cannot be written to costs the cache, not the model
            _logger.warning('osnet_zoo: cannot write the OpenVINO cache in %s (%s); exporting to a temporary '
                            'folder (set %s to a writable folder to keep it).', root,
                            ' '.join(str(e).split())[:160], CACHE_ENV)
            folder, contract, tmpdir = _export_to_tmp(model, input_size)
    runtime = OpenVinoModel(folder, threads)
    runtime.contract, runtime._tmpdir = contract, tmpdir
    return runtime
