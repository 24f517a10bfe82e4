"""Splits held as part codes over the shared input: what they hold, check and write.

``build_splits`` gives each split as one ``int8`` part code per input row
(``SplitResult.of_rows``) instead of three frames; these tests pin that the frames
gathered from the codes, the leakage checks read from the codes and the files
``write_parts`` writes are those of the frames the splits used to copy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from recpipe.config import SessionsParams
from recpipe.errors import SplitError
from recpipe.sessions._arrays import iso
from recpipe.sessions.parts import (
    DROPPED,
    PART_NAMES,
    TRAIN,
    SplitResult,
    Table,
    write_parts,
)
from recpipe.sessions.sessionize import sessionize
from recpipe.sessions.splits import SkippedSplit, build_splits, check_leakage
from tests.unit.test_sessionize import events_frame

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mixed_rows(draw: st.DrawFn) -> list[tuple]:
    """Sessions of 1-5 clicks minutes apart; some anonymous (no user id)."""
    rows = []
    for k in range(draw(st.integers(3, 16))):
        user = draw(st.sampled_from(["u0", "u1", "u2", "u3", None]))
        t = draw(st.integers(0, 6 * 24)) * 60
        for _ in range(draw(st.integers(1, 5))):
            rows.append((user, draw(st.sampled_from(["i0", "i1", "i2", "i3"])), t, "view", f"s{k}"))
            t += draw(st.integers(0, 10))
    return rows


params_strategy = st.builds(
    SessionsParams,
    min_item_support=st.integers(1, 2),
    min_session_length=st.integers(1, 2),
    test_days=st.sampled_from([0.5, 1.0, 2.0]),
    valid_days=st.sampled_from([0.0, 1.0]),
    global_test_fraction=st.sampled_from([0.1, 0.25, 0.5]),
    global_valid_fraction=st.sampled_from([0.0, 0.2]),
    user_test_fraction=st.sampled_from([0.2, 0.5]),
    user_valid_fraction=st.sampled_from([0.0, 0.2]),
    cold_item_fraction=st.sampled_from([0.0, 0.5]),
    cold_user_fraction=st.sampled_from([0.3, 1.0]),
    cold_anonymous=st.sampled_from(["session", "drop"]),
    min_test_sessions=st.just(0),
)


def splits_of(rows: list[tuple], p: SessionsParams) -> tuple[pd.DataFrame, dict[str, SplitResult]]:
    """The sessionized events and each split of ``p.splits`` that applies (one by one:
    a split that fails leaves the others)."""
    ev = sessionize(events_frame(rows), p)
    results = {}
    for kind in p.splits:
        try:
            result = build_splits(ev, p.model_copy(update={"splits": [kind]}))[kind]
        except SplitError:
            continue
        if not isinstance(result, SkippedSplit):
            results[kind] = result
    return ev, results


def as_frames(result: SplitResult) -> SplitResult:
    """The same split wrapping (copies of) its frames: the pre-codes representation."""
    return SplitResult(
        result.train.copy(), result.valid.copy(), result.test.copy(), result.stats, result.tables
    )


@SETTINGS
@given(rows=mixed_rows(), p=params_strategy)
def test_parts_are_the_rows_of_their_codes(rows, p):
    ev, results = splits_of(rows, p)
    for kind, result in results.items():
        assert result.part is not None and result.part.dtype == np.int8
        assert len(result.part) == len(result.source)
        source = result.source
        if kind != "cold_start" or p.cold_anonymous != "session":
            pd.testing.assert_frame_equal(source, ev)
            assert np.shares_memory(  # the input's data, not a copy of it
                source["value"].to_numpy(), ev["value"].to_numpy()
            )
        for code, name in enumerate(PART_NAMES):
            expected = source[result.part == code].reset_index(drop=True)
            frame = getattr(result, name)
            pd.testing.assert_frame_equal(frame, expected)
            assert getattr(result, name) is frame  # gathered once, then kept
            assert result.rows(name) == len(frame) == result.stats["parts"][name]["rows"]
            ts = frame["timestamp"]
            assert result.stats["parts"][name]["time_range"] == {
                "min": iso(ts.min().value) if len(ts) else None,
                "max": iso(ts.max().value) if len(ts) else None,
            }


@SETTINGS
@given(rows=mixed_rows(), p=params_strategy, seed=st.integers(0, 2**16))
def test_check_leakage_reads_the_codes_as_it_reads_the_frames(rows, p, seed):
    _, results = splits_of(rows, p)
    event(f"{len(results)} splits apply")
    rng = np.random.default_rng(seed)
    for kind, result in results.items():
        assert result.table is not None and result.part is not None
        checks = check_leakage(result, kind, p.test_items_seen_in)
        assert all(checks.values()), (kind, checks)
        assert checks == check_leakage(as_frames(result), kind, p.test_items_seen_in)
        # shuffle the kept rows between the parts: a leaky split, judged alike both ways
        part = result.part.copy()
        kept = np.flatnonzero(part != DROPPED)
        part[kept] = rng.permutation(part[kept])
        leaky = SplitResult.of_rows(result.table, part, result.stats, result.tables)
        assert check_leakage(leaky, kind, p.test_items_seen_in) == check_leakage(
            as_frames(leaky), kind, p.test_items_seen_in
        )


def test_check_leakage_of_codes_finds_a_moved_row():
    rows = [(f"u{k % 3}", f"i{k % 4}", 180 * k, "view", f"s{k // 2}") for k in range(40)]
    p = SessionsParams(min_item_support=1, min_test_sessions=0, cold_item_fraction=0.5)
    _, results = splits_of(rows, p)
    for kind in ("global_temporal", "cold_start", "user_temporal", "session"):
        result = results[kind]
        assert result.part is not None and result.table is not None
        part = result.part.copy()
        part[np.flatnonzero(part == 2)[-1]] = TRAIN  # the last test row into train
        checks = check_leakage(SplitResult.of_rows(result.table, part, result.stats), kind)
        assert not checks[
            "test_after_train" if kind != "user_temporal" else "test_after_train_per_user"
        ]
        if kind == "cold_start":  # no cold tables given: their checks fail
            assert not checks["cold_items_not_in_train"]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=mixed_rows(), p=params_strategy)
def test_write_parts_writes_the_bytes_of_to_parquet(rows, p, tmp_path_factory):
    _, results = splits_of(rows, p)
    base = tmp_path_factory.mktemp("parts")
    for kind, result in results.items():
        write_parts(result, base / "codes" / kind)
        write_parts(as_frames(result), base / "frames" / kind)
        old = base / "old" / kind
        old.mkdir(parents=True)
        for name in PART_NAMES:
            getattr(result, name).to_parquet(old / f"{name}.parquet", index=False)
        for name, table in result.tables.items():
            table.to_parquet(old / f"{name}.parquet", index=False)
        files = sorted(f.name for f in old.iterdir())
        assert sorted(f.name for f in (base / "codes" / kind).iterdir()) == files
        for name in files:
            expected = (old / name).read_bytes()
            assert (base / "codes" / kind / name).read_bytes() == expected, (kind, name)
            assert (base / "frames" / kind / name).read_bytes() == expected, (kind, name)


def test_write_parts_of_an_empty_part_keeps_the_schema(tmp_path):
    rows = [(f"u{k % 3}", f"i{k % 4}", 60 * k, "view", f"s{k}") for k in range(30)]
    p = SessionsParams(global_valid_fraction=0.0, splits=["global_temporal"])
    _, results = splits_of(rows, p)
    result = results["global_temporal"]
    assert result.rows("valid") == 0
    write_parts(result, tmp_path)
    valid = pd.read_parquet(tmp_path / "valid.parquet")
    assert len(valid) == 0
    assert valid.dtypes.to_dict() == result.source.dtypes.to_dict()


def test_parts_ignore_later_changes_to_the_input():
    rows = [(f"u{k % 3}", f"i{k % 4}", 180 * k, "view", f"s{k // 2}") for k in range(40)]
    ev = sessionize(events_frame(rows), SessionsParams())
    result = build_splits(ev, SessionsParams(splits=["user_temporal"]))["user_temporal"]
    expected = ev[result.part == TRAIN].reset_index(drop=True)
    ev.loc[0, "item_id"] = "changed"
    ev["value"] = 0.0
    pd.testing.assert_frame_equal(result.train, expected)


def test_of_rows_refuses_codes_of_another_length():
    ev = sessionize(events_frame([("u0", "i0", 0, "view", "s0")] * 3), SessionsParams())
    with pytest.raises(ValueError, match=r"shape \(2,\) for a table of 3 rows"):
        SplitResult.of_rows(Table(ev), np.zeros(2, np.int8), {})
