"""Evaluation protocols: how a fitted :class:`~recpipe.models.base.Recommender` is scored.

The protocols are pure functions over in-memory data (no file I/O):

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

:func:`cold_items` and :func:`cold_users` (the ``cold_start`` split, with :func:`user_topk`)
    :func:`cold_items`: every warm user (known in train) with test events on cold
    items (item indices with train count 0: catalogue items the features stage adds
    to the ``cold_start`` item map) ranks the set of all cold items, and only those;
    the relevant items are the user's distinct cold test items. :func:`cold_users`:
    every user unknown in train is a session query of the known items among their
    first ``given`` test events; the relevant items are the distinct later known
    items, ranked over the whole catalogue. :func:`cold_start` runs both and
    :func:`user_topk` (for comparison), each when the model scores its query kind,
    and reports the cold metrics under ``cold_items/...`` and ``cold_users/...``
    keys and as slices.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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
from recpipe.models.base import Recommender
from recpipe.models.data import CONTEXT_COLUMNS, DataMeta, Interactions, Queries
from recpipe.sessions.batching import prefixes

log = logging.getLogger(__name__)

__all__ = [
    "COLD_PROTOCOLS",
    "COLD_START_SPLITS",
    "NEXT_ITEM_SPLITS",
    "USER_TOPK_SPLITS",
    "CtrPredictor",
    "ProtocolResult",
    "cold_items",
    "cold_start",
    "cold_users",
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
#: Split kinds evaluated with :func:`cold_start` (user and / or session queries).
COLD_START_SPLITS: frozenset[str] = frozenset({"cold_start"})
#: The cold-start protocols, in the order :func:`cold_start` runs them after user_topk.
COLD_PROTOCOLS: tuple[str, ...] = ("cold_items", "cold_users")

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
        ``"next_item"``, ``"user_topk"``, ``"cold_items"``, ``"cold_users"``,
        ``"cold_start"``, ``"rating"`` or ``"ctr"``.
    skipped_users : int
        Test users left out of :func:`user_topk` (unknown user, or no known test item)
        or of :func:`cold_users`.
    skipped : dict[str, str]
        Protocols of a combined evaluation (:func:`cold_start`) that could not run,
        with the reason (e.g. the model does not score their query kind).
    """

    metrics: dict[str, float]
    per_query: dict[str, np.ndarray]
    slices: dict[str, dict[str, float]] = field(default_factory=dict)
    n_queries: int = 0
    protocol: str = ""
    skipped_users: int = 0
    skipped: dict[str, str] = field(default_factory=dict)


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


# ---------------------------------------------------------------------- cold start
def _check_ks_arg(ks: Sequence[int]) -> list[int]:
    out = sorted({int(k) for k in ks})
    if not out or out[0] < 1:
        raise ValueError(f"ks must be a non-empty list of cut-offs >= 1; got {out}")
    return out


def _keys_csr(
    keys: np.ndarray, n_items: int, row_of_group: np.ndarray, n_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """CSR rows of sorted unique ``group * n_items + item`` keys whose group is kept.

    ``row_of_group[g]`` is the query row of group ``g`` (-1: left out); it must be
    increasing over the kept groups, so the rows come out sorted.
    """
    rows = row_of_group[keys // n_items]
    keep = rows >= 0
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=n_rows), out=indptr[1:])
    return indptr, (keys[keep] % n_items).astype(np.int64)


def cold_items(
    model: Recommender,
    test: Interactions,
    meta: DataMeta,
    *,
    train: Interactions | None = None,
    user_keys: np.ndarray | None = None,
    given: int = 5,
    ks: Sequence[int] = (10, 20),
    chunk_size: int = 1024,
) -> ProtocolResult:
    """Cold-item evaluation: rank the items without training events for warm and new users.

    Parameters
    ----------
    model : Recommender
        A fitted model that scores ``user`` queries (warm users) and ``session``
        queries (unknown users), with candidates.
    test : Interactions
        The test events (indices of the split ``meta`` describes).
    meta : DataMeta
        Sizes and train counts of the split; the cold items are the item indices
        ``>= N_RESERVED`` with train count 0 (the catalogue items the
        ``cold_start`` features add to the item map) and a test event.
    train : Interactions, optional
        The training events: when given, cold items must also have no event in it
        and warm users at least one.
    user_keys : numpy.ndarray, optional
        Per-event raw user keys of the unknown users, as in :func:`cold_users`.
    given : int, default 5
        An unknown user's first ``given`` events form its request (:func:`cold_users`).
    ks : sequence of int, default (10, 20)
        Cut-offs.
    chunk_size : int, default 1024
        Users scored at a time.

    Returns
    -------
    ProtocolResult
        ``protocol="cold_items"``; first one query per warm user (known user index,
        in ascending order) with a test event on a cold item, its relevant items the
        distinct cold items of its test events; then one per unknown user (anonymous
        sessions on click logs) whose first ``given`` events hold a known item and
        whose later events a cold item, asked as a session query of those first
        items. ``metrics``: the :data:`~recpipe.evaluate.metrics.TOPK_METRICS` at
        every K and ``coverage@K``, the share of the cold items recommended to some
        query; ``per_query``: the per-query arrays; ``slices``: empty.

    Raises
    ------
    ValueError
        The model cannot score a query kind that has queries, the test part holds no
        cold item, no query reaches one, or an argument is invalid.

    Notes
    -----
    Every query ranks the set of cold items that have a test event (scored with
    ``model.score(queries, candidates=cold)``), and nothing else: the question is
    how well the model orders new items it has never seen an event of, among the
    new items of the period (as cold-start item recall is measured in DropoutNet,
    Volkovs et al. 2017). Catalogue items that nobody reached in the test period are
    left out: on a large catalogue (DIGINETICA lists 184k products for a sample of
    a few thousand events) they would swamp the ranking with dead stock. Ties are
    broken against relevant items (:func:`~recpipe.evaluate.ranking.top_k` with
    ``relevant=``), so a constant scorer ranks every relevant item after every
    irrelevant one. Nothing is excluded (cold items have no train event to exclude).
    """
    _check_chunk(chunk_size)
    ks = _check_ks_arg(ks)
    n_items = meta.n_items
    is_cold = np.asarray(meta.item_counts) == 0
    is_cold[:N_RESERVED] = False
    warm_user = np.ones(meta.n_users, dtype=bool)
    warm_user[:N_RESERVED] = False
    if train is not None:
        is_cold[train.item_idx] = False
        in_train = np.zeros(meta.n_users, dtype=bool)
        in_train[train.user_idx] = True
        warm_user &= in_train
    in_test = np.zeros(n_items, dtype=bool)
    in_test[test.item_idx] = True
    is_cold &= in_test
    cold = np.flatnonzero(is_cold)
    if len(cold) == 0:
        raise ValueError(
            "the test part holds no cold item (an item index with train count 0 and a "
            "test event); the cold_items protocol needs the cold_start split's features"
        )
    column = np.full(n_items, -1, dtype=np.int64)
    column[cold] = np.arange(len(cold))  # item index -> column of the cold set

    # warm users: user queries, every cold item of their test events relevant
    users = test.user_idx.astype(np.int64)
    items = test.item_idx.astype(np.int64)
    rows = warm_user[users] & is_cold[items]
    keys = np.unique(users[rows] * n_items + items[rows])  # sorted by user, then item
    query_users = np.unique(keys // n_items)
    row_of_user = np.full(meta.n_users, -1, dtype=np.int64)
    row_of_user[query_users] = np.arange(len(query_users))
    indptr, targets = _keys_csr(keys, n_items, row_of_user, len(query_users))
    parts: list[tuple[Callable[[slice], np.ndarray], int, tuple[np.ndarray, np.ndarray]]] = []
    if len(query_users):
        if "user" not in model.query_kinds:
            raise ValueError(
                f"model {model.name!r} cannot score 'user' queries (supports "
                f"{sorted(model.query_kinds)}); the cold items of {len(query_users)} warm "
                "users need them"
            )
        parts.append(
            (
                lambda block: model.score(Queries.for_users(query_users[block]), candidates=cold),
                len(query_users),
                (indptr, column[targets]),
            )
        )
    # unknown users: the known items of their first `given` events are the request
    requests = _unknown_user_requests(test, meta, user_keys, given, n_items, is_target=is_cold)
    if requests.n_queries:
        if "session" not in model.query_kinds:
            raise ValueError(
                f"model {model.name!r} cannot score 'session' queries (supports "
                f"{sorted(model.query_kinds)}); the cold items of {requests.n_queries} "
                "unknown users need them"
            )
        session_queries = requests.queries
        parts.append(
            (
                lambda block: model.score(session_queries.take(block), candidates=cold),
                requests.n_queries,
                (requests.relevant[0], column[requests.relevant[1]]),
            )
        )
    if not parts:
        raise ValueError(
            f"no test user has a test event on one of the {len(cold)} cold items after a "
            f"request (warm users: their train history; unknown users: their first "
            f"given={given} events); the cold_items protocol has no query"
        )
    lists_parts, per_parts = [], []
    for score_fn, n_queries, relevant in parts:
        lists = chunked_top_k(score_fn, n_queries, ks[-1], chunk_size, relevant=relevant)
        lists_parts.append(lists)
        per_parts.append(topk_per_query(lists, relevant, ks))
    lists = np.concatenate(lists_parts)
    per_query = {key: np.concatenate([p[key] for p in per_parts]) for key in per_parts[0]}
    metrics = {key: float(values.mean()) for key, values in per_query.items()}
    metrics.update(coverage(lists, len(cold), ks))
    log.info(
        "cold_items %s: %d warm users, %d unknown users, %d cold items, recall@%d=%.4f",
        model.name,
        len(query_users),
        requests.n_queries,
        len(cold),
        ks[-1],
        metrics[f"recall@{ks[-1]}"],
    )
    return ProtocolResult(
        metrics=metrics,
        per_query=per_query,
        slices={},
        n_queries=len(lists),
        protocol="cold_items",
    )


@dataclass(frozen=True)
class _Requests:
    """Unknown test users' requests (first events) and their later target items."""

    queries: Queries
    relevant: tuple[np.ndarray, np.ndarray]
    exclude: tuple[np.ndarray, np.ndarray]
    n_queries: int
    n_groups: int

    @property
    def skipped(self) -> int:
        return self.n_groups - self.n_queries


def _unknown_user_requests(
    test: Interactions,
    meta: DataMeta,
    user_keys: np.ndarray | None,
    given: int,
    n_items: int,
    is_target: np.ndarray | None = None,
) -> _Requests:
    """Group the test events of unknown users (``user_idx == UNK``) by ``user_keys``
    (default: by session), in time order: the known items of each user's first
    ``given`` events are a session query, the distinct later items (known, or those
    marked in ``is_target`` (n_items,)) outside the request its relevant items.
    Users without a request item or a target are left out."""
    n = len(test)
    if user_keys is None:
        keys = test.session_index.astype(np.int64)
    else:
        keys = np.asarray(user_keys)
        if keys.shape != (n,) or (n and keys.dtype.kind not in "iu"):
            raise ValueError(
                f"user_keys must be ({n},) integers aligned with the test events; got "
                f"shape {keys.shape}, dtype {keys.dtype}"
            )
        keys = keys.astype(np.int64, copy=False)
    rows = np.flatnonzero((test.user_idx == UNK) & (keys >= 0))
    rows = rows[np.lexsort((rows, test.timestamp[rows], keys[rows]))]  # by user, time
    starts = np.flatnonzero(np.r_[True, keys[rows][1:] != keys[rows][:-1]]) if len(rows) else rows
    n_groups = len(starts)
    group = np.repeat(np.arange(n_groups), np.diff(np.r_[starts, len(rows)]))
    rank = np.arange(len(rows)) - starts[group] if len(rows) else rows
    items = test.item_idx[rows].astype(np.int64)
    known = items >= N_RESERVED
    in_request = (rank < given) & known
    request_keys = np.unique(group[in_request] * n_items + items[in_request])
    later = (rank >= given) & (known if is_target is None else is_target[items])
    target_keys = np.unique(group[later] * n_items + items[later])
    target_keys = target_keys[~np.isin(target_keys, request_keys, assume_unique=True)]
    ok = np.zeros(n_groups, dtype=bool)
    ok[request_keys // n_items] = True
    has_target = np.zeros(n_groups, dtype=bool)
    has_target[target_keys // n_items] = True
    ok &= has_target
    n_queries = int(ok.sum())
    row_of_group = np.full(n_groups, -1, dtype=np.int64)
    row_of_group[ok] = np.arange(n_queries)
    relevant = _keys_csr(target_keys, n_items, row_of_group, n_queries)
    exclude = _keys_csr(request_keys, n_items, row_of_group, n_queries)
    # the requests: known items of the first `given` events, left-padded to `given`
    sel = in_request & ok[group]
    req_rows, req_query = rows[sel], row_of_group[group[sel]]
    length = np.bincount(req_query, minlength=n_queries)
    first = np.r_[0, np.cumsum(length)[:-1]]
    col = given - length[req_query] + (np.arange(len(req_rows)) - first[req_query])

    def padded(values: np.ndarray) -> np.ndarray:
        out = np.zeros((n_queries, given), dtype=np.int64)
        out[req_query, col] = values[req_rows]
        return out

    queries = Queries.for_sessions(
        padded(test.item_idx),
        users=np.full(n_queries, UNK, dtype=np.int64),
        timestamps=padded(test.timestamp),
        **{c: padded(getattr(test, c)) for c in CONTEXT_COLUMNS},
    )
    return _Requests(queries, relevant, exclude, n_queries, n_groups)


def cold_users(
    model: Recommender,
    test: Interactions,
    meta: DataMeta,
    *,
    user_keys: np.ndarray | None = None,
    given: int = 5,
    ks: Sequence[int] = (10, 20),
    exclude_given: bool = True,
    chunk_size: int = 1024,
) -> ProtocolResult:
    """Cold-user evaluation: recommend to users unknown in train from their first events.

    Parameters
    ----------
    model : Recommender
        A fitted model that scores ``session`` queries.
    test : Interactions
        The test events (indices of the split ``meta`` describes); the events of
        unknown users (``user_idx == UNK``) are evaluated.
    meta : DataMeta
        Sizes and train popularity of the split.
    user_keys : numpy.ndarray, optional
        ``(N,)`` int key of each test event's raw user (e.g. the codes of the
        ``user_id`` column the ``cold_start`` features keep in the test part; -1:
        no user, left out). Default: each test session of an unknown user counts
        as one user (the raw ids are not in :class:`Interactions`).
    given : int, default 5
        The first ``given`` test events of a user (in time) form the request.
    ks : sequence of int, default (10, 20)
        Cut-offs.
    exclude_given : bool, default True
        Leave the request's items out of the list (they are never relevant).
    chunk_size : int, default 1024
        Users scored at a time.

    Returns
    -------
    ProtocolResult
        ``protocol="cold_users"``; one query per evaluable unknown user, in
        ascending key order. ``metrics``: the
        :data:`~recpipe.evaluate.metrics.TOPK_METRICS` at every K and the catalogue
        metrics; ``per_query``: the per-user arrays; ``skipped_users``: unknown
        users without a known item among their first ``given`` events or without
        a later known item outside them.

    Raises
    ------
    ValueError
        The model cannot score session queries, no unknown user can be evaluated,
        or an argument is invalid (``given < 1``: the no-history variant is not
        implemented).

    Notes
    -----
    A user's test events are ordered by time (ties in data order). The request is a
    session query (:meth:`~recpipe.models.data.Queries.for_sessions`) of the known
    items (index ``>= N_RESERVED``) among the first ``given`` events, with their
    timestamps and context and the user ``UNK``; the relevant items are the
    distinct known items of the later events that are not in the request. The
    ranking covers the whole catalogue, ties broken against relevant items.
    """
    _check_chunk(chunk_size)
    ks = _check_ks_arg(ks)
    if given < 1:
        raise ValueError(
            f"given must be >= 1 (events of the request); got {given} (the no-history "
            "variant is not implemented)"
        )
    if "session" not in model.query_kinds:
        raise ValueError(
            f"model {model.name!r} cannot score 'session' queries (supports "
            f"{sorted(model.query_kinds)}); cold-user evaluation needs them"
        )
    requests = _unknown_user_requests(test, meta, user_keys, given, meta.n_items)
    if requests.n_queries == 0:
        raise ValueError(
            f"no unknown test user can be evaluated ({requests.n_groups} unknown users; each "
            f"needs a known item among its first given={given} test events and a later known "
            "item)"
        )
    if requests.skipped:
        log.info(
            "cold_users: skipped %d of %d unknown test users", requests.skipped, requests.n_groups
        )
    n_queries, queries, relevant = requests.n_queries, requests.queries, requests.relevant
    exclude = requests.exclude if exclude_given else None

    def score_fn(block: slice) -> np.ndarray:
        return model.score(queries.take(block))

    lists = chunked_top_k(
        score_fn, n_queries, ks[-1], chunk_size, exclude, relevant=relevant, n_reserved=N_RESERVED
    )
    per_query = topk_per_query(lists, relevant, ks)
    metrics = {key: float(values.mean()) for key, values in per_query.items()}
    metrics.update(_catalogue_metrics(lists, meta, meta.item_counts, ks))
    log.info(
        "cold_users %s: %d users, %d skipped, recall@%d=%.4f",
        model.name,
        n_queries,
        requests.skipped,
        ks[-1],
        metrics[f"recall@{ks[-1]}"],
    )
    return ProtocolResult(
        metrics=metrics,
        per_query=per_query,
        slices={},
        n_queries=n_queries,
        protocol="cold_users",
        skipped_users=requests.skipped,
    )


def _session_scorer(model: Recommender, train: Interactions, meta: DataMeta) -> Any:
    """``model`` when it scores session queries; else, when it has item vectors, its
    ``item_aggregate`` cold-start strategy (:class:`~recpipe.models.coldstart.ColdStartPolicy`
    with a popularity fallback fitted on ``train``), as serving answers unknown users."""
    if "session" in model.query_kinds or model.item_vectors() is None:
        return model
    from recpipe.models.coldstart import ColdStartPolicy, SessionScorer
    from recpipe.models.registry import build_model

    fallback = build_model("pop", {}, meta).fit(train)
    return SessionScorer(ColdStartPolicy(model, fallback))


def cold_start(
    model: Recommender,
    train: Interactions,
    test: Interactions,
    meta: DataMeta,
    *,
    ks: Sequence[int] = (10, 20),
    given: int = 5,
    user_keys: np.ndarray | None = None,
    chunk_size: int = 1024,
) -> ProtocolResult:
    """The cold_start split's protocols: :func:`user_topk`, :func:`cold_items`, :func:`cold_users`.

    Parameters
    ----------
    model : Recommender
        A fitted model; each protocol runs if the model scores its query kind. A
        model without session queries but with item vectors (MF, ALS, ...) answers
        :func:`cold_users` through its ``item_aggregate`` cold-start strategy.
    train, test : Interactions
        The split's train and test parts.
    meta : DataMeta
        Sizes and train counts of the split.
    ks : sequence of int, default (10, 20)
        Cut-offs of every protocol.
    given : int, default 5
        :func:`cold_users`' request length.
    user_keys : numpy.ndarray, optional
        :func:`cold_users`' per-event user keys.
    chunk_size : int, default 1024
        Queries scored at a time.

    Returns
    -------
    ProtocolResult
        ``protocol="cold_start"``. ``metrics``, ``per_query``, ``n_queries`` and
        ``skipped_users`` are :func:`user_topk`'s (the warm comparison; absent / 0
        when it does not run), plus each cold protocol's metrics and per-query
        arrays under ``"<protocol>/<metric>"`` keys (``cold_items/recall@20``,
        ``cold_users/ndcg@20``, ...); ``slices["cold_items"]`` and
        ``slices["cold_users"]`` hold the same means with the query count ``"n"``;
        ``skipped``: ``{protocol: reason}`` for those that could not run.

    Raises
    ------
    ValueError
        None of the three protocols can run; the message gives each reason.
    """
    runs = {
        "user_topk": lambda: user_topk(model, train, test, meta, ks=ks, chunk_size=chunk_size),
        "cold_items": lambda: cold_items(
            model,
            test,
            meta,
            train=train,
            user_keys=user_keys,
            given=given,
            ks=ks,
            chunk_size=chunk_size,
        ),
        "cold_users": lambda: cold_users(
            _session_scorer(model, train, meta),
            test,
            meta,
            user_keys=user_keys,
            given=given,
            ks=ks,
            chunk_size=chunk_size,
        ),
    }
    results: dict[str, ProtocolResult] = {}
    skipped: dict[str, str] = {}
    for name, run in runs.items():
        try:
            results[name] = run()
        except ValueError as exc:
            log.info("cold_start %s: %s skipped: %s", model.name, name, exc)
            skipped[name] = str(exc)
    if not results:
        why = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
        raise ValueError(f"model {model.name!r}: no cold_start protocol can run ({why})")
    main = results.get("user_topk")
    metrics = dict(main.metrics) if main else {}
    per_query = dict(main.per_query) if main else {}
    slices: dict[str, dict[str, float]] = {}
    for name in COLD_PROTOCOLS:
        if name in results:
            result = results[name]
            metrics.update({f"{name}/{key}": value for key, value in result.metrics.items()})
            per_query.update({f"{name}/{key}": value for key, value in result.per_query.items()})
            slices[name] = {"n": float(result.n_queries), **result.metrics}
    return ProtocolResult(
        metrics=metrics,
        per_query=per_query,
        slices=slices,
        n_queries=main.n_queries if main else 0,
        protocol="cold_start",
        skipped_users=main.skipped_users if main else 0,
        skipped=skipped,
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
    *,
    test_user_keys: np.ndarray | None = None,
    given: int = 5,
) -> ProtocolResult:
    """Evaluate ``model`` with the protocol of ``split_kind`` on ``data["test"]``.

    Parameters
    ----------
    model : Recommender
        A fitted model.
    split_kind : str
        ``session`` (:func:`next_item`); ``user_temporal``, ``global_temporal``,
        ``leave_last_out`` (:func:`user_topk`); or ``cold_start``
        (:func:`cold_start`: user_topk, cold_items and cold_users, each if the
        model scores its query kind).
    data : mapping of str to Interactions
        The split's parts: ``"test"``, and ``"train"`` for :func:`user_topk` and
        :func:`cold_start`.
    meta : DataMeta
        Sizes and train popularity of the split.
    ks : sequence of int, optional
        Cut-offs; default the protocol's.
    test_user_keys : numpy.ndarray, optional
        ``cold_start`` only: per-test-event raw user keys for :func:`cold_users`.
    given : int, default 5
        ``cold_start`` only: :func:`cold_users`' request length.

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
        needed, parts = {"session"}, ("test",)
    elif split_kind in USER_TOPK_SPLITS:
        needed, parts = {"user"}, ("train", "test")
    elif split_kind in COLD_START_SPLITS:
        needed, parts = {"user", "session"}, ("train", "test")
    else:
        known = sorted(NEXT_ITEM_SPLITS | USER_TOPK_SPLITS | COLD_START_SPLITS)
        raise ValueError(f"unknown split kind {split_kind!r}; expected one of {known}")
    if not needed & model.query_kinds:
        wanted = " or ".join(repr(k) for k in sorted(needed))
        raise ValueError(
            f"model {model.name!r} cannot be evaluated on the {split_kind!r} split: it "
            f"scores {sorted(model.query_kinds)} queries, the protocol needs {wanted}"
        )
    missing = [p for p in parts if p not in data]
    if missing:
        raise ValueError(f"evaluating the {split_kind!r} split needs part(s) {missing}")
    kw = {} if ks is None else {"ks": tuple(ks)}
    if split_kind in COLD_START_SPLITS:
        return cold_start(
            model,
            data["train"],
            data["test"],
            meta,
            given=given,
            user_keys=test_user_keys,
            **kw,
        )
    if needed == {"session"}:
        return next_item(model, data["test"], meta, **kw)
    return user_topk(model, data["train"], data["test"], meta, **kw)
