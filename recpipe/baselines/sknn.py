"""Session-based kNN with positional weights (V-SKNN) for next-item prediction.

The current session prefix is compared with past train sessions, both seen as item
vectors (Ludewig & Jannach 2018, "Evaluation of Session-based Recommendation
Algorithms", the "V-SKNN" variant; Jannach & Ludewig 2017, "When Recurrent Neural
Networks meet the Neighborhood for Session-Based Recommendation", for plain SKNN):

- the prefix vector weighs its items by position, favouring recent ones: with L
  known events, the event at position p = 1 .. L (L the most recent) weighs p / L
  (``linear``) or 1 (``same``); an item seen twice keeps its most recent weight;
- the train sessions are binary item vectors x_s;
- ``sample_size``: only the most recent train sessions (by their last event) that
  share an item with the prefix are candidates;
- the similarity is the cosine of session-rec's V-SKNN,
  ``sim(q, s) = (w_q . x_s) / sqrt(|q| |s|)`` with |.| the number of distinct items,
  and the ``k`` most similar candidates are the neighbours;
- the score of item i is the sum of the similarities of the neighbours holding i,
  optionally times ``1 + idf_weighting * log(S / df_i)`` (the IDF item weighting of
  Ludewig et al. 2021, "Empirical analysis of session-based recommendation
  algorithms", which stops an item present in every session from winning every tie).

Items of the prefix keep their neighbour score (``remind``, the default: repeated
clicks on an item are frequent in click-streams; on the YOOCHOOSE sample Recall@20 goes
from 0.36 to 0.68 with it); without ``remind`` their score is 0. An ``item`` query is
a one-item session. A popularity prior of weight ``pop_weight`` (in [0, pop_weight])
breaks ties and ranks the items no neighbour holds.

Everything is vectorised per batch with scipy.sparse: the (B, S) prefix-session
overlaps, the sampling and the neighbour selection use :func:`top_k_per_row`.
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
from recpipe.models.data import Interactions, Queries
from recpipe.models.space import Float, Int, SearchSpace
from recpipe.models.sparse import drop_reserved, popularity_prior, top_k_per_row

log = logging.getLogger(__name__)

_STATE = "state.npz"
#: Queries scored at once (bounds the memory of the (B, S) overlap matrix).
_BLOCK_QUERIES = 512


class SessionKNNConfig(ModelConfig):
    """Options of ``sknn``."""

    k: int = Field(default=100, ge=1, description="neighbour sessions per query")
    sample_size: int = Field(
        default=500, ge=1, description="most recent sessions sharing an item that are compared"
    )
    weighting: Literal["linear", "same"] = Field(
        default="linear", description="weight of a prefix event by position: p / L, or 1"
    )
    idf_weighting: float = Field(
        default=0.0, ge=0, description="weight of the IDF factor of item scores (0: off)"
    )
    remind: bool = Field(
        default=True,
        description="also recommend the items of the prefix (repeat clicks are common)",
    )
    pop_weight: float = Field(default=1e-6, ge=0, description="weight of the popularity prior")


def prefix_weights(items: np.ndarray, weighting: str, n_items: int) -> sp.csr_matrix:
    """Positional weights of the known items of left-padded prefixes.

    Parameters
    ----------
    items : numpy.ndarray
        (B, T) item indices, most recent last; reserved slots are ignored.
    weighting : {"linear", "same"}
        ``linear``: the p-th of L known events weighs p / L; ``same``: 1.
    n_items : int
        Catalogue size.

    Returns
    -------
    scipy.sparse.csr_matrix
        (B, n_items) float64; an item present twice keeps its largest (most recent) weight.

    Examples
    --------
    >>> prefix_weights(np.array([[0, 2, 3, 2]]), "linear", 4).toarray().round(3).tolist()
    [[0.0, 0.0, 1.0, 0.667]]
    """
    if weighting not in ("linear", "same"):
        raise ValueError(f"weighting must be 'linear' or 'same', got {weighting!r}")
    b = items.shape[0]
    known = items >= N_RESERVED
    position = np.cumsum(known, axis=1)  # 1 .. L over the known events
    length = np.maximum(known.sum(axis=1, keepdims=True), 1)
    weights = position / length if weighting == "linear" else np.ones(items.shape)
    rows = np.broadcast_to(np.arange(b)[:, None], items.shape)[known]
    cols, vals = items[known].astype(np.int64), weights[known]
    # keep the largest weight of each (row, item): sort by key, then weight; take the last
    key = rows * n_items + cols
    order = np.lexsort((vals, key))
    key, vals = key[order], vals[order]
    last = np.ones(key.shape[0], dtype=bool)
    last[:-1] = key[1:] != key[:-1]
    key, vals = key[last], vals[last]
    out = sp.csr_matrix((vals, (key // n_items, key % n_items)), shape=(b, n_items))
    out.sort_indices()
    return out


class SessionKNN(Recommender):
    """V-SKNN: the next item from the most similar past sessions (see module docstring).

    Scores ``session`` queries and ``item`` queries (a one-item session). A prefix
    with no known item, or one sharing no item with any train session, scores by the
    popularity prior alone.
    """

    name: ClassVar[str] = "sknn"
    search_space: ClassVar[SearchSpace] = {
        "k": Int(20, 500, log=True),
        "sample_size": Int(100, 2000, log=True),
        "idf_weighting": Float(0.0, 5.0),
    }
    Config: ClassVar[type[ModelConfig]] = SessionKNNConfig
    query_kinds: ClassVar[frozenset[str]] = frozenset({"session", "item"})
    config: SessionKNNConfig

    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        n_items = self.meta.n_items
        sessions = train.session_item_matrix(n_items)
        self._sessions = drop_reserved(sessions, rows=False, cols=True).astype(np.float32)
        # recency of a session: the time of its last event; ties by session order
        ends = train.offsets[1:]
        last_time = np.where(ends > train.offsets[:-1], train.timestamp[np.maximum(ends - 1, 0)], 0)
        order = np.lexsort((np.arange(last_time.shape[0]), last_time))
        recency = np.empty(order.shape[0], dtype=np.float64)
        recency[order] = np.arange(1, order.shape[0] + 1)  # 1 = oldest, distinct
        self._recency = recency
        self._prior = popularity_prior(np.bincount(train.item_idx, minlength=n_items))
        self._derive()
        log.debug("sknn: %d train sessions over %d items", self._sessions.shape[0], n_items)

    def _derive(self) -> None:
        """Quantities computed from the stored state: session sizes, item IDF."""
        s = self._sessions.shape[0]
        self._session_size = np.diff(self._sessions.indptr).astype(np.float64)
        df = np.bincount(self._sessions.indices, minlength=self.meta.n_items)
        self._idf = np.where(df > 0, np.log(max(s, 1) / np.maximum(df, 1)), 0.0)

    def neighbours(self, weights: sp.csr_matrix) -> sp.csr_matrix:
        """The similarities of the ``k`` neighbour sessions of each weighted prefix.

        Parameters
        ----------
        weights : scipy.sparse.csr_matrix
            (B, n_items) positional weights (:func:`prefix_weights`).

        Returns
        -------
        scipy.sparse.csr_matrix
            (B, S) with at most ``k`` entries per row: sim(q, s) of each neighbour.
        """
        cfg = self.config
        xt = self._sessions.T.tocsr().astype(np.float64)  # (n_items, S)
        dots = sp.csr_matrix(weights @ xt)  # (B, S) > 0 exactly where an item is shared
        dots.eliminate_zeros()
        # sample: the most recent candidate sessions (recency ranks are distinct)
        recent = sp.csr_matrix(
            (self._recency[dots.indices], dots.indices.copy(), dots.indptr.copy()), shape=dots.shape
        )
        sampled = top_k_per_row(recent, cfg.sample_size)
        sampled.data[:] = 1.0
        dots = sp.csr_matrix(dots.multiply(sampled))
        rows = np.repeat(np.arange(dots.shape[0]), np.diff(dots.indptr))
        n_query = np.diff(weights.indptr).astype(np.float64)
        dots.data = dots.data / np.sqrt(n_query[rows] * self._session_size[dots.indices])
        return top_k_per_row(dots, cfg.k)

    def _score(self, queries: Queries) -> np.ndarray:
        cfg = self.config
        n_items = self.meta.n_items
        items = queries.items[:, None] if queries.kind == "item" else queries.items
        items = items.astype(np.int64)
        item_factor = 1.0 + cfg.idf_weighting * self._idf  # (n_items,)
        prior = (cfg.pop_weight * self._prior).astype(np.float32)
        blocks = []
        for start in range(0, items.shape[0], _BLOCK_QUERIES):
            weights = prefix_weights(items[start : start + _BLOCK_QUERIES], cfg.weighting, n_items)
            sims = self.neighbours(weights)
            scores = (sims @ self._sessions.astype(np.float64)).toarray() * item_factor
            if not cfg.remind:
                rows = np.repeat(np.arange(weights.shape[0]), np.diff(weights.indptr))
                scores[rows, weights.indices] = 0.0
            blocks.append(scores.astype(np.float32) + prior)
        if not blocks:
            return np.zeros((0, n_items), dtype=np.float32)
        return np.concatenate(blocks, axis=0)

    def _save_state(self, path: Path) -> None:
        save_arrays(
            path / _STATE,
            prior=self._prior,
            recency=self._recency,
            **csr_to_arrays("sessions", self._sessions),
        )

    def _load_state(self, path: Path) -> None:
        n_items = self.meta.n_items
        arrays = load_arrays(path / _STATE, ["prior", "recency", *csr_keys("sessions")])
        self._prior = expect_shape(arrays["prior"], (n_items,), "popularity prior")
        n_sessions = int(arrays["recency"].shape[0])
        self._recency = expect_shape(arrays["recency"], (n_sessions,), "session recency")
        self._sessions = csr_from_arrays(arrays, "sessions", (n_sessions, n_items))
        self._derive()
