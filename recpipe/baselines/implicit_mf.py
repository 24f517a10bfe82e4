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
- ``session`` / ``item`` (a one-item session): the request is represented by the
  recency-weighted mean of its known items' vectors
  (:func:`~recpipe.models.embedding.aggregate_items`: the most recent item weighs 1,
  the one before ``decay``, then ``decay ** 2``, ...), the "unknown user as the
  aggregate of the request's items" strategy of cold-start serving. With
  ``session_scoring="cosine"`` (default) the vectors are the L2-normalised item
  factors and item j scores its dot product with j's normalised factors, i.e. the
  weighted mean item-item cosine similarity to the prefix. With
  ``session_scoring="dot"`` the query vector is the weighted mean of the raw item
  factors and item j scores its dot product with j's factors, plus j's item bias for
  ``bpr`` (the bias column of ``implicit``'s factors gets weight 1, as for a user).
  Items of the prefix score below every other item (-2 for cosines, the row's
  minimum minus 1 for dot products) unless ``remind``. A row with no known item
  (empty prefix, only unknown items) scores by popularity: the prior below, in [0, 1].

A popularity prior of weight ``pop_weight`` (in [0, pop_weight]) breaks ties. Fits
run on one thread with ``random_state = seed``, so the same config and data give the
same factors; ``implicit`` is imported when a model is fitted, never at import.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recpipe.features.idmap import N_RESERVED
from recpipe.models.artifact import expect_shape, load_arrays, save_arrays
from recpipe.models.base import ModelConfig, Recommender
from recpipe.models.data import QUERY_KINDS, Interactions, Queries
from recpipe.models.embedding import aggregate_items, has_known_items
from recpipe.models.space import Float, Int, SearchSpace
from recpipe.models.sparse import drop_reserved, popularity_prior

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
    decay: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="session / item queries: weight ratio between a prefix item and the next "
        "more recent one (1: plain mean)",
    )
    session_scoring: Literal["cosine", "dot"] = Field(
        default="cosine",
        description="session / item queries: mean cosine to the prefix's normalised factors, "
        "or dot product with the weighted mean of the raw factors (plus item bias)",
    )


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
    #: Whether the last factor column is an item bias (users hold 1 there), as in BPR.
    bias_column: ClassVar[bool] = False
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
        scores = self.query_scores(items) + prior
        fallback = ~has_known_items(items)
        if fallback.any():
            scores[fallback] = self._prior.astype(np.float32)
        return scores

    def item_vectors(self) -> np.ndarray:
        """(n_items, D) item factors without the bias column, for cold-start similarity."""
        factors = np.array(self.item_factors, dtype=np.float32)
        return factors[:, :-1] if self.bias_column else factors

    @property
    def item_factors(self) -> np.ndarray:
        """(n_items, D) float32 item factors, read-only (``bpr``: the last column is the
        item bias, which users weigh 1).

        Raises
        ------
        NotFittedError
            The model is not fitted.
        """
        self._require_fitted()
        view = self._item_factors.view()
        view.flags.writeable = False
        return view

    def query_vectors(self, items: np.ndarray) -> np.ndarray:
        """(B, D) query vectors of left-padded (B, T) item rows (session / item queries).

        The recency-weighted mean (weight ratio ``decay``) of the rows' known items'
        normalised (``session_scoring="cosine"``) or raw (``"dot"``) factors; with an
        item-bias column (``bpr``, dot scoring) that column is set to 1, so that the
        dot product adds each item's bias. Rows without a known item get the zero
        vector (and the bias weight 1 where there is a bias column).

        Parameters
        ----------
        items : numpy.ndarray
            (B, T) item indices, PAD (0) on the left, most recent last.

        Returns
        -------
        numpy.ndarray
            (B, D) float32, D the number of factor columns.
        """
        self._require_fitted()
        cosine = self.config.session_scoring == "cosine"
        table = self._unit_items if cosine else self._item_factors
        vectors = aggregate_items(table, items, self.config.decay)
        if self.bias_column and not cosine:
            vectors[:, -1] = 1.0
        return vectors

    def query_scores(self, items: np.ndarray) -> np.ndarray:
        """(B, n_items) float32 scores of every item for left-padded (B, T) item rows.

        The dot products of :meth:`query_vectors` with the item vectors; the rows'
        own items are pushed below every other score unless ``remind``. Without the
        popularity prior and without the fallback of rows with no known item (see
        the module docstring), which :meth:`score` adds.

        Parameters
        ----------
        items : numpy.ndarray
            (B, T) left-padded item indices, most recent last (or (B,) single items).
        """
        self._require_fitted()
        items = np.asarray(items, dtype=np.int64)
        if items.ndim == 1:
            items = items[:, None]
        cosine = self.config.session_scoring == "cosine"
        table = self._unit_items if cosine else self._item_factors
        scores = (self.query_vectors(items) @ table.T).astype(np.float32)
        if not self.config.remind:
            known = items >= N_RESERVED
            rows = np.broadcast_to(np.arange(items.shape[0])[:, None], items.shape)
            if cosine:
                low = np.full(items.shape[0], _PREFIX_SCORE, dtype=np.float32)
            else:
                low = scores[:, N_RESERVED:].min(axis=1, initial=0.0) - 1.0
            scores[rows[known], items[known]] = low[rows[known]]
        return scores

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
    search_space: ClassVar[SearchSpace] = {
        "factors": Int(16, 256, log=True),
        "regularization": Float(1e-4, 1.0, log=True),
        "iterations": Int(5, 30),
        "alpha": Float(0.1, 50.0, log=True),
    }
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
    search_space: ClassVar[SearchSpace] = {
        "factors": Int(16, 256, log=True),
        "regularization": Float(1e-4, 1.0, log=True),
        "iterations": Int(10, 100, log=True),
        "learning_rate": Float(1e-3, 0.1, log=True),
    }
    Config: ClassVar[type[ModelConfig]] = BPRConfig
    bias_column: ClassVar[bool] = True
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
