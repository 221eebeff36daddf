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
import stat
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from safetensors.torch import load_file
from tqdm import tqdm

__all__ = ['read_checkpoint', 'unwrap_state_dict', 'classifier_rows', 'CheckpointError', 'file_sha256', 'model_digest',
           'check_declared_size', 'check_regular_file', 'file_kind', 'MAX_EXPANSION', 'MIN_SIZE_LIMIT']

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


def check_regular_file(path: Union[str, os.PathLike], what: str = 'file') -> Path:
    """``path`` if it is a regular file (after symlinks); a device (``/dev/zero``), FIFO, socket or folder is a
    ``CheckpointError`` naming it, before anything reads it (reading one never ends or blocks)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CheckpointError(f'{what} not found: {path}' + (' (a dangling symlink)' if path.is_symlink() else ''))
    except OSError as e:
        raise CheckpointError(f'cannot read {what} {path}: {e.strerror or e}') from None
    if not stat.S_ISREG(mode):
        kind = ('a folder' if stat.S_ISDIR(mode) else 'a FIFO (named pipe)' if stat.S_ISFIFO(mode)
                else 'a device' if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else 'a socket or other special file')
        target = f' (a symlink to {os.path.realpath(path)})' if path.is_symlink() else ''
        raise CheckpointError(f'{what} {path}{target} is {kind}, not a regular file: refused.')
    return path


def file_kind(path: Union[str, os.PathLike]) -> str:
    """What a checkpoint file is, by its first bytes (never by its name): ``'safetensors'`` (an 8-byte header
    length, then a JSON header), ``'zip'`` (``torch.save``'s archive), ``'pickle'`` (the legacy
    ``torch.save`` format) or ``'unknown'``."""
    path = Path(path)
    with path.open('rb') as f:
        head = f.read(9)
    if head[:4] == b'PK\x03\x04':
        return 'zip'
    if len(head) == 9 and head[8:9] == b'{' and 0 < int.from_bytes(head[:8], 'little') <= path.stat().st_size - 8:
        return 'safetensors'
    if head[:1] == b'\x80':  # pickle protocol 2+: what torch.save(_use_new_zipfile_serialization=False) writes
        return 'pickle'
    return 'unknown'


def _check_mapping(checkpoint: Any, source: str) -> Mapping[str, Any]:
    """A checkpoint must be a mapping with string keys: a list, a tensor, a string or ``{0: ...}`` is named."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f'{source} holds a {type(checkpoint).__name__}, not a checkpoint (a mapping of '
                              'parameter names to tensors, or a trainer checkpoint holding one).')
    bad = [k for k in checkpoint if not isinstance(k, str)]
    if bad:
        raise CheckpointError(f'{source} holds a mapping with {type(bad[0]).__name__} keys ({bad[0]!r}), not a '
                              'checkpoint: parameter names are strings.')
    return checkpoint


def read_checkpoint(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a checkpoint file safely and return what it holds (a state_dict or a trainer checkpoint).

    The format is told by the file's content (safetensors header, zip archive, pickle), not its name.

    Raises:
        CheckpointError: the file is missing, not a regular file, truncated or corrupt, not a mapping of
            names, or it holds objects outside the allowlist (which would need full unpickling, which we
            refuse to do).
    """
    path = check_regular_file(path, 'Checkpoint file')
    kind = file_kind(path)
    if kind == 'unknown':
        raise CheckpointError(f'{path} is not a checkpoint: neither a safetensors file nor a PyTorch file (zip '
                              'archive or pickle); it is empty, truncated or another kind of file.')
    if kind == 'safetensors':
        try:
            return _check_mapping(load_file(str(path)), f'safetensors file {path}')
        except CheckpointError:
            raise
        except Exception as e:  # safetensors raises its own error types for truncated headers
            raise CheckpointError(f'Cannot read safetensors file {path}: {e}') from e
    check_declared_size(path)
    try:
        with torch.serialization.safe_globals(_numpy_allowlist()):
            checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        msg = str(e)
        if 'Weights only load failed' in msg and 'GLOBAL' in msg:
            # torch's own text advises weights_only=False, which would run the file's code: not shown
            raise CheckpointError(
                f'Refusing to load {path}: {_refusal_reason(msg)}, which is not on the allowlist of tensors '
                'and plain values, so it was refused for safety (unpickling it could run code). Convert the '
                'checkpoint to safetensors in an environment you trust, or save only its state_dict.') from None
        if 'Weights only load failed' in msg and 'WeightsUnpickler error:' in msg:
            # a pickle the weights-only reader cannot follow (an opcode or a call it does not allow): refused,
            # with torch's own reason but never its advice to pass weights_only=False
            reason = ' '.join(msg.split('WeightsUnpickler error:', 1)[1].split('Check the documentation')[0].split())
            raise CheckpointError(
                f'Refusing to load {path}: it is not a plain tensor checkpoint (the weights-only reader stopped at: '
                f'{reason[:200]}), so it was refused for safety (unpickling it could run code).') from None
        # anything else (a damaged archive, a malformed tensor record): torch's text, without its advice to
        # pass weights_only=False and without terminal colour codes
        detail = re.sub(r'\x1b\[[0-9;]*m', '', msg.split('Please file an issue')[0])
        detail = re.sub(r'(?s)\(1\) .*?weights_only=False.*?\.', '', detail)
        raise CheckpointError(f'Cannot read checkpoint {path} (truncated, corrupt or not a PyTorch checkpoint): '
                              f'{" ".join(detail.split())[:300]}') from None
    return dict(_check_mapping(checkpoint, f'Checkpoint {path}'))


def unwrap_state_dict(checkpoint: Mapping[str, Any], source: str = 'the checkpoint') -> Dict[str, torch.Tensor]:
    """Take the tensors out of a checkpoint: unwraps ``{'state_dict': ...}`` / ``{'model': ...}`` /
    ``{'model_state': ...}`` (pycls ``.pyth``), strips ``module.`` (DataParallel / DDP) prefixes and drops
    non-tensor entries.

    Raises:
        CheckpointError: naming ``source``, when it is not a mapping of names or holds no tensor.
    """
    _check_mapping(checkpoint, source)
    for wrapper in ('state_dict', 'model', 'model_state'):
        inner = checkpoint.get(wrapper)
        if isinstance(inner, Mapping):
            checkpoint = _check_mapping(inner, f'{source} (its {wrapper!r} entry)')
            break
    out = {}
    for k, v in checkpoint.items():
        if isinstance(v, torch.Tensor):
            out[k[len('module.'):] if k.startswith('module.') else k] = v
    if not out:
        keys = sorted(map(str, checkpoint))[:8]
        raise CheckpointError(f'{source} holds no tensors (entries: {keys or "none"}): not model weights.')
    return out


def classifier_rows(state_dict: Mapping[str, Any]) -> int:
    """The classes of a checkpoint's ``classifier`` (its weight's rows); 0 for an embedding-only checkpoint."""
    weight = state_dict.get('classifier.weight')
    return int(weight.shape[0]) if weight is not None else 0


def file_sha256(path: Union[str, os.PathLike], progress: bool = False, size: Optional[int] = None) -> str:
    """Hex sha256 of a regular file, read in 1 MiB chunks (``progress``: a tqdm bar in bytes).

    A device, FIFO or folder (a cache entry symlinked to ``/dev/zero``) is refused before reading, and no
    more than the size the file had when it was opened is read (a file that keeps growing ends too); with
    ``size`` (the recorded size) a file of another size is refused before hashing.

    Raises:
        CheckpointError: naming the file, when it is not a regular file or not ``size`` bytes.
    """
    path = check_regular_file(path)
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise CheckpointError(f'file {path} has {actual:,} bytes, not the recorded {size:,}: truncated or another '
                              'file (not hashed).')
    digest = hashlib.sha256()
    bar = None
    if progress:
        bar = tqdm(total=actual, unit='B', unit_scale=True, desc=f'sha256 {path.name}', leave=False)
    with path.open('rb') as f:
        left = actual
        for chunk in iter(lambda: f.read(min(1 << 20, left)), b''):
            digest.update(chunk)
            left -= len(chunk)
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
