"""sessionize and filter_support: checked against a plain-Python reference on random streams."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recpipe.config import SessionsParams
from recpipe.data.schema import EVENT_TYPES, make_events
from recpipe.errors import SplitError
from recpipe.sessions._arrays import encode, stable_argsort, take_rows
from recpipe.sessions.sessionize import filter_support, sessionize

T0 = pd.Timestamp("2024-03-01", tz="UTC")
MINUTE_NS = 60_000_000_000


def events_frame(rows: list[tuple], *, row_column: bool = True) -> pd.DataFrame:
    """Canonical events from ``(user, item, minute, event_type, session)`` tuples.

    A ``row`` column carries each row's input position through sessionize.
    """
    users, items, minutes, types, sessions = zip(*rows, strict=True) if rows else ([],) * 5
    ts = pd.Series(T0 + pd.to_timedelta(list(minutes), unit="min")).astype("datetime64[ns, UTC]")
    ev = make_events(
        pd.Series(list(users), dtype="object"),
        pd.Series(list(items), dtype="object"),
        ts,
        pd.Series(list(types), dtype="object"),
        1.0,
        pd.Series(list(sessions), dtype="object"),
    )
    if row_column:
        ev["row"] = np.arange(len(ev))
    return ev


def reference_sessionize(ev: pd.DataFrame, params: SessionsParams) -> pd.DataFrame:
    """Loop-based sessionize: the documented rules, row by row (small inputs only)."""
    gap = params.gap_minutes * MINUTE_NS
    ts = ev["timestamp"].to_numpy(dtype="datetime64[ns]").view(np.int64)
    user = ev["user_id"].tolist()
    src = ev["session_id"].tolist()
    session: list[str | None] = [None] * len(ev)
    streams: dict[tuple, list[int]] = defaultdict(list)
    for i in range(len(ev)):
        if params.use_source_sessions and src[i] is not pd.NA:
            session[i] = src[i]
        elif user[i] is not pd.NA:
            streams[("user", user[i])].append(i)
        elif src[i] is not pd.NA:
            streams[("recut", src[i])].append(i)
        else:
            streams[("lone", i)].append(i)
    for (kind, key), members in streams.items():
        members.sort(key=lambda i: (ts[i], i))
        n, prev = 0, None
        for i in members:
            if prev is not None and ts[i] - ts[prev] > gap:
                n += 1
            session[i] = f"#{i}" if kind == "lone" else f"{key}#{n}"
            prev = i
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(session):
        groups[s].append(i)
    ordered = []
    for members in groups.values():
        members.sort(key=lambda i: (ts[i], i))
        ordered.append(members)
    ordered.sort(key=lambda m: (ts[m[0]], m[0]))
    rows = [i for members in ordered for i in members]
    out = ev.iloc[rows].reset_index(drop=True)
    out["session_id"] = pd.Series([session[i] for i in rows], dtype="string")
    if params.collapse_repeats:
        out = reference_collapse(out)
    return out


def reference_collapse(out: pd.DataFrame) -> pd.DataFrame:
    keep, types = [], []
    rank = {t: i for i, t in enumerate(EVENT_TYPES)}
    best = -1
    for i in range(len(out)):
        same_run = (
            i > 0
            and out["session_id"][i] == out["session_id"][i - 1]
            and out["item_id"][i] == out["item_id"][i - 1]
        )
        strength = rank.get(out["event_type"][i], -1)
        if same_run:
            if strength > best:
                best, types[-1] = strength, out["event_type"][i]
        else:
            keep.append(i)
            types.append(out["event_type"][i])
            best = strength
    res = out.iloc[keep].reset_index(drop=True)
    res["event_type"] = pd.Series(types, dtype="string")
    return res


# small alphabets so that users, items, sessions and timestamps repeat and tie
row_strategy = st.tuples(
    st.one_of(st.none(), st.sampled_from(["u0", "u1", "u2"])),
    st.sampled_from(["i0", "i1", "i2", "i3"]),
    st.integers(0, 48).map(lambda k: 5 * k),  # a 5-minute grid: gaps often equal `gap`
    st.sampled_from(["view", "click", "cart", "purchase"]),
    st.one_of(st.none(), st.sampled_from(["s0", "s1", "s2"])),
)
params_strategy = st.builds(
    SessionsParams,
    use_source_sessions=st.booleans(),
    gap_minutes=st.sampled_from([0.5, 5.0, 10.0, 30.0, 12.5]),
    collapse_repeats=st.booleans(),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(row_strategy, min_size=1, max_size=40), params=params_strategy)
def test_sessionize_matches_reference(rows, params):
    ev = events_frame(rows)
    before = ev.copy(deep=True)
    out = sessionize(ev, params)
    pd.testing.assert_frame_equal(ev, before)  # the input is never modified
    expected = reference_sessionize(ev, params)
    pd.testing.assert_frame_equal(out, expected)
    assert out["session_id"].notna().all()
    assert list(out.columns) == list(ev.columns)


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(row_strategy, min_size=1, max_size=60), gap=st.sampled_from([5.0, 30.0]))
def test_gap_rule_and_order(rows, gap):
    """Generated sessions: gaps inside <= gap, between a user's consecutive sessions > gap."""
    ev = events_frame([(u or "u9", i, m, t, None) for u, i, m, t, _ in rows])
    out = sessionize(ev, SessionsParams(gap_minutes=gap))
    ts = out["timestamp"].to_numpy(dtype="datetime64[ns]").view(np.int64)
    sid = out["session_id"].to_numpy(dtype=object)
    same = sid[1:] == sid[:-1]
    step = np.diff(ts)
    assert (step[same] >= 0).all()  # non-decreasing within a session
    tie = same & (step == 0)
    assert (np.diff(out["row"].to_numpy())[tie] > 0).all()  # ties in input order
    assert (step[same] <= gap * MINUTE_NS).all()
    # sessions are contiguous runs, ordered by their start
    runs = np.r_[0, np.flatnonzero(~same) + 1]
    assert len(set(sid[runs])) == len(runs)
    assert (np.diff(ts[runs]) >= 0).all()
    # per user, consecutive sessions are more than `gap` apart
    for _, g in out.groupby("user_id", sort=False):
        g = g.sort_values(["timestamp", "row"])
        t = g["timestamp"].to_numpy(dtype="datetime64[ns]").view(np.int64)
        changes = g["session_id"].to_numpy(dtype=object)
        new = changes[1:] != changes[:-1]
        assert (np.diff(t)[new] > gap * MINUTE_NS).all()
        assert (np.diff(t)[~new] <= gap * MINUTE_NS).all()


def test_source_sessions_kept_and_gaps_fill_the_rest():
    ev = events_frame(
        [
            ("a", "i1", 0, "view", None),
            ("a", "i2", 10, "view", None),
            ("a", "i2", 60, "cart", None),  # 50 min later: a new session of user a
            ("b", "i1", 5, "view", "s1"),
            ("c", "i4", 500, "view", "s1"),  # source session kept across users and gaps
            (None, "i3", 6, "view", None),  # neither id: a session of its own
        ]
    )
    out = sessionize(ev, SessionsParams(gap_minutes=30))
    by_row = dict(zip(out["row"], out["session_id"], strict=True))
    assert by_row == {0: "a#0", 1: "a#0", 2: "a#1", 3: "s1", 4: "s1", 5: "#5"}
    assert out["row"].tolist() == [0, 1, 3, 4, 5, 2]  # sessions by start, then time

    ignored = sessionize(ev, SessionsParams(use_source_sessions=False, gap_minutes=30))
    by_row = dict(zip(ignored["row"], ignored["session_id"], strict=True))
    assert by_row[3] == "b#0" and by_row[4] == "c#0"


def test_gap_equal_to_threshold_stays_in_the_session():
    ev = events_frame([("a", "i1", 0, "view", None), ("a", "i2", 30, "view", None)])
    assert sessionize(ev, SessionsParams(gap_minutes=30))["session_id"].tolist() == ["a#0"] * 2
    ev = events_frame([("a", "i1", 0, "view", None), ("a", "i2", 31, "view", None)])
    assert sessionize(ev, SessionsParams(gap_minutes=30))["session_id"].tolist() == ["a#0", "a#1"]


def test_anonymous_source_sessions_are_recut_when_ignored():
    ev = events_frame(
        [
            (None, "i1", 0, "view", "s7"),
            (None, "i2", 5, "view", "s7"),
            (None, "i3", 90, "view", "s7"),
        ]
    )
    out = sessionize(ev, SessionsParams(use_source_sessions=False, gap_minutes=30))
    assert out["session_id"].tolist() == ["s7#0", "s7#0", "s7#1"]
    assert sessionize(ev, SessionsParams())["session_id"].tolist() == ["s7"] * 3


def test_generated_ids_never_collide_with_source_ids():
    ev = events_frame(
        [
            ("u", "i1", 0, "view", None),  # would be "u#0" ...
            ("x", "i2", 1, "view", "u#0"),  # ... which is a source id
            ("y", "i3", 2, "view", "~a"),
        ]
    )
    out = sessionize(ev, SessionsParams())
    ids = dict(zip(out["row"], out["session_id"], strict=True))
    assert ids[1] == "u#0" and ids[2] == "~a"
    assert ids[0] not in {"u#0", "~a"} and ids[0].startswith("~~")
    assert out["session_id"].nunique() == 3
    pd.testing.assert_frame_equal(out, sessionize(ev, SessionsParams()))  # deterministic


def test_user_id_equal_to_recut_session_id_does_not_merge_sessions():
    ev = events_frame([("k", "i1", 0, "view", None), (None, "i2", 1, "view", "k")])
    out = sessionize(ev, SessionsParams(use_source_sessions=False))
    assert out["session_id"].nunique() == 2  # fallback ids instead of two "k#0"


def test_collapse_repeats_keeps_first_row_with_strongest_type():
    ev = events_frame(
        [
            ("a", "i1", 0, "view", None),
            ("a", "i1", 1, "cart", None),
            ("a", "i1", 2, "purchase", None),
            ("a", "i1", 3, "view", None),
            ("a", "i2", 4, "click", None),
            ("a", "i1", 5, "view", None),  # not adjacent to the first run: kept
            ("a", "i1", 100, "view", None),  # next session: kept
        ]
    )
    out = sessionize(ev, SessionsParams(collapse_repeats=True))
    assert out["row"].tolist() == [0, 4, 5, 6]
    assert out["event_type"].tolist() == ["purchase", "click", "view", "view"]
    assert out["timestamp"].iloc[0] == T0
    assert out["event_type"].dtype == "string"


def test_empty_and_dtypes():
    ev = events_frame([("a", "i1", 0, "view", None)]).iloc[:0]
    out = sessionize(ev, SessionsParams())
    assert len(out) == 0 and out["session_id"].dtype == "string"
    full = sessionize(events_frame([("a", "i1", 0, "view", None)]), SessionsParams())
    assert full.dtypes.to_dict() == events_frame([("a", "i1", 0, "view", None)]).dtypes.to_dict()


def test_synthetic_log_with_source_ids_dropped():
    from recpipe.config import SynthParams
    from recpipe.data.synth import generate

    ev = generate(SynthParams(n_sessions=400, n_users=50, n_items=60, days=3)).events
    anonymous = ev.assign(session_id=pd.Series(pd.NA, index=ev.index, dtype="string"))
    out = sessionize(anonymous, SessionsParams(gap_minutes=30))
    assert len(out) == len(ev)
    assert out["session_id"].str.contains("#").all()
    # the generator's sessions last minutes and a user's sessions are hours apart:
    # the gap rule recovers most of them
    assert 0.7 * ev["session_id"].nunique() <= out["session_id"].nunique()
    assert out["session_id"].nunique() <= ev["session_id"].nunique()
    kept = sessionize(ev, SessionsParams())
    assert kept["session_id"].nunique() == ev["session_id"].nunique()


# --------------------------------------------------------------------------- filter_support
def test_filter_support_order_and_counts():
    rows = [
        ("a", "rare", 0, "view", "s1"),  # the only 'rare' event: dropped first ...
        ("a", "x", 1, "view", "s1"),  # ... which leaves s1 with one event: dropped
        ("b", "x", 2, "view", "s2"),
        ("b", "y", 3, "view", "s2"),
        ("c", "x", 4, "view", "s3"),
        ("c", "y", 5, "view", "s3"),
        ("d", "y", 6, "view", "s4"),  # a one-event session: dropped
    ]
    ev = events_frame(rows)
    before = ev.copy(deep=True)
    out, stats = filter_support(ev, min_item_support=2, min_session_length=2)
    pd.testing.assert_frame_equal(ev, before)
    assert out["row"].tolist() == [2, 3, 4, 5]
    assert stats["dropped"] == {"item_support": 1, "session_length": 2}
    assert stats["rows_in"] == 7 and stats["rows"] == 4
    assert stats["items"] == 2 and stats["items_dropped"] == 1
    assert stats["sessions"] == 2 and stats["sessions_dropped"] == 2
    assert stats["rows"] + sum(stats["dropped"].values()) == stats["rows_in"]
    # item support is counted once, before the session filter (GRU4Rec):
    # 'x' keeps support 3 although one of its events goes with s1
    out2, _ = filter_support(ev, min_item_support=3, min_session_length=1)
    assert set(out2["item_id"]) == {"x", "y"}


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(row_strategy, min_size=1, max_size=50),
    support=st.integers(1, 4),
    length=st.integers(1, 4),
)
def test_filter_support_matches_pandas(rows, support, length):
    ev = sessionize(events_frame(rows), SessionsParams())
    out, stats = filter_support(ev, support, length)
    counts = ev["item_id"].map(ev["item_id"].value_counts())
    step1 = ev[counts >= support]
    sizes = step1["session_id"].map(step1["session_id"].value_counts())
    expected = step1[sizes >= length].reset_index(drop=True)
    pd.testing.assert_frame_equal(out, expected)
    assert stats["dropped"]["item_support"] == len(ev) - len(step1)
    assert stats["dropped"]["session_length"] == len(step1) - len(expected)


def test_filter_support_needs_sessions():
    ev = events_frame([("a", "x", 0, "view", None), ("a", "x", 1, "view", "s1")])
    with pytest.raises(SplitError, match="sessionize"):
        filter_support(ev, 1, 2)
    out, stats = filter_support(ev, 1, 1)  # no session filter: no session ids needed
    assert len(out) == 2 and stats["sessions"] is None


# --------------------------------------------------------------------------- array helpers
@settings(max_examples=50, deadline=None)
@given(
    keys=st.lists(st.integers(0, 300_000), min_size=0, max_size=300),
    extra=st.integers(1, 70_000),
)
def test_counting_and_radix_sorts_agree(keys, extra):
    k = np.asarray(keys, dtype=np.int64)
    n_keys = (int(k.max()) + extra) if len(k) else extra
    expected = np.argsort(k, kind="stable")
    assert (stable_argsort(k, n_keys) == expected).all()
    assert (stable_argsort(k, n_keys, counting=False) == expected).all()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.none(), st.sampled_from("abc")), max_size=80), st.integers(1, 30))
def test_encode_runs_and_hash_agree(values, repeat):
    s = pd.Series([v for v in values for _ in range(repeat)], dtype="string")  # long runs
    codes = encode(s)
    assert (codes.codes < 0).tolist() == s.isna().tolist()
    decoded = [None if c < 0 else codes.uniques[int(c)].as_py() for c in codes.codes]
    assert decoded == [None if v is pd.NA else v for v in s]
    uniques, _ = pd.factorize(s)
    assert codes.n_uniques == (uniques.max() + 1 if len(uniques) and uniques.max() >= 0 else 0)


def test_take_rows_keeps_dtypes_and_slices():
    ev = events_frame([("a", f"i{k}", k, "view", None) for k in range(6)])
    ev["n"] = pd.array([1, None, 3, 4, 5, 6], dtype="Int64")
    ev["o"] = [{"k": k} for k in range(6)]
    for rows in (np.array([4, 0, 2]), np.array([False, True, True, False, True, False])):
        out = take_rows(ev, rows)
        expected = ev.iloc[np.flatnonzero(rows) if rows.dtype == bool else rows]
        pd.testing.assert_frame_equal(out, expected.reset_index(drop=True))
    sliced = take_rows(ev, np.array([1, 2, 3]))
    pd.testing.assert_frame_equal(sliced, ev.iloc[1:4].reset_index(drop=True))
    assert len(take_rows(ev, np.zeros(6, bool))) == 0


def test_select_event_types_keeps_only_listed_types_and_counts_the_rest():
    from recpipe.sessions.sessionize import select_event_types

    ev = pd.DataFrame({"event_type": pd.Series(["view", "cart", "view", "purchase"])})
    kept, stats = select_event_types(ev, ["view"])
    assert kept["event_type"].tolist() == ["view", "view"]
    assert stats == {"kept": ["view"], "dropped": 2}
    same, stats = select_event_types(ev, None)
    assert same is ev and stats["dropped"] == 0
    assert len(ev) == 4  # the input is untouched
