"""Sparse-matrix helpers shared by the neighbourhood and rule baselines and the models."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from recpipe.features.idmap import N_RESERVED


def top_k_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each row (ties: the lower column index wins).

    Vectorised: one lexsort over the stored entries, no loop over rows.

    Parameters
    ----------
    matrix : scipy.sparse.csr_matrix
        (R, C) matrix without duplicate entries.
    k : int
        Entries kept per row (>= 1).

    Returns
    -------
    scipy.sparse.csr_matrix
        (R, C) with at most ``k`` entries per row, indices sorted.

    Examples
    --------
    >>> m = sp.csr_matrix(np.array([[0.0, 3.0, 1.0, 3.0], [2.0, 0.0, 0.0, 0.0]]))
    >>> top_k_per_row(m, 2).toarray().tolist()
    [[0.0, 3.0, 0.0, 3.0], [2.0, 0.0, 0.0, 0.0]]
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    m = sp.csr_matrix(matrix)
    m.sort_indices()
    lengths = np.diff(m.indptr)
    if lengths.size == 0 or lengths.max() <= k:
        return m
    rows = np.repeat(np.arange(m.shape[0]), lengths)
    # row ascending, value descending, column ascending
    order = np.lexsort((m.indices, -m.data, rows))
    rank = np.arange(order.shape[0]) - m.indptr[rows[order]]
    keep = np.sort(order[rank < k])  # back to (row, column) order
    indptr = np.concatenate([[0], np.cumsum(np.minimum(lengths, k))])
    return sp.csr_matrix((m.data[keep], m.indices[keep], indptr), shape=m.shape)


def drop_reserved(matrix: sp.csr_matrix, *, rows: bool, cols: bool) -> sp.csr_matrix:
    """A copy of ``matrix`` without entries in the reserved rows and/or columns."""
    m = sp.coo_matrix(matrix)
    keep = np.ones(m.nnz, dtype=bool)
    if rows:
        keep &= m.row >= N_RESERVED
    if cols:
        keep &= m.col >= N_RESERVED
    out = sp.csr_matrix((m.data[keep], (m.row[keep], m.col[keep])), shape=m.shape)
    out.sort_indices()
    return out


def popularity_prior(counts: np.ndarray) -> np.ndarray:
    """(n_items,) float64 counts scaled to [0, 1] (reserved slots 0): a tie-breaker."""
    prior = np.asarray(counts, dtype=np.float64).copy()
    prior[:N_RESERVED] = 0.0
    top = prior.max(initial=0.0)
    return prior / top if top > 0 else prior


def query_item_matrix(queries: Any, history: sp.csr_matrix, n_items: int) -> sp.csr_matrix:
    """(B, n_items) binary item rows of ``queries`` (:class:`~recpipe.models.data.Queries`):
    the users' rows of ``history`` (user queries), the known items of each session
    prefix, or the one item (item queries); a repeated item counts once."""
    if queries.kind == "user":
        return history[queries.users]
    items = queries.items if queries.kind == "session" else queries.items[:, None]
    b = items.shape[0]
    known = items >= N_RESERVED
    rows = np.broadcast_to(np.arange(b)[:, None], items.shape)
    ones = np.ones(int(known.sum()), dtype=np.float32)
    out = sp.csr_matrix((ones, (rows[known], items[known])), shape=(b, n_items))
    out.data[:] = 1.0
    return out


def binary_contexts(train: Any, meta: Any, context: str) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``(history, x)``: the binary user x item matrix of ``train`` and the binary
    context x item matrix an item-item model fits on: ``history`` itself (``context``
    ``user``) or the session x item matrix (``session``); ``auto`` picks sessions on
    the session split (``meta.split``) and users elsewhere. Reserved rows and columns
    are dropped."""
    history = drop_reserved(
        train.user_item_matrix(meta.n_users, meta.n_items), rows=True, cols=True
    )
    history.data[:] = 1.0
    if context == "auto":
        context = "session" if meta.split == "session" else "user"
    if context == "user":
        return history, history
    x = drop_reserved(train.session_item_matrix(meta.n_items), rows=False, cols=True)
    x.data[:] = 1.0
    return history, x
