"""Baselines checked against hand-computed scores on tiny data sets."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recpipe.baselines.itemknn import ItemKNN, cosine_neighbours
from recpipe.baselines.markov import MarkovChain, SequentialRules, sequential_rules, step_weights
from recpipe.baselines.popularity import Popularity, RecentPopularity
from recpipe.models.data import DataMeta, Queries
from recpipe.models.sparse import drop_reserved, popularity_prior, top_k_per_row
from tests.contract.planted import interactions

DAY = 86_400 * 10**9
N_ITEMS = 8  # items 2..7


def fit(model_cls, sessions, config=None, **kwargs):
    train = interactions(sessions, **kwargs)
    meta = DataMeta.from_interactions(train, n_items=N_ITEMS, n_users=6)
    return model_cls(config or {}, meta).fit(train)


def real(scores: np.ndarray) -> np.ndarray:
    """Scores of the real items (reserved slots dropped)."""
    return scores[..., 2:]


# ---------------------------------------------------------------------- popularity
def test_pop_counts_events_or_values():
    sessions = [[2, 3, 3], [3, 4]]
    model = fit(Popularity, sessions)
    expected = [1, 3, 1, 0, 0, 0]
    for q in (Queries.for_users([2, 3]), Queries.for_items([5]), Queries.from_item_lists([[2]])):
        np.testing.assert_array_equal(real(model.score(q)), [expected] * len(q))
    valued = fit(Popularity, sessions, {"weighting": "value"}, values=[[5, 1, 1], [2, 0.5]])
    np.testing.assert_allclose(real(valued.score(Queries.for_items([2])))[0], [5, 4, 0.5, 0, 0, 0])


def test_recent_pop_window_and_half_life():
    t0 = 1_700_000_000 * 10**9
    sessions = [[2, 2], [3], [4]]
    starts = [t0, t0 + 9 * DAY, t0 + 10 * DAY]  # item 4 is last: the reference time
    windowed = fit(RecentPopularity, sessions, {"window_days": 3}, start_ns=starts, step_ns=1)
    np.testing.assert_array_equal(real(windowed.score(Queries.for_items([2])))[0, :3], [0, 1, 1])
    decayed = fit(
        RecentPopularity,
        sessions,
        {"window_days": 30, "half_life_days": 1},
        start_ns=starts,
        step_ns=0,
    )
    got = real(decayed.score(Queries.for_items([2])))[0, :3]
    np.testing.assert_allclose(got, [2 * 0.5**10, 0.5, 1.0], rtol=1e-6)


# ---------------------------------------------------------------------- item-kNN
SESSIONS = [[2, 3], [2, 3], [2, 4]]  # columns: x2 = (1,1,1), x3 = (1,1,0), x4 = (0,0,1)
COS_23 = 2 / np.sqrt(3 * 2)
COS_24 = 1 / np.sqrt(3 * 1)


def test_cosine_similarity_by_hand():
    model = fit(ItemKNN, SESSIONS, {"pop_weight": 0})
    got = real(model.score(Queries.for_items([2, 3, 4])))[:, :3]
    expected = [[0, COS_23, COS_24], [COS_23, 0, 0], [COS_24, 0, 0]]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_shrinkage_and_neighbours():
    shrunk = fit(ItemKNN, SESSIONS, {"pop_weight": 0, "shrinkage": 1.0})
    got = real(shrunk.score(Queries.for_items([2])))[0, :3]
    np.testing.assert_allclose(got, [0, 2 / (np.sqrt(6) + 1), 1 / (np.sqrt(3) + 1)], rtol=1e-6)
    one = fit(ItemKNN, SESSIONS, {"pop_weight": 0, "neighbours": 1})
    np.testing.assert_allclose(real(one.score(Queries.for_items([2])))[0, :3], [0, COS_23, 0])


def test_session_query_weights_recent_items_more():
    model = fit(ItemKNN, SESSIONS, {"pop_weight": 0, "recency_decay": 0.5})
    got = real(model.score(Queries.from_item_lists([[3, 4], [4, 3]])))[:, 0]
    # item 2 from the prefix: the last item counts 1, the one before 0.5
    np.testing.assert_allclose(got, [COS_24 + 0.5 * COS_23, COS_23 + 0.5 * COS_24], rtol=1e-6)


def test_user_query_sums_history_rows_and_user_context():
    users = [2, 2, 3]
    model = fit(ItemKNN, SESSIONS, {"pop_weight": 0}, users=users)
    got = real(model.score(Queries.for_users([2, 3, 4])))[:, :3]
    np.testing.assert_allclose(
        got, [[COS_23, COS_23, COS_24], [COS_24, COS_23, COS_24], [0, 0, 0]], rtol=1e-6
    )  # user 2 holds {2, 3}, user 3 holds {2, 4}, user 4 nothing
    by_user = fit(ItemKNN, SESSIONS, {"pop_weight": 0, "context": "user"}, users=users)
    # user 2 holds {2, 3}, user 3 holds {2, 4}: x2 = (1, 1), x3 = (1, 0), x4 = (0, 1)
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(real(by_user.score(Queries.for_items([2])))[0, :3], [0, s, s])


def test_weighted_cooccurrence_and_pop_prior_breaks_ties():
    model = fit(ItemKNN, [[2, 3], [4, 5], [4]], {"weighted": True}, values=[[2, 1], [1, 1], [1]])
    scores = model.score(Queries.for_items([2, 6]))  # item 6 is never seen: prior only
    assert scores[0, 3] > 0.99
    assert scores[1].argmax() == 4  # the most popular item
    assert np.all(scores[1, 2:] <= 1e-6)


def test_cosine_neighbours_blocks_match_dense():
    rng = np.random.default_rng(1)
    x = sp.random(40, 30, density=0.2, random_state=2, format="csr")
    x.data[:] = rng.integers(1, 4, size=x.nnz)
    got = cosine_neighbours(x, neighbours=30, shrinkage=0.5).toarray()
    dense = x.toarray()
    norms = np.linalg.norm(dense, axis=0)
    expected = dense.T @ dense / (np.outer(norms, norms) + 0.5)
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------- rules
def test_sequential_rules_by_hand():
    train = interactions([[2, 3, 4], [5], [6]])
    rules = sequential_rules(train, N_ITEMS, step_weights(2, "div")).toarray()
    expected = np.zeros((N_ITEMS, N_ITEMS))
    expected[2, 3], expected[2, 4], expected[3, 4] = 1.0, 0.5, 1.0
    np.testing.assert_array_equal(rules, expected)  # no rule across sessions (4 -> 5 -> 6)


def test_step_weights():
    np.testing.assert_allclose(step_weights(3, "div"), [1, 1 / 2, 1 / 3])
    np.testing.assert_allclose(step_weights(3, "linear"), [0.9, 0.8, 0.7])
    np.testing.assert_allclose(step_weights(2, "same"), [1, 1])


def test_sr_and_markov_scores():
    sessions = [[2, 3, 4], [2, 3], [2, 5]]
    sr = fit(SequentialRules, sessions, {"max_steps": 2, "pop_weight": 0})
    np.testing.assert_allclose(
        real(sr.score(Queries.for_items([2])))[0, :4], [0, 2, 0.5, 1], rtol=1e-6
    )
    mc = fit(MarkovChain, sessions, {"pop_weight": 0})
    np.testing.assert_allclose(real(mc.score(Queries.for_items([2])))[0, :4], [0, 2, 0, 1])
    pruned = fit(MarkovChain, sessions, {"pop_weight": 0, "pruning": 1})
    np.testing.assert_allclose(real(pruned.score(Queries.for_items([2])))[0, :4], [0, 2, 0, 0])
    # a session query reads the rules of its last item only
    q = Queries.from_item_lists([[5, 3], [3, 2]])
    np.testing.assert_allclose(real(sr.score(q))[:, :4], [[0, 0, 1, 0], [0, 2, 0.5, 1]])


def test_rules_fall_back_to_popularity():
    model = fit(SequentialRules, [[2, 3], [3, 4], [3]])
    q = Queries.from_item_lists([[4], [], [1]])  # no rule from 4, empty prefix, unknown item
    scores = model.score(q)
    assert np.all(scores.argmax(axis=1) == 3)  # the most popular item
    np.testing.assert_allclose(scores[:, 2:5], [[1e-6 / 3, 1e-6, 1e-6 / 3]] * 3, rtol=1e-5)


def test_unsupported_user_queries_name_the_supported_kinds():
    model = fit(SequentialRules, [[2, 3]])
    with pytest.raises(ValueError, match=r"cannot score 'user' queries; it supports \['item', "):
        model.score(Queries.for_users([2]))


# ---------------------------------------------------------------------- sparse helpers
def test_top_k_per_row_matches_brute_force():
    rng = np.random.default_rng(0)
    dense = rng.integers(0, 4, size=(30, 12)).astype(float)  # many ties
    dense[rng.random(dense.shape) < 0.4] = 0
    for k in (1, 3, 12):
        got = top_k_per_row(sp.csr_matrix(dense), k).toarray()
        for r in range(dense.shape[0]):
            nz = np.flatnonzero(dense[r])
            keep = sorted(nz, key=lambda c, r=r: (-dense[r, c], c))[:k]
            expected = np.zeros(dense.shape[1])
            expected[keep] = dense[r, keep]
            np.testing.assert_array_equal(got[r], expected)


def test_drop_reserved_and_prior():
    m = sp.csr_matrix(np.ones((3, 4)))
    np.testing.assert_array_equal(
        drop_reserved(m, rows=True, cols=True).toarray(), [[0] * 4, [0] * 4, [0, 0, 1, 1]]
    )
    np.testing.assert_array_equal(popularity_prior(np.array([5, 5, 2, 4])), [0, 0, 0.5, 1])
    np.testing.assert_array_equal(popularity_prior(np.zeros(4)), np.zeros(4))
