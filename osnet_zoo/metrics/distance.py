"""Pairwise distances between re-ID embeddings, computed in row chunks on CPU or GPU.

Two metrics, as re-ID papers use them:

* ``cosine``: ``1 - <x/|x|, y/|y|>``, in [0, 2];
* ``euclidean``: the *squared* euclidean distance ``|x|^2 + |y|^2 - 2 <x, y>`` (the ranking is the same as
  with the plain distance, and it is what the reference evaluators rank).

Chunking bounds the memory of the work on one chunk; :func:`iter_distance_chunks` is shared by
:func:`pairwise_distance` and the fused evaluator so that both see bit-identical distances.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ['DISTANCES', 'pairwise_distance', 'iter_distance_chunks', 'as_feature_tensor']

DISTANCES = ('cosine', 'euclidean')

ArrayLike = Union[torch.Tensor, np.ndarray]


def as_feature_tensor(x: ArrayLike, name: str, device: Optional[Union[str, torch.device]] = None) -> torch.Tensor:
    """A (N, D) float32 tensor on ``device`` (default: where ``x`` already is); half precision is upcast."""
    t = torch.as_tensor(x)
    if t.ndim != 2:
        raise ValueError(f'{name} must be a 2-D (num_images, feature_dim) array, got shape {tuple(t.shape)}')
    if not (t.is_floating_point()):
        raise ValueError(f'{name} must hold floating-point features, got dtype {t.dtype}')
    finite = torch.isfinite(t).all(dim=1) if t.numel() else torch.ones(len(t), dtype=torch.bool)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(f'{name} has NaN/inf values in {len(bad)} row(s), first row {bad[0]}: these features '
                         'cannot be ranked (check the images and the model precision).')
    return t.to(device=device if device is not None else t.device, dtype=torch.float32)


def _prepare(x: torch.Tensor, y: torch.Tensor, distance: str
             ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    if distance == 'cosine':
        return F.normalize(x, dim=1), F.normalize(y, dim=1), None
    if distance == 'euclidean':
        return x, y, y.pow(2).sum(dim=1)
    raise ValueError(f'unknown distance {distance!r}; expected one of {DISTANCES}')


def default_chunk_rows(num_cols: int, device: torch.device) -> int:
    """Rows per distance chunk: about 64 M distances on a GPU, 16 M on a CPU (enough rows for an efficient
    matrix product). The chunking is part of the result: matrix products of other shapes may round
    differently, so everything that must agree bit for bit uses this default."""
    budget = (1 << 26) if device.type != 'cpu' else (1 << 24)
    return max(1, budget // max(1, num_cols))


def iter_distance_chunks(
        x: ArrayLike, y: ArrayLike, distance: str = 'cosine', chunk_rows: Optional[int] = None,
        device: Optional[Union[str, torch.device]] = None,
) -> Iterator[Tuple[int, int, torch.Tensor]]:
    """Yield ``(start, stop, distances[start:stop])`` over the rows of ``x`` against all of ``y``.

    The chunks are float32 tensors on ``device`` (default: the device of ``x``).
    """
    x = as_feature_tensor(x, 'x', device)
    y = as_feature_tensor(y, 'y', x.device)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f'feature dimensions differ: {x.shape[1]} vs {y.shape[1]}')
    xp, yp, y_sq = _prepare(x, y, distance)
    rows = chunk_rows or default_chunk_rows(len(yp), x.device)
    on_cpu = x.device.type == 'cpu'
    if on_cpu:  # numpy's OpenBLAS runs these products ~2x faster than torch's MKL on AMD CPUs
        xp, yt = xp.numpy(), yp.numpy().T
        y_sq = y_sq.numpy() if y_sq is not None else None
    else:
        yt = yp.t()
    for start in range(0, len(xp), rows):
        stop = min(start + rows, len(xp))
        xc = xp[start:stop]
        if on_cpu:
            d = np.matmul(xc, yt)
            if distance == 'cosine':
                np.subtract(np.float32(1), d, out=d)
            else:
                d *= np.float32(-2)
                d += np.square(xc).sum(axis=1, keepdims=True)
                d += y_sq
            yield start, stop, torch.from_numpy(d)
        elif distance == 'cosine':
            yield start, stop, torch.mm(xc, yt).neg_().add_(1.0)
        else:
            yield start, stop, torch.addmm(xc.pow(2).sum(dim=1, keepdim=True) + y_sq, xc, yt, beta=1, alpha=-2)


@torch.inference_mode()
def pairwise_distance(
        x: ArrayLike, y: ArrayLike, distance: str = 'cosine', device: Optional[Union[str, torch.device]] = None,
        chunk_rows: Optional[int] = None,
) -> torch.Tensor:
    """The full (len(x), len(y)) float32 distance matrix, computed in chunks, returned on the CPU.

    Args:
        x, y: (N, D) and (M, D) features (torch tensors or numpy arrays).
        distance: ``'cosine'`` or ``'euclidean'`` (squared).
        device: where to compute (default: where ``x`` is); the result always comes back to the CPU.
        chunk_rows: rows of ``x`` per chunk (default: a memory-friendly size for the device).
    """
    x_t = torch.as_tensor(x)
    out = torch.empty(len(x_t), len(torch.as_tensor(y)), dtype=torch.float32)
    for start, stop, d in iter_distance_chunks(x_t, y, distance, chunk_rows, device):
        out[start:stop].copy_(d)
    return out
