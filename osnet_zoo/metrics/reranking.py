"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), sparse and chunked so that MSMT17 size fits in memory.

The published algorithm, for all N = query + gallery images:

1. ``original_dist``: pairwise distances, squared, each row divided by its maximum;
2. ``R(i)``: the k-reciprocal neighbours of i: j in the top k1+1 of i such that i is in the top k1+1 of j;
3. ``R*(i)``: R(i) plus, for each c in R(i), the set R(c) computed with round(k1/2), when more than 2/3 of
   it lies in R(i);
4. ``V[i, j] = exp(-original_dist[i, j])`` over j in R*(i), normalised to sum 1 (zero elsewhere);
5. local query expansion: ``V[i]`` replaced by the mean of ``V`` over the top k2 of i;
6. Jaccard distance ``1 - m / (2 - m)`` with ``m = sum_k min(V[i, k], V[j, k])``;
7. ``final = (1 - lambda) * jaccard + lambda * original_dist``, query rows x gallery columns.

The dense version needs N x N matrices (35 GB at MSMT17 size for one float32 matrix). Here the N x N distances
only ever exist one row chunk at a time (for the top-k lists and row maxima); V is sparse (a few dozen
entries per row); the Jaccard sums go through an inverted index of V's columns. Memory is dominated by the
(num_query, num_gallery) result.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from .distance import ArrayLike, as_feature_tensor, iter_distance_chunks

__all__ = ['re_ranking']


def _ranges(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Concatenate arange(s, s + n) for each (s, n)."""
    total = int(lengths.sum())
    if total == 0:
        return starts.new_zeros(0)
    offsets = torch.cumsum(lengths, 0) - lengths
    return torch.repeat_interleave(starts - offsets, lengths) + torch.arange(total, device=starts.device)


def _reciprocal(nn: torch.Tensor, k: int, rows: torch.Tensor) -> torch.Tensor:
    """Mask over ``nn[rows, :k]``: j in the top k of i and i in the top k of j."""
    forward = nn[rows, :k]
    backward = nn[:, :k][forward]  # (B, k, k)
    return (backward == rows[:, None, None]).any(-1)


def _pair_sq_dist(x: torch.Tensor, sq_norm: Optional[torch.Tensor], rows: torch.Tensor, cols: torch.Tensor
                  ) -> torch.Tensor:
    """Squared distance of the (rows[p], cols[p]) pairs, from the (prepared) features."""
    dot = (x[rows] * x[cols]).sum(1)
    d = 1.0 - dot if sq_norm is None else sq_norm[rows] + sq_norm[cols] - 2.0 * dot
    return d * d


def _expansion_sets(nn: torch.Tensor, k1: int, rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """R*(i) for the given rows, padded: (indices (B, L), valid mask (B, L)), entries unique per row."""
    n = nn.shape[0]
    # numpy's round-half-even, as the published code's np.around; cut at the neighbour list's length (a set
    # smaller than k1 + 1 images), as slicing a full argsort would
    half = min(int(round(k1 / 2)) + 1, nn.shape[1])
    r_idx = nn[rows, :k1 + 1]
    r_mask = _reciprocal(nn, k1 + 1, rows)  # R(i)
    cand = r_idx  # candidates c in R(i) (masked by r_mask)
    c_idx = nn[cand, :half]  # (B, K, half): top-half of each candidate
    c_mask = _reciprocal(nn, half, cand.reshape(-1)).view(*cand.shape, half)  # R_half(c)
    inside = (c_idx[..., None] == r_idx[:, None, None, :]) & r_mask[:, None, None, :]
    overlap = (inside.any(-1) & c_mask).sum(-1)
    take = r_mask & (overlap > 2.0 / 3.0 * c_mask.sum(-1))  # > 2/3 of |R_half(c)| inside R(i)
    idx = torch.cat([r_idx, c_idx.flatten(1)], 1)
    valid = torch.cat([r_mask, (c_mask & take[..., None]).flatten(1)], 1)
    idx = torch.where(valid, idx, torch.full_like(idx, n))
    idx = torch.sort(idx, 1).values
    dup = torch.zeros_like(valid)
    dup[:, 1:] = idx[:, 1:] == idx[:, :-1]
    valid = (idx < n) & ~dup
    return idx, valid


def _row_ptr(rows: torch.Tensor, n: int) -> torch.Tensor:
    """CSR row pointers (n + 1) of entries sorted by row."""
    ptr = torch.zeros(n + 1, dtype=torch.int64, device=rows.device)
    ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return ptr


def _distance_pass(x: torch.Tensor, num_q: int, k: int, distance: str, lambda_value: float, chunk_rows: int
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 1, one pass over the N x N distances: the top-k lists (N, k), the row maxima (N,), and
    ``lambda * original_dist`` of the query x gallery block (on the CPU), the start of the result."""
    n = len(x)
    nn = torch.empty(n, k, dtype=torch.int64, device=x.device)
    row_max = torch.empty(n, device=x.device)
    final = torch.empty(num_q, n - num_q, dtype=torch.float32)
    for start, stop, d in iter_distance_chunks(x, x, distance, chunk_rows):
        sq = d.square_()
        nn[start:stop] = torch.topk(sq, k, dim=1, largest=False, sorted=True).indices
        row_max[start:stop] = sq.amax(1)
        if start < num_q:
            q_stop = min(stop, num_q)
            block = sq[:q_stop - start, num_q:] / row_max[start:q_stop, None]
            final[start:q_stop] = block.mul_(lambda_value).cpu()
    return nn, row_max, final


def _sparse_v(x: torch.Tensor, distance: str, nn: torch.Tensor, row_max: torch.Tensor, k1: int, chunk_rows: int
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps 2-4: V over R*(i) as (rows, cols, values) sorted by row, each row summing to 1."""
    if distance == 'cosine':
        xp, sq_norm = torch.nn.functional.normalize(x, dim=1), None
    else:
        xp, sq_norm = x, x.pow(2).sum(1)
    n = len(x)
    v_rows, v_cols, v_vals = [], [], []
    for start in range(0, n, chunk_rows):
        rows = torch.arange(start, min(start + chunk_rows, n), device=x.device)
        idx, valid = _expansion_sets(nn, k1, rows)
        r = rows[:, None].expand_as(idx)[valid]
        c = idx[valid]
        weight = torch.exp(-_pair_sq_dist(xp, sq_norm, r, c) / row_max[r])
        total = torch.zeros(n, device=x.device).index_add_(0, r, weight)
        v_rows.append(r), v_cols.append(c), v_vals.append(weight / total[r])
    return torch.cat(v_rows), torch.cat(v_cols), torch.cat(v_vals)


def _query_expansion(nn: torch.Tensor, v_rows: torch.Tensor, v_cols: torch.Tensor, v_vals: torch.Tensor, k2: int,
                     chunk_rows: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 5, local query expansion: V[i] replaced by the mean of V over the top-k2 neighbours of i."""
    n = len(nn)
    k2 = min(k2, n)
    v_ptr = _row_ptr(v_rows, n)
    q_rows, q_cols, q_vals = [], [], []
    for start in range(0, n, chunk_rows):
        rows = torch.arange(start, min(start + chunk_rows, n), device=nn.device)
        neigh = nn[rows, :k2].reshape(-1)
        lengths = v_ptr[neigh + 1] - v_ptr[neigh]
        src = _ranges(v_ptr[neigh], lengths)
        owner = torch.repeat_interleave(rows.repeat_interleave(k2), lengths)
        key = owner * n + v_cols[src]
        uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
        sums = torch.zeros(len(uniq), device=nn.device).index_add_(0, inverse, v_vals[src])
        q_rows.append(uniq // n), q_cols.append(uniq % n), q_vals.append(sums / k2)
    return torch.cat(q_rows), torch.cat(q_cols), torch.cat(q_vals)


def _add_jaccard(final: torch.Tensor, v_rows: torch.Tensor, v_cols: torch.Tensor, v_vals: torch.Tensor, n: int,
                 lambda_value: float, chunk_rows: int) -> None:
    """Steps 6-7: ``(1 - lambda) * jaccard`` of every query x gallery pair added to ``final``, the sums
    ``sum_k min(V[i, k], V[j, k])`` taken through an inverted index of V's columns over the gallery rows."""
    num_q, num_g = final.shape
    dev = v_rows.device
    v_ptr = _row_ptr(v_rows, n)
    in_gallery = v_rows >= num_q
    g_cols = v_cols[in_gallery]
    order = torch.argsort(g_cols, stable=True)
    inv_rows = (v_rows[in_gallery] - num_q)[order]
    inv_vals = v_vals[in_gallery][order]
    inv_ptr = _row_ptr(g_cols, n)
    jaccard_rows = max(1, chunk_rows // 8)  # each query row expands into ~10^4-10^5 (row, gallery) pairs
    for start in range(0, num_q, jaccard_rows):
        stop = min(start + jaccard_rows, num_q)
        lo, hi = int(v_ptr[start]), int(v_ptr[stop])
        rows_local, cols, vals = v_rows[lo:hi] - start, v_cols[lo:hi], v_vals[lo:hi]
        lengths = inv_ptr[cols + 1] - inv_ptr[cols]
        src = _ranges(inv_ptr[cols], lengths)
        target = torch.repeat_interleave(rows_local, lengths) * num_g + inv_rows[src]
        mins = torch.minimum(torch.repeat_interleave(vals, lengths), inv_vals[src])
        shared = torch.zeros((stop - start) * num_g, device=dev).index_add_(0, target, mins).view(-1, num_g)
        jaccard = 1.0 - shared / (2.0 - shared)
        final[start:stop] += (jaccard * (1.0 - lambda_value)).cpu()


@torch.inference_mode()
def re_ranking(
        query_features: ArrayLike,
        gallery_features: ArrayLike,
        k1: int = 20,
        k2: int = 6,
        lambda_value: float = 0.3,
        distance: str = 'euclidean',
        device: Optional[Union[str, torch.device]] = None,
        chunk_rows: int = 1024,
) -> torch.Tensor:
    """Re-ranked (num_query, num_gallery) float32 distance matrix, on the CPU.

    Args:
        query_features, gallery_features: (Q, D) and (G, D) embeddings.
        k1, k2, lambda_value: the paper's parameters (defaults 20, 6, 0.3).
        distance: the base distance (``'euclidean'``: squared euclidean, or ``'cosine'``), which the algorithm
            then squares, as the published implementation does with the matrices it is given.
        device: where to compute (``'cuda'`` is much faster; default: where the query features are).
        chunk_rows: rows per chunk of the N x N distance pass and of the Jaccard pass.
    """
    qf = as_feature_tensor(query_features, 'query_features', device)
    gf = as_feature_tensor(gallery_features, 'gallery_features', qf.device)
    if k1 < 1 or k2 < 1:
        raise ValueError(f'k1 and k2 must be >= 1, got k1={k1}, k2={k2}')
    x = torch.cat([qf, gf])
    k = min(max(k1 + 1, k2), len(x))  # neighbour lists are cut at n, as slicing a full argsort would
    nn, row_max, final = _distance_pass(x, len(qf), k, distance, lambda_value, chunk_rows)
    v = _sparse_v(x, distance, nn, row_max, k1, chunk_rows)
    if k2 > 1:
        v = _query_expansion(nn, *v, k2, chunk_rows)
    _add_jaccard(final, *v, len(x), lambda_value, chunk_rows)
    return final
