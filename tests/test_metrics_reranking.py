"""k-reciprocal re-ranking: the sparse, chunked implementation against a dense, step-by-step reference."""
import numpy as np
import pytest

from osnet_zoo.metrics import evaluate_rank, pairwise_distance, re_ranking


def dense_reference_re_ranking(q_g, q_q, g_g, k1=20, k2=6, lam=0.3):
    """The published algorithm (Zhong et al., CVPR 2017) with dense matrices and plain loops.

    Returns the re-ranked query x gallery distances and how many rows had their R(i) expanded.
    """
    num_q = q_g.shape[0]
    full = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float32) ** 2
    full = (full / full.max(axis=0)).T  # every column scaled by its maximum, then transposed
    n = len(full)
    rank = np.argsort(full, axis=1)

    def k_reciprocal(i, k):  # j in the top k+1 of i whose own top k+1 holds i
        return np.array([j for j in rank[i, :k + 1] if i in rank[j, :k + 1]], dtype=np.int64)

    v = np.zeros((n, n), np.float32)
    expanded_rows = 0
    for i in range(n):
        r = k_reciprocal(i, k1)
        expanded = list(r)
        for c in r:
            rc = k_reciprocal(c, int(np.around(k1 / 2)))
            if len(np.intersect1d(rc, r)) > 2 / 3 * len(rc):
                expanded.extend(rc)
        expanded = np.unique(expanded)
        expanded_rows += len(expanded) > len(r)
        w = np.exp(-full[i, expanded])
        v[i, expanded] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    jaccard = np.zeros((num_q, n), np.float32)
    for i in range(num_q):
        shared = np.minimum(v[i][None, :], v).sum(axis=1)  # sum_k min(V[i, k], V[j, k]) for every j
        jaccard[i] = 1 - shared / (2 - shared)
    final = jaccard * (1 - lam) + full[:num_q] * lam
    return final[:, num_q:], expanded_rows


def _clustered(rng, n, centres, noise=0.6):
    pids = rng.integers(0, len(centres), n)
    return (centres[pids] + noise * rng.standard_normal((n, centres.shape[1]))).astype(np.float32), pids


@pytest.mark.parametrize('distance', ['euclidean', 'cosine'])
@pytest.mark.parametrize('k1,k2,nq,ng', [(20, 6, 15, 80), (7, 1, 6, 25), (9, 3, 10, 40), (20, 6, 4, 8), (20, 6, 1, 3), (4, 6, 2, 1)])
def test_matches_published_algorithm(distance, k1, k2, nq, ng):
    rng = np.random.default_rng(k1 * 100 + nq)
    centres = rng.standard_normal((12, 16))
    qf, _ = _clustered(rng, nq, centres)
    gf, _ = _clustered(rng, ng, centres)
    ref, expanded = dense_reference_re_ranking(pairwise_distance(qf, gf, distance).numpy(),
                                               pairwise_distance(qf, qf, distance).numpy(),
                                               pairwise_distance(gf, gf, distance).numpy(), k1, k2)
    ours = re_ranking(qf, gf, k1=k1, k2=k2, distance=distance, chunk_rows=7).numpy()
    assert ours.shape == (nq, ng)
    np.testing.assert_allclose(ours, ref, atol=2e-6, rtol=0)
    if (k1, nq) == (20, 15):
        assert expanded > 0  # the 2/3 expansion rule was exercised


def test_reranking_helps_on_clustered_data():
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((25, 24))
    qf, q_pids = _clustered(rng, 60, centres, 1.0)
    gf, g_pids = _clustered(rng, 400, centres, 1.0)
    q_cams, g_cams = np.zeros(60, int), np.ones(400, int)
    plain = evaluate_rank(pairwise_distance(qf, gf).numpy(), q_pids, g_pids, q_cams, g_cams)
    rer = evaluate_rank(re_ranking(qf, gf, distance='cosine'), q_pids, g_pids, q_cams, g_cams)
    assert rer['mAP'] > plain['mAP'] + 0.02
