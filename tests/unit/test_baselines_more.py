"""Session-kNN checked against hand-computed scores; ALS / BPR determinism and fallbacks."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from recpipe.baselines.implicit_mf import ALS, BPR
from recpipe.baselines.sknn import SessionKNN, prefix_weights
from recpipe.models.data import DataMeta, Queries
from tests.contract.planted import interactions

N_ITEMS = 8  # items 2..7
SESSIONS = [[2, 3], [3, 4], [5, 6]]  # s2 is the most recent


def fit(model_cls, sessions, config=None, **kwargs):
    train = interactions(sessions, **kwargs)
    meta = DataMeta.from_interactions(train, n_items=N_ITEMS, n_users=6)
    return model_cls(config or {}, meta).fit(train)


def real(scores: np.ndarray) -> np.ndarray:
    return scores[..., 2:]


# ---------------------------------------------------------------------- session-kNN
def test_prefix_weights_linear_same_and_repeats():
    items = np.array([[0, 2, 3, 2], [0, 0, 1, 4]])  # row 1: UNK is ignored
    linear = prefix_weights(items, "linear", N_ITEMS).toarray()
    np.testing.assert_allclose(linear[0, 2:4], [1.0, 2 / 3])  # 2 keeps its latest weight
    np.testing.assert_allclose(linear[1, 4], 1.0)
    same = prefix_weights(items, "same", N_ITEMS).toarray()
    np.testing.assert_allclose(same[0, 2:4], [1.0, 1.0])
    with pytest.raises(ValueError, match="weighting"):
        prefix_weights(items, "div", N_ITEMS)


def test_sknn_hand_checked_neighbour_scores():
    # query [2, 3], linear: w2 = 1/2, w3 = 1, |q| = 2
    # sim(s0) = 1.5 / sqrt(2 * 2) = 0.75, sim(s1) = 1 / sqrt(2 * 2) = 0.5, s2 shares nothing
    q = Queries.from_item_lists([[2, 3]])
    model = fit(SessionKNN, SESSIONS, {"pop_weight": 0.0, "remind": True})
    np.testing.assert_allclose(real(model.score(q))[0], [0.75, 1.25, 0.5, 0, 0, 0], rtol=1e-6)
    # without remind the prefix items are not recommended again
    plain = fit(SessionKNN, SESSIONS, {"pop_weight": 0.0, "remind": False})
    np.testing.assert_allclose(real(plain.score(q))[0], [0, 0, 0.5, 0, 0, 0], rtol=1e-6)
    # same weights: sim(s0) = 2 / 2 = 1, sim(s1) = 1 / 2
    same = fit(SessionKNN, SESSIONS, {"pop_weight": 0.0, "remind": True, "weighting": "same"})
    np.testing.assert_allclose(real(same.score(q))[0, :3], [1.0, 1.5, 0.5], rtol=1e-6)


def test_sknn_k_sample_size_and_idf():
    q = Queries.from_item_lists([[2, 3]])
    base = {"pop_weight": 0.0, "remind": True}
    one_neighbour = fit(SessionKNN, SESSIONS, {**base, "k": 1})  # s0 only (sim 0.75)
    np.testing.assert_allclose(real(one_neighbour.score(q))[0, :3], [0.75, 0.75, 0], rtol=1e-6)
    # the most recent session sharing an item is s1: only it is compared
    sampled = fit(SessionKNN, SESSIONS, {**base, "sample_size": 1})
    np.testing.assert_allclose(real(sampled.score(q))[0, :3], [0, 0.5, 0.5], rtol=1e-6)
    # IDF: item 4 is in 1 of 3 sessions, item 3 in 2 of 3
    idf = fit(SessionKNN, SESSIONS, {**base, "idf_weighting": 1.0})
    got = real(idf.score(q))[0, :3]
    expected = [0.75 * (1 + math.log(3)), 1.25 * (1 + math.log(1.5)), 0.5 * (1 + math.log(3))]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_sknn_item_query_is_a_one_item_session_and_unknowns_fall_back():
    model = fit(SessionKNN, SESSIONS, {"pop_weight": 0.0, "remind": False})
    # [3]: sim(s0) = sim(s1) = 1 / sqrt(1 * 2)
    expected = [1 / math.sqrt(2), 0, 1 / math.sqrt(2), 0, 0, 0]
    np.testing.assert_allclose(real(model.score(Queries.for_items([3])))[0], expected, rtol=1e-6)
    np.testing.assert_array_equal(
        model.score(Queries.for_items([3])), model.score(Queries.from_item_lists([[3]]))
    )
    prior = fit(SessionKNN, SESSIONS)  # nothing known: the popularity prior alone
    scores = real(prior.score(Queries.from_item_lists([[], [7]])))
    assert np.all(scores <= 1e-6) and scores[0, 1] == scores.max()  # item 3 is most popular


# ---------------------------------------------------------------------- ALS / BPR
PLANTED = [[2, 3, 4], [3, 4], [5, 6, 7], [6, 7], [2, 3], [5, 7]]
USERS = [2, 2, 3, 3, 4, 5]
SMALL = {"factors": 4, "iterations": 5}


@pytest.mark.parametrize("model_cls", [ALS, BPR])
def test_implicit_mf_is_deterministic_with_a_seed(model_cls):
    queries = [Queries.for_users([2, 3]), Queries.from_item_lists([[2, 3], [6]])]
    first = fit(model_cls, PLANTED, {**SMALL, "seed": 7}, users=USERS)
    second = fit(model_cls, PLANTED, {**SMALL, "seed": 7}, users=USERS)
    other = fit(model_cls, PLANTED, {**SMALL, "seed": 8}, users=USERS)
    for q in queries:
        np.testing.assert_array_equal(first.score(q), second.score(q))
    assert not np.array_equal(first.score(queries[0]), other.score(queries[0]))


@pytest.mark.parametrize("model_cls", [ALS, BPR])
def test_implicit_mf_session_scores_are_mean_cosines(model_cls):
    model = fit(model_cls, PLANTED, {**SMALL, "pop_weight": 0.0}, users=USERS)
    scores = model.score(Queries.from_item_lists([[2, 3], [5]]))
    assert np.all(real(scores) >= -2.0) and np.all(real(scores) <= 1.0 + 1e-5)
    np.testing.assert_array_equal(scores[0, [2, 3]], [-2.0, -2.0])  # prefix items
    reminded = fit(model_cls, PLANTED, {**SMALL, "pop_weight": 0.0, "remind": True}, users=USERS)
    np.testing.assert_allclose(reminded.score(Queries.for_items([5]))[0, 5], 1.0, rtol=1e-5)


@pytest.mark.parametrize("model_cls", [ALS, BPR])
def test_implicit_mf_session_only_data_falls_back(model_cls, caplog):
    with caplog.at_level(logging.INFO, logger="recpipe.baselines.implicit_mf"):
        model = fit(model_cls, PLANTED, SMALL, users=[1] * len(PLANTED))  # all UNK
    assert "session-item matrix" in caplog.text
    with pytest.raises(ValueError, match="without known users"):
        model.score(Queries.for_users([2]))
    scores = model.score(Queries.from_item_lists([[2, 3]]))
    assert np.all(np.isfinite(real(scores)))
