"""Cold-start baselines (category and contextual popularity) and ALS / BPR request queries."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import scipy.sparse as sp

from recpipe.baselines.category_pop import CategoryPopularity, item_category_weights
from recpipe.baselines.context_pop import ContextPopularity
from recpipe.baselines.implicit_mf import ALS, BPR
from recpipe.models.base import Recommender
from recpipe.models.data import DataMeta, Interactions, Queries
from recpipe.models.registry import load_model
from tests.contract.planted import encoded_frame, interactions

N_ITEMS = 8  # items 2..7
N_USERS = 6


def categories(rows: dict[int, list[int]], n_cat: int = 4) -> sp.csr_matrix:
    """(N_ITEMS, n_cat) multi-hot categories: item -> its columns (0: unknown)."""
    dense = np.zeros((N_ITEMS, n_cat), dtype=np.float32)
    for item, cols in rows.items():
        dense[item, cols] = 1.0
    return sp.csr_matrix(dense)


def meta_for(train: Interactions, cats: sp.csr_matrix | None) -> DataMeta:
    counts = np.bincount(train.item_idx, minlength=N_ITEMS)
    counts[:2] = 0
    return DataMeta(
        n_items=N_ITEMS, n_users=N_USERS, item_counts=counts, split="t", item_categories=cats
    )


def real(scores: np.ndarray) -> np.ndarray:
    return scores[..., 2:]


def assert_round_trip(model: Recommender, queries: list[Queries], tmp_path) -> None:
    loaded = load_model(model.save(tmp_path / model.name))
    assert type(loaded) is type(model) and loaded.config == model.config
    for q in queries:
        np.testing.assert_array_equal(loaded.score(q), model.score(q))


# ---------------------------------------------------------------------- category_pop
# columns: 0 unknown, 1, 2, 3; item 5 is in 2 and 3 (its "unknown" flag is ignored);
# 6 and 7 are cold (no train event), 7 in the favourite category of user 2
CATS = {2: [1], 3: [1], 4: [2], 5: [0, 2, 3], 6: [3], 7: [1]}
SESSIONS = [[2, 3, 2], [4, 5], [2]]
USERS = [2, 3, 4]
# counts 2: 3, 3: 1, 4: 1, 5: 1; item 5's event is half in 2, half in 3
SHARE = np.array([0, 4, 1.5, 0.5]) / 6
POP = np.log1p([3, 1, 1, 1, 0, 0]) / np.log1p(3)  # items 2..7


def category_pop(config=None, cats=CATS):
    train = interactions(SESSIONS, users=USERS)
    return CategoryPopularity(config or {}, meta_for(train, categories(cats))).fit(train)


def affinities(pref: np.ndarray) -> np.ndarray:
    """Items 2..7: mean preference over their categories (by hand, from CATS)."""
    return np.array([pref[1], pref[1], pref[2], (pref[2] + pref[3]) / 2, pref[3], pref[1]])


def test_item_category_weights_drop_unknown_and_spread_mass():
    weights, has = item_category_weights(categories({**CATS, 6: [], 7: [0]}))
    dense = weights.toarray()
    np.testing.assert_array_equal(dense[:2], 0)  # reserved rows
    np.testing.assert_allclose(dense[5], [0, 0, 0.5, 0.5])
    np.testing.assert_allclose(dense[6], [1, 0, 0, 0])  # no category: counted as unknown
    np.testing.assert_allclose(dense[7], [1, 0, 0, 0])  # only unknown
    assert has.tolist() == [False, False, True, True, True, True, False, True]


def test_category_pop_orders_cold_ties_by_a_seeded_draw_below_any_warm_item():
    cats = {**CATS, 7: CATS[2]}  # item 7 (no train event) shares item 2's category
    shuffled, plain = category_pop({"seed": 3}, cats), category_pop({"shuffle_ties": False}, cats)
    a, b = real(shuffled.score(Queries.for_users([2]))), real(plain.score(Queries.for_users([2])))
    cold = POP == 0
    assert cold.any()
    np.testing.assert_allclose(a[:, ~cold], b[:, ~cold], rtol=1e-6)  # warm items untouched
    assert np.all(a[:, cold] >= b[:, cold])
    # below the popularity term of any warm item of the same affinity
    assert np.all(a[:, cold] - b[:, cold] < 1e-3 * POP[~cold].min())
    again = category_pop({"seed": 3}, cats).score(Queries.for_users([2]))
    np.testing.assert_array_equal(again, shuffled.score(Queries.for_users([2])))


def test_category_pop_by_hand():
    model = category_pop({"tie": 1e-3, "prior": 1.0, "decay": 0.5, "shuffle_ties": False})
    # user 2: 3 events in category 1; user 5: no events (global shares)
    user2 = (np.array([0, 3, 0, 0]) + SHARE) / (3 + 1)
    got = real(model.score(Queries.for_users([2, 5, 1])))
    np.testing.assert_allclose(got[0], affinities(user2) + 1e-3 * POP, rtol=1e-6)
    for row in got[1:]:  # unknown users get the global mix
        np.testing.assert_allclose(row, affinities(SHARE) + 1e-3 * POP, rtol=1e-6)
    # session [4, 6]: 6 weighs 1 (category 3), 4 weighs 0.5 (category 2)
    session = (np.array([0, 0, 0.5, 1]) + SHARE) / (1.5 + 1)
    got = real(model.score(Queries.from_item_lists([[4, 6], []])))
    np.testing.assert_allclose(got[0], affinities(session) + 1e-3 * POP, rtol=1e-6)
    np.testing.assert_allclose(got[1], affinities(SHARE) + 1e-3 * POP, rtol=1e-6)
    # item 5: its own mass, half in 2 and half in 3
    item5 = (np.array([0, 0, 0.5, 0.5]) + SHARE) / 2
    got = real(model.score(Queries.for_items([5])))[0]
    np.testing.assert_allclose(got, affinities(item5) + 1e-3 * POP, rtol=1e-6)


def test_category_pop_ranks_cold_items_by_category_then_popularity():
    model = category_pop()
    scores = model.score(Queries.for_users([2]))[0]
    assert scores[7] > scores[6]  # cold, favourite category > cold, other category
    assert scores[2] > scores[3] > scores[7]  # within the favourite: by popularity
    assert scores.argmax() == 2
    # a session of category-3 items puts the cold category-3 item above popular item 2
    session = model.score(Queries.from_item_lists([[6, 6]]))[0]
    assert session[6] > session[2]
    assert np.all(np.isfinite(real(scores)))


def test_category_pop_unknown_category_and_missing_categories():
    # 2: category 1; 3: only "unknown"; 4: no category at all (counts as unknown)
    train = interactions([[2, 3, 4]])
    cats = categories({2: [1], 3: [0]}, n_cat=2)
    model = CategoryPopularity({"tie": 0.0}, meta_for(train, cats)).fit(train)
    share = np.array([2 / 3, 1 / 3])
    got = real(model.score(Queries.for_items([3])))[0]
    pref = (np.array([1.0, 0.0]) + share) / 2
    # items without any category (4..7) score the global share of "unknown"
    np.testing.assert_allclose(got, [pref[1], pref[0], *[share[0]] * 4], rtol=1e-6)


def test_category_pop_without_categories_is_popularity(caplog):
    train = interactions(SESSIONS, users=USERS)
    with caplog.at_level(logging.WARNING, logger="recpipe.baselines.category_pop"):
        model = CategoryPopularity({}, meta_for(train, None)).fit(train)
    assert "no item categories" in caplog.text
    for q in (Queries.for_users([2]), Queries.for_items([6]), Queries.from_item_lists([[7]])):
        np.testing.assert_allclose(real(model.score(q))[0], POP, rtol=1e-6)


def test_category_pop_round_trip(tmp_path):
    queries = [
        Queries.for_users([2, 3, 5]),
        Queries.from_item_lists([[4, 6], [], [1]]),
        Queries.for_items([5, 7, 1]),
    ]
    assert_round_trip(category_pop(), queries, tmp_path / "cats")
    train = interactions(SESSIONS, users=USERS)
    plain = CategoryPopularity({}, meta_for(train, None)).fit(train)
    assert_round_trip(plain, queries, tmp_path / "plain")


# ---------------------------------------------------------------------- context_pop
X, Y, Z = 2, 3, 4  # X is popular at night, Y in the morning, Z the most popular overall
NIGHT, MORNING = 2, 9
#: (item, hour, number of events); every event on weekday 4, event type 1
CONTEXT_EVENTS = [(X, NIGHT, 10), (Y, MORNING, 8), (Z, NIGHT, 6), (Z, MORNING, 6), (5, 15, 1)]


def context_train() -> Interactions:
    sessions = [[item] * n for item, _, n in CONTEXT_EVENTS]
    frame = encoded_frame(sessions)
    frame["hour"] = np.repeat([h for _, h, _ in CONTEXT_EVENTS], [n for *_, n in CONTEXT_EVENTS])
    return Interactions.from_frame(frame.astype({"hour": "int8"}))


def context_pop(config=None, cats=None):
    train = context_train()
    return ContextPopularity(config or {}, meta_for(train, cats)).fit(train)


def session(hour: int | None, items=(5,), dow: int = 4, event_type: int = 1) -> Queries:
    row = np.array([list(items)])
    if hour is None:
        return Queries.for_sessions(row)
    ctx = np.full(row.shape, 0)
    return Queries.for_sessions(
        row,
        hour=ctx + hour,
        dow=ctx + dow,
        event_type_idx=ctx + event_type,
    )


def test_context_pop_night_morning_and_global():
    model = context_pop()
    assert model.score(session(NIGHT)).argmax() == X
    assert model.score(session(MORNING)).argmax() == Y
    no_context = model.score(session(None))[0]
    order = np.argsort(-no_context[2:], kind="stable") + 2
    assert order[:4].tolist() == [Z, X, Y, 5]  # global popularity, cold items last
    for q in (Queries.for_users([2, 1]), Queries.for_items([X])):
        np.testing.assert_array_equal(model.score(q), np.tile(no_context, (len(q), 1)))


def test_context_pop_by_hand():
    m = 10.0
    model = context_pop({"m": m})
    counts = np.array([10, 8, 12, 1, 0, 0], dtype=float)  # items 2..7
    p = (counts + 0.5) / (counts.sum() + 0.5 * 6)
    night = np.array([10, 0, 6, 0, 0, 0], dtype=float)
    p_night = (night + m * p) / (night.sum() + m)
    # hour only (unknown dow and event type): log P(i | hour)
    got = real(model.score(session(NIGHT, dow=-1, event_type=0)))[0]
    np.testing.assert_allclose(got, np.log(p_night), rtol=1e-5)
    got = real(model.score(session(None)))[0]
    np.testing.assert_allclose(got, np.log(p), rtol=1e-5)
    # all three features: log P(i) + sum of the log lifts
    p_dow = (counts + m * p) / (counts.sum() + m)  # every event on weekday 4
    # weekday 4 and event type 1 hold every event: the same conditional, P(i | all)
    expected = np.log(p_night) + 2 * np.log(p_dow / p)
    got = real(model.score(session(NIGHT)))[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_context_pop_unknown_codes_and_empty_prefixes_are_finite():
    model = context_pop()
    global_scores = model.score(session(None))[0]
    odd = [
        session(99, dow=-3, event_type=0),  # every code unknown: global popularity
        session(NIGHT, items=(0, 0)),  # empty prefix with context: the context counts
        session(None, items=(0, 0)),  # empty prefix without context
        session(MORNING, items=(1,)),  # an unknown item
    ]
    for q in odd:
        scores = model.score(q)
        assert np.all(np.isfinite(real(scores)))
    np.testing.assert_array_equal(model.score(odd[0])[0], global_scores)
    np.testing.assert_array_equal(model.score(odd[2])[0], global_scores)
    assert model.score(odd[1]).argmax() == X


def test_context_pop_category_hint():
    cats = categories({X: [1], Y: [2], Z: [2], 5: [1], 6: [1], 7: [2]}, n_cat=3)
    model = context_pop(cats=cats)
    hinted = model.score(session(None, items=(X,)))[0]
    assert hinted[6] > hinted[7]  # cold items: the prefix's category first
    assert hinted.argmax() == X
    plain = context_pop({"use_categories": False}, cats=cats)
    np.testing.assert_array_equal(
        real(plain.score(session(None, items=(X,)))), real(model.score(session(None, items=(0,))))
    )
    items = model.score(Queries.for_items([Y, 1]))
    assert items[0, 7] > items[0, 6]
    np.testing.assert_array_equal(items[1], model.score(Queries.for_users([2]))[0])
    assert np.all(np.isfinite(real(items)))


def test_context_pop_round_trip(tmp_path):
    cats = categories({X: [1], Y: [2], Z: [2], 5: [1], 6: [1], 7: [0]}, n_cat=3)
    queries = [
        session(NIGHT, items=(0, X)),
        session(None, items=(0, 0)),
        Queries.for_items([Y, 7]),
        Queries.for_users([2]),
    ]
    assert_round_trip(context_pop(cats=cats), queries, tmp_path / "cats")
    assert_round_trip(context_pop(), queries, tmp_path / "plain")


# ---------------------------------------------------------------------- ALS / BPR
PLANTED = [[2, 3, 4], [3, 4], [5, 6, 7], [6, 7], [2, 3], [5, 7]]
MF_USERS = [2, 2, 3, 3, 4, 5]
SMALL = {"factors": 4, "iterations": 5, "pop_weight": 0.0}


def fit_mf(model_cls, config):
    train = interactions(PLANTED, users=MF_USERS)
    meta = DataMeta.from_interactions(train, n_items=N_ITEMS, n_users=N_USERS)
    return model_cls({**SMALL, **config}, meta).fit(train)


@pytest.mark.parametrize("model_cls", [ALS, BPR])
def test_implicit_mf_session_dot_product_by_hand(model_cls):
    model = fit_mf(model_cls, {"session_scoring": "dot", "remind": True, "decay": 0.5})
    f = model.item_factors.astype(np.float64)
    q = Queries.from_item_lists([[2, 3], [5], [1, 6, 7]])
    got = model.score(q)
    # weights: the last item 1, the one before 0.5, ...; UNK (1) counts nothing
    means = [(0.5 * f[2] + f[3]) / 1.5, f[5], (0.5 * f[6] + f[7]) / 1.5]
    for row, mean in enumerate(means):
        # BPR: the last column is the item bias, which the query weighs 1
        expected = f[:, :-1] @ mean[:-1] + f[:, -1] if model_cls is BPR else f @ mean
        np.testing.assert_allclose(got[row, 2:], expected[2:], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.score(Queries.for_items([5]))[0], got[1], rtol=1e-6)


@pytest.mark.parametrize("model_cls", [ALS, BPR])
def test_implicit_mf_session_cosine_is_recency_weighted(model_cls):
    model = fit_mf(model_cls, {"remind": True, "decay": 0.5})
    f = model.item_factors.astype(np.float64)
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    unit = f / np.where(norms > 0, norms, 1.0)
    got = model.score(Queries.from_item_lists([[2, 3]]))[0, 2:]
    np.testing.assert_allclose(got, (unit @ ((0.5 * unit[2] + unit[3]) / 1.5))[2:], atol=1e-5)


@pytest.mark.parametrize("model_cls", [ALS, BPR])
@pytest.mark.parametrize("scoring", ["cosine", "dot"])
def test_implicit_mf_prefix_items_and_fallback(model_cls, scoring):
    model = fit_mf(model_cls, {"session_scoring": scoring})
    scores = model.score(Queries.from_item_lists([[2, 3], [], [1, 1]]))
    assert np.all(np.isfinite(real(scores)))
    others = np.delete(scores[0], [0, 1, 2, 3])
    assert scores[0, 2] < others.min() and scores[0, 3] < others.min()  # not reminded
    counts = np.bincount(np.concatenate(PLANTED), minlength=N_ITEMS)[2:]
    for row in scores[1:]:  # nothing known: popularity, scaled to [0, 1]
        np.testing.assert_allclose(real(row), counts / counts.max(), rtol=1e-6)


@pytest.mark.parametrize("model_cls", [ALS, BPR])
def test_implicit_mf_dot_round_trip(model_cls, tmp_path):
    model = fit_mf(model_cls, {"session_scoring": "dot", "decay": 0.7})
    queries = [
        Queries.from_item_lists([[2, 3], [], [6]]),
        Queries.for_items([4, 1]),
        Queries.for_users([2, 3]),
    ]
    assert_round_trip(model, queries, tmp_path)
    assert math.isclose(load_model(tmp_path / model.name).config.decay, 0.7)
