"""Reading checkpoints without unpickling untrusted code.

safetensors files are read directly. Pickled PyTorch files (``.pth``, ``.pth.tar``) go through
``torch.load(weights_only=True)`` with a minimal allowlist: the numpy scalar and dtype types that the
reference trainer stores beside the weights (``rank1``, ``epoch``). Nothing else is ever unpickled.
This module imports nothing from ``osnet_zoo.models`` (loading into a model is ``weights.loading``).
"""
from __future__ import annotations

import hashlib
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Union

import torch
from safetensors.torch import load_file
from tqdm import tqdm

__all__ = ['read_checkpoint', 'unwrap_state_dict', 'CheckpointError', 'file_sha256', 'model_digest',
           'check_declared_size', 'MAX_EXPANSION', 'MIN_SIZE_LIMIT']

# A .pth archive's entries may declare at most this many times the file's size (torch.save stores tensors
# uncompressed, so a real checkpoint declares about its own size), and at least MIN_SIZE_LIMIT is allowed:
# a compressed archive that would expand to gigabytes is refused before anything is read into memory.
MAX_EXPANSION = 4
MIN_SIZE_LIMIT = 64 << 20


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or does not fit the model."""


def _numpy_allowlist() -> list:
    try:
        import numpy as np
    except ImportError:  # numpy is optional for torch; without it no pickle can hold numpy objects anyway
        return []
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    allow = [
        scalar, np.dtype,
        # Checkpoints written under numpy 1.x name the same function by its old module path.
        (scalar, 'numpy.core.multiarray.scalar'),
        (scalar, 'numpy._core.multiarray.scalar'),
    ]
    # numpy >= 1.25 pickles dtypes as instances of their dtype classes.
    allow += [getattr(np.dtypes, n) for n in dir(getattr(np, 'dtypes', object())) if n.endswith('DType')]
    return allow


def check_declared_size(path: Path) -> None:
    """Refuse a zip-format ``.pth`` whose entries declare more than ``MAX_EXPANSION`` times the file's
    size (at least ``MIN_SIZE_LIMIT``): read from the archive's central directory, nothing is decompressed."""
    if not zipfile.is_zipfile(path):
        return  # the legacy (pre-1.6) format, or not an archive: torch.load says what it is
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError):
        return  # a damaged archive: torch.load reports it
    size = path.stat().st_size
    limit = max(MAX_EXPANSION * size, MIN_SIZE_LIMIT)
    if declared > limit:
        raise CheckpointError(
            f'Refusing to load {path}: its archive entries would expand to {declared:,} bytes from a file of '
            f'{size:,} bytes (limit {limit:,}: {MAX_EXPANSION}x the file size, at least {MIN_SIZE_LIMIT:,}). '
            'torch.save writes tensors uncompressed, so this is not a plain checkpoint; it may be a '
            'decompression bomb.')


def _refusal_reason(message: str) -> str:
    """What a refused pickle needs, from torch's weights_only error: the blocked global (``module.name``)
    or the unpickler's complaint, without torch's advice to pass ``weights_only=False``."""
    found = re.search(r'GLOBAL ([\w.]+)', message)
    if found:
        name = found.group(1)
        return f'it needs the Python global {name if "." in name else "builtins." + name}'
    complaint = re.search(r'WeightsUnpickler error: ([^\n]*)', message)
    return f'it needs {complaint.group(1).strip()[:200] if complaint else "objects that are not tensors"}'


def read_checkpoint(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a checkpoint file safely and return what it holds (a state_dict or a trainer checkpoint).

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, or it holds objects outside the
            allowlist (which would need full unpickling, which we refuse to do).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'Checkpoint file not found: {path}')
    if path.suffix == '.safetensors':
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for truncated headers
            raise CheckpointError(f'Cannot read safetensors file {path}: {e}') from e
    check_declared_size(path)
    try:
        with torch.serialization.safe_globals(_numpy_allowlist()):
            return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        msg = str(e)
        if 'Weights only load failed' in msg:
            # torch's own text advises weights_only=False, which would run the file's code: not shown
            raise CheckpointError(
                f'Refusing to load {path}: {_refusal_reason(msg)}, which is not on the allowlist of tensors '
                'and plain values, so it was refused for safety (unpickling it could run code). Convert the '
                'checkpoint to safetensors in an environment you trust, or save only its state_dict.') from None
        raise CheckpointError(f'Cannot read checkpoint {path} (truncated or not a PyTorch file?): '
                              f'{" ".join(msg.split())[:300]}') from e


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """Take the tensors out of a checkpoint: unwraps ``{'state_dict': ...}`` / ``{'model': ...}`` /
    ``{'model_state': ...}`` (pycls ``.pyth``), strips ``module.`` (DataParallel / DDP) prefixes and drops
    non-tensor entries."""
    for wrapper in ('state_dict', 'model', 'model_state'):
        inner = checkpoint.get(wrapper) if isinstance(checkpoint, Mapping) else None
        if isinstance(inner, Mapping):
            checkpoint = inner
            break
    out = {}
    for k, v in checkpoint.items():
        if isinstance(v, torch.Tensor):
            out[k[len('module.'):] if k.startswith('module.') else k] = v
    return out


def file_sha256(path: Union[str, os.PathLike], progress: bool = False) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (``progress``: a tqdm bar in bytes)."""
    path = Path(path)
    digest = hashlib.sha256()
    bar = None
    if progress:
        bar = tqdm(total=path.stat().st_size, unit='B', unit_scale=True, desc=f'sha256 {path.name}', leave=False)
    with path.open('rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return digest.hexdigest()


def model_digest(model: torch.nn.Module) -> str:
    """sha256 of a model's state dict (names, dtypes, shapes, values): what its weights are, wherever they came
    from (a checkpoint file, a pretrained tag)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f'{name}\0{t.dtype}\0{tuple(tensor.shape)}\0'.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return h.hexdigest()
