"""EASE: an item-item model in closed form (Steck, WWW 2019, "Embarrassingly shallow
autoencoders for sparse data").

With X the binary user x item matrix (sessions as users with ``context: session``;
``auto``: sessions on the session split) and G = X^T X, EASE solves

    min_B ||X - X B||^2 + l2 ||B||^2   subject to diag(B) = 0,

whose solution is ``B = I - P diag(1 / diag(P))`` with ``P = (G + l2 I)^-1``, i.e.
``B_ij = -P_ij / P_jj`` off the diagonal and 0 on it. A query's scores are its item
vector times B: the user's train items (user queries), the session prefix (session
queries, every item weight 1), one item (item queries). A popularity prior of weight
``pop_weight`` breaks ties.

B is dense (items x items): fitting holds two of G, P and B in float64 at a time
plus the inverse's workspace, budgeted at ``24 I^2`` bytes for I items. Past
``max_items`` items the fit stops with that estimate in the message (the evaluate
stage then skips ``ease`` with the reason) instead of running out of memory; raise
``max_items`` on a machine that has the memory.
"""

from __future__ import annotations

import logging
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
from recpipe.models.space import Float, SearchSpace
from recpipe.models.sparse import binary_contexts, popularity_prior, query_item_matrix

log = logging.getLogger(__name__)

_STATE = "state.npz"
#: Bytes per item pair budgeted for the fit (float64 matrices and the inverse's workspace).
BYTES_PER_PAIR = 24


class EASEConfig(ModelConfig):
    """Options of ``ease``."""

    l2: float = Field(default=200.0, gt=0, description="lambda: L2 weight on B")
    context: Literal["auto", "user", "session"] = Field(
        default="auto", description="rows of X: user histories or sessions (auto: by split)"
    )
    max_items: int = Field(
        default=12_000,
        ge=1,
        description="refuse to fit more items (memory ~ 24 bytes x items^2: 3.5 GB at 12,000)",
    )
    pop_weight: float = Field(default=1e-6, ge=0, description="weight of the popularity prior")


def ease_weights(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """The EASE item-item matrix B (I, I) float64 of the context-item matrix ``x``."""
    gram = np.asarray((x.T @ x).toarray(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += l2
    p = np.linalg.inv(gram)
    del gram  # G, P and B are never all held at once
    b = p / (-np.diag(p))[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b


class EASE(Recommender):
    """EASE (see the module docstring): user, session and item queries."""

    name: ClassVar[str] = "ease"
    search_space: ClassVar[SearchSpace] = {"l2": Float(1.0, 5000.0, log=True)}
    Config: ClassVar[type[ModelConfig]] = EASEConfig
    query_kinds: ClassVar[frozenset[str]] = QUERY_KINDS
    config: EASEConfig

    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        cfg = self.config
        n_items = self.meta.n_items
        if n_items > cfg.max_items:
            need = BYTES_PER_PAIR * n_items**2 / 2**30
            raise ValueError(
                f"ease: {n_items} items exceed max_items={cfg.max_items}; the fit would need "
                f"about {need:.1f} GiB (24 bytes x items^2); raise max_items if this "
                "machine has the memory"
            )
        history, x = binary_contexts(train, self.meta, cfg.context)
        self._weights = ease_weights(x, cfg.l2).astype(np.float32)
        self._history = history.astype(np.float32)
        self._prior = popularity_prior(np.bincount(train.item_idx, minlength=n_items))

    def _score(self, queries: Queries) -> np.ndarray:
        scores = np.asarray(
            query_item_matrix(queries, self._history, self.meta.n_items) @ self._weights,
            dtype=np.float32,
        )
        return scores + (self.config.pop_weight * self._prior).astype(np.float32)

    def _save_state(self, path: Path) -> None:
        save_arrays(
            path / _STATE,
            weights=self._weights,
            prior=self._prior,
            **csr_to_arrays("history", self._history),
        )

    def _load_state(self, path: Path) -> None:
        n_items, n_users = self.meta.n_items, self.meta.n_users
        arrays = load_arrays(path / _STATE, ["weights", "prior", *csr_keys("history")])
        self._weights = expect_shape(arrays["weights"], (n_items, n_items), "EASE weights")
        self._prior = expect_shape(arrays["prior"], (n_items,), "popularity prior")
        self._history = csr_from_arrays(arrays, "history", (n_users, n_items))
