"""Evaluation protocols on the planted data set and tiny hand-made cases."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from recpipe.baselines.markov import MarkovChain
from recpipe.baselines.popularity import Popularity
from recpipe.evaluate.cold import cold_items, cold_users
from recpipe.evaluate.common import ProtocolResult
from recpipe.evaluate.protocols import cold_start, evaluate_model, next_item, user_topk
from recpipe.features.context import EVENT_TYPE_INDEX
from recpipe.features.idmap import UNK
from recpipe.models.base import Recommender
from recpipe.models.data import QUERY_KINDS, DataMeta, Interactions, Queries
from tests.contract.planted import encoded_frame, interactions, planted

PURCHASE = EVENT_TYPE_INDEX["purchase"]


class _TestModel(Recommender):
    """Base of the test-only models: no state to save."""

    name: ClassVar[str] = "test"
    query_kinds: ClassVar[frozenset[str]] = QUERY_KINDS

    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        pass

    def _save_state(self, path: Path) -> None:
        pass

    def _load_state(self, path: Path) -> None:
        pass


class Oracle(_TestModel):
    """Scores the true answer highest: the next item (by the prefix's last timestamp)
    for session queries, the user's test items for user queries."""

    name: ClassVar[str] = "oracle"

    def __init__(self, meta: DataMeta, test: Interactions) -> None:
        super().__init__(None, meta)
        nxt = np.flatnonzero(np.diff(test.session_index) == 0)  # event followed in-session
        self.next_by_time = dict(
            zip(test.timestamp[nxt].tolist(), test.item_idx[nxt + 1].tolist(), strict=True)
        )
        self.user_items = test.user_item_matrix(meta.n_users, meta.n_items).toarray()

    def _score(self, queries: Queries) -> np.ndarray:
        out = np.zeros((len(queries), self.meta.n_items), dtype=np.float32)
        if queries.kind == "user":
            return out + self.user_items[queries.users]
        targets = [self.next_by_time[t] for t in queries.timestamps[:, -1].tolist()]
        out[np.arange(len(queries)), targets] = 1.0
        return out


class Constant(_TestModel):
    """The same score for every item."""

    name: ClassVar[str] = "constant"

    def _score(self, queries: Queries) -> np.ndarray:
        return np.zeros((len(queries), self.meta.n_items), dtype=np.float32)


class UserOnly(Constant):
    name: ClassVar[str] = "user_only"
    query_kinds: ClassVar[frozenset[str]] = frozenset({"user"})


class SessionOnly(Constant):
    name: ClassVar[str] = "session_only"
    query_kinds: ClassVar[frozenset[str]] = frozenset({"session", "item"})


class Scripted(_TestModel):
    """Scores set by the test: one row per user for user queries, one row for every
    session query; records the queries it is asked."""

    name: ClassVar[str] = "scripted"

    def __init__(
        self, meta: DataMeta, user_scores: dict[int, list[float]], session_scores: list[float]
    ) -> None:
        super().__init__(None, meta)
        self.user_scores = {u: np.asarray(v, dtype=np.float32) for u, v in user_scores.items()}
        self.session_scores = np.asarray(session_scores, dtype=np.float32)
        self.asked: list[Queries] = []

    def _score(self, queries: Queries) -> np.ndarray:
        self.asked.append(queries)
        if queries.kind == "user":
            return np.stack([self.user_scores[int(u)] for u in queries.users])
        return np.tile(self.session_scores, (len(queries), 1))


@pytest.fixture(scope="module")
def planted_data() -> tuple[Interactions, Interactions, DataMeta]:
    return planted()


# ---------------------------------------------------------------------- next item
def test_oracle_next_item_is_perfect(planted_data):
    train, test, meta = planted_data
    result = next_item(Oracle(meta, test).fit(train), test, meta, ks=(1, 5))
    assert isinstance(result, ProtocolResult)
    assert result.protocol == "next_item"
    assert result.n_queries == len(test) - test.n_sessions
    for key in ("recall@1", "mrr@1", "recall@5", "mrr@5", "ndcg@5", "hitrate@5"):
        assert result.metrics[key] == 1.0, key
    assert set(result.per_query) == {
        f"{m}@{k}" for m in ("hitrate", "recall", "mrr", "ndcg") for k in (1, 5)
    }
    assert 0 < result.metrics["coverage@1"] <= 1
    assert "popularity_bias@5" in result.metrics


def test_constant_model_ranks_every_target_last(planted_data):
    train, test, meta = planted_data
    result = next_item(Constant(None, meta).fit(train), test, meta, ks=(5, 10))
    for key in ("recall@10", "mrr@10", "ndcg@10", "mrr@5"):
        assert result.metrics[key] == 0.0, key


def test_popularity_and_markov_hand_checked():
    # train counts: item 2: 1, item 3: 3, item 4: 1, item 5: 0; transitions 2->3, 3->3, 3->4
    train = interactions([[2, 3, 3], [3, 4]])
    meta = DataMeta.from_interactions(train, n_items=6, n_users=4)
    test = interactions([[3, 2, 4]])  # targets: 2 after [3], 4 after [3, 2]
    pop = next_item(Popularity({}, meta).fit(train), test, meta, ks=(1, 3))
    # target 2: item 3 above, item 4 tied (conservative) -> rank 3; target 4: same
    np.testing.assert_allclose(pop.per_query["mrr@3"], [1 / 3, 1 / 3])
    assert pop.metrics["recall@1"] == 0.0 and pop.metrics["recall@3"] == 1.0
    assert pop.metrics["coverage@1"] == 0.25  # every list starts with item 3, of 4 items
    markov = next_item(MarkovChain({}, meta).fit(train), test, meta, ks=(1, 3))
    # after 3: rules 3->3 and 3->4 (1 each) beat 2 -> rank 3;
    # after 2: rule 2->3 first, then the prior: 4 ties with 2 (count 1) -> rank 3
    np.testing.assert_allclose(markov.per_query["mrr@3"], [1 / 3, 1 / 3])


def test_chunked_equals_unchunked(planted_data):
    train, test, meta = planted_data
    model = MarkovChain({}, meta).fit(train)
    whole = next_item(model, test, meta, chunk_size=10_000)
    parts = next_item(model, test, meta, chunk_size=7)
    assert whole.metrics == parts.metrics
    for key, values in whole.per_query.items():
        np.testing.assert_array_equal(values, parts.per_query[key])
    pop = Popularity({}, meta).fit(train)
    a = user_topk(pop, train, test, meta, chunk_size=10_000)
    b = user_topk(pop, train, test, meta, chunk_size=3)
    assert a.metrics == b.metrics


def test_per_query_aligned_across_models(planted_data):
    train, test, meta = planted_data
    a = next_item(Popularity({}, meta).fit(train), test, meta)
    b = next_item(MarkovChain({}, meta).fit(train), test, meta)
    assert a.n_queries == b.n_queries
    assert {len(v) for v in (*a.per_query.values(), *b.per_query.values())} == {a.n_queries}


def test_slices_and_unknown_targets():
    train = interactions([[2, 3, 4, 5]], users=[2])
    meta = DataMeta.from_interactions(train, n_items=6, n_users=4)
    frame = encoded_frame([[2, 3, 1, 4], [5, 2]], users=[2, 3])
    frame.loc[[1, 5], "event_type_idx"] = PURCHASE  # targets 3 and 2 are purchases
    test = Interactions.from_frame(frame)
    counts = np.array([0, 0, 9, 9, 1, 1])  # items 4, 5 cold (and UNK: count 0)
    result = next_item(
        Oracle(meta, test).fit(train), test, meta, ks=(1,), item_counts=counts, cold_threshold=5
    )
    assert result.n_queries == 4  # targets 3, 1 (UNK), 4, 2
    np.testing.assert_array_equal(result.per_query["recall@1"], [1, 0, 1, 1])  # UNK: a miss
    assert result.slices["purchase"] == {"n": 2.0, **dict.fromkeys(result.per_query, 1.0)}
    cold = result.slices["cold_items"]
    assert cold["n"] == 2.0 and cold["recall@1"] == 0.5  # UNK and item 4


def test_next_item_needs_session_queries(planted_data):
    train, test, meta = planted_data
    with pytest.raises(ValueError, match="user_only"):
        next_item(UserOnly(None, meta).fit(train), test, meta)


# ---------------------------------------------------------------------- user top-K
def test_user_topk_oracle_and_seen_items():
    train = interactions([[2, 3], [4]], users=[2, 3])
    meta = DataMeta.from_interactions(train, n_items=7, n_users=5)
    # user 2: relevant {3, 5} (3 also seen: relevant items are never excluded);
    # user 3: relevant {6}; user 1 (UNK) and user 4 (only an UNK item) are skipped
    test = interactions([[5, 3, 5], [6], [4], [1]], users=[2, 3, 1, 4])
    result = user_topk(Oracle(meta, test).fit(train), train, test, meta, ks=(1, 2))
    assert result.protocol == "user_topk"
    assert result.n_queries == 2 and result.skipped_users == 2
    assert result.metrics["recall@2"] == 1.0 and result.metrics["ndcg@2"] == 1.0
    np.testing.assert_allclose(result.per_query["recall@1"], [0.5, 1.0])
    assert result.slices == {}

    # popularity: counts 2: 1, 3: 1, 4: 1; user 2 saw 2 and 3, user 3 saw 4
    pop = Popularity({}, meta).fit(train)
    seen = user_topk(pop, train, test, meta, ks=(1, 2))
    # user 2: 2 excluded, 3 relevant stays: ties among 3, 4 (count 1) go against 3 -> [4, 3]
    # user 3: 4 excluded; [2, 3] (count 1), then 5, 6 (count 0): misses
    np.testing.assert_allclose(seen.per_query["recall@2"], [0.5, 0.0])
    np.testing.assert_allclose(seen.per_query["mrr@2"], [0.5, 0.0])
    unseen = user_topk(pop, train, test, meta, ks=(1, 2), exclude_seen=False)
    # user 2: [2, 4] (3 relevant sorts after its ties) -> 0 hits
    np.testing.assert_allclose(unseen.per_query["recall@2"], [0.0, 0.0])


# ---------------------------------------------------------------------- dispatch
def test_evaluate_model_dispatch(planted_data):
    train, test, meta = planted_data
    data = {"train": train, "valid": test, "test": test}
    markov = MarkovChain({}, meta).fit(train)
    result = evaluate_model(markov, "session", data, meta, ks=(5,))
    assert result.protocol == "next_item" and "recall@5" in result.metrics
    with pytest.raises(ValueError, match="markov"):
        evaluate_model(markov, "user_temporal", data, meta)
    with pytest.raises(ValueError, match="user_only"):
        evaluate_model(UserOnly(None, meta).fit(train), "session", data, meta)
    for kind in ("user_temporal", "global_temporal", "leave_last_out"):
        got = evaluate_model(Popularity({}, meta).fit(train), kind, data, meta, ks=(10,))
        assert got.protocol == "user_topk" and "map@10" in got.metrics
    with pytest.raises(ValueError, match="unknown split kind"):
        evaluate_model(markov, "random", data, meta)


def test_new_users_slice_counts_sessions_of_unknown_users():
    train = interactions([[2, 3, 4, 5]], users=[2])
    meta = DataMeta.from_interactions(train, n_items=6, n_users=4)
    # the second session belongs to a user unknown in train (UNK = 1)
    test = Interactions.from_frame(encoded_frame([[2, 3, 4], [5, 2]], users=[2, 1]))
    result = next_item(Oracle(meta, test).fit(train), test, meta, ks=(1,))
    assert result.n_queries == 3
    new = result.slices["new_users"]
    assert new["n"] == 1.0 and new["recall@1"] == 1.0


# ---------------------------------------------------------------------- cold start
def cold_items_case() -> tuple[Interactions, Interactions, DataMeta]:
    """Items 2-4 warm (train counts 2, 1, 1), items 5-7 cold (count 0); users 2, 3 warm,
    user 4 in the user map without train events."""
    train = interactions([[2, 3], [4, 2]], users=[2, 3])
    meta = DataMeta.from_interactions(train, n_items=8, n_users=5)
    # user 2: cold test items {5, 6}; user 3: {7}; user 4 (no train event): {5};
    # UNK: {6}; user 3's warm test item 2 is no target
    test = interactions([[5, 3, 6], [7, 2], [5], [6]], users=[2, 3, 4, UNK])
    return train, test, meta


def test_cold_items_ranks_only_the_cold_items():
    train, test, meta = cold_items_case()
    assert meta.item_counts.tolist() == [0, 0, 2, 1, 1, 0, 0, 0]
    scores = {
        # warm items score highest; among cold items: 5 > 7 > 6
        2: [0, 0, 9, 9, 9, 0.9, 0.1, 0.5],
        # every cold item ties: the relevant one (7) goes after 5 and 6
        3: [0, 0, 9, 9, 9, 0.2, 0.2, 0.2],
        4: [0, 0, 9, 9, 9, 0.3, 0.2, 0.1],
    }
    model = Scripted(meta, scores, [0.0] * 8).fit(train)
    result = cold_items(model, test, meta, train=train, ks=(1, 2, 3))
    assert result.protocol == "cold_items" and result.n_queries == 2  # users 2, 3
    np.testing.assert_allclose(result.per_query["recall@1"], [0.5, 0.0])
    np.testing.assert_allclose(result.per_query["recall@2"], [0.5, 0.0])
    np.testing.assert_allclose(result.per_query["recall@3"], [1.0, 1.0])
    ideal2 = 1 + 1 / np.log2(3)  # two relevant items
    np.testing.assert_allclose(result.per_query["ndcg@2"], [1 / ideal2, 0.0])
    np.testing.assert_allclose(result.per_query["ndcg@3"], [(1 + 1 / np.log2(4)) / ideal2, 0.5])
    np.testing.assert_allclose(result.per_query["mrr@3"], [1.0, 1 / 3])
    assert result.metrics["recall@3"] == 1.0
    assert result.metrics["ndcg@3"] == pytest.approx(((1 + 0.5) / ideal2 + 0.5) / 2)
    # top-1 of both users is item 5: one of the three cold items
    assert result.metrics["coverage@1"] == pytest.approx(1 / 3)
    assert result.metrics["coverage@3"] == 1.0
    # without train, user 4 (known index) counts as warm: a third query
    loose = cold_items(model, test, meta, ks=(1,))
    np.testing.assert_allclose(loose.per_query["recall@1"], [0.5, 0.0, 1.0])


def test_cold_items_needs_user_queries_and_cold_items():
    train, test, meta = cold_items_case()
    with pytest.raises(ValueError, match="session_only"):
        cold_items(SessionOnly(None, meta).fit(train), test, meta, train=train)
    warm = DataMeta(n_items=5, n_users=5, item_counts=np.array([0, 0, 2, 1, 1]))
    with pytest.raises(ValueError, match="no cold item"):
        cold_items(Constant(None, warm).fit(train), interactions([[2]], users=[2]), warm)
    with pytest.raises(ValueError, match="no test user has a test event"):
        cold_items(Constant(None, meta).fit(train), interactions([[2, 6]], users=[UNK]), meta)
    unknown = interactions([[2, 6]], users=[UNK])  # a request (2), then a cold item
    with pytest.raises(ValueError, match=r"user_only.*'session' queries"):
        cold_items(UserOnly(None, meta).fit(train), unknown, meta, train=train, given=1)


def test_cold_items_of_unknown_users_are_asked_from_their_first_events():
    train, _, meta = cold_items_case()
    # an anonymous session: item 3 (warm) first, then the cold items 6 and 7
    test = interactions([[3, 6, 7]], users=[UNK])
    scores = [0, 0, 9, 9, 9, 0.9, 0.1, 0.5]  # cold items with a test event: 7 > 6
    model = Scripted(meta, {}, scores).fit(train)
    result = cold_items(model, test, meta, train=train, given=1, ks=(1, 2))
    assert result.n_queries == 1
    np.testing.assert_allclose(result.per_query["recall@1"], [0.5])
    np.testing.assert_allclose(result.per_query["recall@2"], [1.0])
    assert result.metrics["coverage@1"] == 0.5  # item 5 has no test event: no candidate
    asked = model.asked[-1]
    assert asked.kind == "session" and asked.items.tolist() == [[3]]


def cold_users_case() -> tuple[Interactions, DataMeta, np.ndarray]:
    """Test events of unknown users (UNK) with their raw-user keys, and one known user.

    Key 10: first events (in time) 2, 3, UNK, then 4, 5, 3, 6 in a session stored
    first but starting later; key 11: one event; key 12: no known item among its
    first three events.
    """
    hour = 3600 * 10**9
    frame = encoded_frame(
        [[4, 5, 3, 6], [2, 3, 1], [7], [1, 1, 1, 4], [2, 4]],
        users=[UNK, UNK, UNK, UNK, 2],
        start_ns=[5 * hour, 0, hour, 2 * hour, 3 * hour],
    )
    keys = np.repeat([10, 10, 11, 12, -1], [4, 3, 1, 4, 2])
    train = interactions([[2, 3, 4]], users=[2])
    meta = DataMeta.from_interactions(train, n_items=8, n_users=4)
    return Interactions.from_frame(frame), meta, keys


SESSION_SCORES = [0, 0, 0.9, 0.8, 0.7, 0.1, 0.5, 0.6]


def test_cold_users_request_targets_and_metrics():
    test, meta, keys = cold_users_case()
    model = Scripted(meta, {}, SESSION_SCORES).fit(interactions([[2]], users=[2]))
    result = cold_users(model, test, meta, user_keys=keys, given=3, ks=(1, 2, 4))
    assert result.protocol == "cold_users"
    assert result.n_queries == 1 and result.skipped_users == 2  # keys 11 and 12
    # the request: the known items of the first three events, left-padded
    (query,) = model.asked
    assert query.kind == "session"
    assert query.items.tolist() == [[0, 2, 3]]
    assert query.users.tolist() == [UNK]
    assert query.timestamps[0, 0] == 0 and query.timestamps[0, 2] > query.timestamps[0, 1]
    # targets {4, 5, 6}; 2 and 3 (the request) excluded: list 4, 7, 6, 5
    np.testing.assert_allclose(result.per_query["recall@1"], [1 / 3])
    np.testing.assert_allclose(result.per_query["recall@2"], [1 / 3])
    np.testing.assert_allclose(result.per_query["recall@4"], [1.0])
    ideal = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    dcg = 1 + 1 / np.log2(4) + 1 / np.log2(5)
    assert result.metrics["ndcg@4"] == pytest.approx(dcg / ideal)
    assert result.metrics["mrr@4"] == 1.0
    assert "coverage@4" in result.metrics
    # the request's items stay in the list without exclude_given: 2, 3, 4, 7 -> one hit
    kept = cold_users(model, test, meta, user_keys=keys, given=3, ks=(4,), exclude_given=False)
    np.testing.assert_allclose(kept.per_query["recall@4"], [1 / 3])
    # a longer request: 2, 3, UNK, 4 -> targets {5, 6}; list 7, 6, 5 -> ranks 2, 3
    longer = cold_users(model, test, meta, user_keys=keys, given=4, ks=(1, 3))
    np.testing.assert_allclose(longer.per_query["recall@1"], [0.0])
    np.testing.assert_allclose(longer.per_query["recall@3"], [1.0])


def test_cold_users_groups_by_session_without_keys_and_checks_arguments():
    test, meta, keys = cold_users_case()
    model = Scripted(meta, {}, SESSION_SCORES).fit(interactions([[2]], users=[2]))
    # each session of an unknown user is a user: only [4, 5, 3 | 6] has a target
    result = cold_users(model, test, meta, given=3, ks=(2, 3))
    assert result.n_queries == 1 and result.skipped_users == 3
    assert model.asked[-1].items.tolist() == [[4, 5, 3]]
    np.testing.assert_allclose(result.per_query["recall@2"], [0.0])  # list 2, 7, 6
    np.testing.assert_allclose(result.per_query["recall@3"], [1.0])
    with pytest.raises(ValueError, match="user_only"):
        cold_users(UserOnly(None, meta).fit(test), test, meta, user_keys=keys)
    with pytest.raises(ValueError, match="given must be >= 1"):
        cold_users(model, test, meta, user_keys=keys, given=0)
    with pytest.raises(ValueError, match="user_keys must be"):
        cold_users(model, test, meta, user_keys=keys[:-1])
    with pytest.raises(ValueError, match="no unknown test user"):
        cold_users(model, test, meta, user_keys=keys, given=10)


def test_cold_start_combines_the_protocols_and_skips_with_reasons():
    train, test, meta = cold_items_case()
    keys = np.arange(len(test))  # every event its own user: no cold-user target
    scores = {u: [0, 0, 0.5, 0.4, 0.3, 0.9, 0.1, 0.5] for u in (2, 3, 4)}
    model = Scripted(meta, scores, [0.0] * 8).fit(train)
    data = {"train": train, "test": test}
    result = evaluate_model(model, "cold_start", data, meta, ks=(1, 3), test_user_keys=keys)
    assert result.protocol == "cold_start"
    alone = cold_items(model, test, meta, train=train, ks=(1, 3))
    warm = user_topk(model, train, test, meta, ks=(1, 3))
    assert result.metrics["cold_items/recall@3"] == alone.metrics["recall@3"]
    assert result.metrics["recall@3"] == warm.metrics["recall@3"]
    assert result.n_queries == warm.n_queries
    np.testing.assert_array_equal(result.per_query["cold_items/ndcg@3"], alone.per_query["ndcg@3"])
    assert result.slices["cold_items"] == {"n": 2.0, **alone.metrics}
    assert "cold_users" not in result.slices
    assert "no unknown test user" in result.skipped["cold_users"]

    # per-model: a user-only model has no cold_users, a session-only one only cold_users
    frame_test, umeta, ukeys = cold_users_case()
    utrain = interactions([[2, 3, 4]], users=[2])
    session_only = cold_start(
        SessionOnly(None, umeta).fit(utrain),
        utrain,
        frame_test,
        umeta,
        ks=(1, 4),
        given=3,
        user_keys=ukeys,
    )
    # no warm user there: cold_items runs on the unknown users' sessions alone
    assert set(session_only.skipped) == {"user_topk"}
    assert session_only.slices["cold_items"]["n"] >= 1
    assert session_only.n_queries == 0 and "recall@4" not in session_only.metrics
    assert session_only.slices["cold_users"]["n"] == 1.0
    # constant scores: the irrelevant item 7 first, then the three targets of 4 candidates
    assert session_only.metrics["cold_users/recall@1"] == 0.0
    assert session_only.metrics["cold_users/recall@4"] == 1.0
    # a session-only model where no unknown user has a target: nothing runs
    with pytest.raises(ValueError, match=r"no cold_start protocol can run.*cold_users: no unknown"):
        cold_start(SessionOnly(None, meta).fit(train), train, test, meta)
