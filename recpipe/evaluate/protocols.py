"""Evaluation protocols: how a fitted :class:`~recpipe.models.base.Recommender` is scored.

Two protocols, both pure functions over in-memory data (no file I/O):

:func:`next_item` (the ``session`` split)
    Every event of every test session but the first is predicted from the session
    prefix before it (at most ``max_len`` events, with their context). Each query ranks
    the whole catalogue; the target's rank uses conservative ties
    (:func:`~recpipe.evaluate.ranking.target_ranks`), so a constant model ranks every
    target last. Targets that are ``UNK`` (items unseen in train; the session split
    already drops most of them) or ``PAD`` stay in the evaluation as **misses**, with
    rank ``n_items`` (worse than every real item): dropping them would flatter models
    on data sets with many new items, and keeping them keeps the query set identical
    across models.

:func:`user_topk` (the ``user_temporal``, ``global_temporal`` and ``leave_last_out`` splits)
    Every test user with a known user index gets one top-K list; the relevant items
    are the user's distinct known test items, and (by default) the items the user has
    in train are excluded from the list (relevant items never are). Ties are broken
    against relevant items (:func:`~recpipe.evaluate.ranking.top_k` with ``relevant=``).
    Test users that are unknown (``UNK``) or have no known test item cannot be
    evaluated by a user query and are counted in :attr:`ProtocolResult.skipped_users`.

:func:`ctr` (user splits, models with ``predicts_ctr``)
    Click-through-rate metrics of a model's ``predict_proba``: every distinct known
    (user, item) test pair is a positive, paired with sampled items the user never
    interacted with (in train or test) as negatives; ``auc`` and ``logloss``.

:func:`next_item` and :func:`user_topk` return a :class:`ProtocolResult`: mean metrics (the keys of
:mod:`recpipe.evaluate.metrics` plus ``coverage@K`` and ``popularity_bias@K`` from the
top-K lists), per-query arrays aligned across models (for
:func:`recpipe.evaluate.significance.paired_bootstrap`) and slices.
:func:`evaluate_model` picks the protocol from the split kind.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from recpipe.evaluate.metrics import (
    coverage,
    ctr_metrics,
    next_item_per_query,
    popularity_bias,
    rating_metrics,
    topk_per_query,
)
from recpipe.evaluate.ranking import chunked_top_k, target_ranks, top_k
from recpipe.features.context import EVENT_TYPE_INDEX
from recpipe.features.idmap import N_RESERVED, UNK
from recpipe.models.base import DataMeta, Interactions, Queries, Recommender
from recpipe.sessions.batching import prefixes

log = logging.getLogger(__name__)

__all__ = [
    "NEXT_ITEM_SPLITS",
    "USER_TOPK_SPLITS",
    "CtrPredictor",
    "ProtocolResult",
    "ctr",
    "evaluate_model",
    "next_item",
    "rating",
    "user_topk",
]

#: Split kinds evaluated with :func:`next_item` (session queries).
NEXT_ITEM_SPLITS: frozenset[str] = frozenset({"session"})
#: Split kinds evaluated with :func:`user_topk` (user queries).
USER_TOPK_SPLITS: frozenset[str] = frozenset({"user_temporal", "global_temporal", "leave_last_out"})

_PURCHASE = EVENT_TYPE_INDEX["purchase"]
_RATING = EVENT_TYPE_INDEX["rating"]


@dataclass
class ProtocolResult:
    """The outcome of one protocol run for one model.

    Attributes
    ----------
    metrics : dict[str, float]
        Mean metrics over all queries (``recall@20``, ``mrr@10``, ...), plus the
        catalogue metrics ``coverage@K`` and ``popularity_bias@K``.
    per_query : dict[str, numpy.ndarray]
        ``(n_queries,)`` float64 per-query values of every non-catalogue metric; the
        queries depend only on the test data, so the arrays of two models evaluated on
        the same data are aligned (paired bootstrap).
    slices : dict[str, dict[str, float]]
        Mean metrics over subsets of the queries, each with its query count ``"n"``.
    n_queries : int
        Number of evaluated queries.
    protocol : str
        ``"next_item"``, ``"user_topk"``, ``"rating"`` or ``"ctr"``.
    skipped_users : int
        Test users left out of :func:`user_topk` (unknown user, or no known test item).
    """

    metrics: dict[str, float]
    per_query: dict[str, np.ndarray]
    slices: dict[str, dict[str, float]] = field(default_factory=dict)
    n_queries: int = 0
    protocol: str = ""
    skipped_users: int = 0


# ---------------------------------------------------------------------- helpers
def _check_chunk(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")


def _slice(per_query: Mapping[str, np.ndarray], mask: np.ndarray) -> dict[str, float]:
    """Means of ``per_query`` over the queries in ``mask``, with the count ``n``."""
    n = int(mask.sum())
    out: dict[str, float] = {"n": float(n)}
    if n:
        out.update({key: float(values[mask].mean()) for key, values in per_query.items()})
    return out


def _catalogue_metrics(
    lists: np.ndarray, meta: DataMeta, item_counts: np.ndarray, ks: Sequence[int]
) -> dict[str, float]:
    """``coverage@K`` and ``popularity_bias@K`` of the top-K lists."""
    out = coverage(lists, meta.n_items, ks, n_reserved=N_RESERVED)
    if np.any(lists >= 0):
        out.update(popularity_bias(lists, item_counts, ks, n_reserved=N_RESERVED))
    return out


def _item_counts(meta: DataMeta, item_counts: np.ndarray | None) -> np.ndarray:
    counts = meta.item_counts if item_counts is None else np.asarray(item_counts)
    if counts.shape != (meta.n_items,):
        raise ValueError(f"item_counts must have shape ({meta.n_items},); got {counts.shape}")
    return counts


# ---------------------------------------------------------------------- next item
def next_item(
    model: Recommender,
    test: Interactions,
    meta: DataMeta,
    *,
    ks: Sequence[int] = (5, 10, 20),
    max_len: int = 50,
    chunk_size: int = 1024,
    item_counts: np.ndarray | None = None,
    cold_threshold: int = 5,
) -> ProtocolResult:
    """Next-item evaluation: every event after the first of each test session.

    Parameters
    ----------
    model : Recommender
        A fitted model that scores ``session`` queries.
    test : Interactions
        The test sessions (indices of the split ``meta`` describes).
    meta : DataMeta
        Sizes and train popularity of the split.
    ks : sequence of int, default (5, 10, 20)
        Cut-offs.
    max_len : int, default 50
        Longest prefix given to the model (older events are cut).
    chunk_size : int, default 1024
        Queries scored at a time (memory: ``chunk_size * n_items`` float32).
    item_counts : numpy.ndarray, optional
        ``(n_items,)`` train counts for the cold slice and ``popularity_bias@K``;
        default ``meta.item_counts``.
    cold_threshold : int, default 5
        A target is cold when its train count is below this.

    Returns
    -------
    ProtocolResult
        ``metrics``: ``hitrate/recall/mrr/ndcg@K`` means and the catalogue metrics;
        ``per_query``: the per-query arrays, one entry per (prefix, target) pair in
        event order; ``slices``: ``"purchase"`` (targets that are purchase events) and
        ``"cold_items"`` (targets with train count ``< cold_threshold``; UNK targets
        count 0, so they are cold) and ``"new_users"`` (sessions of users unknown in
        train, including anonymous ones).

    Raises
    ------
    ValueError
        The model cannot score session queries, the test data holds no pair to
        predict, or an argument is invalid.

    Notes
    -----
    UNK / PAD targets are kept as misses with rank ``n_items`` (see the module
    docstring). The catalogue metrics use the plain top-K lists (ties by item index).
    """
    _check_chunk(chunk_size)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be a non-empty list of cut-offs >= 1; got {ks}")
    counts = _item_counts(meta, item_counts)
    if "session" not in model.query_kinds:
        raise ValueError(
            f"model {model.name!r} cannot score 'session' queries (supports "
            f"{sorted(model.query_kinds)}); next-item evaluation needs them"
        )
    ends, target_pos = prefixes(test.offsets)
    n = len(ends)
    if n == 0:
        raise ValueError("the test data holds no session with two or more events to predict")
    targets = test.item_idx[target_pos].astype(np.int64)
    unknown = targets < N_RESERVED
    if unknown.any():
        log.info(
            "%d of %d next-item targets are unknown items: counted as misses", unknown.sum(), n
        )
    safe_targets = np.where(unknown, N_RESERVED, targets)

    k_max = ks[-1]
    ranks = np.empty(n, dtype=np.int64)
    lists = np.empty((n, k_max), dtype=np.int64)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        queries = Queries.session_prefixes(test, ends[start:stop], max_len)
        scores = model.score(queries)
        ranks[start:stop] = target_ranks(scores, safe_targets[start:stop], n_reserved=N_RESERVED)
        lists[start:stop] = top_k(scores, k_max, n_reserved=N_RESERVED)
        log.debug("next_item %s: scored queries %d-%d of %d", model.name, start, stop, n)
    ranks[unknown] = meta.n_items

    per_query = next_item_per_query(ranks, ks)
    metrics = {key: float(values.mean()) for key, values in per_query.items()}
    metrics.update(_catalogue_metrics(lists, meta, counts, ks))
    slices = {
        "purchase": _slice(per_query, test.event_type_idx[target_pos] == _PURCHASE),
        "cold_items": _slice(per_query, counts[targets] < cold_threshold),
        "new_users": _slice(per_query, test.user_idx[target_pos] == UNK),
    }
    log.info(
        "next_item %s: %d queries, %s",
        model.name,
        n,
        ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith(("recall", "mrr"))),
    )
    return ProtocolResult(
        metrics=metrics, per_query=per_query, slices=slices, n_queries=n, protocol="next_item"
    )


# ---------------------------------------------------------------------- user top-K
def _user_rows(
    data: Interactions, users: np.ndarray, meta: DataMeta
) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``(indptr, indices)`` of the distinct known items of each of ``users``."""
    matrix = data.user_item_matrix(meta.n_users, meta.n_items)[users]
    matrix = sp.csr_array(matrix)
    matrix.sum_duplicates()
    keep = matrix.indices >= N_RESERVED
    row_of = np.repeat(np.arange(len(users)), np.diff(matrix.indptr))[keep]
    indptr = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of, minlength=len(users)), out=indptr[1:])
    return indptr, matrix.indices[keep].astype(np.int64)


def user_topk(
    model: Recommender,
    train: Interactions,
    test: Interactions,
    meta: DataMeta,
    *,
    ks: Sequence[int] = (10, 20),
    exclude_seen: bool = True,
    chunk_size: int = 1024,
) -> ProtocolResult:
    """User top-K evaluation: one ranked list per known test user.

    Parameters
    ----------
    model : Recommender
        A fitted model that scores ``user`` queries.
    train : Interactions
        The training events (their items are excluded when ``exclude_seen``).
    test : Interactions
        The test events.
    meta : DataMeta
        Sizes and train popularity of the split.
    ks : sequence of int, default (10, 20)
        Cut-offs.
    exclude_seen : bool, default True
        Leave each user's train items out of their list (relevant items stay).
    chunk_size : int, default 1024
        Users scored at a time.

    Returns
    -------
    ProtocolResult
        ``metrics``: the :data:`~recpipe.evaluate.metrics.TOPK_METRICS` at every K
        and the catalogue metrics; ``per_query``: one entry per evaluated user, in
        ascending user index; ``slices``: empty (every user is known here);
        ``skipped_users``: test users left out (unknown, or no known test item).

    Raises
    ------
    ValueError
        The model cannot score user queries, no test user can be evaluated, or an
        argument is invalid.

    Notes
    -----
    The catalogue metrics are measured on the same conservative lists as the
    accuracy metrics (ties broken against relevant items).
    """
    _check_chunk(chunk_size)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be a non-empty list of cut-offs >= 1; got {ks}")
    if "user" not in model.query_kinds:
        raise ValueError(
            f"model {model.name!r} cannot score 'user' queries (supports "
            f"{sorted(model.query_kinds)}); user top-K evaluation needs them"
        )
    all_users = np.unique(test.user_idx)
    known = all_users[all_users >= N_RESERVED]
    relevant = _user_rows(test, known, meta)
    has_rel = np.diff(relevant[0]) > 0
    users = known[has_rel]
    skipped = len(all_users) - len(users)
    if skipped:
        log.info(
            "user_topk: skipped %d of %d test users (%d unknown, %d without a known test item)",
            skipped,
            len(all_users),
            len(all_users) - len(known),
            int((~has_rel).sum()),
        )
    if len(users) == 0:
        raise ValueError("no test user can be evaluated (all unknown or without known items)")
    relevant = _user_rows(test, users, meta)
    exclude = _user_rows(train, users, meta) if exclude_seen else None

    def score_fn(rows: slice) -> np.ndarray:
        return model.score(Queries.for_users(users[rows]))

    lists = chunked_top_k(
        score_fn,
        len(users),
        ks[-1],
        chunk_size,
        exclude,
        relevant=relevant,
        n_reserved=N_RESERVED,
    )
    per_query = topk_per_query(lists, relevant, ks)
    metrics = {key: float(values.mean()) for key, values in per_query.items()}
    metrics.update(_catalogue_metrics(lists, meta, meta.item_counts, ks))
    log.info("user_topk %s: %d users, %d skipped", model.name, len(users), skipped)
    return ProtocolResult(
        metrics=metrics,
        per_query=per_query,
        slices={},
        n_queries=len(users),
        protocol="user_topk",
        skipped_users=skipped,
    )


# ---------------------------------------------------------------------- rating
def rating(
    model: Recommender,
    test: Interactions,
    meta: DataMeta,
    *,
    chunk_size: int = 4096,
) -> ProtocolResult:
    """Rating prediction: RMSE and MAE over the test ``rating`` events.

    Each rating event ``(u, i, r)`` is one query: the prediction is
    ``model.score(Queries.for_users([u]), candidates=[[i]])``, i.e. the model's user
    score of the item, read as a predicted rating (meaningful for models with
    :attr:`~recpipe.models.base.Recommender.predicts_ratings`).

    Parameters
    ----------
    model : Recommender
        A fitted model that scores ``user`` queries.
    test : Interactions
        The test events; only those of event type ``rating`` are evaluated, their
        ``value`` being the true rating.
    meta : DataMeta
        Sizes of the split (unused but for the common protocol signature).
    chunk_size : int, default 4096
        Ratings predicted at a time.

    Returns
    -------
    ProtocolResult
        ``metrics``: ``{"rmse", "mae"}``; ``per_query``: ``"squared_error"`` and
        ``"absolute_error"`` of each rating, in test event order; ``slices``: empty;
        ``n_queries``: the number of test ratings.

    Raises
    ------
    ValueError
        The test data holds no rating event, the model cannot score user queries,
        or ``chunk_size`` is invalid.

    Notes
    -----
    Ratings of unknown users or items are **kept**, not skipped, so that the query
    set is the same for every model. An unknown user (``UNK``) gets the model's own
    fallback (``bias``: global mean + item bias). An unknown or ``PAD`` item is a
    reserved slot, which :meth:`~recpipe.models.base.Recommender.score` scores
    ``-inf``; its rating is predicted with item bias 0 instead: the model's
    ``user_baseline(users)`` when it has one (``bias``: ``mu + b_u``), otherwise the
    mean of the user's scores over the real items.
    """
    _check_chunk(chunk_size)
    if "user" not in model.query_kinds:
        raise ValueError(
            f"model {model.name!r} cannot score 'user' queries (supports "
            f"{sorted(model.query_kinds)}); rating evaluation needs them"
        )
    rated = np.flatnonzero(test.event_type_idx == _RATING)
    n = len(rated)
    if n == 0:
        raise ValueError("no rating events in the test data; the rating protocol needs them")
    users = test.user_idx[rated].astype(np.int64)
    items = test.item_idx[rated].astype(np.int64)
    truth = test.value[rated].astype(np.float64)
    pred = np.empty(n, dtype=np.float64)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        pred[start:stop] = model.score(
            Queries.for_users(users[start:stop]), candidates=items[start:stop, None]
        )[:, 0]
    reserved = items < N_RESERVED
    if reserved.any():
        log.info("rating: %d of %d test ratings are of unknown items", reserved.sum(), n)
        pred[reserved] = _no_item_prediction(model, users[reserved], chunk_size)
    metrics = rating_metrics(pred, truth)
    err = pred - truth
    per_query = {"squared_error": err**2, "absolute_error": np.abs(err)}
    log.info("rating %s: %d ratings, rmse=%.4f", model.name, n, metrics["rmse"])
    return ProtocolResult(
        metrics=metrics, per_query=per_query, slices={}, n_queries=n, protocol="rating"
    )


def _no_item_prediction(model: Recommender, users: np.ndarray, chunk_size: int) -> np.ndarray:
    """Predicted ratings of ``users`` for an item the model knows nothing of (bias 0)."""
    baseline = getattr(model, "user_baseline", None)
    if callable(baseline):
        return np.asarray(baseline(users), dtype=np.float64)
    out = np.empty(len(users), dtype=np.float64)
    for start in range(0, len(users), chunk_size):
        stop = min(start + chunk_size, len(users))
        scores = model.score(Queries.for_users(users[start:stop]))[:, N_RESERVED:]
        out[start:stop] = scores.mean(axis=1)
    return out


# ---------------------------------------------------------------------- ctr
class CtrPredictor(Protocol):
    """What :func:`ctr` needs of a model: a name and click probabilities of pairs."""

    name: str

    def predict_proba(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(N,) probabilities of aligned (N,) user and item indices."""
        ...


def _known_pair_keys(data: Interactions, n_items: int) -> np.ndarray:
    """Sorted distinct ``user * n_items + item`` of the pairs with known user and item."""
    users = data.user_idx.astype(np.int64)
    items = data.item_idx.astype(np.int64)
    known = (users >= N_RESERVED) & (items >= N_RESERVED)
    return np.unique(users[known] * n_items + items[known])


def _in_sorted(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Boolean mask of ``keys`` (any shape) found in the sorted 1-D ``sorted_keys``."""
    if sorted_keys.size == 0:
        return np.zeros(keys.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return sorted_keys[pos] == keys


def ctr(
    model: CtrPredictor,
    train: Interactions,
    test: Interactions,
    meta: DataMeta,
    *,
    negatives: int = 4,
    seed: int = 0,
    chunk_size: int = 65_536,
    max_rounds: int = 50,
) -> ProtocolResult:
    """Click-through-rate evaluation: AUC and log loss of ``model.predict_proba``.

    Every distinct (user, item) pair of ``test`` whose user and item are known (not
    ``UNK``) is a positive (label 1). Each gets ``negatives`` items drawn uniformly
    from the real items (seeded) that its user interacted with neither in ``train``
    nor in ``test`` (label 0); draws that hit such an item are redrawn up to
    ``max_rounds`` times and then dropped (only for users who have seen almost every
    item). The same data and seed give the same pairs for every model.

    Parameters
    ----------
    model : CtrPredictor
        A fitted model with ``predict_proba(users, items)`` (e.g. ``wide_deep``,
        ``deepfm``).
    train, test : Interactions
        The split's train and test parts (indices of the split ``meta`` describes).
    meta : DataMeta
        Sizes of the split.
    negatives : int, default 4
        Sampled negatives per positive.
    seed : int, default 0
        Seed of the negative draws.
    chunk_size : int, default 65536
        Pairs passed to ``predict_proba`` at a time.
    max_rounds : int, default 50
        Redraw rounds for negatives that hit an item of the user.

    Returns
    -------
    ProtocolResult
        ``metrics``: ``{"auc", "logloss"}`` over all rows
        (:func:`~recpipe.evaluate.metrics.ctr_metrics`); ``per_query`` (one entry per
        positive, in (user, item) order): ``"pair_auc"``, the share of its negatives
        scored below it (ties count one half), and ``"logloss"``, the mean log loss of
        its rows; ``n_queries``: the number of positives.

    Raises
    ------
    ValueError
        The model has no ``predict_proba``, an argument is invalid, or the test part
        holds no known (user, item) pair.
    """
    _check_chunk(chunk_size)
    if negatives < 1:
        raise ValueError(f"negatives must be >= 1; got {negatives}")
    if not callable(getattr(model, "predict_proba", None)):
        raise ValueError(
            f"model {getattr(model, 'name', model)!r} has no predict_proba; the ctr "
            "protocol needs click probabilities"
        )
    n_items = meta.n_items
    if n_items <= N_RESERVED:
        raise ValueError("the catalogue holds no real item")
    positives = _known_pair_keys(test, n_items)
    if positives.size == 0:
        raise ValueError("the test data holds no (known user, known item) pair to evaluate")
    seen = np.union1d(_known_pair_keys(train, n_items), positives)
    users = positives // n_items
    items = positives % n_items

    rng = np.random.default_rng(seed)
    neg = rng.integers(N_RESERVED, n_items, size=(positives.size, negatives), dtype=np.int64)
    hit = _in_sorted(users[:, None] * n_items + neg, seen)
    for _ in range(max_rounds):
        if not hit.any():
            break
        rows, cols = np.nonzero(hit)
        neg[rows, cols] = rng.integers(N_RESERVED, n_items, size=rows.size, dtype=np.int64)
        hit[rows, cols] = _in_sorted(users[rows] * n_items + neg[rows, cols], seen)
    valid = ~hit
    keep = valid.any(axis=1)
    if not keep.all():
        log.info(
            "ctr: %d of %d positives dropped (their users have seen every item)",
            int((~keep).sum()),
            keep.size,
        )
        users, items, neg, valid = users[keep], items[keep], neg[keep], valid[keep]
    if users.size == 0:
        raise ValueError("no test positive has an item its user has not seen to sample")
    if (~valid).any():
        log.info("ctr: %d negative draws dropped after %d rounds", int((~valid).sum()), max_rounds)

    n_pos = users.size
    neg_rows, neg_cols = np.nonzero(valid)  # row-major: grouped by positive
    row_users = np.concatenate([users, users[neg_rows]])
    row_items = np.concatenate([items, neg[neg_rows, neg_cols]])
    label = np.concatenate([np.ones(n_pos), np.zeros(neg_rows.size)])
    prob = np.empty(row_users.size, dtype=np.float64)
    for start in range(0, row_users.size, chunk_size):
        stop = min(start + chunk_size, row_users.size)
        part = np.asarray(model.predict_proba(row_users[start:stop], row_items[start:stop]))
        if part.shape != (stop - start,):
            raise ValueError(
                f"model {model.name!r}: predict_proba returned shape {part.shape}, "
                f"expected ({stop - start},)"
            )
        prob[start:stop] = part
    metrics = ctr_metrics(prob, label)

    # per positive: share of its negatives below it, and the mean log loss of its rows
    p_pos, p_neg = prob[:n_pos], prob[n_pos:]
    wins = (p_pos[neg_rows] > p_neg) + 0.5 * (p_pos[neg_rows] == p_neg)
    n_neg = np.bincount(neg_rows, minlength=n_pos)
    pair_auc = np.bincount(neg_rows, weights=wins, minlength=n_pos) / n_neg
    clipped = np.clip(prob, 1e-15, 1.0 - 1e-15)
    row_loss = -(label * np.log(clipped) + (1.0 - label) * np.log(1.0 - clipped))
    group_loss = row_loss[:n_pos] + np.bincount(neg_rows, weights=row_loss[n_pos:], minlength=n_pos)
    per_query = {"pair_auc": pair_auc, "logloss": group_loss / (1.0 + n_neg)}
    log.info(
        "ctr %s: %d positives, %d negatives, auc=%.4f, logloss=%.4f",
        model.name,
        n_pos,
        neg_rows.size,
        metrics["auc"],
        metrics["logloss"],
    )
    return ProtocolResult(
        metrics=metrics, per_query=per_query, slices={}, n_queries=n_pos, protocol="ctr"
    )


# ---------------------------------------------------------------------- dispatch
def evaluate_model(
    model: Recommender,
    split_kind: str,
    data: Mapping[str, Interactions],
    meta: DataMeta,
    ks: Sequence[int] | None = None,
) -> ProtocolResult:
    """Evaluate ``model`` with the protocol of ``split_kind`` on ``data["test"]``.

    Parameters
    ----------
    model : Recommender
        A fitted model.
    split_kind : str
        ``session`` (:func:`next_item`) or ``user_temporal``, ``global_temporal``,
        ``leave_last_out`` (:func:`user_topk`).
    data : mapping of str to Interactions
        The split's parts: ``"test"``, and ``"train"`` for :func:`user_topk`.
    meta : DataMeta
        Sizes and train popularity of the split.
    ks : sequence of int, optional
        Cut-offs; default the protocol's.

    Returns
    -------
    ProtocolResult

    Raises
    ------
    ValueError
        Unknown split kind, a missing part, or a model that cannot score the query
        kind the protocol needs (the message names the model; callers skip it).
    """
    if split_kind in NEXT_ITEM_SPLITS:
        needed, parts = "session", ("test",)
    elif split_kind in USER_TOPK_SPLITS:
        needed, parts = "user", ("train", "test")
    else:
        known = sorted(NEXT_ITEM_SPLITS | USER_TOPK_SPLITS)
        raise ValueError(f"unknown split kind {split_kind!r}; expected one of {known}")
    if needed not in model.query_kinds:
        raise ValueError(
            f"model {model.name!r} cannot be evaluated on the {split_kind!r} split: it "
            f"scores {sorted(model.query_kinds)} queries, the protocol needs {needed!r}"
        )
    missing = [p for p in parts if p not in data]
    if missing:
        raise ValueError(f"evaluating the {split_kind!r} split needs part(s) {missing}")
    kw = {} if ks is None else {"ks": tuple(ks)}
    if needed == "session":
        return next_item(model, data["test"], meta, **kw)
    return user_topk(model, data["train"], data["test"], meta, **kw)
