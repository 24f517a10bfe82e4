"""The ``bias`` rating baseline and the ``rating`` protocol, on hand-checked cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recpipe.baselines.bias import BiasBaseline
from recpipe.evaluate.pointwise import rating
from recpipe.features.context import EVENT_TYPE_INDEX
from recpipe.features.idmap import UNK
from recpipe.models.base import Recommender
from recpipe.models.data import DataMeta, Interactions, Queries
from recpipe.models.registry import build_model, get_model, load_model
from tests.contract.planted import encoded_frame

RATING = EVENT_TYPE_INDEX["rating"]


def rated(sessions, users, values, event_type: int = RATING) -> Interactions:
    frame = encoded_frame(sessions, users, values=values)
    frame["event_type_idx"] = np.int8(event_type)
    return Interactions.from_frame(frame)


#: user 2 rates items 2, 3 with 5, 3; user 3 rates items 2, 4 with 4, 2 (mu = 3.5).
TRAIN = dict(sessions=[[2, 3], [2, 4]], users=[2, 3], values=[[5, 3], [4, 2]])


def fit(**config) -> BiasBaseline:
    train = rated(**TRAIN)
    meta = DataMeta.from_interactions(train, n_items=6, n_users=5)
    return BiasBaseline(config, meta).fit(train)


def test_registered_and_predicts_ratings():
    assert get_model("bias") is BiasBaseline
    assert BiasBaseline.predicts_ratings is True
    assert Recommender.predicts_ratings is False
    assert BiasBaseline.query_kinds == frozenset({"user"})
    config = BiasBaseline.Config()
    assert (config.reg_user, config.reg_item, config.sweeps) == (10.0, 25.0, 10)


def test_one_unregularised_sweep_gives_mean_deviations():
    model = fit(reg_user=0, reg_item=0, sweeps=1)
    # mu = 14 / 4 = 3.5; item biases from b_u = 0: item 2 mean(1.5, 0.5) = 1.0,
    # item 3: -0.5, item 4: -1.5, item 5 unseen: 0.
    # user biases given them: user 2 mean(5-3.5-1, 3-3.5+0.5) = 0.25,
    # user 3 mean(4-3.5-1, 2-3.5+1.5) = -0.25.
    scores = model.score(Queries.for_users([2, 3, UNK]))
    expected = np.array(
        [
            [3.5 + 0.25 + b for b in (1.0, -0.5, -1.5, 0.0)],
            [3.5 - 0.25 + b for b in (1.0, -0.5, -1.5, 0.0)],
            [3.5 + b for b in (1.0, -0.5, -1.5, 0.0)],  # UNK user: mu + b_i
        ]
    )
    np.testing.assert_allclose(scores[:, 2:], expected, rtol=1e-6)
    assert np.all(scores[:, :2] == -np.inf)
    np.testing.assert_allclose(model.user_baseline(np.array([2, UNK])), [3.75, 3.5])


def test_regularisation_shrinks_the_biases():
    # reg_item = 2, reg_user = 0, one sweep: item 2 bias = (1.5 + 0.5) / (2 + 2) = 0.5
    model = fit(reg_user=0, reg_item=2, sweeps=1)
    np.testing.assert_allclose(model._item_bias[2:], [0.5, -0.5 / 3, -1.5 / 3, 0.0])
    # more sweeps with strong shrinkage keep every bias small and the fit finite
    many = fit(reg_user=100, reg_item=100, sweeps=20)
    assert np.all(np.abs(many.score(Queries.for_users([2, 3]))[:, 2:] - 3.5) < 0.1)


def test_fits_all_values_without_rating_events():
    train = rated(**TRAIN, event_type=EVENT_TYPE_INDEX["view"])
    model = BiasBaseline(
        {"reg_user": 0, "reg_item": 0, "sweeps": 1}, DataMeta.from_interactions(train)
    )
    assert model.fit(train)._mu == pytest.approx(3.5)


def test_only_rating_events_are_fitted():
    frame = encoded_frame([[2, 3]], [2], values=[[4, 1]])
    frame["event_type_idx"] = np.array([RATING, EVENT_TYPE_INDEX["view"]], dtype=np.int8)
    train = Interactions.from_frame(frame)
    model = BiasBaseline({}, DataMeta.from_interactions(train)).fit(train)
    assert model._mu == pytest.approx(4.0)


def test_rating_protocol_hand_computed():
    model = fit(reg_user=0, reg_item=0, sweeps=1)
    # (user, item, rating): (2, 3, 4) pred 3.25 -> err -0.75; (3, 2, 4) pred 4.25 -> 0.25;
    # (UNK, 4, 1) pred 2.0 -> 1.0; (2, UNK item, 3) pred mu + b_u = 3.75 -> 0.75.
    test = rated([[3], [2], [4], [UNK]], [2, 3, UNK, 2], [[4], [4], [1], [3]])
    result = rating(model, test, model.meta, chunk_size=3)
    errors = np.array([-0.75, 0.25, 1.0, 0.75])
    assert result.protocol == "rating"
    assert result.n_queries == 4
    assert result.slices == {}
    assert result.metrics["rmse"] == pytest.approx(np.sqrt(np.mean(errors**2)))
    assert result.metrics["mae"] == pytest.approx(0.6875)
    np.testing.assert_allclose(result.per_query["squared_error"], errors**2, rtol=1e-6)
    np.testing.assert_allclose(result.per_query["absolute_error"], np.abs(errors), rtol=1e-6)


def test_rating_protocol_skips_non_rating_events_and_needs_some():
    model = fit(reg_user=0, reg_item=0, sweeps=1)
    frame = encoded_frame([[3, 2]], [2], values=[[4, 1]])
    frame["event_type_idx"] = np.array([RATING, EVENT_TYPE_INDEX["click"]], dtype=np.int8)
    result = rating(model, Interactions.from_frame(frame), model.meta)
    assert result.n_queries == 1
    assert result.metrics["mae"] == pytest.approx(0.75)
    views = rated([[3]], [2], [[4]], event_type=EVENT_TYPE_INDEX["view"])
    with pytest.raises(ValueError, match="no rating events"):
        rating(model, views, model.meta)


def test_save_load_round_trip(tmp_path: Path):
    model = fit()
    path = model.save(tmp_path / "bias")
    loaded = load_model(path)
    assert isinstance(loaded, BiasBaseline)
    assert loaded.config == model.config
    q = Queries.for_users([2, 3, UNK])
    np.testing.assert_array_equal(loaded.score(q), model.score(q))
    np.testing.assert_array_equal(loaded.score(q, np.array([2, 5])), model.score(q)[:, [2, 5]])
    assert build_model("bias", {"sweeps": 3}, model.meta).config.sweeps == 3


def test_rating_predictors_are_left_off_click_data_leaderboards():
    from recpipe.evaluate.leaderboard import evaluate_models

    clicks = rated(**TRAIN, event_type=EVENT_TYPE_INDEX["view"])
    meta = DataMeta.from_interactions(clicks, n_items=6, n_users=5)
    data = {"train": clicks, "test": clicks}
    out, _ = evaluate_models("user_temporal", data, meta, ["bias", "pop"], {}, [2])
    assert out["bias"] == {
        "skipped": "a rating predictor, and the train part holds no rating event"
    }
    assert "metrics" in out["pop"]
    ratings = rated(**TRAIN)
    out, _ = evaluate_models(
        "user_temporal", {"train": ratings, "test": ratings}, meta, ["bias"], {}, [2]
    )
    assert "rmse" in out["bias"]["metrics"]  # with ratings it is on the board
