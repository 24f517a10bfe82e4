"""The five splits: checked against plain pandas references and their invariants."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from recpipe.config import SessionsParams
from recpipe.errors import SplitError
from recpipe.sessions.cold import cold_start_split
from recpipe.sessions.parts import SplitResult
from recpipe.sessions.sessionize import filter_support, sessionize
from recpipe.sessions.splits import (
    SkippedSplit,
    build_splits,
    check_leakage,
    iter_splits,
    session_split,
)
from recpipe.sessions.temporal import (
    global_temporal_split,
    leave_last_out_split,
    user_temporal_split,
)
from tests.unit.test_sessionize import events_frame

DAY_MIN = 24 * 60


def rows_of(frame: pd.DataFrame) -> set[int]:
    return set(frame["row"].tolist())


def ts_ns(frame: pd.DataFrame) -> np.ndarray:
    return frame["timestamp"].to_numpy(dtype="datetime64[ns]").view(np.int64)


def assert_accounted(result: SplitResult, events: pd.DataFrame) -> None:
    """Parts are disjoint, and parts + dropped rows (by reason) = the input."""
    parts = [rows_of(p) for p in result.parts().values()]
    assert sum(len(p) for p in parts) == len(set().union(*parts))
    stats = result.stats
    assert [stats["parts"][k]["rows"] for k in ("train", "valid", "test")] == [
        len(result.train),
        len(result.valid),
        len(result.test),
    ]
    assert sum(len(p) for p in parts) + stats["dropped_total"] == len(events)
    assert stats["dropped_total"] == sum(stats["dropped"].values())
    assert stats["input_rows"] == len(events)
    json.dumps(stats)  # JSON-able
    for part in result.parts().values():
        assert list(part.columns) == list(events.columns)
        assert part.dtypes.to_dict() == events.dtypes.to_dict()
        assert isinstance(part.index, pd.RangeIndex) and part.index.start == 0


# --------------------------------------------------------------------------- references
def reference_session_split(ev: pd.DataFrame, p: SessionsParams) -> dict[str, set[int]]:
    counts = ev["item_id"].map(ev["item_id"].value_counts())
    f = ev[counts >= p.min_item_support]
    f = f[f["session_id"].map(f["session_id"].value_counts()) >= p.min_session_length]
    if f.empty:
        return {"train": set(), "valid": set(), "test": set()}
    tmax = f["timestamp"].max()
    test_start = tmax - pd.Timedelta(days=p.test_days)
    valid_start = test_start - pd.Timedelta(days=p.valid_days)
    start = f.groupby("session_id")["timestamp"].transform("min")
    train = f[start < valid_start]
    out = {"train": rows_of(train)}
    seen = set(train["item_id"])
    for name, rows in (
        ("valid", f[(start >= valid_start) & (start < test_start)]),
        ("test", f[start >= test_start]),
    ):
        rows = rows[rows["item_id"].isin(seen)]
        rows = rows[rows["session_id"].map(rows["session_id"].value_counts()) >= 2]
        out[name] = rows_of(rows)
    return out


def reference_user_split(ev: pd.DataFrame, p: SessionsParams, kind: str) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {"train": set(), "valid": set(), "test": set()}
    for _, g in ev[ev["user_id"].notna()].groupby("user_id"):
        rows = g.sort_values(["timestamp", "row"])["row"].tolist()
        c = len(rows)
        if kind == "user_temporal":
            n_test = min(max(math.floor(c * p.user_test_fraction + 0.5), 1), c - 1)
            n_valid = max(min(math.floor(c * p.user_valid_fraction + 0.5), c - 1 - n_test), 0)
        else:
            n_test, n_valid = int(c >= 2), int(c >= 3)
        out["test"] |= set(rows[c - n_test :])
        out["valid"] |= set(rows[c - n_test - n_valid : c - n_test])
        out["train"] |= set(rows[: c - n_test - n_valid])
    return out


def reference_cold_start(ev: pd.DataFrame, p: SessionsParams) -> dict[str, object]:
    """The documented cold-start rule on top of the global temporal split."""
    base = global_temporal_split(ev, p)

    def draw(ids: set[str], fraction: float, stream: int) -> set[str]:
        ordered = sorted(ids)
        n = math.floor(len(ordered) * fraction + 0.5)
        rng = np.random.default_rng([p.cold_seed, stream])
        return {ordered[k] for k in rng.permutation(len(ordered))[:n]}

    items = draw(set(base.test["item_id"]), p.cold_item_fraction, 0)
    users = draw(set(base.test["user_id"]), p.cold_user_fraction, 1)

    def keep(part: pd.DataFrame) -> pd.DataFrame:
        return part[~part["item_id"].isin(items) & ~part["user_id"].isin(users)]

    return {
        "train": rows_of(keep(base.train)),
        "valid": rows_of(keep(base.valid)),
        "test": rows_of(base.test),
        "items": items,
        "users": users,
    }


# --------------------------------------------------------------------------- random streams
row_strategy = st.tuples(
    st.sampled_from([None, "u0", "u1", "u2", "u3", "u4"]),
    st.sampled_from(["i0", "i1", "i2", "i3", "i4", "i5"]),
    st.integers(0, 6 * DAY_MIN).map(lambda m: m - m % 20),  # ties on a 20-minute grid
    st.sampled_from(["view", "click", "cart"]),
    st.none(),
)


@st.composite
def session_rows(draw: st.DrawFn) -> list[tuple]:
    """Clustered events: sessions of 1-5 clicks minutes apart, starting on an hourly grid."""
    rows = []
    for k in range(draw(st.integers(2, 14))):
        user = draw(st.sampled_from(["u0", "u1", "u2"]))
        t = draw(st.integers(0, 6 * 24)) * 60
        for _ in range(draw(st.integers(1, 5))):
            rows.append((user, draw(st.sampled_from(["i0", "i1", "i2", "i3"])), t, "view", f"s{k}"))
            t += draw(st.integers(0, 10))
    return rows


params_strategy = st.builds(
    SessionsParams,
    gap_minutes=st.sampled_from([20.0, 60.0, 600.0]),
    min_item_support=st.integers(1, 3),
    min_session_length=st.integers(1, 3),
    test_days=st.sampled_from([0.5, 1.0, 2.0]),
    valid_days=st.sampled_from([0.0, 1.0]),
    global_test_fraction=st.sampled_from([0.1, 0.25, 0.5]),
    global_valid_fraction=st.sampled_from([0.0, 0.2]),
    user_test_fraction=st.sampled_from([0.2, 0.34, 0.5]),
    user_valid_fraction=st.sampled_from([0.0, 0.2]),
    cold_item_fraction=st.sampled_from([0.0, 0.1, 0.5]),
    cold_user_fraction=st.sampled_from([0.0, 0.3, 1.0]),
    cold_seed=st.integers(0, 3),
    min_test_sessions=st.just(0),  # the reference knows no skip rule
)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=session_rows(), p=params_strategy)
def test_session_split_matches_reference(rows, p):
    ev = sessionize(events_frame(rows), p)
    expected = reference_session_split(ev, p)
    if not expected["test"] or not expected["train"]:
        event("session split: empty part")
        with pytest.raises(SplitError):
            session_split(ev, p)
        return
    event("session split: compared")
    result = session_split(ev, p)
    assert {k: rows_of(v) for k, v in result.parts().items()} == expected
    assert_accounted(result, ev)
    assert all(check_leakage(result, "session").values())
    # brute force: every test session starts after every train session
    starts = {k: v.groupby("session_id")["timestamp"].min() for k, v in result.parts().items()}
    assert starts["test"].min() > starts["train"].max()
    for part in (result.valid, result.test):
        assert (part.groupby("session_id").size() >= 2).all()
        assert set(part["item_id"]) <= set(result.train["item_id"])


@SETTINGS
@given(rows=st.lists(row_strategy, min_size=8, max_size=60), p=params_strategy)
def test_global_temporal_split_invariants(rows, p):
    ev = sessionize(events_frame(rows), p)
    users = ev[ev["user_id"].notna()]
    m = len(users)
    target = math.floor(m * p.global_test_fraction + 0.5)
    try:
        result = global_temporal_split(ev, p)
    except SplitError:
        event("global split: empty part")
        last = ts_ns(users) == ts_ns(users).max() if m else np.zeros(0, bool)
        held = math.floor(m * (p.global_test_fraction + p.global_valid_fraction) + 0.5)
        assert (
            m == 0
            or target == 0
            or held >= m
            or last.sum() >= target
            or ((ts_ns(users) == ts_ns(users).min()).sum() >= m - held)
        )
        return
    assert_accounted(result, ev)
    assert result.stats["dropped"] == {"null_user": len(ev) - m}
    assert all(check_leakage(result, "global_temporal").values())
    test, earlier = ts_ns(result.test), np.r_[ts_ns(result.train), ts_ns(result.valid)]
    assert test.min() > earlier.max()  # strictly after
    if len(result.valid):
        assert ts_ns(result.valid).min() > ts_ns(result.train).max()
    # the cut-off is the tightest one: moving its tie block to test overshoots the target
    cut = earlier.max()
    assert len(test) <= target < len(test) + int((earlier == cut).sum())
    assert (ts_ns(users) > cut).sum() == len(test)


@SETTINGS
@given(
    rows=st.lists(row_strategy, min_size=8, max_size=60),
    p=params_strategy,
    kind=st.sampled_from(["user_temporal", "leave_last_out"]),
)
def test_user_splits_match_reference(rows, p, kind):
    ev = sessionize(events_frame(rows), p)
    split = user_temporal_split if kind == "user_temporal" else leave_last_out_split
    expected = reference_user_split(ev, p, kind)
    if not expected["test"]:
        event("user split: empty test")
        with pytest.raises(SplitError):
            split(ev, p)
        return
    event("user split: compared")
    result = split(ev, p)
    assert {k: rows_of(v) for k, v in result.parts().items()} == expected
    assert_accounted(result, ev)
    assert result.stats["dropped"] == {"null_user": int(ev["user_id"].isna().sum())}
    assert all(check_leakage(result, kind).values())
    for user, test in result.test.groupby("user_id"):
        train = result.train[result.train["user_id"] == user]
        assert len(train) >= 1
        assert test["timestamp"].min() >= train["timestamp"].max()


@SETTINGS
@given(rows=st.lists(row_strategy, min_size=8, max_size=60), p=params_strategy)
def test_cold_start_split_matches_reference(rows, p):
    p = p.model_copy(update={"cold_anonymous": "drop"})  # the reference drops null users
    ev = sessionize(events_frame(rows), p)
    try:
        expected = reference_cold_start(ev, p)
    except SplitError:  # no usable global cut-off: the cold-start split has none either
        event("cold start: no global cut-off")
        with pytest.raises(SplitError):
            cold_start_split(ev, p)
        return
    if (not expected["items"] and not expected["users"]) or not expected["train"]:
        event("cold start: nothing held out or empty train")
        with pytest.raises(SplitError, match=r"too few events|train part is empty"):
            cold_start_split(ev, p)
        assert isinstance(
            build_splits(ev, p.model_copy(update={"splits": ["cold_start"]}))["cold_start"],
            SkippedSplit,
        )
        return
    event("cold start: compared")
    result = cold_start_split(ev, p)
    assert {k: rows_of(v) for k, v in result.parts().items()} == {
        k: expected[k] for k in ("train", "valid", "test")
    }
    assert_accounted(result, ev)
    assert all(check_leakage(result, "cold_start").values())
    items, users = result.tables["cold_items"], result.tables["cold_users"]
    assert set(items.loc[items["held_out"], "item_id"]) == expected["items"]
    assert set(users.loc[users["held_out"], "user_id"]) == expected["users"]
    # every cold id: no train event, a test event; held-out ids: no valid event either
    for table, column in ((items, "item_id"), (users, "user_id")):
        assert table[column].is_monotonic_increasing
        assert not result.train[column].isin(table[column]).any()
        held = table.loc[table["held_out"], column]
        assert not result.valid[column].isin(held).any()
        counts = result.test[column].value_counts()
        assert table["test_rows"].tolist() == counts[table[column]].tolist()
        new = set(result.test[column]) - set(result.train[column])
        assert set(table[column]) == new | set(held)
    cold = result.stats["cold"]
    assert cold["items"]["held_out"] == len(expected["items"])
    assert cold["users"]["cold"] == len(users)
    either = result.test["item_id"].isin(items["item_id"]) | result.test["user_id"].isin(
        users["user_id"]
    )
    assert cold["test_rows_cold_item_or_user"] == int(either.sum())


@settings(max_examples=15, deadline=None)
@given(rows=st.lists(row_strategy, min_size=8, max_size=60), p=params_strategy)
def test_build_splits_is_deterministic_and_matches_single_splits(rows, p):
    ev = sessionize(events_frame(rows), p)
    try:
        first = build_splits(ev, p)
    except SplitError:
        return
    second = dict(iter_splits(ev.copy(deep=True), p))
    assert list(first) == list(second) == list(p.splits)
    for kind, result in first.items():
        other = second[kind]
        if isinstance(result, SkippedSplit):
            assert other == result
            continue
        assert result.stats == other.stats
        for name, part in result.parts().items():
            pd.testing.assert_frame_equal(part, other.parts()[name])


# --------------------------------------------------------------------------- hand-made cases
def session_events() -> pd.DataFrame:
    day = DAY_MIN
    rows = [
        # train sessions (start on days 0-1)
        ("a", "x", 0, "view", "t1"),
        ("a", "y", 1, "view", "t1"),
        ("b", "y", day, "view", "t2"),
        ("b", "z", day + 1, "view", "t2"),
        ("b", "x", day + 2, "view", "t2"),
        # starts before the valid window, ends inside it: train (start rule)
        ("c", "x", day + 190, "view", "t3"),
        ("c", "z", day + 230, "view", "t3"),
        # valid session (day 2)
        ("d", "x", 2 * day + 60, "view", "v1"),
        ("d", "new", 2 * day + 61, "view", "v1"),  # unseen in train: dropped
        ("d", "y", 2 * day + 62, "view", "v1"),
        # test sessions (day 3)
        ("e", "x", 3 * day + 60, "view", "s1"),
        ("e", "z", 3 * day + 61, "view", "s1"),
        ("f", "y", 3 * day + 70, "view", "s2"),
        ("f", "new", 3 * day + 71, "view", "s2"),  # unseen -> s2 has one event left: dropped
        ("g", "x", 3 * day + 100, "view", "s3"),
        ("g", "y", 3 * day + 200, "view", "s3"),  # tmax = day 3 + 200 min
    ]
    return events_frame(rows)


def test_session_split_hand_example():
    ev = sessionize(session_events(), SessionsParams())
    p = SessionsParams(
        min_test_sessions=0, min_item_support=1, min_session_length=2, test_days=1.0, valid_days=1.0
    )
    result = session_split(ev, p)
    assert sorted(result.train["session_id"].unique()) == ["t1", "t2", "t3"]
    assert result.valid["row"].tolist() == [7, 9]
    assert sorted(result.test["session_id"].unique()) == ["s1", "s3"]
    assert result.stats["dropped"] == {
        "item_support": 0,
        "session_length": 0,
        "valid_unseen_item": 1,
        "valid_short_session": 0,
        "test_unseen_item": 1,
        "test_short_session": 1,
    }
    cut = result.stats["cutoffs"]
    assert cut["tmax"] == "2024-03-04T03:20:00+00:00"
    assert cut["test_start"] == "2024-03-03T03:20:00+00:00"
    assert cut["valid_start"] == "2024-03-02T03:20:00+00:00"
    assert result.stats["parts"]["test"]["sessions"] == 2
    assert result.stats["filter"]["rows"] == len(ev)
    assert check_leakage(result, "session") == {
        "test_nonempty": True,
        "test_after_train": True,
        "valid_after_train": True,
        "test_after_valid": True,
        "sessions_disjoint": True,
        "test_items_in_train": True,
        "valid_items_in_train": True,
        "heldout_sessions_min_length_2": True,
    }
    assert_accounted(result, ev)

    # GRU4Rec's preprocessing filters test against train_full: 'new' is in the valid
    # part, so with test_items_seen_in=train_valid s2 keeps both its events (valid is
    # still filtered against train only)
    official = session_split(ev, p.model_copy(update={"test_items_seen_in": "train_valid"}))
    assert sorted(official.test["session_id"].unique()) == ["s1", "s2", "s3"]
    assert official.valid["row"].tolist() == [7, 9]
    assert official.stats["dropped"]["test_unseen_item"] == 0
    assert official.stats["dropped"]["test_short_session"] == 0
    checks = check_leakage(official, "session", "train_valid")
    assert all(checks.values()) and "test_items_in_train" not in checks
    assert not check_leakage(official, "session")["test_items_in_train"]
    assert_accounted(official, ev)

    # the support filter runs first: 'new' has 2 events, so support 3 drops both, and
    # s2 is then too short; the held-out parts have nothing left to drop
    filtered = session_split(ev, p.model_copy(update={"min_item_support": 3}))
    assert filtered.stats["dropped"] == {
        "item_support": 2,
        "session_length": 1,
        "valid_unseen_item": 0,
        "valid_short_session": 0,
        "test_unseen_item": 0,
        "test_short_session": 0,
    }
    assert result.parts().keys() == filtered.parts().keys()
    assert_accounted(filtered, ev)


def test_session_split_on_item_filtered_events_is_the_same_split():
    """The sessions stage item-filters first; the split's own item filter is then a no-op."""
    ev = sessionize(session_events(), SessionsParams())
    p = SessionsParams(min_test_sessions=0, min_item_support=3, test_days=1.0, valid_days=1.0)
    direct = session_split(ev, p)
    item_filtered, fstats = filter_support(ev, p.min_item_support, 1)
    staged = session_split(item_filtered, p)
    for name in ("train", "valid", "test"):
        assert rows_of(staged.parts()[name]) == rows_of(direct.parts()[name])
    assert staged.stats["dropped"]["item_support"] == 0
    assert fstats["dropped"]["item_support"] == direct.stats["dropped"]["item_support"]


def test_session_split_boundaries():
    day = DAY_MIN
    rows = [
        ("a", "x", 0, "view", "t1"),
        ("a", "y", 1, "view", "t1"),
        # starts exactly at tmax - test_days: test
        ("b", "x", day, "view", "edge"),
        ("b", "y", day + 1, "view", "edge"),
        # first event on a rare item (dropped by the support filter) before the
        # cut-off; the session starts, after filtering, inside the test window
        ("c", "rare", day - 30, "view", "late"),
        ("c", "x", day + 5, "view", "late"),
        ("c", "y", 2 * day, "view", "late"),  # tmax
    ]
    ev = sessionize(events_frame(rows), SessionsParams())
    result = session_split(
        ev, SessionsParams(min_test_sessions=0, min_item_support=2, test_days=1, valid_days=0)
    )
    assert sorted(result.test["session_id"].unique()) == ["edge", "late"]
    assert result.train["session_id"].unique().tolist() == ["t1"]
    assert result.stats["dropped"]["item_support"] == 1


def test_session_split_empty_test_names_the_params():
    ev = sessionize(session_events(), SessionsParams())
    with pytest.raises(SplitError, match=r"increase sessions\.test_days"):
        session_split(ev, SessionsParams(min_test_sessions=0, min_item_support=1, test_days=0.01))
    with pytest.raises(SplitError, match="min_item_support"):
        session_split(ev, SessionsParams(min_test_sessions=0, min_item_support=10))
    with pytest.raises(SplitError, match="train part is empty"):
        session_split(
            ev, SessionsParams(min_test_sessions=0, min_item_support=1, test_days=2, valid_days=5)
        )


def test_global_split_ties_go_to_the_earlier_part():
    # 10 events; 20% test -> 2, but the last 3 share a timestamp: test takes none of them
    rows = [("u0", f"i{k}", k, "view", None) for k in range(7)] + [
        ("u1", "i0", 100, "view", None) for _ in range(3)
    ]
    ev = events_frame(rows)
    with pytest.raises(SplitError, match="global_test_fraction"):
        global_temporal_split(ev, SessionsParams(global_test_fraction=0.2))
    result = global_temporal_split(ev, SessionsParams(global_test_fraction=0.3))
    assert result.test["row"].tolist() == [7, 8, 9]
    assert result.stats["cutoffs"]["test_after"] == "2024-03-01T00:06:00+00:00"
    p = SessionsParams(global_test_fraction=0.3, global_valid_fraction=0.1)
    result = global_temporal_split(ev, p)
    assert result.test["row"].tolist() == [7, 8, 9]
    assert result.valid["row"].tolist() == [6]
    assert result.stats["fractions"] == {"train": 0.6, "valid": 0.1, "test": 0.3}


def test_user_temporal_rounding():
    rows = [("one", "i0", 0, "view", None)]
    rows += [("two", f"i{k}", k, "view", None) for k in range(2)]
    rows += [("ten", f"i{k}", 10 - k, "view", None) for k in range(10)]  # reversed in time
    ev = events_frame(rows)
    p = SessionsParams(user_test_fraction=0.2, user_valid_fraction=0.1)
    result = user_temporal_split(ev, p)
    by_user = {
        name: part.groupby("user_id").size().to_dict() for name, part in result.parts().items()
    }
    assert by_user == {
        "train": {"one": 1, "ten": 7, "two": 1},
        "valid": {"ten": 1},
        "test": {"ten": 2, "two": 1},
    }
    # the latest two of "ten" are its first two rows (timestamps 10 and 9)
    assert sorted(result.test.loc[result.test["user_id"] == "ten", "row"]) == [3, 4]
    assert result.stats["users_by_events"] == {"1": 1, "2": 1, "3+": 1}

    llo = leave_last_out_split(ev, p)
    assert llo.test["row"].tolist() == [2, 3]
    assert llo.valid["row"].tolist() == [4]
    assert len(llo.train) == len(ev) - 3


def test_user_splits_fail_without_repeat_users():
    ev = events_frame([("a", "i0", 0, "view", None), ("b", "i1", 1, "view", None)])
    for split in (user_temporal_split, leave_last_out_split):
        with pytest.raises(SplitError, match="no user has 2 or more events"):
            split(ev, SessionsParams())


def test_build_splits_skips_what_does_not_apply():
    anonymous = sessionize(
        events_frame([(None, f"i{k % 2}", k * 600, "view", f"s{k // 3}") for k in range(12)]),
        SessionsParams(),
    )
    p = SessionsParams(min_test_sessions=0, min_item_support=1, test_days=1.0, valid_days=0.0)
    out = build_splits(anonymous, p)
    assert isinstance(out["session"], SplitResult)
    for kind in ("global_temporal", "user_temporal", "leave_last_out"):
        assert isinstance(out[kind], SkippedSplit)
        assert "no user ids" in out[kind].reason and out[kind].kind == kind
    with pytest.raises(SplitError, match="no user ids"):
        user_temporal_split(anonymous, p)

    ratings = events_frame([("u0", f"i{k}", k, "rating", None) for k in range(6)])
    out = build_splits(ratings, SessionsParams(splits=["session", "leave_last_out"]))
    assert list(out) == ["session", "leave_last_out"]
    assert isinstance(out["session"], SkippedSplit)
    assert "sessionize" in out["session"].reason
    with pytest.raises(SplitError, match="sessionize"):
        session_split(ratings, SessionsParams())


def test_check_leakage_detects_leaks():
    ev = sessionize(session_events(), SessionsParams())
    p = SessionsParams(min_test_sessions=0, min_item_support=1)
    good = session_split(ev, p)
    leaky = SplitResult(
        train=pd.concat([good.train, good.test.iloc[:1]], ignore_index=True),
        valid=good.valid,
        test=good.test,
        stats=good.stats,
    )
    checks = check_leakage(leaky, "session")
    assert not checks["sessions_disjoint"] and not checks["test_after_train"]
    unseen = SplitResult(good.train, good.valid, good.test.assign(item_id="nowhere"), good.stats)
    assert not check_leakage(unseen, "session")["test_items_in_train"]
    assert not check_leakage(leaky, "global_temporal")["test_after_train"]
    early = good.test.assign(timestamp=good.train["timestamp"].min())
    per_user = SplitResult(good.train, good.valid, early.assign(user_id="a"), good.stats)
    assert not check_leakage(per_user, "user_temporal")["test_after_train_per_user"]
    with pytest.raises(ValueError, match="unknown split kind"):
        check_leakage(good, "random")


def test_parts_do_not_alias_the_input():
    ev = sessionize(session_events(), SessionsParams())
    before = ev.copy(deep=True)
    result = session_split(ev, SessionsParams(min_test_sessions=0, min_item_support=1))
    result.train.loc[0, "item_id"] = "changed"
    pd.testing.assert_frame_equal(ev, before)


# --------------------------------------------------------------------------- cold start
def cold_events() -> pd.DataFrame:
    """6 users x 4 items, one event an hour in a fixed pseudo-random order; 48 events."""
    rng = np.random.default_rng(7)
    rows = [(f"u{k % 6}", f"i{int(rng.integers(0, 4))}", 60 * k, "view", None) for k in range(48)]
    return events_frame(rows)


def test_cold_start_split_hand_example():
    ev = cold_events()
    p = SessionsParams(
        global_test_fraction=0.25,
        global_valid_fraction=0.125,
        cold_item_fraction=0.25,
        cold_user_fraction=0.5,
        cold_seed=3,
    )
    result = cold_start_split(ev, p)
    base = global_temporal_split(ev, p)
    # the cut-off of global_temporal: the last 12 events are test, all of them kept
    assert result.test["row"].tolist() == list(range(36, 48))
    assert result.stats["cutoffs"]["test_after"] == base.stats["cutoffs"]["test_after"]
    items, users = result.tables["cold_items"], result.tables["cold_users"]
    held_items = set(items.loc[items["held_out"], "item_id"])
    held_users = set(users.loc[users["held_out"], "user_id"])
    assert len(held_items) == 1 and len(held_users) == 3  # round(4 x 0.25), round(6 x 0.5)
    for part in (result.train, result.valid):
        assert not part["item_id"].isin(held_items).any()
        assert not part["user_id"].isin(held_users).any()
    removed = base.train["item_id"].isin(held_items) | base.train["user_id"].isin(held_users)
    assert rows_of(result.train) == rows_of(base.train[~removed])
    stats = result.stats
    assert stats["dropped"]["null_user"] == 0
    assert stats["dropped"]["cold_item"] + stats["dropped"]["cold_user"] == (
        len(base.train) + len(base.valid) - len(result.train) - len(result.valid)
    )
    assert stats["cold"]["items"]["candidates"] == result.test["item_id"].nunique()
    assert stats["cold"]["users"]["test_rows"] == int(
        result.test["user_id"].isin(users["user_id"]).sum()
    )
    assert stats["params"]["cold_seed"] == 3
    assert all(check_leakage(result, "cold_start").values())
    assert_accounted(result, ev)


def test_cold_start_split_is_seeded_and_ignores_row_order():
    ev = cold_events()
    p = SessionsParams(cold_item_fraction=0.5, cold_user_fraction=0.5, cold_seed=1)

    def held(frame: pd.DataFrame, column: str) -> list[str]:
        return frame.loc[frame["held_out"], column].tolist()

    first = cold_start_split(ev, p)
    again = cold_start_split(ev.copy(deep=True), p)
    shuffled = cold_start_split(ev.sample(frac=1.0, random_state=0).reset_index(drop=True), p)
    for other in (again, shuffled):
        for name in ("cold_items", "cold_users"):
            pd.testing.assert_frame_equal(first.tables[name], other.tables[name])
        for name in ("train", "valid", "test"):
            assert rows_of(first.parts()[name]) == rows_of(other.parts()[name])
    draws = {
        seed: (
            held(
                cold_start_split(ev, p.model_copy(update={"cold_seed": seed})).tables["cold_users"],
                "user_id",
            )
        )
        for seed in range(6)
    }
    assert len({tuple(v) for v in draws.values()}) > 1  # the seed matters


def test_cold_start_split_skipped_when_not_applicable():
    anonymous = sessionize(
        events_frame([(None, f"i{k % 2}", k * 600, "view", f"s{k // 3}") for k in range(12)]),
        SessionsParams(),
    )
    drop = SessionsParams(splits=["cold_start"], cold_anonymous="drop")
    out = build_splits(anonymous, drop)
    assert isinstance(out["cold_start"], SkippedSplit)
    assert "no user ids" in out["cold_start"].reason
    with pytest.raises(SplitError, match="no user ids"):
        cold_start_split(anonymous, drop)
    # by default each anonymous session is a user: new sessions are cold users
    sessions = SessionsParams(splits=["cold_start"], cold_user_fraction=0.5)
    as_users = build_splits(anonymous, sessions)["cold_start"]
    assert isinstance(as_users, SplitResult)
    assert set(as_users.test["user_id"]) <= {f"session:s{k}" for k in range(4)}
    assert as_users.tables["cold_users"]["user_id"].str.startswith("session:").all()
    direct = cold_start_split(anonymous, sessions)
    assert rows_of(direct.test) == rows_of(as_users.test)

    # 10 events of one user and item, 2 after the cut-off: round(1 x 0.1) = 0 held out
    few = events_frame([("u0", "i0", k, "view", None) for k in range(8)])
    few = pd.concat(
        [few, events_frame([("u0", "i0", 100 + k, "view", None) for k in range(2)])],
        ignore_index=True,
    )
    p = SessionsParams(global_valid_fraction=0.0, splits=["global_temporal", "cold_start"])
    out = build_splits(few, p)
    assert isinstance(out["global_temporal"], SplitResult)
    assert isinstance(out["cold_start"], SkippedSplit)
    assert "too few events" in out["cold_start"].reason
    assert "cold_item_fraction" in out["cold_start"].reason
    with pytest.raises(SplitError, match="too few events"):
        cold_start_split(few, p)
    # holding out the only user empties train: skipped too, naming the fraction
    only = p.model_copy(update={"cold_user_fraction": 1.0})
    skipped = build_splits(few, only)["cold_start"]
    assert isinstance(skipped, SkippedSplit)
    assert "train part is empty" in skipped.reason and "cold_user_fraction=1.0" in skipped.reason


def test_check_leakage_of_the_cold_start_split():
    ev = cold_events()
    p = SessionsParams(cold_item_fraction=0.5, cold_user_fraction=0.5)
    good = cold_start_split(ev, p)
    assert all(check_leakage(good, "cold_start").values())
    cold_row = good.test[good.test["item_id"].isin(good.tables["cold_items"]["item_id"])]
    leaky = SplitResult(
        pd.concat([good.train, cold_row.iloc[:1]], ignore_index=True),
        good.valid,
        good.test,
        good.stats,
        good.tables,
    )
    checks = check_leakage(leaky, "cold_start")
    assert not checks["cold_items_not_in_train"] and not checks["test_after_train"]
    bare = SplitResult(good.train, good.valid, good.test, good.stats)
    checks = check_leakage(bare, "cold_start")
    assert checks["test_after_train"]
    assert not checks["cold_items_not_in_train"] and not checks["cold_users_in_test"]
