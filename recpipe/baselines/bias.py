"""Baseline predictors for explicit ratings: global mean + user bias + item bias.

- ``bias`` (:class:`BiasBaseline`): ``r_hat(u, i) = mu + b_u + b_i``, the baseline
  predictors of Koren (2008, "Factorization Meets the Neighborhood: a Multifaceted
  Collaborative Filtering Model", section 2.1), fitted by alternating regularised
  least squares: each sweep sets

  ``b_i = sum_{u in R(i)} (r_ui - mu - b_u) / (reg_item + |R(i)|)`` then
  ``b_u = sum_{i in R(u)} (r_ui - mu - b_i) / (reg_user + |R(u)|)``.

It is the first baseline a rating predictor must beat (RMSE / MAE with
:func:`recpipe.evaluate.pointwise.rating`). Its scores for a user are predicted
ratings, so as a ranker it orders every user's items alike up to the item biases.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import Field

from recpipe.features.context import EVENT_TYPE_INDEX
from recpipe.features.idmap import N_RESERVED
from recpipe.models.artifact import expect_shape, load_arrays, save_arrays
from recpipe.models.base import ModelConfig, Recommender
from recpipe.models.data import Interactions, Queries
from recpipe.models.space import Float, SearchSpace

log = logging.getLogger(__name__)

_STATE = "state.npz"
_RATING = EVENT_TYPE_INDEX["rating"]


class BiasConfig(ModelConfig):
    """Options of ``bias``."""

    reg_user: float = Field(default=10.0, ge=0, description="shrinkage of the user biases")
    reg_item: float = Field(default=25.0, ge=0, description="shrinkage of the item biases")
    sweeps: int = Field(default=10, ge=1, description="alternating least-squares sweeps")


class BiasBaseline(Recommender):
    """Predicted rating ``mu + b_u + b_i`` (Koren 2008 baseline predictors).

    Fitted on the ``rating`` events of train, their ``value`` being the rating; when
    train holds no rating event, on all events and their values. Each sweep updates
    the item biases, then the user biases (both start at 0). Users and items without
    a train rating, and the reserved slots (``UNK`` user included), have bias 0, so an
    unknown user gets ``mu + b_i``.

    Examples
    --------
    >>> import pandas as pd
    >>> from recpipe.models.data import DataMeta
    >>> train = Interactions.from_frame(pd.DataFrame({"session_id": ["a", "a", "b"],
    ...     "user_idx": [2, 2, 3], "item_idx": [2, 3, 2], "timestamp": [0, 1, 2],
    ...     "value": [4.0, 2.0, 3.0]}))
    >>> model = BiasBaseline({"reg_user": 0, "reg_item": 0, "sweeps": 1},
    ...     DataMeta.from_interactions(train)).fit(train)
    >>> model.score(Queries.for_users([1]))[0, 2:].tolist()
    [3.5, 2.0]
    """

    name: ClassVar[str] = "bias"
    search_space: ClassVar[SearchSpace] = {
        "reg_user": Float(0.1, 100.0, log=True),
        "reg_item": Float(0.1, 100.0, log=True),
    }
    Config: ClassVar[type[ModelConfig]] = BiasConfig
    query_kinds: ClassVar[frozenset[str]] = frozenset({"user"})
    predicts_ratings: ClassVar[bool] = True
    config: BiasConfig

    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        n_users, n_items = self.meta.n_users, self.meta.n_items
        rated = train.event_type_idx == _RATING
        if not rated.any():
            log.info("bias: train holds no rating event; fitting on all %d values", len(train))
            rated = np.ones(len(train), dtype=bool)
        users = train.user_idx[rated].astype(np.int64)
        items = train.item_idx[rated].astype(np.int64)
        ratings = train.value[rated].astype(np.float64)
        user_bias = np.zeros(n_users, dtype=np.float64)
        item_bias = np.zeros(n_items, dtype=np.float64)
        mu = float(ratings.mean()) if ratings.size else 0.0
        # reserved users (UNK) and items keep bias 0
        known_user = users >= N_RESERVED
        known_item = items >= N_RESERVED
        n_per_user = np.bincount(users[known_user], minlength=n_users).astype(np.float64)
        n_per_item = np.bincount(items[known_item], minlength=n_items).astype(np.float64)
        resid = ratings - mu
        for _ in range(self.config.sweeps):
            item_sum = np.bincount(
                items[known_item],
                weights=(resid - user_bias[users])[known_item],
                minlength=n_items,
            )
            item_bias = _shrunk(item_sum, n_per_item, self.config.reg_item)
            user_sum = np.bincount(
                users[known_user],
                weights=(resid - item_bias[items])[known_user],
                minlength=n_users,
            )
            user_bias = _shrunk(user_sum, n_per_user, self.config.reg_user)
        self._mu = mu
        self._user_bias = user_bias
        self._item_bias = item_bias
        log.debug("bias: mu=%.4f on %d ratings", mu, ratings.size)

    def _score(self, queries: Queries) -> np.ndarray:
        ub = self._user_bias[queries.users]
        return (self._mu + ub[:, None] + self._item_bias[None, :]).astype(np.float32)

    def _score_candidates(self, queries: Queries, candidates: np.ndarray) -> np.ndarray:
        ub = self._user_bias[queries.users]
        return (self._mu + ub[:, None] + self._item_bias[candidates]).astype(np.float32)

    def user_baseline(self, users: np.ndarray) -> np.ndarray:
        """(B,) float64 ``mu + b_u``: the prediction for an item with bias 0 (unknown)."""
        self._require_fitted()
        return self._mu + self._user_bias[np.asarray(users, dtype=np.int64)]

    def _save_state(self, path: Path) -> None:
        save_arrays(
            path / _STATE,
            mu=np.asarray(self._mu, dtype=np.float64),
            user_bias=self._user_bias,
            item_bias=self._item_bias,
        )

    def _load_state(self, path: Path) -> None:
        state = load_arrays(path / _STATE, ["mu", "user_bias", "item_bias"])
        self._mu = float(expect_shape(state["mu"], (), "bias global mean"))
        self._user_bias = expect_shape(state["user_bias"], (self.meta.n_users,), "user biases")
        self._item_bias = expect_shape(state["item_bias"], (self.meta.n_items,), "item biases")


def _shrunk(total: np.ndarray, count: np.ndarray, reg: float) -> np.ndarray:
    """``total / (reg + count)``, 0 where the denominator is 0."""
    denom = reg + count
    return np.divide(total, denom, out=np.zeros_like(total), where=denom > 0)
