"""Encoded split parts read batch by batch equal the parts read whole."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recpipe.config import load_params
from recpipe.models.data import Interactions
from recpipe.paths import Paths
from recpipe.pipeline import run_stage
from recpipe.sessions.parts import PART_NAMES

SMALL = [
    "synth.n_users=80",
    "synth.n_items=60",
    "synth.n_categories=5",
    "synth.n_sessions=400",
    "synth.days=6",
    "sessions.splits=[session, user_temporal]",
]


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Paths:
    """The features stage's output on a small synthetic log."""
    paths = Paths.at(tmp_path_factory.mktemp("ws"))
    params = load_params(None, SMALL)
    for stage in ("ingest", "validate", "sessions", "features"):
        run_stage(stage, params, paths)
    return paths


def assert_same(a: Interactions, b: Interactions) -> None:
    for f in fields(Interactions):
        if f.name.startswith("_"):
            continue
        left, right = getattr(a, f.name), getattr(b, f.name)
        assert left.dtype == right.dtype, f.name
        np.testing.assert_array_equal(left, right, err_msg=f.name)


@pytest.mark.parametrize("batch_rows", [1, 3, 100, 1 << 20])
def test_from_parquet_by_batches_equals_the_whole_frame(features: Paths, batch_rows: int) -> None:
    for kind in ("session", "user_temporal"):
        for part in PART_NAMES:
            path = features.features_dir / kind / f"{part}.parquet"
            whole = Interactions.from_frame(pd.read_parquet(path))
            assert_same(Interactions.from_parquet(path, batch_rows=batch_rows), whole)


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "session_id": pd.Series(["a", "a", "b", "b", "b", "c"], dtype="str"),
            "user_idx": np.array([2, 2, 3, 3, 3, 1], np.int32),
            "item_idx": np.array([5, 6, 5, 7, 8, 1], np.int32),
            "timestamp": pd.to_datetime([3, 4, 1, 2, 2, 0], unit="s", utc=True),
            "value": np.array([1, 2, 3, 4, 5, 6], np.float32),
        }
    )


def test_from_parquet_without_context_columns_fills_defaults(tmp_path: Path) -> None:
    frame = _frame()
    frame.to_parquet(tmp_path / "p.parquet", index=False)
    for batch_rows in (1, 2, 10):
        read = Interactions.from_parquet(tmp_path / "p.parquet", batch_rows=batch_rows)
        assert_same(read, Interactions.from_frame(frame))
        assert read.offsets.tolist() == [0, 2, 5, 6]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.assign(session_id=f["session_id"].where(f.index != 5)), "null"),
        (lambda f: f.assign(session_id=["a", "a", "b", "b", "a", "c"]), "grouped by session"),
        (lambda f: f.assign(timestamp=f["timestamp"].iloc[[0, 1, 3, 2, 4, 5]].to_numpy()), "time"),
        (lambda f: f.drop(columns=["user_idx"]), "lacks column"),
    ],
)
def test_from_parquet_breaks_the_same_rules_as_from_frame(
    tmp_path: Path, change: object, message: str
) -> None:
    frame = change(_frame())  # type: ignore[operator]
    frame.to_parquet(tmp_path / "p.parquet", index=False)
    with pytest.raises(ValueError, match=message):
        Interactions.from_frame(frame)
    for batch_rows in (1, 4):
        with pytest.raises(ValueError, match=message):
            Interactions.from_parquet(tmp_path / "p.parquet", batch_rows=batch_rows)
