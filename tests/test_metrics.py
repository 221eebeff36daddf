"""CMC / mAP / mINP: parity with the reference evaluator's fixture, the fast path against the argsort
evaluator on adversarial inputs (ties, signed zeros, inf, other dtypes), hand-worked cases, distances, CUHK03."""

import numpy as np
import pytest
import torch

from osnet_zoo.metrics import evaluate_features, evaluate_rank, pairwise_distance
from _oracle import evaluate_rank_argsort
from osnet_zoo.metrics.rank import MatchLists, RankAccumulator, chunk_good_ranks

@pytest.fixture(scope='module')
def market_small(reference_file):
    path = reference_file('eval_market1501_small.safetensors')  # fails saying how to get it when missing
    from safetensors.numpy import load_file
    return load_file(str(path))


def _args(d):
    return [d[k] for k in ('distmat', 'q_pids', 'g_pids', 'q_camids', 'g_camids')]


def _same(a, b):
    return (np.array_equal(a['cmc'], b['cmc']) and a['mAP'] == b['mAP'] and a['mINP'] == b['mINP']
            and a['num_valid_queries'] == b['num_valid_queries']
            and np.array_equal(a['ap'], b['ap'], equal_nan=True)
            and np.array_equal(a['first_match_rank'], b['first_match_rank']))


def test_parity_with_reference_fixture(market_small):
    res = evaluate_rank(*_args(market_small), max_rank=50)
    assert res['cmc'].shape == (50,)
    np.testing.assert_array_equal(res['cmc'], market_small['cmc'])  # exactly
    assert abs(res['mAP'] - float(market_small['mAP'][0])) < 1e-6
    assert res['num_valid_queries'] == 297 and res['num_queries'] == 300  # three queries have no true match
    assert np.isnan(res['ap']).sum() == 3
    assert 0 < res['mINP'] < res['mAP']


def test_baseline_also_matches_fixture_and_fast_path_bitwise(market_small):
    base = evaluate_rank_argsort(*_args(market_small))
    np.testing.assert_array_equal(base['cmc'], market_small['cmc'])
    assert _same(evaluate_rank(*_args(market_small), chunk_rows=7, num_workers=2), base)


def test_fixture_as_torch_tensor_and_float64(market_small):
    ref = evaluate_rank(*_args(market_small))
    d = market_small['distmat']
    assert _same(evaluate_rank(torch.from_numpy(d), *_args(market_small)[1:]), ref)
    assert _same(evaluate_rank(d.astype(np.float64), *_args(market_small)[1:]), ref)  # exact float32 values


def _torch_kernel(d, qp, gp, qc, gc, max_rank, rows=5):
    """Drive the torch implementation of the kernel (what runs on a GPU) on CPU tensors."""
    matches = MatchLists.build(qp, gp, qc, gc)
    acc = RankAccumulator(len(qp), max_rank)
    t = torch.from_numpy(np.ascontiguousarray(d))
    for a in range(0, len(qp), rows):
        b = min(a + rows, len(qp))
        acc.add(a, *chunk_good_ranks(t[a:b], matches, a, b))
    return acc.result()


@pytest.mark.parametrize('kind', ['int_ties', 'signed_zero_inf', 'float64_ties', 'float16', 'uniform'])
def test_fast_equals_argsort_evaluator_on_adversarial_inputs(kind):
    rng = np.random.default_rng(['int_ties', 'signed_zero_inf', 'float64_ties', 'float16', 'uniform'].index(kind))
    checked = 0
    for _ in range(40):
        nq, ng = int(rng.integers(1, 30)), int(rng.integers(1, 90))
        npid, ncam = int(rng.integers(1, 12)), int(rng.integers(1, 4))
        qp, gp = rng.integers(-1, npid, nq), rng.integers(-1, npid, ng)
        qc, gc = rng.integers(0, ncam, nq), rng.integers(0, ncam, ng)
        if kind == 'int_ties':
            d = rng.integers(0, 4, (nq, ng)).astype(np.float32)
        elif kind == 'signed_zero_inf':
            d = rng.standard_normal((nq, ng)).astype(np.float32)
            d[rng.random(d.shape) < 0.15] = -0.0
            d[rng.random(d.shape) < 0.15] = 0.0
            d[rng.random(d.shape) < 0.05] = np.inf
        elif kind == 'float64_ties':
            d = rng.integers(0, 5, (nq, ng)) * 0.25
        elif kind == 'float16':
            d = rng.integers(0, 6, (nq, ng)).astype(np.float16)
        else:
            d = rng.random((nq, ng), dtype=np.float32)
        max_rank = int(rng.integers(1, 60))
        try:
            base = evaluate_rank_argsort(d.astype(np.float32) if kind == 'float16' else d, qp, gp, qc, gc, max_rank)
        except ValueError:  # no valid query in this draw
            continue
        fast = evaluate_rank(d, qp, gp, qc, gc, max_rank, chunk_rows=int(rng.integers(1, 8)))
        assert _same(fast, base), (kind, nq, ng)
        if kind != 'float16':
            assert _same(_torch_kernel(d, qp, gp, qc, gc, max_rank), base), (kind, nq, ng)
        checked += 1
    assert checked >= 20


def test_kept_gallery_shorter_than_max_rank():
    # gallery: [same id + same camera (removed), distractor, true match, distractor]: 3 kept, match at rank 2
    d = np.array([[0.0, 0.1, 0.2, 0.3]], np.float32)
    res = evaluate_rank(d, [7], [7, 0, 7, 3], [0], [0, 1, 1, 2], max_rank=10)
    np.testing.assert_array_equal(res['cmc'], np.array([0] + [1] * 9, np.float32))
    assert res['mAP'] == 0.5 and res['mINP'] == 0.5
    assert _same(res, evaluate_rank_argsort(d, [7], [7, 0, 7, 3], [0], [0, 1, 1, 2], max_rank=10))


def test_hand_worked_ap_inp_and_skipped_queries():
    # query 0: matches at kept ranks 1 and 3 -> AP (1/1 + 2/3)/2, INP 2/3; query 1: no match -> skipped
    d = np.array([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]], np.float32)
    g_pids, g_cams = [5, 6, 5, 8], [1, 1, 1, 1]
    res = evaluate_rank(d, [5, 9], g_pids, [0, 0], g_cams, max_rank=4)
    assert res['num_valid_queries'] == 1 and res['num_queries'] == 2
    assert res['mAP'] == pytest.approx((1 + 2 / 3) / 2, abs=1e-15)
    assert res['mINP'] == pytest.approx(2 / 3, abs=1e-15)
    np.testing.assert_array_equal(res['cmc'], [1, 1, 1, 1])
    assert res['first_match_rank'].tolist() == [1, 0]


def test_bad_inputs_are_named():
    d = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match='g_pids has 2 entries'):
        evaluate_rank(d, [1, 2], [1, 2], [0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match='no query has a true match'):
        evaluate_rank(d, [1, 2], [3, 3, 3], [0, 0], [1, 1, 1])
    nan = np.array([[np.nan, 0.5]], np.float32)
    with pytest.raises(ValueError, match='NaN in the row of query 0'):
        evaluate_rank(nan, [1], [1, 2], [0], [1, 1])


def test_distances_match_their_definitions():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((9, 16)).astype(np.float32), rng.standard_normal((13, 16)).astype(np.float32)
    xn, yn = x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)
    np.testing.assert_allclose(pairwise_distance(x, y, 'cosine', chunk_rows=4).numpy(), 1 - xn @ yn.T, atol=1e-6)
    sq = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(pairwise_distance(x, y, 'euclidean', chunk_rows=2).numpy(), sq, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match='unknown distance'):
        pairwise_distance(x, y, 'manhattan')


@pytest.mark.parametrize('distance', ['cosine', 'euclidean'])
def test_evaluate_features_equals_ranking_the_full_matrix(distance):
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((40, 32))
    q_pids, g_pids = rng.integers(0, 40, 150), rng.integers(0, 40, 700)
    qf = (centres[q_pids] + 0.9 * rng.standard_normal((150, 32))).astype(np.float32)
    gf = (centres[g_pids] + 0.9 * rng.standard_normal((700, 32))).astype(np.float32)
    q_cams, g_cams = rng.integers(0, 4, 150), rng.integers(0, 4, 700)
    full = evaluate_rank(pairwise_distance(qf, gf, distance, chunk_rows=64).numpy(), q_pids, g_pids, q_cams, g_cams)
    fused = evaluate_features(torch.from_numpy(qf), gf, q_pids, g_pids, q_cams, g_cams, distance=distance,
                              chunk_rows=64, num_workers=2)
    assert _same(fused, full)
    assert 0.2 < fused['mAP'] < 0.95  # a real ranking problem, neither trivial nor hopeless


def test_cuhk03_single_gallery_shot_expectation_and_seed():
    # own identity: true matches at distance 1 and 3; another identity: images at 2 and 4.
    # One draw per identity: rank 1 unless (own=3, other=2): P(rank 1) = 3/4, rank 2 always.
    d = np.array([[1.0, 3.0, 2.0, 4.0]], np.float32)
    args = ([0], [0, 0, 1, 1], [0], [1, 1, 1, 1])
    many = evaluate_rank(d, *args, max_rank=3, single_gallery_shot=True, num_repeats=4000, seed=0)
    assert abs(float(many['cmc'][0]) - 0.75) < 0.03
    np.testing.assert_array_equal(many['cmc'][1:], [1, 1])
    assert many['mAP'] == pytest.approx((1 / 1 + 2 / 3) / 2)  # mAP stays on the full gallery
    a = evaluate_rank(d, *args, single_gallery_shot=True, seed=3)['cmc']
    b = evaluate_rank(d, *args, single_gallery_shot=True, seed=3)['cmc']
    np.testing.assert_array_equal(a, b)


def test_cuhk03_single_shot_equals_plain_cmc_with_one_image_per_identity():
    rng = np.random.default_rng(2)
    g_pids = np.arange(30)
    q_pids = rng.integers(0, 30, 20)
    d = rng.random((20, 30), dtype=np.float32)
    ids = (q_pids, g_pids, np.zeros(20, int), np.ones(30, int))
    plain = evaluate_rank(d, *ids, max_rank=20)
    single = evaluate_rank(d, *ids, max_rank=20, single_gallery_shot=True)
    np.testing.assert_allclose(single['cmc'], plain['cmc'], atol=1e-7)
