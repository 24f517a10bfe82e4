"""Cold-start building blocks shared by models with item embeddings.

A model that represents every item index by a vector (MF factors, content-predicted
factors, Content2Vec embeddings) answers requests that carry no known user the same
way: the request's items are looked up and combined into one query vector by a
**recency-weighted mean** (the most recent item weighs 1, the one before ``decay``,
then ``decay ** 2``, ...), and every item is scored by its dot product (or cosine)
with that vector. This is the "unknown user as the aggregate of the items in the
request" strategy; an ``item`` query is the one-item case (similar items).

Padding (:data:`~recpipe.features.idmap.PAD`) and unknown items
(:data:`~recpipe.features.idmap.UNK`) carry no vector and are skipped; a request
with no known item gets the zero vector, so the caller can detect it with
:func:`has_known_items` and fall back (to popularity, contextual popularity, ...).
"""

from __future__ import annotations

import numpy as np

from recpipe.features.idmap import N_RESERVED

__all__ = ["aggregate_items", "has_known_items", "recency_weights"]


def recency_weights(items: np.ndarray, decay: float) -> np.ndarray:
    """(B, T) float32 weights of a left-padded (B, T) item matrix.

    The last column (the most recent event) weighs 1, the column before it ``decay``,
    and so on; reserved indices (padding, unknown) weigh 0. Rows are *not* normalised.

    Raises
    ------
    ValueError
        ``items`` is not 2-D or ``decay`` is outside ``(0, 1]``.
    """
    items = np.asarray(items)
    if items.ndim != 2:
        raise ValueError(f"items must be a (B, T) matrix, got shape {items.shape}")
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    t = items.shape[1]
    ages = np.arange(t - 1, -1, -1, dtype=np.float64)
    weights = np.broadcast_to(decay**ages, items.shape).astype(np.float32)
    return np.where(items >= N_RESERVED, weights, np.float32(0.0))


def has_known_items(items: np.ndarray) -> np.ndarray:
    """(B,) bool: which rows of a (B, T) item matrix hold at least one real item."""
    return np.asarray(items).reshape(len(items), -1).__ge__(N_RESERVED).any(axis=1)


def aggregate_items(vectors: np.ndarray, items: np.ndarray, decay: float = 0.8) -> np.ndarray:
    """Recency-weighted mean of the vectors of each row's items.

    Parameters
    ----------
    vectors : numpy.ndarray
        (n_items, D) item vectors by item index.
    items : numpy.ndarray
        (B, T) left-padded item indices (or (B,) single items).
    decay : float, default 0.8
        Weight ratio between an item and the next more recent one (1: plain mean).

    Returns
    -------
    numpy.ndarray
        (B, D) float32; the zero vector for rows without a known item.

    Raises
    ------
    ValueError
        An index is outside ``[0, n_items)``, or bad shapes / decay.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    items = np.asarray(items, dtype=np.int64)
    if items.ndim == 1:
        items = items[:, None]
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be (n_items, D), got shape {vectors.shape}")
    if items.size and (items.min() < 0 or items.max() >= vectors.shape[0]):
        raise ValueError(
            f"item indices must lie in [0, {vectors.shape[0]}), got [{items.min()}, {items.max()}]"
        )
    weights = recency_weights(items, decay)
    total = weights.sum(axis=1, keepdims=True)
    summed = np.einsum("bt,btd->bd", weights, vectors[items], dtype=np.float32)
    return np.divide(summed, total, out=np.zeros_like(summed), where=total > 0)
