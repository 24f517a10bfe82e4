"""Popularity baselines: the same ranking, by train popularity, for every query.

- ``pop`` (:class:`Popularity`): items by their number of train events (or the sum
  of the events' values).
- ``recent_pop`` (:class:`RecentPopularity`): popularity within the last
  ``window_days`` of train, optionally decayed exponentially with age.

Non-personalised popularity is the first baseline any recommender must beat
(Cremonesi, Koren & Turrin 2010, "Performance of Recommender Algorithms on Top-N
Recommendation Tasks"); recency-aware popularity is a strong baseline on news and
e-commerce streams (Ludewig & Jannach 2018, "Evaluation of Session-based
Recommendation Algorithms", where S-POP and its relatives are compared).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from recpipe.features.idmap import N_RESERVED
from recpipe.models.artifact import expect_shape, load_arrays, save_arrays
from recpipe.models.base import ModelConfig, Recommender
from recpipe.models.data import QUERY_KINDS, Interactions, Queries
from recpipe.models.space import Float, SearchSpace

log = logging.getLogger(__name__)

_STATE = "state.npz"
_NS_PER_DAY = 86_400 * 1_000_000_000


class PopularityConfig(ModelConfig):
    """Options of ``pop``."""

    weighting: Literal["events", "value"] = Field(
        default="events", description="count events, or sum their values (ratings, weights)"
    )


class Popularity(Recommender):
    """Global train popularity; every query gets the same scores.

    Score of item i: the number of train events on i (``weighting="events"``) or
    the sum of their ``value`` (``weighting="value"``). Items never seen score 0.

    Examples
    --------
    >>> import pandas as pd
    >>> from recpipe.models.data import DataMeta
    >>> train = Interactions.from_frame(pd.DataFrame({"session_id": ["a", "a", "b"],
    ...     "user_idx": [2, 2, 3], "item_idx": [3, 2, 3], "timestamp": [0, 1, 2]}))
    >>> model = Popularity({}, DataMeta.from_interactions(train)).fit(train)
    >>> model.score(Queries.for_items([2]))[0, 2:].tolist()
    [1.0, 2.0]
    """

    name: ClassVar[str] = "pop"
    Config: ClassVar[type[ModelConfig]] = PopularityConfig
    query_kinds: ClassVar[frozenset[str]] = QUERY_KINDS
    config: PopularityConfig

    def _event_weights(self, train: Interactions) -> np.ndarray:
        """(N,) float64 weight of each train event."""
        if self.config.weighting == "value":
            return train.value.astype(np.float64)
        return np.ones(len(train), dtype=np.float64)

    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        scores = np.bincount(
            train.item_idx, weights=self._event_weights(train), minlength=self.meta.n_items
        )
        scores[:N_RESERVED] = 0.0
        self._scores = scores

    def _score(self, queries: Queries) -> np.ndarray:
        return np.tile(self._scores.astype(np.float32), (len(queries), 1))

    def _score_candidates(self, queries: Queries, candidates: np.ndarray) -> np.ndarray:
        return self._scores[candidates].astype(np.float32)

    def _save_state(self, path: Path) -> None:
        save_arrays(path / _STATE, scores=self._scores)

    def _load_state(self, path: Path) -> None:
        scores = load_arrays(path / _STATE, ["scores"])["scores"]
        self._scores = expect_shape(scores, (self.meta.n_items,), "popularity scores")


class RecentPopularityConfig(PopularityConfig):
    """Options of ``recent_pop``."""

    window_days: float = Field(
        default=7.0, gt=0, description="count only events this recent (before the last train event)"
    )
    half_life_days: float | None = Field(
        default=None, gt=0, description="weigh events by 0.5 ** (age / half_life); None: no decay"
    )


class RecentPopularity(Popularity):
    """Popularity over the end of the training period.

    The reference time is the last train event (not the wall clock, so a refit
    on the same data gives the same scores). An event of age ``a`` days counts
    ``w * 0.5 ** (a / half_life_days)`` if ``a <= window_days`` and 0 otherwise,
    with ``w`` its weight as in :class:`Popularity`. Items with no recent event
    score 0 (and tie).
    """

    name: ClassVar[str] = "recent_pop"
    search_space: ClassVar[SearchSpace] = {"window_days": Float(1.0, 60.0, log=True)}
    Config: ClassVar[type[ModelConfig]] = RecentPopularityConfig
    config: RecentPopularityConfig

    def _event_weights(self, train: Interactions) -> np.ndarray:
        weights = super()._event_weights(train)
        if len(train) == 0:
            return weights
        age_days = (int(train.timestamp.max()) - train.timestamp) / _NS_PER_DAY
        weights = np.where(age_days <= self.config.window_days, weights, 0.0)
        if self.config.half_life_days is not None:
            weights = weights * np.exp2(-age_days / self.config.half_life_days)
        log.debug(
            "recent_pop: %d of %d events within %.3g days",
            int(np.count_nonzero(weights)),
            len(train),
            self.config.window_days,
        )
        return weights
