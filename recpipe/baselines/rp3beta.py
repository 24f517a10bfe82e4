"""RP3beta: item-item similarity from three-step random walks on the user-item graph,
re-ranked by popularity (Paudel et al. 2017, "Updatable, accurate, diverse, and scalable
recommendations for interactive applications"; a strong baseline in Dacrema et al. 2019).

With X the binary user x item matrix (sessions as users on the session split), ``P_ui``
the user -> item transition probabilities (X's rows normalised to sum 1) and ``P_iu``
the item -> user ones (X^T's rows), each raised elementwise to ``alpha``, the walk
item -> user -> item gives

    W_ij = (P_iu P_ui)_ij / deg(j) ** beta,

deg(j) the number of users (or sessions) of item j. Each item keeps its ``neighbours``
largest entries (no self-loops). A query's scores are its item vector times W (the
user's train items, a session prefix, or one item), plus a popularity tie-breaker.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recpipe.models.artifact import (
    csr_from_arrays,
    csr_keys,
    csr_to_arrays,
    expect_shape,
    load_arrays,
    save_arrays,
)
from recpipe.models.base import ModelConfig, Recommender
from recpipe.models.data import QUERY_KINDS, Interactions, Queries
from recpipe.models.space import Float, Int, SearchSpace
from recpipe.models.sparse import (
    binary_contexts,
    popularity_prior,
    query_item_matrix,
    top_k_per_row,
)

_STATE = "state.npz"


class RP3betaConfig(ModelConfig):
    """Options of ``rp3beta``."""

    alpha: float = Field(default=1.0, gt=0, description="exponent of the walk's edge weights")
    beta: float = Field(default=0.5, ge=0, description="popularity penalty deg(j) ** beta")
    neighbours: int = Field(default=100, ge=1, description="entries kept per item")
    context: Literal["auto", "user", "session"] = Field(
        default="auto",
        description="the walk's middle nodes: users or sessions (auto: sessions on the "
        "session split, users elsewhere)",
    )
    pop_weight: float = Field(default=1e-6, ge=0, description="weight of the popularity prior")


def _row_normalise(m: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(m.sum(axis=1)).ravel()
    inv = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return sp.csr_matrix(sp.diags(inv) @ m)


def rp3beta_weights(x: sp.csr_matrix, alpha: float, beta: float, neighbours: int) -> sp.csr_matrix:
    """W (I, I) float32 of the binary context-item matrix ``x`` (see the module docstring)."""
    x = sp.csr_matrix(x, dtype=np.float64)
    x.data[:] = 1.0
    p_ui = _row_normalise(x)  # user -> item transition probabilities
    p_ui.data **= alpha
    p_iu = _row_normalise(x.T.tocsr())  # item -> user
    p_iu.data **= alpha
    w = sp.csr_matrix(p_iu @ p_ui)
    degree = np.asarray(x.sum(axis=0)).ravel()
    penalty = np.divide(1.0, degree**beta, out=np.zeros_like(degree), where=degree > 0)
    w = sp.csr_matrix(w @ sp.diags(penalty))
    w.setdiag(0.0)
    w.eliminate_zeros()
    return sp.csr_matrix(top_k_per_row(w, neighbours), dtype=np.float32)


class RP3beta(Recommender):
    """RP3beta (see the module docstring): user, session and item queries."""

    name: ClassVar[str] = "rp3beta"
    search_space: ClassVar[SearchSpace] = {
        "alpha": Float(0.1, 2.0),
        "beta": Float(0.0, 1.0),
        "neighbours": Int(10, 500, log=True),
    }
    Config: ClassVar[type[ModelConfig]] = RP3betaConfig
    query_kinds: ClassVar[frozenset[str]] = QUERY_KINDS
    config: RP3betaConfig

    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        cfg = self.config
        n_items = self.meta.n_items
        history, x = binary_contexts(train, self.meta, cfg.context)
        self._weights = rp3beta_weights(x, cfg.alpha, cfg.beta, cfg.neighbours)
        self._history = history.astype(np.float32)
        self._prior = popularity_prior(np.bincount(train.item_idx, minlength=n_items))

    def _score(self, queries: Queries) -> np.ndarray:
        scores = (
            (query_item_matrix(queries, self._history, self.meta.n_items) @ self._weights)
            .toarray()
            .astype(np.float32)
        )
        return scores + (self.config.pop_weight * self._prior).astype(np.float32)

    def _save_state(self, path: Path) -> None:
        save_arrays(
            path / _STATE,
            prior=self._prior,
            **csr_to_arrays("weights", self._weights),
            **csr_to_arrays("history", self._history),
        )

    def _load_state(self, path: Path) -> None:
        n_items, n_users = self.meta.n_items, self.meta.n_users
        arrays = load_arrays(path / _STATE, ["prior", *csr_keys("weights"), *csr_keys("history")])
        self._prior = expect_shape(arrays["prior"], (n_items,), "popularity prior")
        self._weights = csr_from_arrays(arrays, "weights", (n_items, n_items))
        self._history = csr_from_arrays(arrays, "history", (n_users, n_items))
