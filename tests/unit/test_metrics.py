"""Metric values computed by hand on tiny cases, and their invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recpipe.evaluate.metrics import (
    NEXT_ITEM_METRICS,
    TOPK_METRICS,
    auc,
    coverage,
    ctr_metrics,
    logloss,
    metric_key,
    next_item_metrics,
    next_item_per_query,
    popularity_bias,
    rating_metrics,
    topk_metrics,
    topk_per_query,
)
from recpipe.evaluate.ranking import target_ranks, top_k


def as_csr(sets: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.cumsum([0] + [len(s) for s in sets]).astype(np.int64)
    return indptr, np.array([i for s in sets for i in s], dtype=np.int64)


def test_metric_keys():
    assert metric_key("recall", 20) == "recall@20"
    assert metric_key("rmse") == "rmse"
    keys = next_item_metrics(np.array([1]), [20, 10])
    assert list(keys) == [f"{n}@{k}" for k in (10, 20) for n in NEXT_ITEM_METRICS]
    assert set(topk_metrics(np.array([[1]]), as_csr([[1]]), [1])) == {
        f"{n}@1" for n in TOPK_METRICS
    }


# --------------------------------------------------------------------------- next item


def test_next_item_hand_computed():
    ranks = np.array([1, 3, 25])
    m = next_item_metrics(ranks, [10, 20])
    # hits@10: ranks 1 and 3 -> 2/3; rank 25 misses both cut-offs
    assert m["hitrate@10"] == pytest.approx(2 / 3)
    assert m["recall@20"] == pytest.approx(2 / 3)
    # MRR: (1/1 + 1/3 + 0) / 3 = 4/9
    assert m["mrr@10"] == pytest.approx(4 / 9)
    # NDCG: (1/log2(2) + 1/log2(4) + 0) / 3 = (1 + 0.5) / 3 = 0.5
    assert m["ndcg@20"] == pytest.approx(0.5)
    per = next_item_per_query(ranks, [2])
    # rank 3 > 2: a miss at K = 2
    assert per["hitrate@2"].tolist() == [1.0, 0.0, 0.0]
    assert per["mrr@2"].tolist() == [1.0, 0.0, 0.0]


def test_next_item_perfect_and_constant_scorers():
    rng = np.random.default_rng(0)
    scores = rng.random((40, 100))
    targets = rng.integers(0, 100, size=40)
    scores[np.arange(40), targets] = 5.0
    perfect = next_item_metrics(target_ranks(scores, targets), [1, 10, 20])
    assert all(v == 1.0 for v in perfect.values())
    constant = next_item_metrics(target_ranks(np.ones((40, 100)), targets), [10, 20])
    assert all(v == 0.0 for v in constant.values())


def test_next_item_rejects_bad_ranks():
    with pytest.raises(ValueError, match=">= 1"):
        next_item_metrics(np.array([0, 1]), [10])
    with pytest.raises(ValueError, match="non-empty"):
        next_item_metrics(np.array([], dtype=int), [10])
    with pytest.raises(ValueError, match="cut-offs"):
        next_item_metrics(np.array([1]), [0])


# --------------------------------------------------------------------------- user top-K


def test_topk_hand_computed():
    items = np.array([[5, 2, 7, 1]])
    relevant = as_csr([[2, 1, 9]])  # |R| = 3, hits at positions 2 and 4
    m = topk_metrics(items, relevant, [2, 4])
    l2, l3, l5 = math.log2(2), math.log2(3), math.log2(5)
    # K = 4: h = 2
    assert m["recall@4"] == pytest.approx(2 / 3)
    assert m["recall_trunc@4"] == pytest.approx(2 / 3)  # 2 / min(3, 4)
    assert m["precision@4"] == pytest.approx(2 / 4)
    assert m["hitrate@4"] == 1.0
    assert m["mrr@4"] == pytest.approx(1 / 2)  # first hit at position 2
    # DCG = 1/log2(3) + 1/log2(5); IDCG over min(3, 4) = 3 positions: 1 + 1/log2(3) + 1/2
    assert m["ndcg@4"] == pytest.approx((1 / l3 + 1 / l5) / (1 / l2 + 1 / l3 + 1 / 2))
    # AP: precision 1/2 at position 2 and 2/4 at position 4, sum 1, over min(3, 4)
    assert m["map@4"] == pytest.approx(1 / 3)
    # K = 2: h = 1
    assert m["recall@2"] == pytest.approx(1 / 3)
    assert m["recall_trunc@2"] == pytest.approx(1 / 2)  # 1 / min(3, 2)
    assert m["precision@2"] == pytest.approx(1 / 2)
    assert m["ndcg@2"] == pytest.approx((1 / l3) / (1 + 1 / l3))  # IDCG over 2 positions
    assert m["map@2"] == pytest.approx((1 / 2) / 2)


def test_topk_per_query_and_padding():
    items = np.array([[3, -1, -1], [1, 2, 3]])
    relevant = as_csr([[3], [0, 3]])
    per = topk_per_query(items, relevant, [3])
    assert per["recall@3"].tolist() == [1.0, 0.5]
    assert per["precision@3"].tolist() == pytest.approx([1 / 3, 1 / 3])
    assert per["mrr@3"].tolist() == pytest.approx([1.0, 1 / 3])
    # query 1: one hit at position 3 of two relevant: AP = (1/3) / min(2, 3)
    assert per["map@3"].tolist() == pytest.approx([1.0, 1 / 6])
    m = sp.csr_matrix(([1, 1, 1], [3, 0, 3], [0, 1, 3]), shape=(2, 5))
    assert topk_metrics(items, m, [3]) == topk_metrics(items, relevant, [3])


def test_topk_perfect_scorer_is_one_and_constant_scorer_zero():
    rng = np.random.default_rng(1)
    rel_sets = [list(rng.choice(50, size=rng.integers(1, 6), replace=False)) for _ in range(30)]
    relevant = as_csr(rel_sets)
    scores = rng.random((30, 50))
    for b, s in enumerate(rel_sets):
        scores[b, s] += 10.0  # every relevant item above every irrelevant one
    lists = top_k(scores, 5, relevant=relevant)
    m = topk_metrics(lists, relevant, [1, 5])
    for name in ("hitrate", "recall_trunc", "mrr", "ndcg", "map"):
        assert m[f"{name}@5"] == pytest.approx(1.0), name
    assert m["recall@5"] == 1.0  # |R| <= 5 for every query
    assert m["precision@1"] == 1.0
    # a constant scorer with conservative ties puts the relevant items last
    constant = top_k(np.zeros((30, 50)), 5, relevant=relevant)
    assert all(v == 0.0 for v in topk_metrics(constant, relevant, [5]).values())


def test_one_relevant_item_agrees_with_next_item():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 5, size=(60, 40)).astype(float)  # many ties
    targets = rng.integers(0, 40, size=60)
    relevant = as_csr([[t] for t in targets])
    from_ranks = next_item_metrics(target_ranks(scores, targets), [1, 5, 10])
    from_lists = topk_metrics(top_k(scores, 10, relevant=relevant), relevant, [1, 5, 10])
    for key, value in from_ranks.items():
        assert from_lists[key] == pytest.approx(value), key


def test_topk_input_errors():
    with pytest.raises(ValueError, match="no relevant items"):
        topk_metrics(np.array([[1, 2]]), as_csr([[]]), [2])
    with pytest.raises(ValueError, match="repeats an item"):
        topk_metrics(np.array([[1, 1]]), as_csr([[1]]), [2])
    with pytest.raises(ValueError, match="exceeds"):
        topk_metrics(np.array([[1, 2]]), as_csr([[1]]), [3])


# --------------------------------------------------------------------------- catalogue


def test_coverage_hand_computed():
    # n_items = 6 with 2 reserved slots: catalogue {2, 3, 4, 5}
    lists = np.array([[2, 3], [3, -1], [3, 5]])
    c = coverage(lists, 6, [1, 2], n_reserved=2)
    assert c["coverage@1"] == pytest.approx(2 / 4)  # {2, 3}
    assert c["coverage@2"] == pytest.approx(3 / 4)  # {2, 3, 5}
    with pytest.raises(ValueError, match="catalogue items"):
        coverage(np.array([[1]]), 6, [1], n_reserved=2)


def test_popularity_bias_hand_computed():
    counts = np.array([0, 0, 10, 5, 5, 1])  # reserved 0, 1; catalogue 2..5
    # percentile = (#lower + #equal / 2) / 4: item 2: (3 + .5)/4 = .875, items 3, 4:
    # (1 + 1)/4 = .5, item 5: (0 + .5)/4 = .125
    lists = np.array([[2, 5], [3, -1]])
    p = popularity_bias(lists, counts, [1, 2], n_reserved=2)
    assert p["popularity_bias@1"] == pytest.approx((0.875 + 0.5) / 2)
    assert p["popularity_bias@2"] == pytest.approx((0.875 + 0.125 + 0.5) / 3)
    # recommending every catalogue item once is unbiased: 0.5
    every = np.arange(2, 6)[:, None]
    assert popularity_bias(every, counts, [1], n_reserved=2)["popularity_bias@1"] == 0.5


# --------------------------------------------------------------------------- ratings, CTR


def test_rating_metrics_hand_computed():
    # errors -1, 0, 2: MAE = 3/3 = 1, RMSE = sqrt((1 + 0 + 4) / 3)
    m = rating_metrics(np.array([3.0, 4.0, 5.0]), np.array([4.0, 4.0, 3.0]))
    assert m == {"rmse": pytest.approx(math.sqrt(5 / 3)), "mae": pytest.approx(1.0)}
    with pytest.raises(ValueError, match="non-finite"):
        rating_metrics(np.array([np.nan]), np.array([1.0]))


def test_ctr_metrics_hand_computed():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 0.35 > 0.1, 0.35 < 0.4, 0.8 > both -> 3/4
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5  # a tie counts 1/2
    # log loss: -(ln 0.9 + ln 0.8) / 2
    m = ctr_metrics(np.array([0.9, 0.2]), np.array([1, 0]))
    assert m["logloss"] == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
    assert m["auc"] == 1.0
    assert math.isfinite(logloss(np.array([0.0, 1.0]), np.array([1, 0])))  # clipped
    with pytest.raises(ValueError, match="both classes"):
        auc(np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="0/1"):
        auc(np.array([0.1, 0.2]), np.array([1, 2]))


def brute_auc(score: np.ndarray, label: np.ndarray) -> float:
    pos, neg = score[label == 1], score[label == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=2, max_size=60).filter(
        lambda rows: len({y for _, y in rows}) == 2
    ),
    st.floats(0.01, 10.0),
)
def test_auc_equals_pairwise_count(rows, scale):
    score = np.array([s for s, _ in rows], dtype=float) * scale  # small range: many ties
    label = np.array([int(y) for _, y in rows])
    assert auc(score, label) == pytest.approx(brute_auc(score, label), abs=1e-12)
