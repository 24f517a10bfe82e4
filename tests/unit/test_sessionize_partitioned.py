"""Partitioned sessionization gives the in-memory path's rows and session ids."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recpipe.config import SessionsParams, load_params
from recpipe.errors import SplitError
from recpipe.sessions.partitioned import sessionize_partitioned
from recpipe.sessions.sessionize import sessionize

SMALL = ["synth.n_users=80", "synth.n_items=40", "synth.n_sessions=400", "synth.days=5"]


def _events() -> pd.DataFrame:
    from recpipe.data.synth import generate

    return generate(load_params(None, SMALL).synth).events


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    keys = ["session_id", "timestamp", "item_id", "event_type"]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def _check(events: pd.DataFrame, params: SessionsParams, tmp_path: Path, n: int) -> None:
    source = tmp_path / "events.parquet"
    events.to_parquet(source, index=False)
    expected = sessionize(events, params)
    stats = sessionize_partitioned(source, tmp_path / "out", params, n, batch_rows=97)
    parts = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert stats["partitions"] == len(parts) > 1
    got = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    assert stats["rows"] == len(expected)
    assert stats["sessions"] == expected["session_id"].nunique()
    pd.testing.assert_frame_equal(_sorted(got), _sorted(expected), check_dtype=False)
    # within a part, the in-memory path's order restricted to the part's rows
    for part in parts:
        frame = pd.read_parquet(part)
        mine = expected[expected["session_id"].isin(frame["session_id"])].reset_index(drop=True)
        pd.testing.assert_frame_equal(frame, mine, check_dtype=False)


@pytest.mark.parametrize("use_source", [True, False])
@pytest.mark.parametrize("collapse", [False, True])
def test_partitioned_equals_in_memory(tmp_path: Path, use_source: bool, collapse: bool) -> None:
    events = _events()
    params = SessionsParams(
        use_source_sessions=use_source, gap_minutes=5.0, collapse_repeats=collapse
    )
    _check(events, params, tmp_path, n=4)


def test_anonymous_rows_with_source_sessions(tmp_path: Path) -> None:
    events = _events()
    events.loc[events.index[::7], "user_id"] = None  # anonymous, re-cut by source session
    _check(events, SessionsParams(use_source_sessions=False, gap_minutes=5.0), tmp_path, n=3)


def test_rows_without_any_id_are_refused(tmp_path: Path) -> None:
    events = _events()
    events.loc[events.index[0], ["user_id", "session_id"]] = None
    events.to_parquet(tmp_path / "e.parquet", index=False)
    with pytest.raises(SplitError, match="neither user_id nor session_id"):
        sessionize_partitioned(tmp_path / "e.parquet", tmp_path / "out", SessionsParams(), 2)
