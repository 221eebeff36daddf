"""Reading checkpoints without unpickling untrusted code.

safetensors files are read directly. Pickled PyTorch files (``.pth``, ``.pth.tar``) go through
``torch.load(weights_only=True)`` with a minimal allowlist: the numpy scalar and dtype types that the
reference trainer stores beside the weights (``rank1``, ``epoch``). Nothing else is ever unpickled.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Union

import torch

__all__ = ['read_checkpoint', 'load_osnet_checkpoint', 'CheckpointError', 'file_sha256', 'atomic_write_bytes',
           'atomic_write_text']


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
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for truncated headers
            raise CheckpointError(f'Cannot read safetensors file {path}: {e}') from e
    try:
        with torch.serialization.safe_globals(_numpy_allowlist()):
            return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        msg = str(e)
        if 'Unsupported global' in msg or 'weights_only' in msg.lower() and 'GLOBAL' in msg:
            first = next((ln.strip() for ln in msg.splitlines() if 'Unsupported global' in ln), msg[:300])
            raise CheckpointError(
                f'Refusing to load {path}: it contains pickled Python objects outside the allowlist '
                f'({first}). osnet_zoo never fully unpickles files; convert the checkpoint to safetensors '
                'in an environment you trust, or save only its state_dict.') from e
        raise CheckpointError(f'Cannot read checkpoint {path} (truncated or not a PyTorch file?): {e}') from e


def load_osnet_checkpoint(
        model: torch.nn.Module,
        checkpoint: Union[str, os.PathLike, Mapping[str, Any]],
        strict: bool = True,
) -> torch.nn.Module:
    """Load a checkpoint of any supported layout (osnet_zoo, torchreid, torchreid-AIN, trainer checkpoint)
    into an OSNet ``model``.

    A classifier of another size than the model's is dropped unless ``strict``, where it is an error.
    Missing or unexpected keys, or shapes that belong to another variant, raise ``CheckpointError``
    naming them.
    """
    from ..models.osnet import checkpoint_filter_fn

    source = str(checkpoint) if not isinstance(checkpoint, Mapping) else 'state_dict'
    raw = read_checkpoint(checkpoint) if not isinstance(checkpoint, Mapping) else checkpoint
    try:
        state_dict = checkpoint_filter_fn(raw, model, drop_mismatched_classifier=not strict)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f'{source}: {e.args[0] if e.args else e}') from e
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if not strict:
        # the classifier may be legitimately absent (dropped, or a headless checkpoint)
        missing = [k for k in missing if not k.startswith('classifier.')]
    wrong_shape = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}'
                   for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        parts = []
        if wrong_shape:
            parts.append(f'{len(wrong_shape)} shape mismatches (another width or variant?): {wrong_shape[:5]}')
        if missing:
            parts.append(f'{len(missing)} missing keys: {missing[:8]}')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected keys: {unexpected[:8]}')
        raise CheckpointError(f'{source} does not fit this model: ' + '; '.join(parts))
    model.load_state_dict(state_dict, strict=False)
    return model


def file_sha256(path: Union[str, os.PathLike], progress: bool = False) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (``progress``: a tqdm bar in bytes)."""
    path = Path(path)
    digest = hashlib.sha256()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=path.stat().st_size, unit='B', unit_scale=True, desc=f'sha256 {path.name}', leave=False)
    with path.open('rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return digest.hexdigest()


def atomic_write_bytes(path: Union[str, os.PathLike], payload: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a partial one
    (temp file in the same folder, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> None:
    """``atomic_write_bytes`` for UTF-8 text."""
    atomic_write_bytes(path, text.encode('utf-8'))
