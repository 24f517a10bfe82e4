"""Cold-start protocols: ranking items without training events, and users unknown in train.

They evaluate the ``cold_start`` split (run together, with
:func:`~recpipe.evaluate.protocols.user_topk` for comparison, by
:func:`~recpipe.evaluate.protocols.cold_start`):

:func:`cold_items`
    Every warm user (known in train) with test events on cold items (item indices with
    train count 0: catalogue items the features stage adds to the ``cold_start`` item
    map) ranks the set of all cold items, and only those; the relevant items are the
    user's distinct cold test items.

:func:`cold_users`
    Every user unknown in train is a session query of the known items among their first
    ``given`` test events; the relevant items are the distinct later known items, ranked
    over the whole catalogue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from recpipe.evaluate.common import ProtocolResult, catalogue_metrics, check_chunk
from recpipe.evaluate.metrics import coverage, topk_per_query
from recpipe.evaluate.ranking import chunked_top_k
from recpipe.features.idmap import N_RESERVED, UNK
from recpipe.models.base import Recommender
from recpipe.models.data import CONTEXT_COLUMNS, DataMeta, Interactions, Queries

log = logging.getLogger(__name__)

__all__ = ["cold_items", "cold_users"]


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
    check_chunk(chunk_size)
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
    log.debug(
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
    check_chunk(chunk_size)
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
        log.debug(
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
    metrics.update(catalogue_metrics(lists, meta, meta.item_counts, ks))
    log.debug(
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
