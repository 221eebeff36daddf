"""CMC, mAP and mINP under the Market1501 protocol, fast at MSMT17 scale, on CPU or GPU.

Protocol: for each query, gallery entries with the same identity *and* the same camera are removed;
a query with no true match left is skipped (and counted). CMC(k) is 1 when a true match lies in the top k
(cumulative, clipped at 1), averaged over the valid queries; AP is taken over the full kept ranking;
INP is ``num_matches / rank_of_hardest_match`` (Ye et al., TPAMI 2021). Ties in distance are broken by
gallery index (what a stable argsort gives), so results are deterministic.

How it avoids sorting ~10^9 distances: CMC only needs the rank of the first true match and AP only the
ranks of the true matches. A true match's rank is one plus the number of kept gallery entries ordered
before it. Per query row we take the distance of its hardest true match, keep the entries not farther than
that (one vectorised compare and compaction; usually a few percent of the row), and order only those by a
packed 64-bit key ``(row, distance, gallery index)``. Binary searches of the true matches' keys in that
short sorted list give their exact ranks; same-camera matches are subtracted the same way. The gallery is
grouped by identity once, so finding a query's true matches never scans a row.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Union

import numpy as np
import torch

from .cuhk03 import single_gallery_shot_cmc
from .matches import MatchLists

__all__ = ['evaluate_rank', 'MatchLists', 'RankAccumulator', 'chunk_good_ranks']

ArrayLike = Union[np.ndarray, torch.Tensor]

_VALUE_BITS = 32  # distances are packed as order-preserving 32-bit codes


def _as_labels(x: Any, name: str) -> np.ndarray:
    """A 1-D array of ids: integers (or integral floats) as int64, any other hashable labels as objects."""
    if isinstance(x, torch.Tensor):
        a = x.detach().cpu().numpy()
    else:
        a = np.asarray(x) if not isinstance(x, (list, tuple)) else np.empty(len(x), dtype=object)
        if a.dtype == object and isinstance(x, (list, tuple)):
            a[:] = list(x)
            if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in x):
                a = a.astype(np.int64)
    if a.ndim != 1:
        raise ValueError(f'{name} must be a 1-D array of ids, got shape {a.shape}')
    if a.dtype == object or a.dtype.kind in 'USb':
        for v in a:
            try:
                hash(v)
            except TypeError:
                raise ValueError(f'{name} must hold integer ids or hashable labels, got a {type(v).__name__} '
                                 f'({v!r})') from None
        return a.astype(object)
    if not np.issubdtype(a.dtype, np.integer) and not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f'{name} must hold integer ids or hashable labels, got dtype {a.dtype}')
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isfinite(a)) or not np.all(np.equal(np.mod(a, 1), 0)):
            raise ValueError(f'{name} must hold integer ids, got dtype {a.dtype} with fractional or NaN values')
    return a.astype(np.int64, copy=False)


def _codes(query: np.ndarray, gallery: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Query and gallery labels as int64 codes of one shared mapping (integer ids are kept as they are)."""
    if query.dtype != object and gallery.dtype != object:
        return query, gallery
    mapping: Dict[Any, int] = {}
    codes = np.fromiter((mapping.setdefault(v.item() if isinstance(v, np.generic) else v, len(mapping))
                         for v in np.concatenate([query.astype(object), gallery.astype(object)])),
                        dtype=np.int64, count=len(query) + len(gallery))
    return codes[:len(query)], codes[len(query):]


# --------------------------------------------------------------------------------------------------------
# The per-chunk kernel, written once for numpy (CPU) and torch (GPU) through a few primitives.

class _NumpyOps:
    int64 = np.int64

    @staticmethod
    def asarray(a: np.ndarray, like: np.ndarray) -> np.ndarray:
        return a

    @staticmethod
    def flat_le(d: np.ndarray, thresh: np.ndarray) -> np.ndarray:
        return np.flatnonzero(d <= thresh[:, None])

    @staticmethod
    def float32_codes(v: np.ndarray) -> np.ndarray:
        bits = (v + np.float32(0.0)).view(np.int32).astype(np.int64)  # +0.0 turns -0.0 into 0.0
        return (bits ^ ((bits >> 31) & 0x7FFFFFFF)) + (1 << 31)

    @staticmethod
    def sort(a: np.ndarray) -> np.ndarray:
        return np.sort(a)

    @staticmethod
    def unique_sorted(a: np.ndarray) -> np.ndarray:
        return np.unique(a)

    @staticmethod
    def searchsorted(a: np.ndarray, v: np.ndarray) -> np.ndarray:
        return np.searchsorted(a, v, 'left')

    @staticmethod
    def segment_max(values: np.ndarray, rows: np.ndarray, num_rows: int) -> np.ndarray:
        out = np.full(num_rows, np.nan, values.dtype)
        if len(values):
            starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            out[rows[starts]] = np.maximum.reduceat(values, starts)
        return out

    @staticmethod
    def any_nan(a: np.ndarray) -> bool:
        return bool(np.isnan(a).any())

    @staticmethod
    def to_numpy(a: np.ndarray) -> np.ndarray:
        return a


class _TorchOps:
    int64 = torch.int64

    @staticmethod
    def asarray(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(a).to(like.device, non_blocking=True)

    @staticmethod
    def flat_le(d: torch.Tensor, thresh: torch.Tensor) -> torch.Tensor:
        return torch.nonzero((d <= thresh[:, None]).view(-1)).squeeze(1)

    @staticmethod
    def float32_codes(v: torch.Tensor) -> torch.Tensor:
        bits = (v + 0.0).view(torch.int32).to(torch.int64)
        return (bits ^ ((bits >> 31) & 0x7FFFFFFF)) + (1 << 31)

    @staticmethod
    def sort(a: torch.Tensor) -> torch.Tensor:
        return torch.sort(a).values

    @staticmethod
    def unique_sorted(a: torch.Tensor) -> torch.Tensor:
        return torch.unique(a, sorted=True)

    @staticmethod
    def searchsorted(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(a, v)

    @staticmethod
    def segment_max(values: torch.Tensor, rows: torch.Tensor, num_rows: int) -> torch.Tensor:
        out = torch.full((num_rows,), float('-inf'), dtype=values.dtype, device=values.device)
        out.scatter_reduce_(0, rows, values, 'amax')
        counts = torch.bincount(rows, minlength=num_rows)
        return out.masked_fill_(counts == 0, float('nan'))

    @staticmethod
    def any_nan(a: torch.Tensor) -> bool:
        return bool(torch.isnan(a).any())

    @staticmethod
    def to_numpy(a: torch.Tensor) -> np.ndarray:
        return a.cpu().numpy()


def chunk_good_ranks(dist: ArrayLike, matches: MatchLists, start: int, stop: int) -> Tuple[np.ndarray, np.ndarray]:
    """Ranks (1-based, in the kept gallery) of the true matches of queries ``start..stop-1``.

    ``dist`` holds those queries' rows of the distance matrix (numpy array or torch tensor, any device).
    Returns ``(local_row, rank)`` numpy arrays sorted by row and, within a row, by rank.
    """
    ops = _TorchOps if isinstance(dist, torch.Tensor) else _NumpyOps
    num_rows, num_gallery = dist.shape
    col_bits = max(1, int(num_gallery - 1).bit_length())
    row_shift = _VALUE_BITS + col_bits
    if row_shift + max(1, int(num_rows - 1).bit_length()) > 63:
        raise ValueError(f'{num_rows} rows x {num_gallery} gallery entries do not fit the 64-bit ranking key; '
                         'use fewer rows per chunk')
    good_rows_np, good_cols_np = matches.rows(start, stop)
    junk_rows_np, junk_cols_np = matches.rows(start, stop, junk=True)
    good_rows, good_cols = ops.asarray(good_rows_np, dist), ops.asarray(good_cols_np, dist)
    junk_rows, junk_cols = ops.asarray(junk_rows_np, dist), ops.asarray(junk_cols_np, dist)

    # a NaN anywhere compares false and silently drops that entry from the ranking (raising mAP): refuse it
    if ops.any_nan(dist):
        bad = int(np.flatnonzero(np.isnan(ops.to_numpy(dist)).any(axis=1))[0])
        raise ValueError(f'the distance matrix (distmat) has NaN in the row of query {start + bad}; '
                         'check the features for NaN/inf')
    good_d = dist[good_rows, good_cols]
    # NaN threshold for rows without a true match: nothing compares <= NaN, so they yield no candidates
    thresh = ops.segment_max(good_d, good_rows, num_rows)
    flat = ops.flat_le(dist, thresh)
    cand_rows = flat // num_gallery
    cand_cols = flat - cand_rows * num_gallery
    cand_d = dist.reshape(-1)[flat]
    junk_d = dist[junk_rows, junk_cols]

    if dist.dtype in (np.float32, torch.float32):
        codes = ops.float32_codes
    else:  # any other dtype: order-preserving codes from the sorted distinct candidate values
        values = ops.unique_sorted(cand_d)

        def codes(v):
            return ops.searchsorted(values, v)

    def keys(rows, d, cols):
        return (rows << row_shift) | (codes(d) << col_bits) | cols

    cand_keys = ops.sort(keys(cand_rows, cand_d, cand_cols))
    good_keys = ops.sort(keys(good_rows, good_d, good_cols))
    # junk farther than every true match of its row adds nothing; keep the others (codes need candidates)
    junk_near = junk_d <= thresh[junk_rows]
    junk_keys = ops.sort(keys(junk_rows[junk_near], junk_d[junk_near], junk_cols[junk_near]))
    rows_sorted = good_keys >> row_shift
    row_keys = rows_sorted << row_shift
    before = ops.searchsorted(cand_keys, good_keys) - ops.searchsorted(cand_keys, row_keys)
    junk_before = ops.searchsorted(junk_keys, good_keys) - ops.searchsorted(junk_keys, row_keys)
    return ops.to_numpy(rows_sorted), ops.to_numpy(before - junk_before + 1)


class RankAccumulator:
    """Collects per-query ranks of true matches and turns them into CMC / AP / INP."""

    def __init__(self, num_queries: int, max_rank: int):
        self.max_rank = max_rank
        self.first_rank = np.zeros(num_queries, np.int64)
        self.ap = np.full(num_queries, np.nan)
        self.inp = np.full(num_queries, np.nan)

    def add(self, start: int, local_rows: np.ndarray, ranks: np.ndarray) -> None:
        """Record queries ``start + local_rows``: ``ranks`` holds the 1-based gallery ranks of their
        true matches (junk not counted), rows grouped and each row's ranks ascending."""
        if len(ranks) == 0:
            return
        rows, row_start, counts = np.unique(local_rows, return_index=True, return_counts=True)
        position = np.arange(len(ranks)) - np.repeat(row_start, counts)  # 0-based index of the match in its row
        # AP = (1/m) sum_i i / rank_i, summed left to right (a padded cumsum keeps that exact order)
        precision = np.zeros((len(rows), int(counts.max())))
        precision[np.repeat(np.arange(len(rows)), counts), position] = (position + 1) / ranks
        ap = np.cumsum(precision, axis=1)[:, -1] / counts
        last = row_start + counts - 1
        q = rows + start
        self.first_rank[q] = ranks[row_start]
        self.ap[q] = ap
        self.inp[q] = counts / ranks[last]

    def result(self) -> Dict[str, Any]:
        """CMC up to ``max_rank``, mAP and mINP over the queries with a true match, and the
        per-query AP, INP and first-match rank; a ValueError when no query has one."""
        valid = self.first_rank > 0
        num_valid = int(valid.sum())
        if num_valid == 0:
            raise ValueError('no query has a true match in the gallery (same identity, another camera); '
                             'check the ids and camera ids')
        hits = np.bincount(np.minimum(self.first_rank[valid], self.max_rank + 1), minlength=self.max_rank + 2)
        cmc = (np.cumsum(hits[1:self.max_rank + 1]) / num_valid).astype(np.float32)
        return {
            'cmc': cmc,
            'mAP': float(np.mean(self.ap[valid])),
            'mINP': float(np.mean(self.inp[valid])),
            'num_valid_queries': num_valid,
            'num_queries': len(valid),
            'ap': self.ap,
            'inp': self.inp,
            'first_match_rank': self.first_rank,
        }


def _validate(shape: Tuple[int, ...], q_pids, g_pids, q_camids, g_camids, max_rank: int, what: str = 'distmat'):
    if len(shape) != 2:
        raise ValueError(f'{what} must be 2-D (num_query, num_gallery), got shape {tuple(shape)}')
    ids = [_as_labels(q_pids, 'q_pids'), _as_labels(g_pids, 'g_pids'), _as_labels(q_camids, 'q_camids'),
           _as_labels(g_camids, 'g_camids')]
    num_q, num_g = shape
    for name, a, n in zip(('q_pids', 'g_pids', 'q_camids', 'g_camids'), ids, (num_q, num_g, num_q, num_g)):
        if len(a) != n:
            raise ValueError(f'{name} has {len(a)} entries but {what} has shape {tuple(shape)}')
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f'max_rank must be an integer >= 1, got {max_rank!r}')
    q_p, g_p = _codes(ids[0], ids[1])
    q_c, g_c = _codes(ids[2], ids[3])
    return [q_p, g_p, q_c, g_c]


def _run_chunks(work: Callable[[int, int], Any], bounds: Iterable[Tuple[int, int]], workers: int) -> Iterable:
    if workers <= 1:
        return (work(a, b) for a, b in bounds)
    pool = ThreadPoolExecutor(workers)
    futures = [pool.submit(work, a, b) for a, b in bounds]
    pool.shutdown(wait=False)
    return (f.result() for f in futures)


def rank_chunk_rows(num_gallery: int, device: torch.device) -> int:
    """Query rows ranked at once: about 64 M distances on a GPU, 4 M on a CPU (the compare-and-compact pass
    then works in cache)."""
    budget = (1 << 26) if device.type != 'cpu' else (1 << 22)
    return max(1, budget // max(1, num_gallery))


def default_workers() -> int:
    """Threads for the CPU ranking kernel: numpy releases the GIL, so one per core."""
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


def evaluate_rank(
        distmat: ArrayLike,
        q_pids: ArrayLike,
        g_pids: ArrayLike,
        q_camids: ArrayLike,
        g_camids: ArrayLike,
        max_rank: int = 50,
        *,
        single_gallery_shot: bool = False,
        num_repeats: int = 10,
        seed: int = 0,
        chunk_rows: Optional[int] = None,
        num_workers: Optional[int] = None,
) -> Dict[str, Any]:
    """CMC, mAP and mINP of a query x gallery distance matrix (Market1501 protocol).

    Args:
        distmat: (num_query, num_gallery) distances, smaller = more similar; a numpy array, or a torch
            tensor (a CUDA tensor is ranked on its GPU). float32 is fastest; other dtypes are exact too.
        q_pids, g_pids, q_camids, g_camids: integer identity and camera ids.
        max_rank: length of the returned CMC curve (ranks 1..max_rank). Ranks beyond the kept gallery are
            correct too (1 for every valid query).
        single_gallery_shot: the CUHK03 classic protocol for CMC: one random gallery image per identity,
            averaged over ``num_repeats`` draws from ``numpy.random.default_rng(seed)``; mAP and mINP stay
            on the full gallery.
        chunk_rows, num_workers: tuning (rows per chunk; CPU threads).

    Returns:
        dict with ``cmc`` (float32 array, ranks 1..max_rank), ``mAP``, ``mINP`` (floats in [0, 1]),
        ``num_valid_queries``, ``num_queries``, and per query ``ap``, ``inp`` (NaN where skipped) and
        ``first_match_rank`` (0 where skipped).
    """
    if not isinstance(distmat, torch.Tensor):
        distmat = np.asarray(distmat)
    q_pids, g_pids, q_camids, g_camids = _validate(tuple(distmat.shape), q_pids, g_pids, q_camids, g_camids, max_rank)
    matches = MatchLists.build(q_pids, g_pids, q_camids, g_camids)
    num_q, num_g = distmat.shape
    on_gpu = isinstance(distmat, torch.Tensor) and distmat.device.type != 'cpu'
    if isinstance(distmat, torch.Tensor) and not on_gpu:
        distmat = distmat.detach().numpy()
    if not isinstance(distmat, torch.Tensor) and distmat.dtype in (np.float16,):
        distmat = distmat.astype(np.float32)  # exact: every float16 is a float32
    if isinstance(distmat, torch.Tensor) and distmat.dtype in (torch.float16, torch.bfloat16):
        distmat = distmat.float()
    device = distmat.device if on_gpu else torch.device('cpu')
    rows = chunk_rows or rank_chunk_rows(num_g, device)
    acc = RankAccumulator(num_q, int(max_rank))

    def work(a: int, b: int):
        chunk = distmat[a:b]
        if not on_gpu:
            chunk = np.ascontiguousarray(chunk)
        return a, chunk_good_ranks(chunk, matches, a, b)

    bounds = [(a, min(a + rows, num_q)) for a in range(0, num_q, rows)]
    workers = 1 if on_gpu else (num_workers or default_workers())
    with torch.inference_mode():
        for a, (local_rows, ranks) in _run_chunks(work, bounds, workers):
            acc.add(a, local_rows, ranks)
    result = acc.result()
    if single_gallery_shot:
        dist_np = distmat.float().cpu().numpy() if isinstance(distmat, torch.Tensor) else distmat
        result['cmc'] = single_gallery_shot_cmc(dist_np, q_pids, g_pids, matches, int(max_rank), num_repeats, seed)
    return result
