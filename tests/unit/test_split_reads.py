"""Encoded split parts read batch by batch equal the parts read whole."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recpipe.config import load_params
from recpipe.evaluate.protocols import user_topk, user_topk_blocks
from recpipe.models.data import Interactions
from recpipe.models.dataset import load_split, user_blocks
from recpipe.models.registry import build_model
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


@pytest.mark.parametrize("name", ["pop", "itemknn", "mf_bpr"])
def test_user_topk_by_user_blocks_equals_the_whole_test_part(features: Paths, name: str) -> None:
    split = load_split(features.features_dir / "user_temporal")
    train, test, meta = split.parts["train"], split.parts["test"], split.meta
    config = {"epochs": 1} if name == "mf_bpr" else {}
    model = build_model(name, config, meta)
    model.fit(train, split.parts["valid"])
    whole = user_topk(model, train, test, meta, ks=(5, 10), chunk_size=16)
    path = features.features_dir / "user_temporal" / "test.parquet"
    rng = np.random.default_rng(0)
    hashed = rng.permutation(meta.n_users) % 3  # users spread over 3 blocks, not by range
    by_hash = [
        (test.user_idx[m], test.item_idx[m]) for m in (hashed[test.user_idx] == b for b in range(3))
    ]
    for blocks in (
        user_blocks(path, meta.n_users, 1, batch_rows=7),
        user_blocks(path, meta.n_users, 9),
        user_blocks(path, meta.n_users, meta.n_users),
        by_hash,
    ):
        streamed = user_topk_blocks(model, train, blocks, meta, ks=(5, 10), chunk_size=16)
        assert streamed.metrics == whole.metrics
        assert streamed.n_queries == whole.n_queries
        assert streamed.skipped_users == whole.skipped_users
        assert streamed.per_query.keys() == whole.per_query.keys()
        for key, values in whole.per_query.items():
            np.testing.assert_array_equal(streamed.per_query[key], values)


def test_user_blocks_cover_the_part_once_by_user_range(features: Paths) -> None:
    path = features.features_dir / "user_temporal" / "test.parquet"
    test = Interactions.from_parquet(path)
    n_users = int(test.user_idx.max()) + 1
    blocks = list(user_blocks(path, n_users, 5, batch_rows=11))
    assert sum(len(u) for u, _ in blocks) == len(test)
    for users, items in blocks:
        assert users.max() - users.min() < 5
        assert users.min() // 5 == users.max() // 5
        mask = (test.user_idx >= users.min() // 5 * 5) & (test.user_idx < users.min() // 5 * 5 + 5)
        np.testing.assert_array_equal(users, test.user_idx[mask])
        np.testing.assert_array_equal(items, test.item_idx[mask])


def test_a_user_in_two_blocks_is_an_error(features: Paths) -> None:
    split = load_split(features.features_dir / "user_temporal")
    train, test, meta = split.parts["train"], split.parts["test"], split.meta
    model = build_model("pop", {}, meta)
    model.fit(train, None)
    half = len(test) // 2
    blocks = [
        (test.user_idx[:half], test.item_idx[:half]),
        (test.user_idx[half:], test.item_idx[half:]),
    ]
    assert set(test.user_idx[:half]) & set(test.user_idx[half:])
    with pytest.raises(ValueError, match="two test blocks"):
        user_topk_blocks(model, train, blocks, meta)
