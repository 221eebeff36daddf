"""From embeddings to CMC / mAP / mINP without materialising the distance matrix."""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Optional, Union

import torch

from .distance import ArrayLike, as_feature_tensor, default_chunk_rows, iter_distance_chunks, pairwise_distance
from .rank import (
    MatchLists, RankAccumulator, _validate, chunk_good_ranks, default_workers, evaluate_rank, rank_chunk_rows,
)

__all__ = ['evaluate_features']


@torch.inference_mode()
def evaluate_features(
        query_features: ArrayLike,
        gallery_features: ArrayLike,
        q_pids: ArrayLike,
        g_pids: ArrayLike,
        q_camids: ArrayLike,
        g_camids: ArrayLike,
        distance: str = 'cosine',
        device: Optional[Union[str, torch.device]] = None,
        max_rank: int = 50,
        *,
        single_gallery_shot: bool = False,
        num_repeats: int = 10,
        seed: int = 0,
        chunk_rows: Optional[int] = None,
        num_workers: Optional[int] = None,
) -> Dict[str, Any]:
    """CMC, mAP and mINP straight from query and gallery embeddings (Market1501 protocol).

    Distances (``distance``: ``'cosine'`` or squared ``'euclidean'``) are computed chunk by chunk on
    ``device`` (default: where ``query_features`` lives; ``'cuda'`` runs everything on the GPU) and each
    chunk is ranked as soon as it exists, so the full matrix never needs to fit in memory. The numbers are
    those of :func:`osnet_zoo.metrics.evaluate_rank` on :func:`osnet_zoo.metrics.pairwise_distance` of the
    same features. Returns the same dict as :func:`evaluate_rank`.
    """
    qf = as_feature_tensor(query_features, 'query_features', device)
    gf = as_feature_tensor(gallery_features, 'gallery_features', qf.device)
    q_pids, g_pids, q_camids, g_camids = _validate((len(qf), len(gf)), q_pids, g_pids, q_camids, g_camids,
                                                   max_rank, what='(query, gallery) features')
    if single_gallery_shot:  # needs whole rows for the random draws: rank the full matrix
        return evaluate_rank(pairwise_distance(qf, gf, distance, chunk_rows=chunk_rows), q_pids, g_pids, q_camids,
                             g_camids, max_rank, single_gallery_shot=True, num_repeats=num_repeats, seed=seed,
                             num_workers=num_workers)
    matches = MatchLists.build(q_pids, g_pids, q_camids, g_camids)
    acc = RankAccumulator(len(qf), int(max_rank))
    on_gpu = qf.device.type != 'cpu'
    rank_rows = rank_chunk_rows(len(gf), qf.device)
    # the distance chunks of pairwise_distance (same numbers), ranked in cache-sized pieces on the CPU
    dist_rows = chunk_rows or default_chunk_rows(len(gf), qf.device)
    if on_gpu:
        for start, stop, dist in iter_distance_chunks(qf, gf, distance, dist_rows):
            acc.add(start, *chunk_good_ranks(dist, matches, start, stop))
        return acc.result()

    workers = num_workers or default_workers()
    pending: deque = deque()
    with ThreadPoolExecutor(workers) as pool:
        for start, stop, dist in iter_distance_chunks(qf, gf, distance, dist_rows):
            dist_np = dist.numpy()
            for a in range(start, stop, rank_rows):
                b = min(a + rank_rows, stop)
                pending.append((a, pool.submit(chunk_good_ranks, dist_np[a - start:b - start], matches, a, b)))
            while len(pending) > 2 * workers * max(1, dist_rows // rank_rows):  # a few distance chunks at most
                a, fut = pending.popleft()
                acc.add(a, *fut.result())
        for a, fut in pending:
            acc.add(a, *fut.result())
    return acc.result()
