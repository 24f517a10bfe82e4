"""A model carries the preprocessing it was trained with: changing ``features.gap_buckets``
after training changes neither the inputs the served model sees nor its answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recpipe import stages
from recpipe.config import load_params
from recpipe.features.context import CONTEXT_COLUMNS, gap_bucket_of
from recpipe.models.data import Queries
from recpipe.models.registry import load_model
from recpipe.paths import Paths
from recpipe.pipeline import run_stage
from tests.pipeline.conftest import SMALL

pytestmark = pytest.mark.slow

pytest.importorskip("bentoml")

MODEL, SPLIT, TRAINED_G, CURRENT_G = "gru4rec_ctx", "session", 4, 16
BASE = [
    *SMALL,
    "sessions.splits=[session]",
    "train.splits=[session]",
    f"train.candidates=[{MODEL}]",
    "train.model_splits={}",
    "gate.registered_model=skew",
]


def _session_query(encoded: pd.DataFrame, length: int) -> tuple[pd.DataFrame, Queries]:
    """The first ``length`` events of the first test session of that length, as trained."""
    sizes = encoded.groupby("session_id", sort=False).size()
    session = sizes[sizes >= length].index[0]
    rows = encoded[encoded["session_id"] == session].head(length)
    queries = Queries.for_sessions(
        rows["item_idx"].to_numpy()[None, :],
        timestamps=pd.to_datetime(rows["timestamp"], utc=True)
        .dt.tz_localize(None)
        .to_numpy("datetime64[ns]")
        .view(np.int64)[None, :],
        **{c: rows[c].to_numpy()[None, :] for c in CONTEXT_COLUMNS},
    )
    return rows, queries


def test_serving_uses_the_gap_buckets_the_model_was_trained_with(tmp_path) -> None:
    import bentoml

    from recpipe.serve.predictor import Predictor

    paths = Paths.at(tmp_path)
    trained = load_params(None, [*BASE, f"features.gap_buckets={TRAINED_G}"])
    for name in ("ingest", "validate", "sessions", "features"):
        run_stage(name, trained, paths)
    run_stage("train", trained, paths, model=MODEL)
    artifact = paths.model_dir(MODEL) / SPLIT
    model = load_model(artifact)
    assert model.meta.gap_buckets == TRAINED_G  # recorded in the artifact

    # the gate's candidate is what a first run packages (no champion yet)
    paths.gate_json.write_text(
        json.dumps(
            {
                "passed": False,
                "reasons": ["test"],
                "candidate": {"model": MODEL, "split": SPLIT, "artifact": paths.rel(artifact)},
            }
        )
    )
    current = load_params(None, [*BASE, f"features.gap_buckets={CURRENT_G}"])
    report = stages.package(current, paths)
    assert report["gap_buckets"] == TRAINED_G
    predictor = Predictor.from_artifact(bentoml.models.get(report["model_tag"]).path)
    assert predictor.gap_buckets == TRAINED_G

    encoded = pd.read_parquet(paths.features_dir / SPLIT / "test.parquet")
    raw = pd.read_parquet(paths.split_dir(SPLIT) / "test.parquet")
    rows, expected_query = _session_query(encoded, 4)
    events = raw[raw["session_id"] == rows["session_id"].iloc[0]].head(len(rows))
    seconds = events["timestamp"].diff().dt.total_seconds().to_numpy()
    # the test is only meaningful where the two bucketings disagree on this session
    assert not np.array_equal(gap_bucket_of(seconds, TRAINED_G), gap_bucket_of(seconds, CURRENT_G))

    seen: list[Queries] = []
    score = predictor.model.score

    def spy(queries: Queries, *args, **kwargs):
        seen.append(queries)
        return score(queries, *args, **kwargs)

    predictor.model.score = spy  # type: ignore[method-assign]
    answer = predictor.recommend_session(
        events["item_id"].tolist(),
        event_types=events["event_type"].tolist(),
        timestamps=events["timestamp"].tolist(),
        k=10,
        exclude_seen=False,
    )
    assert answer.strategy == "model" and len(seen) == 1
    n = len(rows)
    for column in ("gap_bucket", "event_type_idx", "hour", "dow"):
        served = np.asarray(getattr(seen[0], column))[0, -n:]
        np.testing.assert_array_equal(served, rows[column].to_numpy(), err_msg=column)

    as_trained = model.score(expected_query)[0]
    as_trained[:2] = -np.inf  # reserved slots never come back
    top = np.argsort(-as_trained, kind="stable")[:10]
    assert answer.items == model.meta.item_map.decode(top).tolist()
