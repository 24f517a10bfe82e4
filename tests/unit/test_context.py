"""Context features: event type index, log2 gap buckets across sessions, UTC hour/weekday."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recpipe.config import SynthParams
from recpipe.data.schema import EVENT_TYPES
from recpipe.data.synth import generate
from recpipe.features.context import (
    CONTEXT_COLUMNS,
    EVENT_TYPE_INDEX,
    context_cardinalities,
    context_features,
    gap_bucket_edges,
    gap_bucket_of,
)

T0 = pd.Timestamp("2024-03-10T23:59:58Z")  # a Sunday, two seconds before midnight


def _events(rows: list[tuple[str | None, float, str | None]]) -> pd.DataFrame:
    """Events from (session, seconds after T0, event type) rows."""
    session, seconds, types = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "session_id": pd.Series(session, dtype="string"),
            "timestamp": pd.Series([T0 + pd.Timedelta(seconds=s) for s in seconds]).astype(
                "datetime64[ns, UTC]"
            ),
            "event_type": pd.Series(types, dtype="string"),
        }
    )


HAND = _events(
    [
        ("A", 0.0, "view"),  # first of A                        -> 0
        ("A", 0.5, "click"),  # gap 0.5: 1 + floor(log2 1.5) = 1   -> 1
        ("A", 1.5, "cart"),  # gap 1.0: 1 + log2 2 = 2             -> 2
        ("A", 4.5, "purchase"),  # gap 3.0: 1 + log2 4 = 3         -> 3
        ("A", 4.5, "rating"),  # gap 0: 1 + log2 1 = 1             -> 1
        ("A", 1004.5, "bogus"),  # gap 1000: 1 + 9 = 10, capped    -> 7
        ("B", 2.0, None),  # first of B although 0.5 s after A    -> 0
        ("B", 4.0, "view"),  # gap 2: 1 + floor(log2 3) = 2        -> 2
        (None, 5.0, "view"),  # no session: stands alone           -> 0
        (None, 6.0, "view"),  #                                     -> 0
    ]
)
HAND_BUCKETS = [0, 1, 2, 3, 1, 7, 0, 2, 0, 0]


def test_event_type_index():
    assert {t: i + 1 for i, t in enumerate(EVENT_TYPES)} == EVENT_TYPE_INDEX
    assert EVENT_TYPE_INDEX["view"] == 1 and 0 not in EVENT_TYPE_INDEX.values()
    got = context_features(HAND, 8)["event_type_idx"].tolist()
    assert got == [1, 2, 3, 4, 5, 0, 0, 1, 1, 1]


def test_gap_buckets_hand_computed_with_session_boundaries():
    ctx = context_features(HAND, gap_buckets=8)
    assert list(ctx.columns) == list(CONTEXT_COLUMNS)
    assert ctx["gap_bucket"].tolist() == HAND_BUCKETS
    assert all(ctx[c].dtype == np.int8 for c in CONTEXT_COLUMNS)
    # uncapped with more buckets
    assert context_features(HAND, 16)["gap_bucket"].tolist()[5] == 10
    # two buckets: first event or not
    assert context_features(HAND, 2)["gap_bucket"].tolist() == [0, 1, 1, 1, 1, 1, 0, 1, 0, 0]


def test_hour_and_weekday_in_utc():
    ctx = context_features(HAND, 8)
    # 23:59:58 to 23:59:59.5 Sunday; from +2 s it is Monday 00:00 UTC
    assert ctx["hour"].tolist() == [23, 23, 23, 0, 0, 0, 0, 0, 0, 0]
    assert ctx["dow"].tolist() == [6, 6, 6, 0, 0, 0, 0, 0, 0, 0]
    # the same instants given in another zone give the same (UTC) features
    ny = HAND.assign(timestamp=HAND["timestamp"].dt.tz_convert("America/New_York"))
    assert context_features(ny, 8).equals(ctx)
    # naive times are taken as UTC
    naive = HAND.assign(timestamp=HAND["timestamp"].dt.tz_localize(None))
    assert context_features(naive, 8).equals(ctx)
    # before the epoch too (1969-12-31 was a Wednesday)
    old = _events([("s", 0.0, "view")]).assign(
        timestamp=pd.Series([pd.Timestamp("1969-12-31T22:30Z")]).astype("datetime64[ns, UTC]")
    )
    assert context_features(old, 8)[["hour", "dow"]].iloc[0].tolist() == [22, 2]


def test_any_row_order_gives_the_same_features_aligned_to_the_index():
    no_ties = HAND.drop(index=4)  # rows 3 and 4 share a time; see the tie test below
    expected = context_features(no_ties, 8)
    for seed in range(5):
        shuffled = no_ties.sample(frac=1.0, random_state=seed)
        got = context_features(shuffled, 8)
        assert got.index.equals(shuffled.index)
        assert got.loc[no_ties.index].equals(expected)
    # a session split into two runs is still one session
    split = HAND.iloc[[0, 1, 6, 2, 3, 4, 5, 7, 8, 9]]
    assert context_features(split, 8).loc[HAND.index].equals(context_features(HAND, 8))
    # custom index labels are kept
    relabelled = HAND.set_axis(np.arange(100, 110))
    assert context_features(relabelled, 8).index.tolist() == list(range(100, 110))


def test_synthetic_events_match_a_groupby_reference():
    events = generate(SynthParams(n_users=50, n_items=40, n_sessions=200)).events
    ctx = context_features(events, 16)
    gap = events.groupby("session_id")["timestamp"].diff().dt.total_seconds()
    expected = np.where(gap.isna(), 0, np.minimum(1 + np.floor(np.log2(1 + gap)), 15))
    assert ctx["gap_bucket"].tolist() == expected.astype(int).tolist()
    assert ctx["hour"].tolist() == events["timestamp"].dt.hour.tolist()
    assert ctx["dow"].tolist() == events["timestamp"].dt.day_of_week.tolist()
    assert (ctx["event_type_idx"] > 0).all()


def test_ties_in_time_keep_input_order():
    swapped = HAND.iloc[[0, 1, 2, 4, 3, 5, 6, 7, 8, 9]]
    got = context_features(swapped, 8)["gap_bucket"]
    # the later row of the tied pair is the one with the zero gap
    assert got.loc[[4, 3]].tolist() == [3, 1]


def test_gap_bucket_edges_and_serving_twin():
    assert gap_bucket_edges(6).tolist() == [0.0, 1.0, 3.0, 7.0, 15.0]
    assert gap_bucket_edges(2).tolist() == [0.0]
    seconds = [np.nan, 0.0, 0.5, 1.0, 2.9, 3.0, 7.0, 14.99, 15.0, 1e12, -3.0]
    assert gap_bucket_of(seconds, 6).tolist() == [0, 1, 1, 2, 2, 3, 4, 4, 5, 5, 1]
    assert gap_bucket_of(np.nan, 6) == 0
    assert gap_bucket_of([5.0], 200).dtype == np.int16
    assert context_features(HAND, 200)["gap_bucket"].dtype == np.int16
    assert context_cardinalities(16) == {
        "event_type_idx": len(EVENT_TYPES) + 1,
        "gap_bucket": 16,
        "hour": 24,
        "dow": 7,
    }


@settings(max_examples=80, deadline=None)
@given(st.floats(0.0, 1e9), st.integers(2, 40))
def test_property_bucket_formula(seconds, gap_buckets):
    expected = min(1 + int(np.floor(np.log2(1.0 + seconds))), gap_buckets - 1)
    edges = gap_bucket_edges(gap_buckets)
    got = int(gap_bucket_of(seconds, gap_buckets))
    # the edges are exact; log2 may round at an edge, so accept either side there
    assert got == expected or seconds + 1.0 in set(edges + 1.0)
    assert edges[got - 1] <= seconds
    assert got == gap_buckets - 1 or seconds < edges[got]


def test_empty_and_single_event():
    empty = HAND.iloc[:0]
    ctx = context_features(empty, 8)
    assert ctx.shape == (0, 4) and list(ctx.columns) == list(CONTEXT_COLUMNS)
    assert context_features(HAND.iloc[:1], 8)["gap_bucket"].tolist() == [0]


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="session_id"):
        context_features(HAND.drop(columns="session_id"), 8)
    with pytest.raises(ValueError, match="gap_buckets"):
        context_features(HAND, 1)
    with pytest.raises(ValueError, match="null"):
        context_features(HAND.assign(timestamp=HAND["timestamp"].where(HAND.index != 3)), 8)
    with pytest.raises(ValueError, match="date-times"):
        context_features(HAND.assign(timestamp="yesterday"), 8)
