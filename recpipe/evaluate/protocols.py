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
    evaluated by a user query and are counted in
    :attr:`~recpipe.evaluate.common.ProtocolResult.skipped_users`.

:func:`cold_start` (the ``cold_start`` split, with :mod:`recpipe.evaluate.cold`)
    :func:`~recpipe.evaluate.cold.cold_items`: every warm user (known in train) with
    test events on cold items (item indices with train count 0: catalogue items the
    features stage adds to the ``cold_start`` item map) ranks the set of all cold
    items, and only those; the relevant items are the user's distinct cold test items.
    :func:`~recpipe.evaluate.cold.cold_users`: every user unknown in train is a
    session query of the known items among their first ``given`` test events; the
    relevant items are the distinct later known items, ranked over the whole
    catalogue. :func:`cold_start` runs both and :func:`user_topk` (for comparison),
    each when the model scores its query kind, and reports the cold metrics under
    ``cold_items/...`` and ``cold_users/...`` keys and as slices.

:func:`~recpipe.evaluate.pointwise.ctr` (user splits, models with ``predicts_ctr``)
    Click-through-rate metrics of a model's ``predict_proba``: every distinct known
    (user, item) test pair is a positive, paired with sampled items the user never
    interacted with (in train or test) as negatives; ``auc`` and ``logloss``. It and
    :func:`~recpipe.evaluate.pointwise.rating` live in :mod:`recpipe.evaluate.pointwise`.

:func:`next_item` and :func:`user_topk` return a
:class:`~recpipe.evaluate.common.ProtocolResult`: mean metrics (the keys of
:mod:`recpipe.evaluate.metrics` plus ``coverage@K`` and ``popularity_bias@K`` from the
top-K lists), per-query arrays aligned across models (for
:func:`recpipe.evaluate.significance.paired_bootstrap`) and slices.
:func:`evaluate_model` picks the protocol from the split kind.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from recpipe.evaluate.cold import cold_items, cold_users
from recpipe.evaluate.common import ProtocolResult, catalogue_metrics, check_chunk
from recpipe.evaluate.metrics import next_item_per_query, topk_per_query
from recpipe.evaluate.ranking import chunked_top_k, target_ranks, top_k
from recpipe.features.context import EVENT_TYPE_INDEX
from recpipe.features.idmap import N_RESERVED, UNK
from recpipe.models.base import Recommender
from recpipe.models.data import DataMeta, Interactions, Queries
from recpipe.models.dataset import BlockedPart
from recpipe.sessions.batching import prefixes

log = logging.getLogger(__name__)

__all__ = [
    "COLD_PROTOCOLS",
    "COLD_START_SPLITS",
    "NEXT_ITEM_SPLITS",
    "USER_TOPK_SPLITS",
    "cold_start",
    "evaluate_model",
    "next_item",
    "user_topk",
    "user_topk_blocks",
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


# ---------------------------------------------------------------------- helpers
def _slice(per_query: Mapping[str, np.ndarray], mask: np.ndarray) -> dict[str, float]:
    """Means of ``per_query`` over the queries in ``mask``, with the count ``n``."""
    n = int(mask.sum())
    out: dict[str, float] = {"n": float(n)}
    if n:
        out.update({key: float(values[mask].mean()) for key, values in per_query.items()})
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
    check_chunk(chunk_size)
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
        log.debug(
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
    metrics.update(catalogue_metrics(lists, meta, counts, ks))
    slices = {
        "purchase": _slice(per_query, test.event_type_idx[target_pos] == _PURCHASE),
        "cold_items": _slice(per_query, counts[targets] < cold_threshold),
        "new_users": _slice(per_query, test.user_idx[target_pos] == UNK),
    }
    log.debug(
        "next_item %s: %d queries, %s",
        model.name,
        n,
        ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith(("recall", "mrr"))),
    )
    return ProtocolResult(
        metrics=metrics, per_query=per_query, slices=slices, n_queries=n, protocol="next_item"
    )


# ---------------------------------------------------------------------- user top-K
#: A block of test events for :func:`user_topk_blocks`: a part, or its
#: ``(user_idx, item_idx)`` arrays.
TestBlock = Interactions | tuple[np.ndarray, np.ndarray]


def _user_rows(
    data: Interactions | sp.csr_matrix, users: np.ndarray, meta: DataMeta
) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``(indptr, indices)`` of the distinct known items of each of ``users`` (rows
    of ``data``'s user-item matrix, or of the matrix ``data``)."""
    if isinstance(data, Interactions):
        data = data.user_item_matrix(meta.n_users, meta.n_items)
    matrix = sp.csr_array(data[users])
    matrix.sum_duplicates()
    keep = matrix.indices >= N_RESERVED
    row_of = np.repeat(np.arange(len(users)), np.diff(matrix.indptr))[keep]
    indptr = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of, minlength=len(users)), out=indptr[1:])
    return indptr, matrix.indices[keep].astype(np.int64)


def _block_matrix(block: TestBlock, meta: DataMeta) -> tuple[np.ndarray, Any]:
    """The users of a test block and its user-item matrix (or the part itself)."""
    if isinstance(block, Interactions):
        return block.user_idx, block
    user_idx, item_idx = (np.asarray(a, dtype=np.int64) for a in block)
    if user_idx.shape != item_idx.shape or user_idx.ndim != 1:
        raise ValueError(
            f"a test block needs (N,) user_idx and item_idx; got shapes {user_idx.shape} "
            f"and {item_idx.shape}"
        )
    ones = np.ones(len(user_idx), np.float32)
    matrix = sp.csr_matrix((ones, (user_idx, item_idx)), shape=(meta.n_users, meta.n_items))
    return user_idx, matrix


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
    accuracy metrics (ties broken against relevant items). This is
    :func:`user_topk_blocks` with the whole test part as one block.
    """
    return user_topk_blocks(
        model, train, [test], meta, ks=ks, exclude_seen=exclude_seen, chunk_size=chunk_size
    )


def user_topk_blocks(
    model: Recommender,
    train: Interactions,
    blocks: Iterable[TestBlock],
    meta: DataMeta,
    *,
    ks: Sequence[int] = (10, 20),
    exclude_seen: bool = True,
    chunk_size: int = 1024,
) -> ProtocolResult:
    """:func:`user_topk` on a test part given block by block, each block holding every
    test event of its users (e.g. a range of user indices read from the encoded
    part by :func:`recpipe.models.dataset.user_blocks`).

    Only one block's events and relevant items are in memory at a time, besides the
    top-K lists and per-query metrics of the users done so far and the train matrix
    (``exclude_seen``). The result equals :func:`user_topk` on the concatenated
    blocks: the per-user values are put in ascending user order before the means
    and the catalogue metrics are taken.

    Parameters
    ----------
    model, train, meta, ks, exclude_seen, chunk_size
        As for :func:`user_topk`.
    blocks : iterable of Interactions or (numpy.ndarray, numpy.ndarray)
        The test events in blocks of disjoint users: parts, or ``(user_idx,
        item_idx)`` arrays of the same length.

    Returns
    -------
    ProtocolResult
        As :func:`user_topk`.

    Raises
    ------
    ValueError
        As :func:`user_topk`; also when a user has events in two blocks.
    """
    check_chunk(chunk_size)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be a non-empty list of cut-offs >= 1; got {ks}")
    if "user" not in model.query_kinds:
        raise ValueError(
            f"model {model.name!r} cannot score 'user' queries (supports "
            f"{sorted(model.query_kinds)}); user top-K evaluation needs them"
        )
    done_users: list[np.ndarray] = []
    done_lists: list[np.ndarray] = []
    done_metrics: list[dict[str, np.ndarray]] = []
    n_test_users = n_known = skipped = 0
    for block in blocks:
        user_idx, matrix = _block_matrix(block, meta)
        all_users = np.unique(user_idx)
        known = all_users[all_users >= N_RESERVED]
        relevant = _user_rows(matrix, known, meta)
        has_rel = np.diff(relevant[0]) > 0
        users = known[has_rel]
        n_test_users += len(all_users)
        n_known += len(known)
        skipped += len(all_users) - len(users)
        if len(users) == 0:
            continue
        relevant = _user_rows(matrix, users, meta)
        exclude = _user_rows(train, users, meta) if exclude_seen else None
        del matrix

        def score_fn(rows: slice, users: np.ndarray = users) -> np.ndarray:
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
        done_users.append(users)
        done_lists.append(lists)
        done_metrics.append(topk_per_query(lists, relevant, ks))
    if skipped:
        log.debug(
            "user_topk: skipped %d of %d test users (%d unknown, %d without a known test item)",
            skipped,
            n_test_users,
            n_test_users - n_known,
            n_known - (n_test_users - skipped),
        )
    if not done_users:
        raise ValueError("no test user can be evaluated (all unknown or without known items)")
    users = np.concatenate(done_users)
    order = np.argsort(users, kind="stable")
    if len(done_users) > 1 and np.any(np.diff(users[order]) == 0):
        dup = users[order][1:][np.diff(users[order]) == 0][:5].tolist()
        raise ValueError(
            f"user(s) {dup} have events in two test blocks; each block must hold every "
            "test event of its users"
        )
    lists = np.concatenate(done_lists)[order]
    per_query = {
        key: np.concatenate([m[key] for m in done_metrics])[order] for key in done_metrics[0]
    }
    metrics = {key: float(values.mean()) for key, values in per_query.items()}
    metrics.update(catalogue_metrics(lists, meta, meta.item_counts, ks))
    log.debug(
        "user_topk %s: %d users in %d block(s), %d skipped",
        model.name,
        len(users),
        len(done_users),
        skipped,
    )
    return ProtocolResult(
        metrics=metrics,
        per_query=per_query,
        slices={},
        n_queries=len(users),
        protocol="user_topk",
        skipped_users=skipped,
    )


# ---------------------------------------------------------------------- cold start
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
    """The cold_start split's protocols: :func:`user_topk`, cold_items and cold_users.

    The cold protocols are :func:`~recpipe.evaluate.cold.cold_items` and
    :func:`~recpipe.evaluate.cold.cold_users`.

    Parameters
    ----------
    model : Recommender
        A fitted model; each protocol runs if the model scores its query kind. A
        model without session queries but with item vectors (MF, ALS, ...) answers
        :func:`~recpipe.evaluate.cold.cold_users` through its ``item_aggregate``
        cold-start strategy.
    train, test : Interactions
        The split's train and test parts.
    meta : DataMeta
        Sizes and train counts of the split.
    ks : sequence of int, default (10, 20)
        Cut-offs of every protocol.
    given : int, default 5
        :func:`~recpipe.evaluate.cold.cold_users`' request length.
    user_keys : numpy.ndarray, optional
        :func:`~recpipe.evaluate.cold.cold_users`' per-event user keys.
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
            log.debug("cold_start %s: %s skipped: %s", model.name, name, exc)
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


# ---------------------------------------------------------------------- dispatch
def evaluate_model(
    model: Recommender,
    split_kind: str,
    data: Mapping[str, Interactions | BlockedPart],
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
    data : mapping of str to Interactions or BlockedPart
        The split's parts: ``"test"``, and ``"train"`` for :func:`user_topk` and
        :func:`cold_start`. A test part given as a
        :class:`~recpipe.models.dataset.BlockedPart` is ranked block by block
        (:func:`user_topk_blocks`, the same result) on the user top-K splits, and read
        whole for the other protocols.
    meta : DataMeta
        Sizes and train popularity of the split.
    ks : sequence of int, optional
        Cut-offs; default the protocol's.
    test_user_keys : numpy.ndarray, optional
        ``cold_start`` only: per-test-event raw user keys for
        :func:`~recpipe.evaluate.cold.cold_users`.
    given : int, default 5
        ``cold_start`` only: :func:`~recpipe.evaluate.cold.cold_users`' request length.

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
    test = data["test"]
    if isinstance(test, BlockedPart):
        if needed == {"user"}:
            return user_topk_blocks(model, data["train"], test.blocks(), meta, **kw)
        test = test.load()
    if split_kind in COLD_START_SPLITS:
        return cold_start(
            model,
            data["train"],
            test,
            meta,
            given=given,
            user_keys=test_user_keys,
            **kw,
        )
    if needed == {"session"}:
        return next_item(model, test, meta, **kw)
    return user_topk(model, data["train"], test, meta, **kw)
