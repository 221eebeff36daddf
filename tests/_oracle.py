"""Test oracle, not public API. The straightforward evaluator: argsort every row, then walk the kept ranking of each
query.

It is the executable definition that :func:`osnet_zoo.metrics.evaluate_rank` is checked against, and the
baseline of ``benchmarks/bench_eval.py``. It sorts rows with numpy's default argsort (as the reference
evaluators do); where a true match ties in distance with a neighbour, that row is re-sorted stably, so ties
are broken by gallery index exactly as in the fast evaluator. Slow (a full sort of every row) but obvious.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

__all__ = ['evaluate_rank_argsort']


def evaluate_rank_argsort(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
                          g_camids: np.ndarray, max_rank: int = 50, chunk_rows: int = 256) -> Dict[str, Any]:
    """Same inputs and outputs as :func:`osnet_zoo.metrics.evaluate_rank` (Market1501 protocol)."""
    distmat = np.asarray(distmat)
    q_pids, g_pids, q_camids, g_camids = (np.asarray(a).astype(np.int64) for a in (q_pids, g_pids, q_camids,
                                                                                    g_camids))
    num_q, num_g = distmat.shape
    cmc_sum = np.zeros(max_rank, np.int64)
    first_rank = np.zeros(num_q, np.int64)
    ap = np.full(num_q, np.nan)
    inp = np.full(num_q, np.nan)
    for start in range(0, num_q, chunk_rows):
        dist = distmat[start:start + chunk_rows]
        order = np.argsort(dist, axis=1)
        for i, row in enumerate(order):
            q = start + i
            match = g_pids[row] == q_pids[q]
            pos = np.flatnonzero(match)
            values = dist[i]
            lo, hi = np.maximum(pos - 1, 0), np.minimum(pos + 1, num_g - 1)
            if np.any((values[row[lo]] == values[row[pos]]) & (lo != pos)) or \
                    np.any((values[row[hi]] == values[row[pos]]) & (hi != pos)):
                row = np.argsort(values, kind='stable')  # a true match is tied: break ties by index
                match = g_pids[row] == q_pids[q]
            keep = ~(match & (g_camids[row] == q_camids[q]))
            hits = match[keep]
            if not hits.any():
                continue
            cmc = np.minimum(hits.cumsum(), 1)[:max_rank]
            cmc_sum += np.pad(cmc, (0, max_rank - len(cmc)), constant_values=1)
            ranks = np.flatnonzero(hits) + 1
            num_hits = len(ranks)
            first_rank[q] = ranks[0]
            ap[q] = np.cumsum(np.arange(1, num_hits + 1) / ranks)[-1] / num_hits
            inp[q] = num_hits / ranks[-1]
    valid = first_rank > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError('no query has a true match in the gallery')
    return {
        'cmc': (cmc_sum / num_valid).astype(np.float32),
        'mAP': float(np.mean(ap[valid])),
        'mINP': float(np.mean(inp[valid])),
        'num_valid_queries': num_valid,
        'num_queries': num_q,
        'ap': ap,
        'inp': inp,
        'first_match_rank': first_rank,
    }
