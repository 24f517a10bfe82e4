"""The synthetic click-stream: schema, determinism, realism and learnability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recpipe.config import SynthParams
from recpipe.data.schema import EVENT_COLUMNS, EVENT_DTYPES, EVENT_TYPES, read_tables, write_tables
from recpipe.data.synth import CATEGORY_VOCAB, generate

SMALL = SynthParams(seed=7, n_users=300, n_items=200, n_categories=8, n_sessions=2000)


@pytest.fixture(scope="module")
def small():
    return generate(SMALL)


@pytest.fixture(scope="module")
def default():
    """The default params: the data `make run` trains on."""
    return generate(SynthParams())


def _views(events: pd.DataFrame) -> pd.DataFrame:
    return events[events["event_type"] == "view"]


def next_item_hitrates(events: pd.DataFrame, k: int = 20, train_share: float = 0.8):
    """Next-view HitRate@k of global popularity and of a first-order Markov model.

    Both are fitted on the first ``train_share`` of sessions by start time and
    evaluated on every next-view transition of the later sessions. The Markov
    model ranks by transition count from the current item, ties (and items never
    seen after it) by training popularity.
    """
    views = _views(events).sort_values(["session_id", "timestamp"])
    first = views.groupby("session_id")["timestamp"].min().sort_values()
    train_ids = first.index[: int(len(first) * train_share)]
    codes, uniques = pd.factorize(views["item_id"])
    session, _ = pd.factorize(views["session_id"])
    in_train = views["session_id"].isin(train_ids).to_numpy()
    same = session[1:] == session[:-1]
    prev, nxt, train_pair = codes[:-1][same], codes[1:][same], in_train[1:][same]
    n = len(uniques)
    pop = np.bincount(codes[in_train], minlength=n).astype(np.float64)
    top_pop = np.argsort(-pop, kind="stable")[:k]
    counts = np.zeros((n, n))
    np.add.at(counts, (prev[train_pair], nxt[train_pair]), 1.0)
    top_markov = np.argsort(-(counts * (pop.max() + 1) + pop), axis=1, kind="stable")[:, :k]
    test_prev, test_next = prev[~train_pair], nxt[~train_pair]
    hr_pop = float(np.isin(test_next, top_pop).mean())
    hr_markov = float((top_markov[test_prev] == test_next[:, None]).any(axis=1).mean())
    return hr_pop, hr_markov


def test_events_follow_the_canonical_schema(small):
    ev = small.events
    assert small.source == "synthetic"
    assert tuple(ev.columns) == EVENT_COLUMNS
    for column, dtype in EVENT_DTYPES.items():
        assert ev[column].dtype == dtype, column
    assert str(ev["timestamp"].dt.tz) == "UTC"
    assert set(ev["event_type"].unique()) <= set(EVENT_TYPES)
    assert set(ev["event_type"].unique()) == {"view", "cart", "purchase"}
    assert (ev["value"] == 1.0).all()
    assert not ev.isna().any().any()
    assert ev["timestamp"].is_monotonic_increasing  # a time-ordered log


def test_items_and_users_tables(small):
    items, users = small.items, small.users
    assert list(items.columns) == ["item_id", "title", "text", "categories", "price"]
    assert len(items) == SMALL.n_items and items["item_id"].is_unique
    assert items["item_id"].dtype == "string"
    assert (items["title"].str.len() > 0).all() and (items["text"].str.split().str.len() >= 8).all()
    assert items["categories"].map(lambda c: 1 <= len(c) <= 2 and len(set(c)) == len(c)).all()
    main = items["categories"].str[0]
    assert main.nunique() == SMALL.n_categories  # every category has items
    assert (items["price"] > 0).all() and items["price"].dtype == "float64"
    assert list(users.columns) == ["user_id", "home_category", "country", "age_band"]
    assert len(users) == SMALL.n_users and users["user_id"].is_unique
    assert set(users["home_category"]) <= set(main)
    assert users["country"].nunique() > 3


def test_same_seed_same_tables_other_seed_other_tables(small):
    again = generate(SMALL)
    pd.testing.assert_frame_equal(small.events, again.events)
    pd.testing.assert_frame_equal(small.items, again.items)
    pd.testing.assert_frame_equal(small.users, again.users)
    other = generate(SMALL.model_copy(update={"seed": 8}))
    assert len(other.events) != len(small.events) or not other.events.equals(small.events)
    assert not other.items["title"].equals(small.items["title"])


def test_sizes_are_roughly_as_asked(small):
    ev = small.events
    assert ev["session_id"].nunique() == SMALL.n_sessions
    views_per_session = _views(ev).groupby("session_id").size()
    assert views_per_session.min() >= 1
    assert views_per_session.mean() == pytest.approx(SMALL.mean_session_length, rel=0.1)
    funnel = 1 + SMALL.cart_probability * (1 + SMALL.purchase_probability)
    expected = SMALL.n_sessions * SMALL.mean_session_length * funnel
    assert len(ev) == pytest.approx(expected, rel=0.1)
    counts = ev["event_type"].value_counts()
    n_views = counts["view"]
    assert counts["cart"] / n_views == pytest.approx(SMALL.cart_probability, rel=0.25)
    assert counts["purchase"] / counts["cart"] == pytest.approx(
        SMALL.purchase_probability, rel=0.25
    )


def test_every_session_has_one_user_and_users_have_many_sessions(small):
    ev = small.events
    assert (ev.groupby("session_id")["user_id"].nunique() == 1).all()
    per_user = ev.groupby("user_id")["session_id"].nunique()
    assert per_user.max() > 3 * per_user.median()  # heavy users exist


def test_timestamps_increase_within_sessions_and_stay_in_the_window(small):
    ev = small.events
    by_session = ev.sort_values(["session_id", "timestamp"], kind="stable")
    session = by_session["session_id"].to_numpy()
    same = session[1:] == session[:-1]
    gaps = np.diff(by_session["timestamp"].astype("int64").to_numpy())[same]
    assert (gaps >= 10**9).all()  # strictly increasing, at least a second apart
    assert gaps.max() <= 1800 * 10**9  # seconds to minutes, never hours
    start = pd.Timestamp(SMALL.start)
    end = start + pd.Timedelta(days=SMALL.days)
    assert ev["timestamp"].min() >= start
    assert ev["timestamp"].max() < end + pd.Timedelta(days=1)
    session_start = ev.groupby("session_id")["timestamp"].min()
    assert (session_start < end).all()


def test_daily_cycle_peaks_in_the_evening(default):
    hours = default.events.groupby("session_id")["timestamp"].min().dt.hour
    evening = hours.between(18, 22).mean() / 5
    night = hours.between(2, 5).mean() / 4
    assert evening > 3 * night


def test_events_reference_known_items_and_users(small):
    ev = small.events
    assert set(ev["item_id"].unique()) <= set(small.items["item_id"])
    assert set(ev["user_id"].unique()) <= set(small.users["user_id"])


def test_carts_and_purchases_follow_their_view_and_cart(small):
    ev = small.events.sort_values(["session_id", "timestamp"], kind="stable").reset_index(drop=True)
    prev_type = ev["event_type"].shift(1)
    prev_item = ev["item_id"].shift(1)
    prev_session = ev["session_id"].shift(1)
    same = (prev_session == ev["session_id"]) & (prev_item == ev["item_id"])
    carts = ev["event_type"] == "cart"
    buys = ev["event_type"] == "purchase"
    assert (same & (prev_type == "view"))[carts].all()
    assert (same & (prev_type == "cart"))[buys].all()


def test_popularity_is_zipf_like(default):
    counts = _views(default.events)["item_id"].value_counts().to_numpy()
    top = counts[: len(counts) // 10].sum() / counts.sum()
    assert top > 0.35  # the top 10% of items take over a third of the views
    assert counts[0] > 20 * np.median(counts)


def test_next_item_is_learnable_by_a_markov_model_not_by_popularity(default):
    hr_pop, hr_markov = next_item_hitrates(default.events)
    assert hr_markov > 0.6
    assert hr_markov > 2 * hr_pop


def test_without_following_successors_markov_has_no_edge():
    params = SynthParams(n_sessions=4000, follow_probability=0.0)
    hr_pop, hr_markov = next_item_hitrates(generate(params).events)
    assert hr_markov < 1.5 * hr_pop


def test_item_text_reveals_the_main_category(small):
    vocab = {name: set(words) for name, words in CATEGORY_VOCAB.items()}

    def best_category(text: str) -> str:
        words = text.split()
        return max(vocab, key=lambda c: sum(w in vocab[c] for w in words))

    guessed = small.items["text"].map(best_category)
    assert (guessed == small.items["categories"].str[0]).mean() > 0.9


def test_more_categories_than_built_in_and_than_items():
    many = generate(SynthParams(n_items=300, n_categories=40, n_sessions=200, n_users=50))
    assert many.items["categories"].str[0].nunique() == 40
    few = generate(SynthParams(n_items=3, n_categories=5, n_sessions=50, n_users=5))
    assert few.items["categories"].str[0].nunique() == 3
    assert set(few.events["item_id"]) <= set(few.items["item_id"])


def test_tables_round_trip_through_parquet(small, tmp_path: Path):
    manifest = write_tables(small, tmp_path)
    assert manifest["source"] == "synthetic"
    back = read_tables(tmp_path)
    pd.testing.assert_frame_equal(back.events, small.events)
    assert back.items["categories"].map(list).tolist() == small.items["categories"].tolist()
