"""The cold-start policy: every request is routed, answered and labelled, never raised on."""

from __future__ import annotations

import numpy as np
import pytest

from recpipe.features.idmap import N_RESERVED, PAD, UNK
from recpipe.models.coldstart import STRATEGIES, ColdStartPolicy
from recpipe.models.data import Queries
from recpipe.models.embedding import aggregate_items
from recpipe.models.registry import build_model
from tests.unit.test_content_models import (
    FAST,
    N_ITEMS,
    N_USERS,
    NO_EVENTS_USER,
    group_items,
    group_users,
    grouped,
    items_frame,
)


@pytest.fixture(scope="module")
def data():
    return grouped()


@pytest.fixture(scope="module")
def fitted(data):
    train, valid, meta = data
    models = {
        "mf_bpr": build_model("mf_bpr", {"epochs": 5, "factors": 8}, meta),
        "pop": build_model("pop", {}, meta),
        "context_pop": build_model("context_pop", {}, meta),
        "content2vec": build_model("content2vec", FAST["content2vec"], meta),
    }
    return {name: model.fit(train, valid) for name, model in models.items()}


def unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, n, out=np.zeros_like(v), where=n > 0)


def check(routed, n_rows: int) -> None:
    assert routed.scores.shape == (n_rows, N_ITEMS)
    assert routed.scores.dtype == np.float32
    assert np.all(np.isneginf(routed.scores[:, :N_RESERVED]))
    assert np.all(np.isfinite(routed.scores[:, N_RESERVED:]))
    assert set(routed.strategy) <= set(STRATEGIES)


def test_users_known_unknown_and_out_of_range(fitted):
    mf = fitted["mf_bpr"]
    policy = ColdStartPolicy(mf, fitted["context_pop"])
    known = int(group_users(0)[0])
    request = np.full((5, 2), PAD)
    request[2] = group_items(1)[:2]
    users = np.array([known, UNK, UNK, NO_EVENTS_USER + 50, -3])
    routed = policy.users(users, request)
    check(routed, 5)
    # no request items and no context: even context_pop can only rank by popularity
    expected = ["model", "popularity", "item_aggregate", "popularity", "popularity"]
    assert routed.strategy.tolist() == expected
    np.testing.assert_allclose(routed.scores[0], mf.score(Queries.for_users([known]))[0])
    vectors = unit(mf.item_vectors())
    np.testing.assert_allclose(
        routed.scores[2, N_RESERVED:],
        (aggregate_items(vectors, request[2:3], 0.8) @ vectors.T)[0, N_RESERVED:],
        rtol=1e-5,
        atol=1e-6,
    )
    # the unknown user with group-1 items in the request gets group-1 items first
    top = np.argsort(-routed.scores[2])[:4]
    assert np.isin(top, group_items(1)).mean() >= 0.75


def test_context_makes_the_fallback_contextual(fitted):
    policy = ColdStartPolicy(fitted["mf_bpr"], fitted["context_pop"])
    routed = policy.users(np.array([UNK]), None, {"hour": np.array([[9]])})
    assert routed.strategy.tolist() == ["context_popularity"]
    plain = ColdStartPolicy(fitted["mf_bpr"], fitted["pop"]).users(np.array([UNK]))
    assert plain.strategy.tolist() == ["popularity"]
    check(routed, 1)
    with pytest.raises(ValueError, match="unknown context column"):
        policy.users(np.array([UNK]), None, {"weather": np.array([[1]])})


def test_sessions_go_to_a_session_model_or_the_item_aggregate(fitted):
    items = [[int(group_items(2)[0])], [], [UNK, 10**6, -1]]
    queries = Queries.from_item_lists(items, max_len=3)
    for name, expected in (("content2vec", "model"), ("mf_bpr", "item_aggregate")):
        routed = ColdStartPolicy(fitted[name], fitted["pop"]).sessions(queries)
        check(routed, 3)
        assert routed.strategy.tolist() == [expected, "popularity", "popularity"]
    np.testing.assert_allclose(
        ColdStartPolicy(fitted["content2vec"], fitted["pop"]).sessions(queries).scores[:1],
        fitted["content2vec"].score(queries.take(slice(0, 1))),
    )


def test_similar_items_and_unknown_items(fitted):
    item = int(group_items(0)[0])
    for name, expected in (("content2vec", "model"), ("mf_bpr", "item_similarity")):
        routed = ColdStartPolicy(fitted[name], fitted["pop"]).similar(
            np.array([item, UNK, PAD, 10**6, -7])
        )
        check(routed, 5)
        assert routed.strategy.tolist() == [expected] + ["popularity"] * 4
    pop_scores = fitted["pop"].score(Queries.from_item_lists([[]], max_len=1))[0]
    np.testing.assert_allclose(routed.scores[1], pop_scores)


def test_new_items_are_embedded_by_the_content_model(fitted, data):
    _, _, meta = data
    new = meta.item_encoder.transform(
        items_frame(np.array([901, 902]), np.array([2, 0]), np.random.default_rng(3))
    )
    policy = ColdStartPolicy(fitted["mf_bpr"], fitted["pop"], content=fitted["content2vec"])
    routed = policy.similar_to_content(new)
    check(routed, 2)
    assert routed.strategy.tolist() == ["content", "content"]
    assert np.isin(np.argsort(-routed.scores[0])[:4], group_items(2)).mean() >= 0.75
    assert np.isin(np.argsort(-routed.scores[1])[:4], group_items(0)).mean() >= 0.75
    empty = meta.item_content  # reserved rows: no content at all
    rows = ColdStartPolicy(fitted["content2vec"], fitted["pop"]).similar_to_content(empty)
    assert rows.strategy[0] == "popularity" and rows.strategy[N_RESERVED] == "content"
    without = ColdStartPolicy(fitted["mf_bpr"], fitted["pop"]).similar_to_content(new)
    assert without.strategy.tolist() == ["popularity", "popularity"]
    assert routed.counts() == {"content": 2}


def test_the_fallback_must_score_sessions_of_the_same_catalogue(fitted, data):
    with pytest.raises(ValueError, match="must score 'session' queries"):
        ColdStartPolicy(fitted["pop"], fitted["mf_bpr"])
    assert N_USERS > NO_EVENTS_USER


def test_session_scorer_scores_like_the_policy_with_candidates(fitted):
    from recpipe.models.coldstart import SessionScorer

    policy = ColdStartPolicy(fitted["mf_bpr"], fitted["pop"])
    scorer = SessionScorer(policy)
    queries = Queries.from_item_lists([[int(group_items(0)[0])], []], max_len=2)
    full = scorer.score(queries)
    np.testing.assert_array_equal(full, policy.sessions(queries).scores)
    cand = np.array([2, 5, 7])
    np.testing.assert_array_equal(scorer.score(queries, cand), full[:, cand])
    np.testing.assert_array_equal(
        scorer.score(queries, np.array([[2, 3], [4, 5]])), [full[0, [2, 3]], full[1, [4, 5]]]
    )
    assert scorer.query_kinds == {"session"} and scorer.name == "mf_bpr"
