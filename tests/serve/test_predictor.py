"""The predictor alone (no BentoML): every request kind, unknown ids, strategies, limits.

Planted data (tests/contract/planted.py, ids ``i<index>`` / ``u<index>``): item 2 is the
most popular, users 2-7 like items 4-7 and users 8-13 items 8-11, item 12 (A) is always
followed by item 13 (B), items 14-17 never occur in train.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from recpipe.config import ServeParams
from recpipe.errors import ArtifactError, RequestError
from recpipe.features.idmap import N_RESERVED
from recpipe.serve.bundle import SEEN_FILE, read_info
from recpipe.serve.index import faiss_available
from recpipe.serve.predictor import Predictor
from recpipe.serve.schemas import SessionRequest
from tests.serve.helpers import INFO, item_id, make_bundle, user_id

FAST_CONTENT2VEC = {
    "epochs": 10,
    "batch_size": 64,
    "temperature": 0.3,
    "id_dim": 8,
    "seed": 0,
}


@pytest.fixture(scope="module")
def mf(tmp_path_factory) -> Predictor:
    return Predictor.from_artifact(make_bundle(tmp_path_factory.mktemp("mf") / "bundle"))


def ids(indices) -> list[str]:
    return [item_id(i) for i in indices]


def test_known_user_gets_the_model_without_seen_items(mf: Predictor) -> None:
    user = 3
    seen = mf.seen.indices[mf.seen.indptr[user] : mf.seen.indptr[user + 1]]
    answer = mf.recommend(user_id(user), k=10)
    assert answer.strategy == "model" and answer.reason == "the model scores this request"
    assert len(answer.items) == min(10, mf.model.meta.n_real_items - len(seen))
    assert not set(answer.items) & set(ids(seen))
    assert answer.scores == sorted(answer.scores, reverse=True)
    everything = mf.recommend(user_id(user), k=10, exclude_seen=False)
    assert set(everything.items) & set(ids(seen))


def test_unknown_user_is_answered_from_the_context(mf: Predictor) -> None:
    assert mf.recommend("someone-new", k=5).strategy == "popularity"
    assert mf.recommend("someone-new", k=5).items[0] == item_id(2)  # the popular item
    by_type = mf.recommend("someone-new", k=5, context={"event_type": "cart"})
    assert by_type.strategy == "context_popularity"
    timed = mf.recommend("x", k=5, context={"timestamp": "2024-03-01T10:00:00+02:00"})
    assert timed.strategy == "context_popularity"
    recent = mf.recommend("someone-new", k=5, context={"items": ids([4, 5])})
    assert recent.strategy == "item_aggregate"
    # each answer says why its strategy answered
    assert "nothing in the request is known" in mf.recommend("someone-new", k=5).reason
    assert recent.reason.startswith("unknown user") and by_type.reason.endswith("categories)")
    assert not {item_id(4), item_id(5)} & set(recent.items)  # exclude_seen: the context's
    assert {item_id(6), item_id(7)} <= set(recent.items[:3])  # their block comes first


def test_sessions_route_by_what_they_know(mf: Predictor) -> None:
    a_then = mf.recommend_session(ids([12]), k=3)
    assert a_then.strategy == "item_aggregate" and a_then.items[0] == item_id(13)
    assert item_id(12) not in a_then.items  # the session's own items are left out
    assert item_id(12) in mf.recommend_session(ids([12]), k=3, exclude_seen=False).items
    assert mf.recommend_session([], k=3).strategy == "popularity"
    assert mf.recommend_session(["nope", "zzz"], k=3).strategy == "popularity"
    typed = mf.recommend_session(["nope"], event_types=["view"], k=3)
    assert typed.strategy == "context_popularity"
    mixed = mf.recommend_session(["nope", item_id(12)], timestamps=[0, 60], k=3)
    assert mixed.strategy == "item_aggregate" and mixed.items[0] == item_id(13)


def test_the_item_index_ranks_like_the_cold_start_policy(mf: Predictor) -> None:
    sessions = [[12], [4, 5], [9, 10, 11], [3, 16]]
    requests = [SessionRequest(items=ids(s), k=6) for s in sessions]
    answers = mf.recommend_sessions(requests)
    items = np.zeros((len(sessions), 3), dtype=np.int64)
    for row, s in enumerate(sessions):
        items[row, 3 - len(s) :] = s
    from recpipe.models.data import Queries

    scores = mf.policy.sessions(Queries.for_sessions(items)).scores
    for row, (s, answer) in enumerate(zip(sessions, answers, strict=True)):
        scores[row, s] = -np.inf
        want = np.argsort(-scores[row], kind="stable")[:6]
        np.testing.assert_allclose(answer.scores, scores[row, want], rtol=1e-5, atol=1e-6)
        assert answer.strategy == "item_aggregate"


def test_a_batch_answers_like_single_requests(mf: Predictor) -> None:
    requests = [
        SessionRequest(items=ids([12]), k=4),
        SessionRequest(items=["nope"], event_types=["purchase"], k=2),
        SessionRequest(items=ids([8, 9]), timestamps=[1_700_000_000, 1_700_000_100], k=5),
        SessionRequest(items=[], k=3),
    ]
    batch = mf.recommend_sessions(requests)
    single = [mf.recommend_sessions([r])[0] for r in requests]
    assert batch == single
    assert [len(a.items) for a in batch] == [4, 2, 5, 3]


def test_similar_items(mf: Predictor) -> None:
    answer = mf.similar(item_id(4), k=3)
    assert answer.strategy == "item_similarity" and item_id(4) not in answer.items
    assert set(answer.items) <= set(ids([5, 6, 7, 2, 12, 13]))
    assert mf.similar("unknown-item", k=3).strategy == "popularity"
    assert mf.similar(metadata={"title": "steel pan"}, k=3).strategy == "popularity"
    assert mf.similar(item_id(4), metadata={"title": "x"}, k=3).strategy == "item_similarity"


def test_limits_and_inconsistent_requests_raise_request_errors(mf: Predictor) -> None:
    with pytest.raises(RequestError, match="k: may be at most 10") as err:
        mf.recommend(user_id(3), k=11)
    assert err.value.field == "k"
    with pytest.raises(RequestError, match="items: may hold at most 8"):
        mf.recommend_session(ids([4] * 9), k=3)
    with pytest.raises(RequestError, match=r"context\.items"):
        mf.recommend("u", k=3, context={"items": ids([4] * 9)})
    with pytest.raises(RequestError, match="item_id"):
        mf.similar(k=3)
    with pytest.raises(ValidationError, match="event_types has 1 entries"):
        mf.recommend_session(ids([4, 5]), event_types=["view"], k=3)
    with pytest.raises(ValidationError):
        mf.recommend_session(ids([4]), event_types=["teleport"], k=3)


def test_info_names_model_lineage_index_and_limits(mf: Predictor) -> None:
    info = mf.info()
    assert info["name"] == "mf_bpr" and info["split"] == "planted"
    for key in ("registry_version", "data_hash", "git_commit", "registered_model", "source"):
        assert info[key] == INFO[key]
    assert info["metrics"] == INFO["metrics"]
    assert info["n_items"] == mf.model.meta.n_items - N_RESERVED
    assert info["index"]["kind"] == "exact"
    assert info["limits"] == {"max_k": 10, "max_session_length": 8}
    assert info["fallback"] == "context_pop" and info["content_attributes"] is None


def test_bundles_are_checked_and_seen_items_are_optional(tmp_path) -> None:
    with pytest.raises(ArtifactError, match="not a serving bundle"):
        read_info(tmp_path)
    bundle = make_bundle(tmp_path / "b", fallback="pop")
    (bundle / SEEN_FILE).unlink()
    predictor = Predictor.from_artifact(bundle)
    assert predictor.seen is None
    assert predictor.recommend(user_id(3), k=5).strategy == "model"
    assert predictor.recommend("new", k=5, context={"event_type": "view"}).strategy == (
        "popularity"  # plain popularity cannot use context
    )


def test_a_session_model_scores_sessions_and_items_itself(tmp_path) -> None:
    predictor = Predictor.from_artifact(make_bundle(tmp_path / "b", "markov", {}))
    assert predictor.index is None
    answer = predictor.recommend_session(ids([12]), k=3)
    assert answer.strategy == "model" and answer.items[0] == item_id(13)
    assert predictor.similar(item_id(12), k=3).strategy == "model"
    # markov has no user scoring: a known user without context gets the fallback
    assert predictor.recommend(user_id(3), k=3).strategy == "popularity"


def test_a_content_model_answers_new_items_by_their_metadata(tmp_path) -> None:
    predictor = Predictor.from_artifact(
        make_bundle(tmp_path / "b", "content2vec", FAST_CONTENT2VEC)
    )
    assert predictor.info()["content_attributes"] == ["price"]
    new = predictor.similar(
        metadata={"title": "steel kitchen pan", "categories": ["kitchen"], "attributes": {}},
        k=4,
    )
    assert new.strategy == "content"
    assert len(set(new.items) & set(ids([4, 5, 6, 7]))) >= 3
    assert predictor.recommend_session(ids([12]), k=3).strategy == "model"
    with pytest.raises(RequestError, match=r"unknown attribute\(s\) \['colour'\]"):
        predictor.similar(metadata={"attributes": {"colour": 1.0}}, k=3)


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed (extra ann)")
def test_ann_and_int8_settings_build_a_faiss_index(tmp_path) -> None:
    serve = ServeParams(ann_min_items=1, quantize="int8", max_k=10, max_session_length=8)
    predictor = Predictor.from_artifact(make_bundle(tmp_path / "b", serve=serve))
    assert predictor.info()["index"]["kind"] == "faiss-ivf"
    assert predictor.info()["index"]["quantize"] == "int8"
    answer = predictor.recommend_session(ids([12]), k=3)
    assert answer.strategy == "item_aggregate" and answer.items[0] == item_id(13)
    assert predictor.similar(item_id(4), k=3).strategy == "item_similarity"


def test_a_sasrec_champion_answers_users_sessions_and_items_itself(tmp_path) -> None:
    config = {"hidden": 16, "blocks": 1, "max_len": 8, "batch_size": 8, "epochs": 30}
    predictor = Predictor.from_artifact(make_bundle(tmp_path / "b", "sasrec", config))
    assert predictor.recommend(user_id(3), k=5).strategy == "model"  # from its history
    answer = predictor.recommend_session(ids([12]), k=3)
    assert answer.strategy == "model" and item_id(13) in answer.items
    assert predictor.similar(item_id(12), k=3).strategy == "model"
