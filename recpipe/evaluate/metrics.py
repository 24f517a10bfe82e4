r"""Recommendation metrics, defined once, with the same string keys everywhere.

Keys are ``"<name>@<K>"`` for cut-off metrics (``recall@20``, ``ndcg@10``, ...) and plain
names otherwise (``rmse``, ``auc``); :func:`metric_key` builds them. The same keys are
used in ``reports/metrics.json``, by the gates and in the reports. Every ``*_metrics``
function returns the mean over queries of the matching ``*_per_query`` arrays (the
input of :func:`recpipe.evaluate.significance.paired_bootstrap`).

Next-item protocol (one target per query, ``rank`` from
:func:`recpipe.evaluate.ranking.target_ranks`, conservative ties)
    ==============  =====================================================
    ``hitrate@K``   :math:`1[\mathrm{rank} \le K]`
    ``recall@K``    same as ``hitrate@K`` (one relevant item)
    ``mrr@K``       :math:`1/\mathrm{rank}` if :math:`\mathrm{rank} \le K`, else 0
    ``ndcg@K``      :math:`1/\log_2(\mathrm{rank} + 1)` if :math:`\mathrm{rank} \le K`, else 0
    ==============  =====================================================

User top-K protocol (a ranked list per query and a set :math:`R` of relevant items,
:math:`\mathrm{rel}_p = 1` when the item at position :math:`p` is relevant, :math:`h_K =
\sum_{p \le K} \mathrm{rel}_p` the hits; the list should come from
:func:`recpipe.evaluate.ranking.top_k` with ``relevant=``, which breaks ties against
relevant items)
    ===================  ================================================================
    ``recall@K``         :math:`h_K / |R|`
    ``recall_trunc@K``   :math:`h_K / \min(|R|, K)` (reaches 1 when :math:`|R| > K`)
    ``precision@K``      :math:`h_K / K`
    ``hitrate@K``        :math:`1[h_K > 0]`
    ``mrr@K``            :math:`1/p_1` for the first hit position :math:`p_1 \le K`, else 0
    ``ndcg@K``           :math:`\mathrm{DCG}_K / \mathrm{IDCG}_K`, binary gains:
                         :math:`\mathrm{DCG}_K = \sum_{p \le K} \mathrm{rel}_p / \log_2(p+1)`,
                         :math:`\mathrm{IDCG}_K = \sum_{p \le \min(|R|, K)} 1 / \log_2(p+1)`
    ``map@K``            :math:`\sum_{p \le K} \mathrm{rel}_p \, h_p / p \,/\, \min(|R|, K)`
                         (average precision truncated at K)
    ===================  ================================================================

With one relevant item the two protocols agree on every shared key.

Catalogue metrics (over the top-K lists of all queries; the catalogue is the items
``n_reserved <= i < n_items``)
    ``coverage@K``
        Share of the catalogue that appears in at least one top-K list.
    ``popularity_bias@K``
        Mean popularity percentile of the recommended items (every list entry counts),
        where the percentile of item :math:`i` with training count :math:`c_i` is
        :math:`(\#\{j : c_j < c_i\} + \tfrac12 \#\{j : c_j = c_i\}) / n`
        over the :math:`n` catalogue items (mid-rank for ties). 0.5 is the value of a
        recommender that picks items uniformly at random (no bias); 1.0 means only the
        most popular item is ever recommended. Scale-free, so comparable across data
        sets.

Explicit ratings: ``rmse`` :math:`\sqrt{\mathrm{mean}((\hat y - y)^2)}`, ``mae``
:math:`\mathrm{mean}|\hat y - y|`.

CTR: ``auc`` is the probability that a random positive scores above a random negative,
ties counting one half (Mann-Whitney U from mid-ranks); ``logloss`` is the mean binary
cross-entropy with probabilities clipped to :math:`[10^{-15}, 1 - 10^{-15}]`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import scipy.stats

from recpipe.evaluate.ranking import SparseRows, csr_rows

log = logging.getLogger(__name__)

__all__ = [
    "NEXT_ITEM_METRICS",
    "TOPK_METRICS",
    "auc",
    "coverage",
    "ctr_metrics",
    "logloss",
    "metric_key",
    "next_item_metrics",
    "next_item_per_query",
    "popularity_bias",
    "rating_metrics",
    "topk_metrics",
    "topk_per_query",
]

#: Names of the next-item metrics, in output order.
NEXT_ITEM_METRICS = ("hitrate", "recall", "mrr", "ndcg")
#: Names of the user top-K metrics, in output order.
TOPK_METRICS = ("hitrate", "recall", "recall_trunc", "precision", "mrr", "ndcg", "map")

_LOGLOSS_EPS = 1e-15


def metric_key(name: str, k: int | None = None) -> str:
    """The key of a metric: ``metric_key("recall", 20) == "recall@20"``, ``"rmse"`` without K."""
    return name if k is None else f"{name}@{int(k)}"


def _check_ks(ks: Iterable[int], k_max: int | None = None) -> list[int]:
    out = [int(k) for k in ks]
    if not out or any(k < 1 for k in out):
        raise ValueError(f"ks must be a non-empty list of cut-offs >= 1; got {out}")
    if k_max is not None and max(out) > k_max:
        raise ValueError(f"cut-off {max(out)} exceeds the top-K list length {k_max}")
    return sorted(set(out))


def _means(per_query: dict[str, np.ndarray]) -> dict[str, float]:
    return {key: float(np.mean(values)) for key, values in per_query.items()}


# --------------------------------------------------------------------------- next item


def next_item_per_query(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-query next-item metrics from target ranks.

    Parameters
    ----------
    ranks
        ``(Q,)`` int ranks (1 = best) from :func:`~recpipe.evaluate.ranking.target_ranks`.
    ks
        Cut-offs, e.g. ``(10, 20)``.

    Returns
    -------
    dict[str, np.ndarray]
        ``{"hitrate@K", "recall@K", "mrr@K", "ndcg@K"}`` -> ``(Q,)`` float64, for each K.
    """
    r = np.asarray(ranks)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D array; got shape {r.shape}")
    if r.dtype.kind not in "iu" or r.min() < 1:
        raise ValueError(f"ranks must be integers >= 1; got dtype {r.dtype}, min {r.min()}")
    r = r.astype(np.float64)
    out: dict[str, np.ndarray] = {}
    for k in _check_ks(ks):
        hit = r <= k
        out[metric_key("hitrate", k)] = hit.astype(np.float64)
        out[metric_key("recall", k)] = hit.astype(np.float64)
        out[metric_key("mrr", k)] = np.where(hit, 1.0 / r, 0.0)
        out[metric_key("ndcg", k)] = np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)
    return out


def next_item_metrics(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Mean next-item metrics over queries (see :func:`next_item_per_query`)."""
    return _means(next_item_per_query(ranks, ks))


# --------------------------------------------------------------------------- user top-K


def _topk_hits(topk_items: np.ndarray, relevant: SparseRows) -> tuple[np.ndarray, np.ndarray]:
    """``(B, K)`` bool hits and ``(B,)`` int relevant counts."""
    items = np.asarray(topk_items)
    if items.ndim != 2 or items.dtype.kind not in "iu":
        raise ValueError(
            f"topk_items must be a 2-D int array (B, K); got {items.shape} {items.dtype}"
        )
    n_rows = items.shape[0]
    if n_rows == 0 or items.shape[1] == 0:
        raise ValueError(
            f"topk_items must hold at least one query and one position; got {items.shape}"
        )
    items = items.astype(np.int64, copy=False)
    if items.size and items.min() < -1:
        raise ValueError("topk_items holds item indices and -1 for padding only")
    indptr, indices = csr_rows(relevant, n_rows, name="relevant")
    n_rel = np.diff(indptr)
    if np.any(n_rel == 0):
        empty = np.flatnonzero(n_rel == 0)
        raise ValueError(
            f"{len(empty)} queries have no relevant items (first: {empty[:5].tolist()}); "
            "leave them out before evaluating"
        )
    ordered = np.sort(items, axis=1)
    dup = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    if np.any(dup):
        row = int(np.flatnonzero(dup.any(axis=1))[0])
        raise ValueError(f"top-K list of query {row} repeats an item: {items[row].tolist()}")
    width = max(int(items.max(initial=0)), int(indices.max(initial=0))) + 1
    rel_keys = np.repeat(np.arange(n_rows, dtype=np.int64), n_rel) * width + indices  # sorted
    list_keys = np.arange(n_rows, dtype=np.int64)[:, None] * width + items
    pos = np.searchsorted(rel_keys, list_keys).clip(max=len(rel_keys) - 1)
    hits = (rel_keys[pos] == list_keys) & (items >= 0)
    return hits, n_rel


def topk_per_query(
    topk_items: np.ndarray, relevant: SparseRows, ks: Sequence[int]
) -> dict[str, np.ndarray]:
    """Per-query user top-K metrics of ranked lists against sets of relevant items.

    Parameters
    ----------
    topk_items
        ``(B, K_max)`` int ranked item lists, best first, -1 for padding (as returned by
        :func:`~recpipe.evaluate.ranking.top_k`, with ``relevant=`` for conservative ties).
    relevant
        ``(B, N)`` sparse rows of relevant items; every query needs at least one.
    ks
        Cut-offs, each ``<= K_max``.

    Returns
    -------
    dict[str, np.ndarray]
        ``"<name>@K"`` -> ``(B,)`` float64 for every name in :data:`TOPK_METRICS`.
    """
    hits, n_rel = _topk_hits(topk_items, relevant)
    ks = _check_ks(ks, hits.shape[1])
    hit = hits.astype(np.float64)  # (B, K_max)
    pos = np.arange(1, hits.shape[1] + 1, dtype=np.float64)
    n_hits = np.cumsum(hit, axis=1)  # h_p
    dcg = np.cumsum(hit / np.log2(pos + 1.0), axis=1)
    ideal = np.cumsum(1.0 / np.log2(pos + 1.0))
    ap = np.cumsum(hit * n_hits / pos, axis=1)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.iinfo(np.int64).max)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        h = n_hits[:, k - 1]
        cap = np.minimum(n_rel, k)
        out[metric_key("hitrate", k)] = (h > 0).astype(np.float64)
        out[metric_key("recall", k)] = h / n_rel
        out[metric_key("recall_trunc", k)] = h / cap
        out[metric_key("precision", k)] = h / k
        out[metric_key("mrr", k)] = np.where(first <= k, 1.0 / first, 0.0)
        out[metric_key("ndcg", k)] = dcg[:, k - 1] / ideal[cap - 1]
        out[metric_key("map", k)] = ap[:, k - 1] / cap
    return out


def topk_metrics(
    topk_items: np.ndarray, relevant: SparseRows, ks: Sequence[int]
) -> dict[str, float]:
    """Mean user top-K metrics over queries (see :func:`topk_per_query`)."""
    return _means(topk_per_query(topk_items, relevant, ks))


# --------------------------------------------------------------------------- catalogue


def _catalogue_items(
    topk_items: np.ndarray, n_items: int, ks: Sequence[int], n_reserved: int
) -> tuple[np.ndarray, list[int]]:
    items = np.asarray(topk_items)
    if items.ndim != 2 or items.dtype.kind not in "iu":
        raise ValueError(
            f"topk_items must be a 2-D int array (B, K); got {items.shape} {items.dtype}"
        )
    if not 0 <= n_reserved < n_items:
        raise ValueError(f"need 0 <= n_reserved < n_items; got {n_reserved}, {n_items}")
    listed = items[items >= 0]
    if listed.size and (listed.min() < n_reserved or listed.max() >= n_items):
        raise ValueError(
            f"top-K lists must hold catalogue items in [{n_reserved}, {n_items}) or -1; "
            f"got range [{listed.min()}, {listed.max()}]"
        )
    return items.astype(np.int64, copy=False), _check_ks(ks, items.shape[1])


def coverage(
    topk_items: np.ndarray, n_items: int, ks: Sequence[int], *, n_reserved: int = 0
) -> dict[str, float]:
    """Share of the catalogue recommended to at least one query.

    Parameters
    ----------
    topk_items
        ``(B, K_max)`` int top-K lists (-1 = padding).
    n_items
        ``N``, number of item columns (catalogue plus reserved slots).
    ks
        Cut-offs, each ``<= K_max``.
    n_reserved
        Columns below it are not catalogue items (pass ``N_RESERVED`` for IdMap indices).

    Returns
    -------
    dict[str, float]
        ``{"coverage@K": share in [0, 1]}``.
    """
    items, ks = _catalogue_items(topk_items, n_items, ks, n_reserved)
    seen = np.zeros(n_items, dtype=bool)
    out: dict[str, float] = {}
    done = 0
    for k in ks:  # ascending: add the columns done..k-1
        block = items[:, done:k]
        seen[block[block >= 0]] = True
        done = k
        out[metric_key("coverage", k)] = float(seen.sum() / (n_items - n_reserved))
    return out


def popularity_bias(
    topk_items: np.ndarray,
    item_counts: np.ndarray,
    ks: Sequence[int],
    *,
    n_reserved: int = 0,
) -> dict[str, float]:
    """Mean training-popularity percentile of the recommended items (0.5 = unbiased).

    Parameters
    ----------
    topk_items
        ``(B, K_max)`` int top-K lists (-1 = padding).
    item_counts
        ``(N,)`` training interaction counts per item column (e.g. ``IdMap.counts``);
        entries below ``n_reserved`` are ignored.
    ks
        Cut-offs, each ``<= K_max``.
    n_reserved
        Columns below it are not catalogue items.

    Returns
    -------
    dict[str, float]
        ``{"popularity_bias@K": mean percentile in (0, 1)}`` (see the module docstring).
    """
    counts = np.asarray(item_counts)
    if counts.ndim != 1:
        raise ValueError(f"item_counts must be 1-D (N,); got shape {counts.shape}")
    items, ks = _catalogue_items(topk_items, len(counts), ks, n_reserved)
    catalogue = counts[n_reserved:]
    # mid-rank percentile: (#less + #equal / 2) / n = (average rank - 1/2) / n
    percentile = np.zeros(len(counts))
    percentile[n_reserved:] = (scipy.stats.rankdata(catalogue) - 0.5) / len(catalogue)
    out: dict[str, float] = {}
    for k in ks:
        listed = items[:, :k][items[:, :k] >= 0]
        if listed.size == 0:
            raise ValueError("the top-K lists are empty: no recommended items to measure")
        out[metric_key("popularity_bias", k)] = float(percentile[listed].mean())
    return out


# --------------------------------------------------------------------------- ratings, CTR


def _paired_1d(
    a: np.ndarray, b: np.ndarray, names: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise ValueError(
            f"{names[0]} and {names[1]} must be non-empty 1-D arrays of one length; "
            f"got shapes {x.shape} and {y.shape}"
        )
    for name, v in zip(names, (x, y), strict=True):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} contains {int((~np.isfinite(v)).sum())} non-finite values")
    return x, y


def rating_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """``{"rmse", "mae"}`` of predicted against true ratings, ``(R,)`` each."""
    x, y = _paired_1d(pred, truth, ("pred", "truth"))
    err = x - y
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


def _labels(label: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(label)
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},); got {y.shape}")
    y = y.astype(np.float64)
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0/1 (or bool)")
    return y.astype(bool)


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC: P(score of a random positive > score of a random negative), ties count 1/2.

    Computed from mid-ranks (Mann-Whitney U), ``O(n log n)``.

    Parameters
    ----------
    score
        ``(n,)`` scores or probabilities (any monotone scale).
    label
        ``(n,)`` 0/1 labels; both classes must occur.
    """
    s = np.asarray(score, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)):
        raise ValueError(f"score must be a non-empty 1-D array of finite values; got {s.shape}")
    y = _labels(label, len(s))
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes; got {n_pos} positives and {n_neg} negatives")
    ranks = scipy.stats.rankdata(s)  # average ranks for ties
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def logloss(prob: np.ndarray, label: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities ``(n,)`` in [0, 1] against 0/1 labels."""
    p = np.asarray(prob, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"prob must be a non-empty 1-D array; got shape {p.shape}")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("prob must hold probabilities in [0, 1] (no NaN)")
    y = _labels(label, len(p))
    p = np.clip(p, _LOGLOSS_EPS, 1.0 - _LOGLOSS_EPS)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def ctr_metrics(prob: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """``{"auc", "logloss"}`` of click probabilities ``(n,)`` against 0/1 labels ``(n,)``."""
    return {"auc": auc(prob, label), "logloss": logloss(prob, label)}
