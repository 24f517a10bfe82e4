"""STAN: session kNN with three decays (Garg et al., SIGIR 2019, "Sequence and Time Aware
Neighborhood for Session-based Recommendations").

On top of :class:`~recpipe.baselines.sknn.SessionKNN` (candidate sampling, the cosine of
binary session vectors, the ``k`` neighbours), STAN weighs

1. the items of the current prefix by their recency, ``exp((p - L) / lambda_position)``
   for the p-th of L known events (the last one weighs 1);
2. each neighbour session by how long before the query it ended,
   ``exp(-(t_query - t_session) / lambda_time)`` (days; only when the query carries
   timestamps, as the evaluation's session prefixes do);
3. each item of a neighbour session by its distance in that session to the most recent
   prefix item the session shares, ``exp(-|pos(i) - pos(shared)| / lambda_item)``.

An item's score is the sum over neighbours of similarity times its weight there. The
defaults are session-rec's STAN defaults (``lambda_spw`` 1.02, ``lambda_snh`` 5 days,
``lambda_inh`` 2.05 in its YOOCHOOSE configuration).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recpipe.baselines.sknn import _BLOCK_QUERIES, SessionKNN, SessionKNNConfig
from recpipe.features.idmap import N_RESERVED
from recpipe.models.artifact import expect_shape, load_arrays, save_arrays
from recpipe.models.data import Interactions, Queries
from recpipe.models.space import Float, Int, SearchSpace

_SEQ = "sequences.npz"
_NS_PER_DAY = 86_400 * 10**9


class STANConfig(SessionKNNConfig):
    """Options of ``stan`` (``weighting`` is replaced by ``lambda_position``)."""

    lambda_position: float = Field(
        default=1.02, gt=0, description="decay of a prefix item's weight per step back"
    )
    lambda_time: float = Field(
        default=5.0, gt=0, description="days: decay of a neighbour by how long ago it ended"
    )
    lambda_item: float = Field(
        default=2.05, gt=0, description="decay of a neighbour's item by its distance there"
    )


def stan_prefix_weights(items: np.ndarray, lam: float, n_items: int) -> sp.csr_matrix:
    """(B, n_items) ``exp((p - L) / lam)`` of the known prefix items (the most recent
    occurrence of a repeated item)."""
    b = items.shape[0]
    known = items >= N_RESERVED
    position = np.cumsum(known, axis=1)
    length = known.sum(axis=1, keepdims=True)
    weights = np.exp((position - length) / lam)
    rows = np.broadcast_to(np.arange(b)[:, None], items.shape)[known]
    cols, vals = items[known], weights[known]
    key = rows.astype(np.int64) * n_items + cols
    order = np.lexsort((vals, key))  # per (row, item): the largest weight last
    keep = np.ones(order.size, dtype=bool)
    keep[:-1] = key[order][1:] != key[order][:-1]
    sel = order[keep]
    out = sp.csr_matrix((vals[sel], (rows[sel], cols[sel])), shape=(b, n_items))
    out.sort_indices()
    return out


class STAN(SessionKNN):
    """STAN (see the module docstring): ``session`` and ``item`` queries."""

    name: ClassVar[str] = "stan"
    search_space: ClassVar[SearchSpace] = {
        "k": Int(20, 500, log=True),
        "sample_size": Int(100, 2000, log=True),
        "lambda_position": Float(0.25, 10.0, log=True),
        "lambda_time": Float(0.5, 100.0, log=True),
        "lambda_item": Float(0.25, 10.0, log=True),
    }
    Config: ClassVar[type[SessionKNNConfig]] = STANConfig
    config: STANConfig

    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        super()._fit(train, valid)
        # each session's known items in order (positions for the item decay)
        known = train.item_idx >= N_RESERVED
        counts = np.add.reduceat(known, train.offsets[:-1]) if len(train) else np.zeros(0)
        counts = np.where(np.diff(train.offsets) > 0, counts, 0)
        self._seq_items = train.item_idx[known].astype(np.int64)
        self._seq_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        ends = train.offsets[1:]
        self._ends = np.where(
            ends > train.offsets[:-1], train.timestamp[np.maximum(ends - 1, 0)], 0
        ).astype(np.int64)

    def _score(self, queries: Queries) -> np.ndarray:
        cfg = self.config
        n_items = self.meta.n_items
        items = queries.items[:, None] if queries.kind == "item" else queries.items
        items = items.astype(np.int64)
        now = None
        if queries.kind == "session" and queries.timestamps is not None:
            now = queries.timestamps.max(axis=1)
        factor = 1.0 + cfg.idf_weighting * self._idf
        prior = (cfg.pop_weight * self._prior).astype(np.float32)
        blocks = []
        for start in range(0, items.shape[0], _BLOCK_QUERIES):
            part = items[start : start + _BLOCK_QUERIES]
            weights = stan_prefix_weights(part, cfg.lambda_position, n_items)
            sims = sp.coo_matrix(self.neighbours(weights))  # (b, S)
            sim = sims.data.astype(np.float64)
            if now is not None:
                age = now[start : start + _BLOCK_QUERIES][sims.row] - self._ends[sims.col]
                sim = sim * np.exp(-np.maximum(age, 0) / _NS_PER_DAY / cfg.lambda_time)
            scores = self._item_scores(part, weights, sims.row, sims.col, sim)
            scores *= factor
            if not cfg.remind:
                rows = np.repeat(np.arange(weights.shape[0]), np.diff(weights.indptr))
                scores[rows, weights.indices] = 0.0
            blocks.append(scores.astype(np.float32) + prior)
        if not blocks:
            return np.zeros((0, n_items), dtype=np.float32)
        return np.concatenate(blocks, axis=0)

    def _item_scores(
        self,
        prefixes: np.ndarray,
        weights: sp.csr_matrix,
        rows: np.ndarray,
        sessions: np.ndarray,
        sim: np.ndarray,
    ) -> np.ndarray:
        """(b, n_items): each neighbour pair (row, session) adds ``sim`` times the item
        decay ``exp(-|pos(i) - pos(shared)| / lambda_item)`` to the session's items."""
        b, n_items = prefixes.shape[0], self.meta.n_items
        out = np.zeros((b, n_items), dtype=np.float64)
        if rows.size == 0:
            return out
        lo, hi = self._seq_offsets[sessions], self._seq_offsets[sessions + 1]
        lengths = hi - lo
        pair = np.repeat(np.arange(rows.size), lengths)
        starts = np.repeat(lo, lengths)
        pos = np.arange(pair.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        item = self._seq_items[starts + pos]
        # the prefix weight of each entry's item (0: not in the prefix); the shared item
        # is the session's item with the largest prefix weight (the most recent one)
        w = np.asarray(weights[rows[pair], item]).ravel()
        best = np.full(rows.size, -1.0)
        np.maximum.at(best, pair, w)
        is_shared = (w == best[pair]) & (w > 0)
        shared_pos = np.zeros(rows.size)
        np.maximum.at(shared_pos, pair[is_shared], pos[is_shared].astype(np.float64))
        decay = np.exp(-np.abs(pos - shared_pos[pair]) / self.config.lambda_item)
        np.add.at(out, (rows[pair], item), sim[pair] * decay)
        return out

    def _save_state(self, path: Path) -> None:
        super()._save_state(path)
        save_arrays(path / _SEQ, items=self._seq_items, offsets=self._seq_offsets, ends=self._ends)

    def _load_state(self, path: Path) -> None:
        super()._load_state(path)
        arrays = load_arrays(path / _SEQ, ["items", "offsets", "ends"])
        n_sessions = self._sessions.shape[0]
        self._seq_offsets = expect_shape(arrays["offsets"], (n_sessions + 1,), "offsets")
        self._seq_items = arrays["items"]
        self._ends = expect_shape(arrays["ends"], (n_sessions,), "session ends")
