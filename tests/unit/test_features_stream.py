"""The features stage's streamed encoding equals the whole-part encoding."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recpipe.config import load_params
from recpipe.data.schema import read_tables
from recpipe.features.build import split_features, stream_split_features
from recpipe.features.encode import encode_events, encoding_stats
from recpipe.features.idmap import IdMap
from recpipe.features.stream import count_ids, encode_part_file
from recpipe.paths import Paths
from recpipe.pipeline import run_stage
from recpipe.sessions.parts import PART_NAMES

SMALL = [
    "synth.n_users=80",
    "synth.n_items=60",
    "synth.n_categories=5",
    "synth.n_sessions=400",
    "synth.days=6",
    "sessions.splits=[session, user_temporal, cold_start]",
]


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Paths, object]:
    """The sessions stage's splits of a small synthetic log."""
    paths = Paths.at(tmp_path_factory.mktemp("ws"))
    params = load_params(None, SMALL)
    for stage in ("ingest", "validate", "sessions"):
        run_stage(stage, params, paths)
    return paths, params


def _events(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sessions = np.sort(rng.integers(0, n // 4 + 1, n))
    ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(
        np.sort(rng.integers(0, 10**6, n)), unit="s"
    )
    return pd.DataFrame(
        {
            "user_id": pd.Series([f"u{s % 7}" for s in sessions], dtype="str"),
            "item_id": pd.Series(
                [None if v == 0 else f"i{v}" for v in rng.integers(0, 9, n)], dtype="str"
            ),
            "timestamp": ts,
            "event_type": pd.Series(rng.choice(["view", "click", "purchase"], n), dtype="str"),
            "value": rng.random(n),
            "session_id": pd.Series([f"s{s}" for s in sessions], dtype="str"),
        }
    )


@pytest.mark.parametrize(("batch_rows", "merge_rows"), [(1, 5), (3, 1), (50, 60), (10_000, 1)])
def test_count_ids_gives_the_fitted_map(
    tmp_path: Path, batch_rows: int, merge_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recpipe.features import stream

    monkeypatch.setattr(stream, "_MERGE_ROWS", merge_rows)  # merges along the way too
    events = _events(400, 1)
    path = tmp_path / "train.parquet"
    events.to_parquet(path, index=False)
    counts = count_ids(path, ["item_id", "user_id"], batch_rows)
    for column, min_count in (("item_id", 1), ("item_id", 40), ("user_id", 2)):
        table = counts[column]
        streamed = IdMap.from_counts(table["id"], table["count"], min_count)
        assert streamed == IdMap.fit(events[column], min_count)


@pytest.mark.parametrize("batch_rows", [1, 2, 7, 64, 100_000])
def test_encode_part_file_equals_encode_events(tmp_path: Path, batch_rows: int) -> None:
    events = _events(500, 2)
    # a null session (one event on its own) and a session out of time order
    events.loc[10, "session_id"] = None
    first = events["session_id"] == events.loc[20, "session_id"]
    events.loc[first, "timestamp"] = events.loc[first, "timestamp"].to_numpy()[::-1]
    src, dst = tmp_path / "part.parquet", tmp_path / "enc.parquet"
    pq.write_table(pq.read_table(_write(events, tmp_path / "tmp.parquet")), src, row_group_size=37)
    items = IdMap.fit(events["item_id"].iloc[:300])
    users = IdMap.fit(events["user_id"].iloc[:200])
    stats = encode_part_file(
        src, dst, items, users, 12, keep_user_id=True, batch_rows=batch_rows, row_group_rows=100
    )
    whole = encode_events(pd.read_parquet(src), items, users, 12)
    whole["user_id"] = pd.read_parquet(src)["user_id"]
    pd.testing.assert_frame_equal(pd.read_parquet(dst), whole)
    assert stats == encoding_stats(whole)
    # batches gathered into row groups of >= 100 rows (the last session apart)
    assert 2 <= pq.ParquetFile(dst).num_row_groups <= 6


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path, index=False)
    return path


def test_a_part_not_grouped_by_session_is_encoded_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = _events(300, 3)
    events = events.iloc[np.r_[150:300, 0:150]].reset_index(drop=True)
    events.loc[299, "session_id"] = events.loc[0, "session_id"]  # a session in two runs
    src, dst = _write(events, tmp_path / "part.parquet"), tmp_path / "enc.parquet"
    items, users = IdMap.fit(events["item_id"]), IdMap.fit(events["user_id"])
    with caplog.at_level(logging.INFO, logger="recpipe.features.stream"):
        stats = encode_part_file(src, dst, items, users, 8, batch_rows=16)
    assert "not grouped by session" in caplog.text
    whole = encode_events(events, items, users, 8)
    pd.testing.assert_frame_equal(pd.read_parquet(dst), whole)
    assert stats == encoding_stats(whole)


def test_an_empty_part_keeps_its_columns_and_dtypes(tmp_path: Path) -> None:
    events = _events(50, 4).iloc[:0]
    src, dst = _write(events, tmp_path / "part.parquet"), tmp_path / "enc.parquet"
    items, users = IdMap.fit(["a"]), IdMap.fit(["u"])
    stats = encode_part_file(src, dst, items, users, 8)
    whole = encode_events(pd.read_parquet(src), items, users, 8)
    pd.testing.assert_frame_equal(pd.read_parquet(dst), whole)
    assert stats == encoding_stats(whole)


@pytest.mark.parametrize(
    ("batch_rows", "stream", "min_rows"),
    [
        (5, True, None),
        (1000, True, None),
        (None, None, 0),  # the threshold: every split streams
        (None, None, 10**12),  # the threshold: every split is read whole
        (None, False, None),
    ],
)
def test_streamed_split_features_equal_split_features(
    splits: tuple[Paths, object],
    tmp_path: Path,
    batch_rows: int | None,
    stream: bool | None,
    min_rows: int | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    paths, params = splits
    caplog.set_level(logging.INFO, logger="recpipe.features.build")
    if min_rows is not None:
        params = params.model_copy(
            update={"features": params.features.model_copy(update={"stream_min_rows": min_rows})}
        )
    tables = read_tables(paths.validated_dir, events=False)
    kinds = sorted(d.name for d in paths.splits_dir.iterdir() if d.is_dir())
    assert {"session", "user_temporal", "cold_start"} <= set(kinds)
    for kind in kinds:
        split_dir = paths.splits_dir / kind
        cold = {
            "items": pd.read_parquet(split_dir / "cold_items.parquet")["item_id"]
            if (split_dir / "cold_items.parquet").is_file()
            else None,
            "users": pd.read_parquet(split_dir / "cold_users.parquet")["user_id"]
            if (split_dir / "cold_users.parquet").is_file()
            else None,
        }
        parts = {p: pd.read_parquet(split_dir / f"{p}.parquet") for p in PART_NAMES}
        whole = split_features(kind, parts, params.features, items=tables.items, cold=cold)
        out = tmp_path / kind
        out.mkdir()
        streamed = stream_split_features(
            kind,
            split_dir,
            out,
            params.features,
            PART_NAMES,
            items=tables.items,
            cold=cold,
            batch_rows=batch_rows,
            stream=stream,
        )
        if min_rows is not None:  # the stage's choice, said in the log
            said = "encoded batch by batch" if min_rows == 0 else "read whole"
            assert f"features {kind}: " in caplog.text and said in caplog.text
        assert streamed.item_map == whole.item_map
        assert streamed.user_map == whole.user_map
        assert streamed.meta == whole.meta
        for part, frame in whole.parts.items():
            pd.testing.assert_frame_equal(pd.read_parquet(out / f"{part}.parquet"), frame)
