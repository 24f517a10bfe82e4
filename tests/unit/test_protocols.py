"""Evaluation protocols on the planted data set and tiny hand-made cases."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from recpipe.baselines.markov import MarkovChain
from recpipe.baselines.popularity import Popularity
from recpipe.evaluate.protocols import ProtocolResult, evaluate_model, next_item, user_topk
from recpipe.features.context import EVENT_TYPE_INDEX
from recpipe.models.base import QUERY_KINDS, DataMeta, Interactions, Queries, Recommender
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
