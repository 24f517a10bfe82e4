"""Item-to-item collaborative filtering: cosine item-kNN over co-occurrences.

Two items are similar when the same sessions (or users) contain them: with X the
binary (or value-weighted) context-item matrix, the similarity of items i and j is
the shrunk cosine

    sim(i, j) = (x_i . x_j) / (||x_i|| ||x_j|| + shrinkage),

with each item keeping only its ``neighbours`` most similar items (Sarwar et al.
2001, "Item-based Collaborative Filtering Recommendation Algorithms"; Linden, Smith &
York 2003, "Amazon.com Recommendations: Item-to-Item Collaborative Filtering"; the
session variant is the item-kNN baseline of Hidasi et al. 2016, "Session-based
Recommendations with Recurrent Neural Networks"). The shrinkage term follows Koren
2008 / Bell & Koren 2007 and damps similarities supported by few contexts.

Scoring sums the neighbour rows of the items a query holds: a user's train history
(user queries), the session prefix with weight ``recency_decay ** age`` where age 0
is the most recent event (session queries), or one item's row (item queries). A
popularity prior of weight ``pop_weight`` (a tie-breaker, in [0, pop_weight]) is added
so that items no neighbour reaches are still ranked by popularity.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recpipe.features.idmap import N_RESERVED
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
from recpipe.models.sparse import drop_reserved, popularity_prior, top_k_per_row

log = logging.getLogger(__name__)

_STATE = "state.npz"
#: Rows of the similarity matrix computed at once (bounds the memory of X^T X).
_BLOCK_ROWS = 2048


class ItemKNNConfig(ModelConfig):
    """Options of ``itemknn``."""

    neighbours: int = Field(default=100, ge=1, description="most similar items kept per item")
    shrinkage: float = Field(default=0.0, ge=0, description="added to the cosine denominator")
    context: Literal["session", "user"] = Field(
        default="session", description="co-occurrence within sessions or within user histories"
    )
    weighted: bool = Field(
        default=False, description="weigh co-occurrences by event value (else binary)"
    )
    recency_decay: float = Field(
        default=0.5, gt=0, le=1, description="weight factor per step back in a session prefix"
    )
    pop_weight: float = Field(default=1e-6, ge=0, description="weight of the popularity prior")


def cosine_neighbours(x: sp.csr_matrix, neighbours: int, shrinkage: float) -> sp.csr_matrix:
    """Shrunk cosine similarity between the columns of ``x``, top ``neighbours`` per row.

    Parameters
    ----------
    x : scipy.sparse.csr_matrix
        (R, n_items) context-item matrix (R: sessions or users).
    neighbours : int
        Entries kept per row.
    shrinkage : float
        Added to the product of the norms.

    Returns
    -------
    scipy.sparse.csr_matrix
        (n_items, n_items) float32, zero diagonal; row i holds the neighbours of item i.
    """
    x = sp.csr_matrix(x, dtype=np.float64)
    n_items = x.shape[1]
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())  # (n_items,)
    xt = x.T.tocsr()  # (n_items, R)
    blocks = []
    for start in range(0, n_items, _BLOCK_ROWS):
        co = (xt[start : start + _BLOCK_ROWS] @ x).tocoo()  # (rows, n_items) co-occurrences
        rows = co.row + start
        off_diagonal = rows != co.col
        rows, cols, dots = rows[off_diagonal], co.col[off_diagonal], co.data[off_diagonal]
        sims = dots / (norms[rows] * norms[cols] + shrinkage)
        block = sp.csr_matrix(
            (sims, (rows - start, cols)), shape=(co.shape[0], n_items), dtype=np.float64
        )
        blocks.append(top_k_per_row(block, neighbours))
    if not blocks:
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    return sp.csr_matrix(sp.vstack(blocks, format="csr"), dtype=np.float32)


class ItemKNN(Recommender):
    """Item-to-item collaborative filtering with cosine similarity (see module docstring).

    Scores every query kind: ``user`` (sum over the user's train items of their
    neighbour rows), ``session`` (recency-weighted sum over the prefix items) and
    ``item`` (the item's neighbour row). Reserved and unknown items contribute
    nothing; a query with nothing known scores by the popularity prior alone.
    """

    name: ClassVar[str] = "itemknn"
    search_space: ClassVar[SearchSpace] = {
        "neighbours": Int(10, 500, log=True),
        "shrinkage": Float(0.0, 100.0),
        "recency_decay": Float(0.1, 1.0),
    }
    Config: ClassVar[type[ModelConfig]] = ItemKNNConfig
    query_kinds: ClassVar[frozenset[str]] = QUERY_KINDS
    config: ItemKNNConfig

    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        cfg = self.config
        n_items, n_users = self.meta.n_items, self.meta.n_users
        history = train.user_item_matrix(n_users, n_items, weighted=cfg.weighted)
        if cfg.context == "user":
            contexts = history
        else:
            contexts = train.session_item_matrix(n_items, weighted=cfg.weighted)
        # Unknown items and users (the UNK slot pools many ids) carry no signal.
        contexts = drop_reserved(contexts, rows=cfg.context == "user", cols=True)
        self._similarity = cosine_neighbours(contexts, cfg.neighbours, cfg.shrinkage)
        self._history = drop_reserved(history, rows=True, cols=True).astype(np.float32)
        self._prior = popularity_prior(np.bincount(train.item_idx, minlength=n_items))
        log.debug(
            "itemknn: %d similarity entries for %d items (%s context)",
            self._similarity.nnz,
            n_items,
            cfg.context,
        )

    def _query_matrix(self, queries: Queries) -> sp.csr_matrix:
        """(B, n_items) weights of the items each query holds."""
        b, n_items = len(queries), self.meta.n_items
        if queries.kind == "user":
            return self._history[queries.users]
        if queries.kind == "item":
            items = queries.items
            weights = (items >= N_RESERVED).astype(np.float32)
            return sp.csr_matrix((weights, (np.arange(b), items)), shape=(b, n_items))
        items = queries.items  # (B, T), most recent last
        t = items.shape[1]
        age = np.arange(t - 1, -1, -1)  # (T,) 0 for the last column
        weights = np.broadcast_to(self.config.recency_decay**age, items.shape)
        known = items >= N_RESERVED
        rows = np.broadcast_to(np.arange(b)[:, None], items.shape)
        return sp.csr_matrix(
            (weights[known].astype(np.float32), (rows[known], items[known])), shape=(b, n_items)
        )

    def _score(self, queries: Queries) -> np.ndarray:
        scores = (self._query_matrix(queries) @ self._similarity).toarray()
        scores += (self.config.pop_weight * self._prior).astype(np.float32)
        return scores.astype(np.float32, copy=False)

    def _save_state(self, path: Path) -> None:
        save_arrays(
            path / _STATE,
            prior=self._prior,
            **csr_to_arrays("similarity", self._similarity),
            **csr_to_arrays("history", self._history),
        )

    def _load_state(self, path: Path) -> None:
        n_items, n_users = self.meta.n_items, self.meta.n_users
        keys = ["prior", *csr_keys("similarity"), *csr_keys("history")]
        arrays = load_arrays(path / _STATE, keys)
        self._prior = expect_shape(arrays["prior"], (n_items,), "popularity prior")
        self._similarity = csr_from_arrays(arrays, "similarity", (n_items, n_items))
        self._history = csr_from_arrays(arrays, "history", (n_users, n_items))
