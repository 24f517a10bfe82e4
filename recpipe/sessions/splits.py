"""Leak-free train / validation / test splits of sessionized events.

Five protocols, each a pure function ``(events, params) -> SplitResult``:

``session``
    The GRU4Rec / session-rec protocol for next-item prediction (Hidasi et al.,
    "Session-based Recommendations with Recurrent Neural Networks", ICLR 2016;
    Ludewig, Latifi & Jannach, "Empirical analysis of session-based
    recommendation algorithms", UMUAI 31, 2021): support filter, then sessions
    *starting* in the last ``test_days`` are test, those starting in the
    ``valid_days`` before are validation; valid/test events on items unseen in
    train are dropped, then valid/test sessions shorter than 2.
``global_temporal``
    One cut-off time for everybody (Campos, Díez & Cantador, "Time-aware
    recommender systems: a comprehensive survey and analysis of existing
    evaluation protocols", UMUAI 24, 2014): the last ``global_test_fraction`` of
    the events in time is test. No test event is at or before any train event.
``user_temporal``
    Per user, the last ``user_test_fraction`` of the user's events is test
    (a "leave the last N% out" protocol, Campos et al. 2014): every user with
    two or more events is evaluated, which a global cut-off cannot give on
    data such as MovieLens 100K.
``leave_last_out``
    Per user, the last event is test and the one before valid (e.g. He et al.,
    "Neural Collaborative Filtering", WWW 2017; Kang & McAuley, "Self-Attentive
    Sequential Recommendation", ICDM 2018).
``cold_start``
    The ``global_temporal`` cut-off, and a seeded share of the items and of the
    users with events after it are held out whole: all their train and valid
    events are removed, so they (like ids first seen after the cut-off) are
    unknown to training, while test keeps every event after the cut-off (Schein
    et al., "Methods and metrics for cold-start recommendations", SIGIR 2002).
    The cold ids are in ``SplitResult.tables``.

:func:`build_splits` runs those named in ``params.splits`` on one shared
integer encoding of the table, and returns :class:`SkippedSplit` (with the
reason) for a split the data cannot support. Each split is one ``int8`` part code
per input row over that shared table (:meth:`SplitResult.of_rows`): no part is
copied until it is read (``result.train``) or written
(:func:`~recpipe.sessions.parts.write_parts`). :func:`check_leakage` re-derives
the protocol's invariants from the three parts alone, for the report.

Every part keeps the input's row order and columns, with a fresh ``RangeIndex``.
``stats`` always satisfies ``sum(parts rows) + sum(dropped) == input_rows``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from recpipe.config import SPLIT_KINDS, SessionsParams
from recpipe.errors import SplitError, SplitNotApplicable
from recpipe.sessions._arrays import (
    NS_PER_DAY,
    Codes,
    encode_parts,
    iso,
    max_threads,
    timestamps_ns,
    to_arrow,
)
from recpipe.sessions.cold import anonymous_as_users, cold_start_split_table
from recpipe.sessions.parts import (
    DROPPED,
    TEST,
    TRAIN,
    VALID,
    SplitResult,
    Table,
    empty_test,
    finish,
    table_not_applicable,
)
from recpipe.sessions.sessionize import support_mask
from recpipe.sessions.temporal import global_temporal_split_table, per_user_split

log = logging.getLogger(__name__)

__all__ = [
    "SkippedSplit",
    "build_splits",
    "check_leakage",
    "iter_splits",
    "session_split",
]


@dataclass(frozen=True)
class SkippedSplit:
    """A split that does not apply to the data (e.g. user splits without user ids)."""

    reason: str
    kind: str = ""


# --------------------------------------------------------------------------- session split
def session_split(events: pd.DataFrame, params: SessionsParams) -> SplitResult:
    """The GRU4Rec / session-rec next-item split by session start time.

    Parameters
    ----------
    events : pandas.DataFrame
        Sessionized events (:func:`~recpipe.sessions.sessionize.sessionize`):
        ``session_id`` filled on every row. Unfiltered, or item-filtered only
        (``filter_support(events, min_item_support, 1)``, as the sessions stage
        does: re-applying the item filter to such a table drops nothing); the
        split applies the whole GRU4Rec filter itself.
    params : SessionsParams
        ``min_item_support``, ``min_session_length``, ``test_days``, ``valid_days``.

    Returns
    -------
    SplitResult
        ``stats["dropped"]`` has ``item_support`` and ``session_length`` (the
        filter), then ``valid_unseen_item``, ``valid_short_session``,
        ``test_unseen_item`` and ``test_short_session``; ``stats["filter"]``
        is :func:`~recpipe.sessions.sessionize.filter_support`'s stats.

    Raises
    ------
    SplitError
        The events have no session ids, or the test or train part is empty.

    Notes
    -----
    Steps (Hidasi et al., ICLR 2016; Ludewig et al., UMUAI 2021):

    1. :func:`~recpipe.sessions.sessionize.filter_support` with
       ``min_item_support`` then ``min_session_length``.
    2. ``tmax`` = the last remaining timestamp; a session's start is its first
       remaining event. Sessions starting at or after ``tmax - test_days`` are
       test, those starting at or after ``tmax - test_days - valid_days`` are
       validation, the rest train. So every test session starts after every
       train (and valid) session, and a session is never cut in two. GRU4Rec's
       and session-rec's scripts assign a session by its *last* event instead;
       the two differ only for sessions that straddle the cut-off.
    3. In valid and test, events whose item has no train event are dropped
       (test: no train or validation event with ``test_items_seen_in:
       train_valid``), then sessions left with fewer than 2 events (a next-item
       prediction needs a prefix; fixed by the protocol, whatever
       ``min_session_length``). The validation part is filtered against train only.
    """
    return _session_split(Table(events), params)


def _session_split(table: Table, params: SessionsParams) -> SplitResult:
    t0 = time.perf_counter()
    kind = "session"
    reason = table_not_applicable(kind, table)
    if reason:
        raise SplitError(f"{kind} split: {reason}")
    table.prefetch("user", "item", "session")
    check_sequences(table.n, table.session.n_uniques, params)
    keep, filter_stats = support_mask(
        table.item, table.session, params.item_support, params.min_session_length
    )
    if not keep.any():
        raise session_filter_empty()
    ts, session = table.ts, table.session.codes
    tmax = int(ts.max(where=keep, initial=np.iinfo(np.int64).min))  # no copy of ts[keep]
    test_start, valid_start = session_bounds(tmax, params)
    start = np.full(table.session.n_uniques, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(start, session[keep], ts[keep])
    session_part = np.where(
        start >= test_start, TEST, np.where(start >= valid_start, VALID, TRAIN)
    ).astype(np.int8)
    part = np.where(keep, session_part[session], DROPPED).astype(np.int8)

    train = part == TRAIN
    if not train.any():
        raise session_train_empty(valid_start, params)
    item = table.item.codes
    seen = np.zeros(table.item.n_uniques, bool)
    seen[item[train]] = True
    seen_by = {"valid": seen, "test": test_seen(seen, item, part, params)}
    dropped = {
        "item_support": filter_stats["dropped"]["item_support"],
        "session_length": filter_stats["dropped"]["session_length"],
    }
    held_out = {}
    candidates = np.flatnonzero(part > TRAIN)  # valid, test (and dropped) rows only
    candidates = candidates[part[candidates] != DROPPED]
    for name, code in (("valid", VALID), ("test", TEST)):
        rows = candidates[part[candidates] == code]
        unseen = ~seen_by[name][item[rows]]
        part[rows[unseen]] = DROPPED
        rows = rows[~unseen]
        lengths = np.bincount(session[rows], minlength=table.session.n_uniques)
        short = lengths[session[rows]] < 2
        part[rows[short]] = DROPPED
        dropped[f"{name}_unseen_item"] = int(np.count_nonzero(unseen))
        dropped[f"{name}_short_session"] = int(np.count_nonzero(short))
        held_out[name] = int(np.count_nonzero(lengths >= 2))
    check_session_test(held_out["test"], params)
    if held_out["test"] == 0:
        n_test_sessions = int(np.count_nonzero(session_part[np.unique(session[keep])] == TEST))
        raise session_test_empty(n_test_sessions, test_start, tmax, params)
    cutoffs, used = session_cutoffs(tmax, valid_start, test_start, params)
    return finish(kind, table, part, used, cutoffs, dropped, {"filter": filter_stats}, t0)


def test_seen(seen: np.ndarray, item: np.ndarray, part: np.ndarray, params: SessionsParams) -> Any:
    """The items a session-split test event may be on: ``seen`` (those with a train
    event), plus those of the validation part when ``test_items_seen_in`` is
    ``train_valid`` (GRU4Rec's preprocessing filters test against train_full)."""
    if params.test_items_seen_in != "train_valid":
        return seen
    out = seen.copy()
    out[item[part == VALID]] = True
    return out


def session_bounds(tmax: int, params: SessionsParams) -> tuple[int, int]:
    """``(test_start, valid_start)`` (ns) of the session split from the last timestamp."""
    test_start = tmax - round(params.test_days * NS_PER_DAY)
    return test_start, test_start - round(params.valid_days * NS_PER_DAY)


def session_cutoffs(
    tmax: int, valid_start: int, test_start: int, params: SessionsParams
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The session split's ``stats["cutoffs"]`` and ``stats["params"]``."""
    cutoffs = {
        "tmax": iso(tmax),
        "valid_start": iso(valid_start),
        "test_start": iso(test_start),
        "rule": "a session belongs to the part its first event falls in",
    }
    used = {k: getattr(params, k) for k in ("min_session_length", "test_days", "valid_days")} | {
        "min_item_support": params.item_support
    }
    return cutoffs, used


def session_filter_empty() -> SplitError:
    """The session split's error when no event survives the support filter."""
    return empty_test(
        "session",
        "no event survives the support filter",
        "lower sessions.min_item_support or sessions.min_session_length",
    )


def session_train_empty(valid_start: int, params: SessionsParams) -> SplitError:
    """The session split's error when every session starts in validation or test."""
    return SplitError(
        f"session split: the train part is empty (every session starts after "
        f"{iso(valid_start)}); lower sessions.test_days={params.test_days} or "
        f"sessions.valid_days={params.valid_days}"
    )


def check_sequences(n_events: int, n_sessions: int, params: SessionsParams) -> None:
    """The session split needs sequences: :class:`SplitNotApplicable` when the sessions
    hold one event or fewer on average (nothing to predict from a prefix), unless
    ``sessions.min_test_sessions`` is 0 (the skip rules off)."""
    if params.min_test_sessions and n_sessions and n_events / n_sessions <= 1.0:
        raise SplitNotApplicable(
            f"session split: the {n_sessions} sessions hold {n_events / n_sessions:.2f} events "
            "on average (no sequences to predict); the user splits suit these data"
        )


def check_session_test(n_test_sessions: int, params: SessionsParams) -> None:
    """:class:`SplitNotApplicable` when fewer than ``sessions.min_test_sessions`` test
    sessions keep 2+ events (too few next-item predictions to judge a model by)."""
    if n_test_sessions < params.min_test_sessions:
        raise SplitNotApplicable(
            f"session split: the test part has {n_test_sessions} session(s) of 2+ events, "
            f"fewer than sessions.min_test_sessions={params.min_test_sessions} (too few "
            "next-item predictions to judge a model; rating data without sessions?); raise "
            "sessions.test_days or lower sessions.min_test_sessions"
        )


def session_test_empty(
    n_test_sessions: int, test_start: int, tmax: int, params: SessionsParams
) -> SplitError:
    """The session split's error when no test session keeps 2+ events on train items."""
    return empty_test(
        "session",
        f"{n_test_sessions} session(s) start at or after {iso(test_start)} = last event "
        f"{iso(tmax)} - test_days={params.test_days}, none with 2+ events on train items",
        "increase sessions.test_days, or lower sessions.valid_days / sessions.min_item_support",
    )


# --------------------------------------------------------------------------- all splits
_SPLITS: dict[str, Callable[[Table, SessionsParams], SplitResult]] = {
    "session": _session_split,
    "global_temporal": global_temporal_split_table,
    "user_temporal": lambda t, p: per_user_split(t, p, "user_temporal"),
    "leave_last_out": lambda t, p: per_user_split(t, p, "leave_last_out"),
    "cold_start": cold_start_split_table,
}
#: Rough relative cost of each split (CPU seconds profiled on a 10M-event log, gap sessions):
#: :func:`iter_splits` starts the costlier ones first. The global temporal and
#: cold-start splits share their cut-off, the per-user splits their user ranks: a pair's
#: second one, started later, reuses what the first computed.
_COST: dict[str, float] = {
    "session": 0.85,
    "cold_start": 0.7,
    "user_temporal": 0.6,
    "global_temporal": 0.5,
    "leave_last_out": 0.25,
}
#: Splits whose :class:`SplitError` means "not applicable to this data" (skipped, not raised).
SKIP_ON_ERROR: frozenset[str] = frozenset({"cold_start"})
assert set(_SPLITS) == set(SPLIT_KINDS)


def iter_splits(
    events: pd.DataFrame, params: SessionsParams
) -> Iterator[tuple[str, SplitResult | SkippedSplit]]:
    """:func:`build_splits` one split at a time, as ``(kind, result)`` pairs.

    The encoding of ``events`` is shared, and the splits, independent of each other,
    are computed side by side on threads (NumPy and Arrow release the GIL; at most
    :func:`~recpipe.sessions._arrays.max_threads`); they are yielded in the order of
    ``params.splits``, and a split's error is raised when its turn comes, as if they
    ran one after the other. A split is held as one ``int8`` part code per row: a
    caller that writes each split and lets it go holds no frame of any (the
    ``sessions`` stage on large logs).
    """
    table = Table(events)
    kinds = list(dict.fromkeys(params.splits))
    tables: dict[str, Table] = {}
    for kind in kinds:  # everything that reads the frame, on this thread
        this = table
        if kind == "cold_start":
            converted = anonymous_as_users(events, params)
            this = table if converted is events else table.with_users(converted)
        this.warm()
        tables[kind] = this
    if not kinds:
        return
    workers = min(len(kinds), max_threads())
    with ThreadPoolExecutor(workers, thread_name_prefix="recpipe-splits") as pool:
        # the longest first (fewer idle threads at the end), yielded in the given order
        started = {
            kind: pool.submit(_one_split, kind, tables[kind], params)
            for kind in sorted(kinds, key=lambda k: -_COST.get(k, 0))
        }
        futures = [started[kind] for kind in kinds]
        try:
            for kind, future in zip(kinds, futures, strict=True):
                yield kind, future.result()
        finally:  # an error, or a caller that stops early: start no further split
            for future in futures:
                future.cancel()


def _one_split(kind: str, table: Table, params: SessionsParams) -> SplitResult | SkippedSplit:
    """Split ``kind`` of ``table``, or why it is skipped; a :class:`SplitError` of a split
    that applies is raised."""
    reason = table_not_applicable(kind, table)
    if not reason:
        try:
            return _SPLITS[kind](table, params)
        except SplitError as exc:
            if kind not in SKIP_ON_ERROR and not isinstance(exc, SplitNotApplicable):
                raise
            reason = str(exc).removeprefix(f"{kind} split: ")
    log.info("%s split skipped: %s", kind, reason)
    return SkippedSplit(reason=reason, kind=kind)


def build_splits(
    events: pd.DataFrame, params: SessionsParams
) -> dict[str, SplitResult | SkippedSplit]:
    """Run every split named in ``params.splits`` on one shared encoding of ``events``.

    Parameters
    ----------
    events : pandas.DataFrame
        Sessionized events, unfiltered or item-filtered only (the session split
        applies the GRU4Rec filter itself; see :func:`session_split`); the user
        splits keep every event they are given.
    params : SessionsParams

    Returns
    -------
    dict
        ``{kind: SplitResult | SkippedSplit}`` in the order of ``params.splits``.
        A split the data cannot support (user splits on anonymous session data;
        the session split on events without session ids; the cold-start split
        on too few events, see :func:`~recpipe.sessions.cold.cold_start_split`) is
        a :class:`SkippedSplit` with the reason.

    Raises
    ------
    SplitError
        A split that applies comes out with an empty test (or train) part; the
        message names the params to change.
    """
    return dict(iter_splits(events, params))


# --------------------------------------------------------------------------- leakage
def check_leakage(
    result: SplitResult, kind: str, test_items_seen_in: str | None = "train"
) -> dict[str, bool]:
    """Re-check a split's invariants from its three parts alone.

    The parts are read as integer codes: a split built by :func:`build_splits` from
    its table's codes and timestamps (no frame is gathered), one wrapping frames by
    encoding them here; the checks are the same either way.

    Parameters
    ----------
    result : SplitResult
    kind : str
        One of :data:`~recpipe.config.SPLIT_KINDS`.
    test_items_seen_in : {"train", "train_valid"}
        The session split's ``sessions.test_items_seen_in``: with ``train_valid`` there
        is no ``test_items_in_train`` check (test may hold items of the validation
        days, which the valid part itself drops when train lacks them).

    Returns
    -------
    dict
        ``{invariant: bool}`` (JSON-able), all ``True`` for a sound split:

        * every kind: ``test_nonempty``;
        * ``session``: ``test_after_train`` / ``valid_after_train`` /
          ``test_after_valid`` (every session start of the later part is after
          every session start of the earlier one), ``sessions_disjoint``,
          ``test_items_in_train``, ``valid_items_in_train``,
          ``heldout_sessions_min_length_2``;
        * ``global_temporal``: the same three ``*_after_*`` on event timestamps
          (strictly greater);
        * ``cold_start``: those three, and, from ``result.tables``,
          ``cold_items_not_in_train`` / ``cold_users_not_in_train`` (no event of a
          cold id in train), ``held_out_items_not_in_valid`` /
          ``held_out_users_not_in_valid`` and ``cold_items_in_test`` /
          ``cold_users_in_test`` (every cold id has a test event); a missing or
          malformed table makes its checks ``False``;
        * ``user_temporal`` / ``leave_last_out``: ``test_after_train_per_user``,
          ``valid_after_train_per_user``, ``test_after_valid_per_user`` (>=,
          per user) and ``test_users_in_train``; ``leave_last_out`` also
          ``one_test_event_per_user`` and ``at_most_one_valid_event_per_user``.
    """
    if kind not in SPLIT_KINDS:
        raise ValueError(f"unknown split kind {kind!r}; known: {list(SPLIT_KINDS)}")
    views = _PartViews(result)
    ts = views.ts()
    checks: dict[str, bool] = {"test_nonempty": len(ts[2]) > 0}
    pairs = (("test_after_train", 0, 2), ("valid_after_train", 0, 1), ("test_after_valid", 1, 2))
    if kind == "session":
        sessions = views.codes("session_id")
        items = views.codes("item_id")
        n_sessions = sessions[0].n_uniques
        starts = []
        for codes, t in zip(sessions, ts, strict=True):
            start = np.full(n_sessions, np.iinfo(np.int64).max, np.int64)
            np.minimum.at(start, codes.codes, t)
            starts.append(start[np.unique(codes.codes)])
        for name, a, b in pairs:
            checks[name] = all_after(starts[b], starts[a], strict=True)
        present = [np.bincount(c.codes, minlength=n_sessions) > 0 for c in sessions]
        checks["sessions_disjoint"] = not bool(
            (present[0] & present[1]).any()
            or (present[0] & present[2]).any()
            or (present[1] & present[2]).any()
        )
        train_items = np.zeros(items[0].n_uniques + 1, bool)  # the last: null items
        train_items[items[0].codes] = True
        train_items[-1] = False
        if test_items_seen_in != "train_valid":  # else valid items were filtered out of
            # the valid part itself: the frames alone cannot re-derive the check
            checks["test_items_in_train"] = bool(train_items[items[2].codes].all())
        checks["valid_items_in_train"] = bool(train_items[items[1].codes].all())
        checks["heldout_sessions_min_length_2"] = all(
            bool((np.bincount(c.codes)[np.unique(c.codes)] >= 2).all()) for c in sessions[1:]
        )
    elif kind in ("global_temporal", "cold_start"):
        for name, a, b in pairs:
            checks[name] = all_after(ts[b], ts[a], strict=True)
        if kind == "cold_start":
            checks.update(_cold_checks(result, views))
    else:
        users = views.codes("user_id")
        n_users = users[0].n_uniques
        lo, hi = [], []
        for codes, t in zip(users, ts, strict=True):
            c = codes.codes
            ok = c >= 0
            first = np.full(n_users, np.iinfo(np.int64).max, np.int64)
            last = np.full(n_users, np.iinfo(np.int64).min, np.int64)
            np.minimum.at(first, c[ok], t[ok])
            np.maximum.at(last, c[ok], t[ok])
            lo.append(first)
            hi.append(last)
        for name, a, b in pairs:
            # per user present in both parts: first of the later >= last of the earlier
            both = (hi[a] > np.iinfo(np.int64).min) & (lo[b] < np.iinfo(np.int64).max)
            checks[f"{name}_per_user"] = bool((lo[b][both] >= hi[a][both]).all())
        test_users = np.unique(users[2].codes[users[2].codes >= 0])
        in_train = np.zeros(n_users, bool)
        in_train[users[0].codes[users[0].codes >= 0]] = True
        checks["test_users_in_train"] = bool(in_train[test_users].all())
        if kind == "leave_last_out":
            for name, codes in (
                ("one_test_event_per_user", users[2]),
                ("at_most_one_valid_event_per_user", users[1]),
            ):
                c = codes.codes[codes.codes >= 0]
                checks[name] = bool((np.bincount(c, minlength=1) <= 1).all())
    return checks


class _PartViews:
    """The train, valid and test parts of a split as integer arrays, for the checks.

    A split given as part codes (:meth:`SplitResult.of_rows`) is read from its
    table's codes and timestamps, row subsets of one dictionary per column; a split
    wrapping frames has its columns encoded here, one dictionary shared by the three
    parts. Either way equal ids have equal codes across the parts, which is all the
    checks compare.
    """

    def __init__(self, result: SplitResult) -> None:
        self.result = result
        self.masks = (
            None
            if result.table is None
            else [result.mask(name) for name in ("train", "valid", "test")]
        )

    def ts(self) -> list[np.ndarray]:
        """Each part's timestamps (int64 ns), in row order."""
        if self.masks is None:
            return [timestamps_ns(p["timestamp"]) for p in self.result.parts().values()]
        assert self.result.table is not None
        ts = self.result.table.ts
        return [ts[m] for m in self.masks]

    def codes(self, column: str) -> list[Codes]:
        """Each part's codes of ``column`` (``user_id``, ``item_id`` or ``session_id``)."""
        if self.masks is None:
            return encode_parts([p[column] for p in self.result.parts().values()])
        assert self.result.table is not None
        whole = self.result.table.codes(column)
        return [whole.subset(m) for m in self.masks]


def _cold_checks(result: SplitResult, views: _PartViews) -> dict[str, bool]:
    """The cold-start invariants of :func:`check_leakage`, from ``result.tables``."""
    out: dict[str, bool] = {}
    for column, name in (("item_id", "items"), ("user_id", "users")):
        keys = (
            f"cold_{name}_not_in_train",
            f"held_out_{name}_not_in_valid",
            f"cold_{name}_in_test",
        )
        table = result.tables.get(f"cold_{name}")
        if table is None or not {column, "held_out"} <= set(table.columns):
            log.warning("cold_start split without a valid cold_%s table: checks fail", name)
            out.update(dict.fromkeys(keys, False))
            continue
        parts = views.codes(column)
        uniques = parts[0].uniques
        ids = to_arrow(table[column])
        # each listed id's code in the parts' dictionary (-1: in no part)
        where = pc.fill_null(pc.index_in(ids, value_set=uniques), -1).to_numpy()
        held = where[table["held_out"].to_numpy(dtype=bool)]
        present = [np.zeros(len(uniques) + 1, bool) for _ in parts]  # the last: null ids
        for mask, codes in zip(present, parts, strict=True):
            mask[codes.codes] = True
            mask[-1] = False
        out[keys[0]] = not bool(present[0][where].any())
        out[keys[1]] = not bool(present[1][held].any())
        out[keys[2]] = bool(present[2][where].all())
    return out


def all_after(later: np.ndarray, earlier: np.ndarray, *, strict: bool) -> bool:
    """Every value of ``later`` after every value of ``earlier`` (vacuous if one is empty)."""
    if not len(later) or not len(earlier):
        return True
    return bool(later.min() > earlier.max()) if strict else bool(later.min() >= earlier.max())
