"""The CUHK03 classic single-gallery-shot CMC: one random gallery image per identity, averaged over draws."""
from __future__ import annotations

import numpy as np

from .matches import MatchLists

__all__ = ['single_gallery_shot_cmc']


def single_gallery_shot_cmc(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, matches: MatchLists,
                            max_rank: int = 50, num_repeats: int = 10, seed: int = 0) -> np.ndarray:
    """CMC where, per query and per repeat, the gallery holds one randomly drawn image of every identity.

    For the query's own identity the draw is among its true matches (same-camera images are removed as in
    the Market1501 protocol); queries without a true match are skipped. Draws come from
    ``numpy.random.default_rng(seed)``, queries in order, so results are reproducible. Returns float32
    ranks 1..max_rank.
    """
    rng = np.random.default_rng(seed)
    order = np.argsort(g_pids, kind='stable')
    identities, starts, counts = np.unique(g_pids[order], return_index=True, return_counts=True)
    ranks_axis = np.arange(max_rank)
    cmc_sum = np.zeros(max_rank)
    valid = np.flatnonzero(matches.num_good > 0)
    for q in valid:
        goods = matches.good_idx[matches.good_ptr[q]:matches.good_ptr[q + 1]]
        own = int(np.searchsorted(identities, q_pids[q]))
        picks = order[starts + rng.integers(0, counts, size=(num_repeats, len(identities)))]
        picks[:, own] = goods[rng.integers(0, len(goods), size=num_repeats)]
        dist = distmat[q, picks]
        own_dist, own_idx = dist[:, own:own + 1], picks[:, own:own + 1]
        # 0-based rank of the drawn true match; ties broken by gallery index as everywhere else
        rank = ((dist < own_dist) | ((dist == own_dist) & (picks < own_idx))).sum(axis=1)
        cmc_sum += (ranks_axis[None, :] >= rank[:, None]).mean(axis=0)
    if len(valid) == 0:
        raise ValueError('no query has a true match in the gallery (same identity, another camera)')
    return (cmc_sum / len(valid)).astype(np.float32)
