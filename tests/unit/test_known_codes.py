"""Id codes handed from sessionize to the filter and the splits, and the split threads.

sessionize and filter_support remember the codes of the id columns they write, so that
the splits do not hash the strings again; these tests pin that the remembered codes are
exactly those ``encode`` computes from the strings, that a changed column is hashed
afresh, that time-sorted logs (sessions ordered without a sort) sessionize as the
reference does, and that the splits computed on threads come out, and fail, in order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recpipe.config import SessionsParams
from recpipe.errors import SplitError
from recpipe.sessions._arrays import Codes, encode, known_codes, take_rows
from recpipe.sessions.parts import SplitResult
from recpipe.sessions.sessionize import filter_support, sessionize
from recpipe.sessions.splits import build_splits, iter_splits
from tests.unit.test_sessionize import (
    events_frame,
    params_strategy,
    reference_sessionize,
    row_strategy,
)

ID_COLUMNS = ("user_id", "item_id", "session_id")


def fresh_codes(series: pd.Series) -> Codes:
    """``encode`` of the same strings in new Arrow data (nothing remembered for them)."""
    data = pa.array(series.array)
    if isinstance(data, pa.ChunkedArray):
        data = data.combine_chunks()
    copy = pd.Series(pd.arrays.ArrowStringArray(pa.concat_arrays([data])))
    assert known_codes(copy) is None
    return encode(copy)


def assert_known_codes_exact(frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    for column in columns:
        known = known_codes(frame[column])
        assert known is not None, column
        expected = fresh_codes(frame[column])
        np.testing.assert_array_equal(known.codes, expected.codes, err_msg=column)
        assert known.uniques.equals(expected.uniques), column
        assert encode(frame[column]) is known  # encode hashes nothing


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(row_strategy, min_size=1, max_size=40), params=params_strategy)
def test_time_sorted_logs_sessionize_as_the_reference_with_exact_codes(rows, params):
    # sorted by time with many ties: the sessions are put in order without a sort
    rows = sorted(rows, key=lambda r: r[2])
    ev = events_frame(rows)
    out = sessionize(ev, params)
    pd.testing.assert_frame_equal(out, reference_sessionize(ev, params))
    assert_known_codes_exact(out, ID_COLUMNS)
    kept, _ = filter_support(out, 2, 2)
    if len(kept) and len(kept) < len(out):  # a subset: codes renumbered, computed lazily
        assert_known_codes_exact(kept, ("user_id", "item_id", "session_id"))


def test_ties_in_time_keep_input_order_across_users_and_sessions():
    rows = [
        ("u1", "i1", 0, "view", None),
        ("u0", "i2", 0, "view", None),
        ("u1", "i3", 0, "cart", None),
        ("u0", "i1", 0, "view", None),
        ("u2", "i1", 5, "view", None),
        ("u0", "i2", 45, "view", None),  # more than 30 minutes on: u0's second session
        ("u1", "i2", 45, "view", None),  # within 30 minutes of nothing: u1#1
    ]
    out = sessionize(events_frame(rows), SessionsParams(gap_minutes=30))
    assert out["row"].tolist() == [0, 2, 1, 3, 4, 5, 6]
    assert out["session_id"].tolist() == ["u1#0", "u1#0", "u0#0", "u0#0", "u2#0", "u0#1", "u1#1"]


def test_a_changed_column_is_hashed_again():
    rows = [("u0", "i0", k, "view", None) for k in range(4)] + [("u1", "i1", 2, "view", None)]
    out = sessionize(events_frame(rows), SessionsParams())
    before = known_codes(out["item_id"])
    assert before is not None
    out.loc[0, "item_id"] = "new"
    assert known_codes(out["item_id"]) is None
    codes = encode(out["item_id"])
    assert codes.uniques.to_pylist() == ["new", "i0", "i1"]
    assert codes.codes.tolist() == [0, 1, 1, 1, 2]


def test_every_row_shares_the_columns_and_their_codes():
    out = sessionize(
        events_frame([("u0", f"i{k}", k, "view", None) for k in range(5)]), SessionsParams()
    )
    same = take_rows(out, np.ones(len(out), bool))
    pd.testing.assert_frame_equal(same, out)
    assert known_codes(same["item_id"]) is known_codes(out["item_id"])
    assert take_rows(out, np.arange(len(out)))["user_id"].array is not None
    assert known_codes(take_rows(out, np.arange(len(out)))["user_id"]) is known_codes(
        out["user_id"]
    )


def test_codes_of_a_filtered_frame_do_not_follow_a_reused_mask():
    rows = [(f"u{k % 3}", f"i{k % 4}", k, "view", None) for k in range(12)]
    out = sessionize(events_frame(rows), SessionsParams())
    mask = np.arange(len(out)) % 2 == 0
    half = take_rows(out, mask)
    mask[:] = True  # the caller reuses its mask before the codes are asked for
    assert_known_codes_exact(half, ("user_id", "item_id", "session_id"))


def test_items_filtered_to_empty():
    out = sessionize(
        events_frame([("u0", f"i{k}", k, "view", None) for k in range(5)]), SessionsParams()
    )
    kept, stats = filter_support(out, min_item_support=2, min_session_length=1)
    assert len(kept) == 0 and stats["rows"] == 0 and stats["dropped"]["item_support"] == 5
    assert list(kept.dtypes) == list(out.dtypes)
    assert encode(kept["item_id"]).n_uniques == 0
    with pytest.raises(SplitError, match="no event survives the support filter"):
        build_splits(out, SessionsParams(min_item_support=2, splits=["session"]))


def _two_day_log() -> pd.DataFrame:
    rows = []
    for user in range(6):
        for day in range(3):
            start = day * 24 * 60 + 60 * user
            rows += [(f"u{user}", f"i{(user + k) % 3}", start + k, "view", None) for k in range(3)]
    # a session that starts before the test cut-off and ends after it
    last = 2 * 24 * 60 + 60 * 5 + 2
    test_start = last - 24 * 60
    rows += [("u9", "i0", test_start - 2, "view", None), ("u9", "i1", test_start + 3, "view", None)]
    return events_frame(rows)


def test_a_session_across_the_cut_off_belongs_to_the_part_of_its_start():
    ev = sessionize(_two_day_log(), SessionsParams())
    p = SessionsParams(min_test_sessions=1, splits=["session"])
    result = build_splits(ev, p)["session"]
    assert isinstance(result, SplitResult)
    crossing = ev["user_id"] == "u9"
    parts = {name: set(result.parts()[name]["row"]) for name in ("train", "valid", "test")}
    rows = set(ev.loc[crossing, "row"])
    assert rows <= parts["valid"]  # started in validation: the whole session is there
    assert not rows & (parts["train"] | parts["test"])


def test_threaded_splits_come_out_in_order_and_equal_one_at_a_time():
    ev = sessionize(_two_day_log(), SessionsParams())
    p = SessionsParams(
        min_test_sessions=1,
        splits=["leave_last_out", "session", "global_temporal", "user_temporal", "cold_start"],
    )
    together = dict(iter_splits(ev, p))
    assert list(together) == p.splits
    for kind in p.splits:
        alone = build_splits(ev, p.model_copy(update={"splits": [kind]}))[kind]
        if isinstance(alone, SplitResult):
            assert together[kind].stats == alone.stats
            np.testing.assert_array_equal(together[kind].part, alone.part)
        else:
            assert together[kind] == alone


def test_a_failing_split_raises_at_its_turn_and_an_early_stop_is_clean():
    ev = sessionize(_two_day_log(), SessionsParams())
    # the session split's test part is empty: every session starts before the test days
    p = SessionsParams(
        test_days=0.0001,
        min_test_sessions=0,
        splits=["global_temporal", "session", "user_temporal"],
    )
    seen = []
    with pytest.raises(SplitError, match="session split"):
        for kind, _ in iter_splits(ev, p):
            seen.append(kind)
    assert seen == ["global_temporal"]
    first = next(iter_splits(ev, p))  # the generator dropped after one split
    assert first[0] == "global_temporal"
