"""The gate's measured figures: latency, artifact size, a champion re-evaluated on new ids."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from recpipe.errors import ArtifactError
from recpipe.features.idmap import N_RESERVED
from recpipe.gates import measure
from recpipe.models.data import Queries
from recpipe.models.registry import build_model
from recpipe.paths import Paths
from tests.unit.gate_workspace import SPLIT, write_features


@pytest.fixture(scope="module")
def drops(tmp_path_factory):
    """Two data drops of the same ring: different sessions, so different id maps."""
    old = write_features(Paths.at(tmp_path_factory.mktemp("old")), seed=0)
    new = write_features(Paths.at(tmp_path_factory.mktemp("new")), seed=1)
    return old, new


def test_artifact_size_and_latency(drops, tmp_path):
    (meta, data), _ = drops
    model = build_model("markov", {}, meta).fit(data["train"])
    path = model.save(tmp_path / "markov")
    expected = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20
    assert measure.artifact_size_mb(path) == pytest.approx(expected)
    with pytest.raises(ArtifactError, match="does not exist"):
        measure.artifact_size_mb(tmp_path / "nope")

    requests = measure.single_requests(model, data["test"], 30)
    assert len(requests) == 30 and all(len(q) == 1 and q.kind == "session" for q in requests)
    latency = measure.request_latency(model, requests, k=20)
    assert latency["n"] == 30 and 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]

    user_model = build_model("bias", {}, meta).fit(data["train"])  # user queries only
    requests = measure.single_requests(user_model, data["test"], 5)
    assert all(q.kind == "user" and q.users[0] >= N_RESERVED for q in requests)
    assert measure.request_latency(user_model, requests, k=5)["n"] == 5


def test_a_model_on_the_same_maps_is_evaluated_as_it_is(drops):
    (meta, data), _ = drops
    model = build_model("markov", {}, meta).fit(data["train"])
    scorer, remapped = measure.fit_to_split(model, meta)
    assert scorer is model and not remapped
    metrics, remapped = measure.split_metrics(model, SPLIT, data, meta, [20], "recall@20")
    assert not remapped and metrics["recall@20"] > 0.8  # the ring is nearly deterministic
    assert {"mrr@20", "ndcg@20"} <= set(metrics)


def test_a_champion_from_another_data_drop_is_scored_through_its_own_maps(drops):
    (old_meta, old_data), (new_meta, new_data) = drops
    assert old_meta.item_map != new_meta.item_map  # the index orders differ
    champion = build_model("markov", {}, old_meta).fit(old_data["train"])
    got, remapped = measure.split_metrics(champion, SPLIT, new_data, new_meta, [20], "recall@20")
    retrained = build_model("markov", {}, new_meta).fit(new_data["train"])
    fresh, _ = measure.split_metrics(retrained, SPLIT, new_data, new_meta, [20], "recall@20")
    assert remapped and got["recall@20"] == pytest.approx(fresh["recall@20"], abs=0.1)

    # the ring's successor of i05 is i06, whatever index each map gives them
    wrapped = measure.RemappedModel(champion, new_meta)
    items = new_meta.item_map
    scores = wrapped.score(Queries.from_item_lists([items.encode(["i05"]).tolist()]))
    assert scores.shape == (1, new_meta.n_items)
    assert items.decode([int(np.argmax(scores[0]))])[0] == "i06"
    assert np.all(np.isneginf(scores[0, :N_RESERVED]))


def test_a_champion_without_id_maps_cannot_be_matched(drops):
    (meta, data), (new_meta, _) = drops
    bare = replace(meta, item_map=None, user_map=None, item_content=None, item_encoder=None)
    model = build_model("markov", {}, bare).fit(data["train"])
    with pytest.raises(ArtifactError, match="carries no id maps"):
        measure.fit_to_split(model, new_meta)


def test_a_champion_with_other_gap_buckets_sees_its_own_bucketing() -> None:
    from recpipe.features.context import gap_bucket_of
    from recpipe.gates.measure import rebucket_gaps
    from recpipe.models.data import Queries

    s = 1_000_000_000
    items = np.array([[0, 5, 6, 7], [3, 4, 5, 6]])  # left-padded
    ts = np.array([[0, 0, 100 * s, 100_000 * s], [0, 2 * s, 2_000 * s, 9_000_000 * s]])
    real = items != 0
    seconds = np.full(ts.shape, np.nan)
    seconds[:, 1:] = np.where(real[:, 1:] & real[:, :-1], (ts[:, 1:] - ts[:, :-1]) / s, np.nan)
    queries = Queries.for_sessions(
        items, timestamps=ts, gap_bucket=np.where(real, gap_bucket_of(seconds, 16), 0)
    )
    expected = np.where(real, gap_bucket_of(seconds, 4), 0)
    np.testing.assert_array_equal(rebucket_gaps(queries, 4), expected)
    assert not np.array_equal(queries.gap_bucket, expected)  # the two bucketings differ
    # without times: the coarser bucketing caps the finer one
    no_times = Queries.for_sessions(items, gap_bucket=queries.gap_bucket)
    np.testing.assert_array_equal(rebucket_gaps(no_times, 4), np.minimum(queries.gap_bucket, 3))
