"""Matrix factorisation for implicit feedback: ALS and BPR from the ``implicit`` library.

- ``als``: weighted alternating least squares with confidence ``1 + alpha * x``
  (Hu, Koren & Volinsky 2008, "Collaborative Filtering for Implicit Feedback
  Datasets"; the conjugate-gradient solver of Takács, Pilászy & Tikk 2011).
- ``bpr``: Bayesian personalised ranking by SGD over (user, positive, negative)
  triples (Rendle et al. 2009, "BPR: Bayesian Personalized Ranking from Implicit
  Feedback"); ``implicit`` appends an item-bias column to the factors.

Both are fitted on one binary context-item matrix: the train user-item matrix (rows
of known users), stacked with the session-item matrix when ``session_rows`` (default):
user rows give the user factors, and session rows make the item factors reflect
co-occurrence within sessions, which the user rows alone blur (an item every user
has seen is indistinguishable from any other such item). Data with no known user
(every event has the UNK user) is fitted on the session rows alone, with a log
line; ``user`` queries then raise :class:`ValueError`.

Scoring:

- ``user``: the dot product of the user's factors with every item's factors (users
  without train events score 0, i.e. by the prior alone);
- ``session`` / ``item`` (a one-item session): the query vector is the mean of the
  L2-normalised factors of the prefix's known items, and item j scores its dot
  product with j's normalised factors, i.e. the mean item-item cosine similarity to
  the prefix. Items of the prefix score -2 (below every cosine) unless ``remind``; a
  prefix with no known item scores 0 everywhere.

A popularity prior of weight ``pop_weight`` (in [0, pop_weight]) breaks ties. Fits
run on one thread with ``random_state = seed``, so the same config and data give the
same factors; ``implicit`` is imported when a model is fitted, never at import.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recpipe.baselines._sparse import drop_reserved, popularity_prior
from recpipe.features.idmap import N_RESERVED
from recpipe.models.base import (
    QUERY_KINDS,
    Interactions,
    ModelConfig,
    Queries,
    Recommender,
    expect_shape,
    load_arrays,
    save_arrays,
)

log = logging.getLogger(__name__)

_STATE = "state.npz"
#: Score of a prefix item when ``remind`` is off: below every cosine similarity.
_PREFIX_SCORE = -2.0


class ImplicitMFConfig(ModelConfig):
    """Options shared by ``als`` and ``bpr``."""

    factors: int = Field(default=64, ge=1, description="latent dimensions")
    regularization: float = Field(default=0.01, ge=0, description="L2 weight of the factors")
    iterations: int = Field(default=15, ge=1, description="passes over the data")
    session_rows: bool = Field(
        default=True, description="also fit on the session-item rows (besides the user rows)"
    )
    remind: bool = Field(default=False, description="also recommend the items of a prefix")
    pop_weight: float = Field(default=1e-6, ge=0, description="weight of the popularity prior")


class ALSConfig(ImplicitMFConfig):
    """Options of ``als``."""

    alpha: float = Field(default=1.0, gt=0, description="confidence 1 + alpha * x of an event")


class BPRConfig(ImplicitMFConfig):
    """Options of ``bpr``."""

    learning_rate: float = Field(default=0.01, gt=0, description="SGD step size")


def _threadpool_limits() -> Any:
    """One BLAS thread while fitting (``implicit`` warns otherwise; results reproducible)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


class ImplicitMF(Recommender):
    """Base of the ``implicit`` factorisation models (see module docstring)."""

    name: ClassVar[str] = "implicit_mf"
    Config: ClassVar[type[ModelConfig]] = ImplicitMFConfig
    query_kinds: ClassVar[frozenset[str]] = QUERY_KINDS
    config: ImplicitMFConfig

    def _make(self) -> Any:
        """The unfitted ``implicit`` model (CPU, one thread, seeded)."""
        raise NotImplementedError

    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        cfg = self.config
        n_items, n_users = self.meta.n_items, self.meta.n_users
        users = drop_reserved(train.user_item_matrix(n_users, n_items), rows=True, cols=True)
        self._has_users = users.nnz > 0
        parts = [users] if self._has_users else []
        if cfg.session_rows or not self._has_users:
            if not self._has_users:
                log.info(
                    "%s: no known user in the train data; fitting item factors on the "
                    "session-item matrix (user queries are not available)",
                    self.name,
                )
            sessions = drop_reserved(train.session_item_matrix(n_items), rows=False, cols=True)
            parts.append(sessions)
        matrix = sp.csr_matrix(sp.vstack(parts, format="csr"), dtype=np.float32)
        matrix.sort_indices()
        model = self._make()
        with _threadpool_limits():
            model.fit(matrix, show_progress=False)
        factors = np.asarray(model.user_factors, dtype=np.float32)
        self._item_factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self._user_factors = np.zeros((n_users, factors.shape[1]), dtype=np.float32)
        if self._has_users:
            self._user_factors[:] = factors[:n_users]
            self._user_factors[:N_RESERVED] = 0.0
        self._prior = popularity_prior(np.bincount(train.item_idx, minlength=n_items))
        self._derive()
        log.debug(
            "%s: %d x %d item factors fitted on %d rows",
            self.name,
            n_items,
            factors.shape[1],
            matrix.shape[0],
        )

    def _derive(self) -> None:
        norms = np.linalg.norm(self._item_factors, axis=1, keepdims=True)
        self._unit_items = self._item_factors / np.where(norms > 0, norms, 1.0)
        self._unit_items[:N_RESERVED] = 0.0

    def _score(self, queries: Queries) -> np.ndarray:
        prior = (self.config.pop_weight * self._prior).astype(np.float32)
        if queries.kind == "user":
            if not self._has_users:
                raise ValueError(
                    f"model {self.name!r} was fitted without known users (session-only "
                    "data) and cannot score 'user' queries; use 'session' or 'item' queries"
                )
            return self._user_factors[queries.users] @ self._item_factors.T + prior
        items = queries.items[:, None] if queries.kind == "item" else queries.items
        known = items >= N_RESERVED
        counts = known.sum(axis=1, keepdims=True)
        vectors = (self._unit_items[items] * known[..., None]).sum(axis=1)
        vectors /= np.maximum(counts, 1)
        scores = vectors @ self._unit_items.T
        if not self.config.remind:
            rows = np.broadcast_to(np.arange(items.shape[0])[:, None], items.shape)
            scores[rows[known], items[known]] = _PREFIX_SCORE
        return scores.astype(np.float32) + prior

    def _save_state(self, path: Path) -> None:
        save_arrays(
            path / _STATE,
            prior=self._prior,
            item_factors=self._item_factors,
            user_factors=self._user_factors,
            has_users=np.asarray(self._has_users),
        )

    def _load_state(self, path: Path) -> None:
        n_items, n_users = self.meta.n_items, self.meta.n_users
        keys = ["prior", "item_factors", "user_factors", "has_users"]
        arrays = load_arrays(path / _STATE, keys)
        self._prior = expect_shape(arrays["prior"], (n_items,), "popularity prior")
        items = arrays["item_factors"]
        if items.ndim != 2:
            raise ValueError(f"item factors must be 2-D, got shape {items.shape}")
        self._item_factors = expect_shape(items, (n_items, items.shape[1]), "item factors")
        self._user_factors = expect_shape(
            arrays["user_factors"], (n_users, items.shape[1]), "user factors"
        )
        self._has_users = bool(expect_shape(arrays["has_users"], (), "has_users flag"))
        self._derive()


class ALS(ImplicitMF):
    """Implicit ALS (Hu, Koren & Volinsky 2008) via ``implicit``."""

    name: ClassVar[str] = "als"
    Config: ClassVar[type[ModelConfig]] = ALSConfig
    config: ALSConfig

    def _make(self) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        cfg = self.config
        return AlternatingLeastSquares(
            factors=cfg.factors,
            regularization=cfg.regularization,
            alpha=cfg.alpha,
            iterations=cfg.iterations,
            num_threads=1,
            random_state=cfg.seed,
        )


class BPR(ImplicitMF):
    """Bayesian personalised ranking (Rendle et al. 2009) via ``implicit``."""

    name: ClassVar[str] = "bpr"
    Config: ClassVar[type[ModelConfig]] = BPRConfig
    config: BPRConfig

    def _make(self) -> Any:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        cfg = self.config
        return BayesianPersonalizedRanking(
            factors=cfg.factors,
            learning_rate=cfg.learning_rate,
            regularization=cfg.regularization,
            iterations=cfg.iterations,
            num_threads=1,
            random_state=cfg.seed,
        )
