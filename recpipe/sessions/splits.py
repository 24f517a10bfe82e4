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
reason) for a split the data cannot support. :func:`check_leakage` re-derives
the protocol's invariants from the three frames alone, for the report.

Every part keeps the input's row order and columns, with a fresh ``RangeIndex``.
``stats`` always satisfies ``sum(parts rows) + sum(dropped) == input_rows``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recpipe.config import SPLIT_KINDS, SessionsParams
from recpipe.errors import SplitError
from recpipe.sessions._arrays import (
    NS_PER_DAY,
    Codes,
    encode,
    encode_parts,
    group_time_order,
    iso,
    parallel_map,
    round_half_up,
    take_rows,
    timestamps_ns,
)
from recpipe.sessions.sessionize import support_mask

log = logging.getLogger(__name__)

__all__ = [
    "PART_NAMES",
    "SkippedSplit",
    "SplitResult",
    "build_splits",
    "check_leakage",
    "cold_start_split",
    "global_temporal_split",
    "iter_splits",
    "leave_last_out_split",
    "session_split",
    "user_temporal_split",
]

PART_NAMES: tuple[str, ...] = ("train", "valid", "test")
_TRAIN, _VALID, _TEST, _DROPPED = 0, 1, 2, 3


@dataclass(frozen=True, eq=False)
class SplitResult:
    """The three parts of one split and its JSON-able statistics.

    Attributes
    ----------
    train, valid, test : pandas.DataFrame
        Disjoint row subsets of the input (``valid`` may be empty), input order,
        fresh ``RangeIndex``.
    stats : dict
        ``kind``, ``params`` (the params used), ``input_rows``, ``cutoffs``
        (ISO times, or the per-user rule), ``parts`` (``rows``, ``users``,
        ``items``, ``sessions``, ``time_range`` of each part), ``dropped``
        (rows by reason) and ``dropped_total``, plus protocol extras.
    tables : dict of str to pandas.DataFrame
        Extra per-split tables, written next to the parts as ``<name>.parquet``
        (``cold_start``: ``cold_items`` and ``cold_users``); empty for the others.
    """

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.stats.get("kind", ""))

    def parts(self) -> dict[str, pd.DataFrame]:
        """``{"train": ..., "valid": ..., "test": ...}``."""
        return {"train": self.train, "valid": self.valid, "test": self.test}


@dataclass(frozen=True)
class SkippedSplit:
    """A split that does not apply to the data (e.g. user splits without user ids)."""

    reason: str
    kind: str = ""


# --------------------------------------------------------------------------- shared encoding
class _Table:
    """A frame with lazily computed integer views of its columns.

    :func:`build_splits` makes one and hands it to every split, so each string
    column is hashed once however many splits run.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.n = len(frame)
        self._cache: dict[str, Any] = {}

    def _get(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def ts(self) -> np.ndarray:
        return self._get("ts", lambda: timestamps_ns(self.frame["timestamp"]))

    @property
    def user(self) -> Codes:
        return self._get("user", lambda: encode(self.frame["user_id"]))

    @property
    def item(self) -> Codes:
        return self._get("item", lambda: encode(self.frame["item_id"]))

    @property
    def session(self) -> Codes:
        return self._get("session", lambda: encode(self.frame["session_id"]))

    def prefetch(self, *keys: str) -> None:
        """Encode several id columns at once, on threads (Arrow hashing releases the GIL)."""
        todo = [k for k in keys if k not in self._cache]
        column = {"user": "user_id", "item": "item_id", "session": "session_id"}
        series = [self.frame[column[k]] for k in todo]
        for key, codes in zip(todo, parallel_map(encode, series), strict=True):
            self._cache[key] = codes

    @property
    def has_user(self) -> np.ndarray:
        return self._get("has_user", lambda: self.frame["user_id"].notna().to_numpy())

    @property
    def has_session(self) -> np.ndarray:
        return self._get("has_session", lambda: self.frame["session_id"].notna().to_numpy())

    def user_rank(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row, how many events of its user come after it; and each user's event count.

        "After" is by timestamp, ties in input order. Rows without a user get -1.
        """

        return self._get("user_rank", lambda: user_rank(self.user, self.ts))


def user_rank(user: Codes, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, how many events of its user come after it; and each user's event count.

    "After" is by timestamp (``ts``, int64 ns), ties in row order. Rows without a
    user get -1.
    """
    codes, n_users = user.codes, user.n_uniques
    has = codes >= 0
    rows = None if bool(has.all()) else np.flatnonzero(has)
    keys = codes if rows is None else codes[rows]
    counts = np.bincount(keys, minlength=n_users)
    order = group_time_order(keys, n_users, ts if rows is None else ts[rows])
    ends = np.cumsum(counts).astype(np.int32)  # one past each user's last position
    rank = ends[keys[order]] - 1 - np.arange(len(order), dtype=np.int32)
    after = np.full(len(codes), -1, np.int32)
    after[order if rows is None else rows[order]] = rank
    return after, counts


def _not_applicable(kind: str, table: _Table) -> str | None:
    """Why ``kind`` cannot run on this table, or ``None`` when it can."""
    if table.n == 0:
        return "no events"
    if kind == "session":
        return not_applicable(kind, table.n, int(np.count_nonzero(~table.has_session)), True)
    return not_applicable(kind, table.n, 0, bool(table.has_user.any()))


def not_applicable(kind: str, n: int, missing_sessions: int, any_user: bool) -> str | None:
    """Why ``kind`` cannot run on ``n`` events (with ``missing_sessions`` rows without a
    session id; ``any_user``: some row has a user id), or ``None`` when it can."""
    if n == 0:
        return "no events"
    if kind == "session":
        if missing_sessions == n:
            return "no session ids (the events are not sessionized; run sessionize first)"
        if missing_sessions:
            return f"{missing_sessions} of {n} events have no session id; run sessionize first"
        return None
    if not any_user:
        return f"no user ids (all {n} user_id values are null: session-only data)"
    return None


# --------------------------------------------------------------------------- statistics
def _presence(codes: Codes, part: np.ndarray) -> np.ndarray:
    """``(4, n_uniques)`` bool: which ids occur in train, valid, test and dropped rows."""
    k = max(codes.n_uniques, 1)
    c, p = codes.codes, part
    if codes.has_null:
        ok = c >= 0
        c, p = c[ok], p[ok]
    dtype = np.int32 if 4 * k < 2**31 else np.int64
    index = p.astype(dtype) * dtype(k)
    index += c
    return (np.bincount(index, minlength=4 * k) > 0).reshape(4, k)


def _parts_stats(
    table: _Table, part: np.ndarray, frames: list[pd.DataFrame]
) -> tuple[dict[str, Any], dict[str, int]]:
    """Per-part rows, distinct users/items/sessions and time range; cold-start counts.

    One counting pass per id column for all parts at once; time ranges from the
    parts' own (already materialised) timestamps.
    """
    users = _presence(table.user, part)
    items = _presence(table.item, part)
    has_sessions = bool(table.has_session.any())
    sessions = _presence(table.session, part) if has_sessions else None
    rows = np.bincount(part, minlength=4)
    ranges = []
    for frame in frames:
        ts = timestamps_ns(frame["timestamp"])
        ranges.append((ts.min(), ts.max()) if len(ts) else (None, None))
    item_codes = table.item.codes

    def new_item_rows(code: int, new_items: np.ndarray) -> int:
        in_part = part == code
        return int(np.count_nonzero(new_items[item_codes[in_part & (item_codes >= 0)]]))

    user_counts = _user_presence_counts(users)
    return summarise_parts(rows, user_counts, items, sessions, ranges, new_item_rows)


def _user_presence_counts(users: np.ndarray) -> dict[str, int]:
    """The user counts :func:`summarise_parts` needs, from a ``(4, n_users)`` presence."""
    return {
        "train": int(users[_TRAIN].sum()),
        "valid": int(users[_VALID].sum()),
        "test": int(users[_TEST].sum()),
        "test_with_train": int((users[_TEST] & users[_TRAIN]).sum()),
        "valid_not_in_train": int((users[_VALID] & ~users[_TRAIN]).sum()),
        "test_not_in_train": int((users[_TEST] & ~users[_TRAIN]).sum()),
    }


def summarise_parts(
    rows: np.ndarray,
    users: dict[str, int],
    items: np.ndarray,
    sessions: np.ndarray | None,
    ranges: list[tuple[Any, Any]],
    new_item_rows: Callable[[int, np.ndarray], int],
) -> tuple[dict[str, Any], dict[str, int]]:
    """``stats["parts"]`` and the cold-start counts from per-part summaries.

    ``rows``: rows per part code; ``users``: counts (see :func:`_user_presence_counts`);
    ``items`` / ``sessions``: ``(4, n)`` presence (sessions ``None`` when no row has
    one); ``ranges``: ``(min, max)`` ns (or ``None``) of train, valid, test;
    ``new_item_rows(code, mask)``: rows of part ``code`` whose item is in ``mask``.
    """
    stats: dict[str, Any] = {}
    for name, code, (lo, hi) in zip(PART_NAMES, (_TRAIN, _VALID, _TEST), ranges, strict=True):
        stats[name] = {
            "rows": int(rows[code]),
            "users": users[name],
            "items": int(items[code].sum()),
            "sessions": int(sessions[code].sum()) if sessions is not None else 0,
            "time_range": {"min": iso(lo), "max": iso(hi)},
        }
    cold: dict[str, int] = {
        "test_users": users["test"],
        "test_users_with_train": users["test_with_train"],
    }
    for name, code in (("valid", _VALID), ("test", _TEST)):
        new_items = items[code] & ~items[_TRAIN]
        cold[f"{name}_items_not_in_train"] = int(new_items.sum())
        cold[f"{name}_users_not_in_train"] = users[f"{name}_not_in_train"]
        cold[f"{name}_rows_with_item_not_in_train"] = new_item_rows(code, new_items)
    return stats, cold


def _finish(
    kind: str,
    table: _Table,
    part: np.ndarray,
    params: dict[str, Any],
    cutoffs: dict[str, Any],
    dropped: dict[str, int],
    extra: dict[str, Any] | None = None,
    t0: float | None = None,
    tables: dict[str, pd.DataFrame] | None = None,
) -> SplitResult:
    """Materialise the parts of ``part`` (per-row part code) and assemble the stats."""
    frames = [take_rows(table.frame, part == code) for code in (_TRAIN, _VALID, _TEST)]
    parts, cold = _parts_stats(table, part, frames)
    stats = assemble_stats(kind, table.n, parts, cold, params, cutoffs, dropped, extra)
    log.info(
        "%s split: train %d, valid %d, test %d rows; dropped %s%s",
        kind,
        *(len(f) for f in frames),
        stats["dropped"],
        "" if t0 is None else f" in {time.perf_counter() - t0:.2f} s",
    )
    return SplitResult(frames[0], frames[1], frames[2], stats, dict(tables or {}))


def assemble_stats(
    kind: str,
    n: int,
    parts: dict[str, Any],
    cold: dict[str, int],
    params: dict[str, Any],
    cutoffs: dict[str, Any],
    dropped: dict[str, int],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A split's ``stats`` dict (see :class:`SplitResult`) from its summaries.

    Raises ``AssertionError`` when the parts and the dropped rows do not add up to ``n``.
    """
    cold = dict(cold)
    stats: dict[str, Any] = {
        "kind": kind,
        "params": params,
        "input_rows": n,
        "cutoffs": cutoffs,
        "parts": parts,
        "dropped": {k: int(v) for k, v in dropped.items()},
        "dropped_total": int(sum(dropped.values())),
    }
    if extra:
        stats.update(extra)
    if kind != "session":  # held-out users/items absent from train are kept: report them
        stats["test_users"] = cold.pop("test_users")
        stats["test_users_with_train"] = cold.pop("test_users_with_train")
        stats["cold_start"] = cold
    accounted = sum(p["rows"] for p in parts.values()) + stats["dropped_total"]
    if accounted != n:  # pragma: no cover - an internal invariant
        raise AssertionError(f"{kind} split lost rows: {accounted} accounted of {n}")
    return stats


def _empty_test(kind: str, detail: str, change: str) -> SplitError:
    return SplitError(f"{kind} split: the test part is empty ({detail}); {change}")


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
    3. In valid and test, events whose item has no train event are dropped,
       then sessions left with fewer than 2 events (a next-item prediction
       needs a prefix; fixed by the protocol, whatever ``min_session_length``).
       The validation part is filtered against train only, not train + valid.
    """
    return _session_split(_Table(events), params)


def _session_split(table: _Table, params: SessionsParams) -> SplitResult:
    t0 = time.perf_counter()
    kind = "session"
    reason = _not_applicable(kind, table)
    if reason:
        raise SplitError(f"{kind} split: {reason}")
    table.prefetch("user", "item", "session")
    keep, filter_stats = support_mask(
        table.item, table.session, params.min_item_support, params.min_session_length
    )
    if not keep.any():
        raise session_filter_empty()
    ts, session = table.ts, table.session.codes
    tmax = int(ts[keep].max())
    test_start, valid_start = session_bounds(tmax, params)
    start = np.full(table.session.n_uniques, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(start, session[keep], ts[keep])
    session_part = np.where(
        start >= test_start, _TEST, np.where(start >= valid_start, _VALID, _TRAIN)
    ).astype(np.int8)
    part = np.where(keep, session_part[session], _DROPPED).astype(np.int8)

    train = part == _TRAIN
    if not train.any():
        raise session_train_empty(valid_start, params)
    item = table.item.codes
    seen = np.zeros(table.item.n_uniques, bool)
    seen[item[train]] = True
    dropped = {
        "item_support": filter_stats["dropped"]["item_support"],
        "session_length": filter_stats["dropped"]["session_length"],
    }
    held_out = {}
    candidates = np.flatnonzero(part > _TRAIN)  # valid, test (and dropped) rows only
    candidates = candidates[part[candidates] != _DROPPED]
    for name, code in (("valid", _VALID), ("test", _TEST)):
        rows = candidates[part[candidates] == code]
        unseen = ~seen[item[rows]]
        part[rows[unseen]] = _DROPPED
        rows = rows[~unseen]
        lengths = np.bincount(session[rows], minlength=table.session.n_uniques)
        short = lengths[session[rows]] < 2
        part[rows[short]] = _DROPPED
        dropped[f"{name}_unseen_item"] = int(np.count_nonzero(unseen))
        dropped[f"{name}_short_session"] = int(np.count_nonzero(short))
        held_out[name] = int(np.count_nonzero(lengths >= 2))
    if held_out["test"] == 0:
        n_test_sessions = int(np.count_nonzero(session_part[np.unique(session[keep])] == _TEST))
        raise session_test_empty(n_test_sessions, test_start, tmax, params)
    cutoffs, used = session_cutoffs(tmax, valid_start, test_start, params)
    return _finish(kind, table, part, used, cutoffs, dropped, {"filter": filter_stats}, t0)


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
    used = {
        k: getattr(params, k)
        for k in ("min_item_support", "min_session_length", "test_days", "valid_days")
    }
    return cutoffs, used


def session_filter_empty() -> SplitError:
    """The session split's error when no event survives the support filter."""
    return _empty_test(
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


def session_test_empty(
    n_test_sessions: int, test_start: int, tmax: int, params: SessionsParams
) -> SplitError:
    """The session split's error when no test session keeps 2+ events on train items."""
    return _empty_test(
        "session",
        f"{n_test_sessions} session(s) start at or after {iso(test_start)} = last event "
        f"{iso(tmax)} - test_days={params.test_days}, none with 2+ events on train items",
        "increase sessions.test_days, or lower sessions.valid_days / sessions.min_item_support",
    )


# --------------------------------------------------------------------------- global temporal
def global_temporal_split(events: pd.DataFrame, params: SessionsParams) -> SplitResult:
    """One cut-off time for all users: the last events in time are test.

    Parameters
    ----------
    events : pandas.DataFrame
        Canonical events with user ids (events without a user are dropped, counted
        as ``null_user``).
    params : SessionsParams
        ``global_test_fraction``, ``global_valid_fraction``.

    Returns
    -------
    SplitResult
        ``stats["cutoffs"]``: ``test_after`` (test = events strictly after it)
        and ``valid_after`` (valid = events after it and at or before
        ``test_after``); ``stats["fractions"]``: the shares achieved;
        ``stats["test_users"]`` and ``stats["test_users_with_train"]`` (the
        users a user model can be evaluated on); ``stats["cold_start"]``: users
        and items of valid/test with no train event (kept; evaluation slices
        them). The per-user splits report the same user and cold-start counts.

    Raises
    ------
    SplitError
        No user ids, or the test or train part is empty.

    Notes
    -----
    With ``m`` events sorted by time, ``test_after`` is the timestamp of event
    number ``m - round(m * global_test_fraction)`` (1-based, round half up), and
    ``valid_after`` that of ``m - round(m * (global_test_fraction +
    global_valid_fraction))``. Events *at* a cut-off go to the earlier part,
    so every test timestamp is strictly greater than every valid and train
    timestamp and every valid timestamp strictly greater than every train one;
    with ties at a cut-off the test share comes out a little below the target
    (the achieved shares are in ``stats["fractions"]``). Cold-start users and
    items are kept in test (Campos et al., UMUAI 2014).
    """
    return _global_temporal_split(_Table(events), params)


def _global_cut(table: _Table, params: SessionsParams, kind: str) -> tuple[np.ndarray, int, int]:
    """Per-row part codes of the global cut-off (null users dropped) and the two cut-offs.

    Returns
    -------
    part : numpy.ndarray
        (n,) int8 part code of each row.
    test_after, valid_after : int
        The cut-off timestamps (ns): test is strictly after ``test_after``, valid
        after ``valid_after`` and at or before ``test_after``.

    Raises
    ------
    SplitError
        The test or train part comes out empty; the message names the param to change.
    """
    has_user = table.has_user
    ts_u = table.ts[has_user]

    def kth(ks: list[int]) -> list[int]:
        values = np.partition(ts_u, sorted(set(ks)))
        return [int(values[k]) for k in ks]

    lo, hi = (int(ts_u.min()), int(ts_u.max())) if len(ts_u) else (0, 0)
    test_after, valid_after = global_cutoffs(len(ts_u), kth, lo, hi, params, kind)
    return cut_parts(table.ts, has_user, test_after, valid_after), test_after, valid_after


def cut_parts(
    ts: np.ndarray, has_user: np.ndarray, test_after: int, valid_after: int
) -> np.ndarray:
    """Per-row part codes of the global cut-off: rows without a user are dropped."""
    part = np.full(len(ts), _TRAIN, np.int8)
    part[ts > valid_after] = _VALID
    part[ts > test_after] = _TEST
    part[~has_user] = _DROPPED
    return part


def global_cutoffs(
    m: int,
    kth: Callable[[list[int]], list[int]],
    ts_min: int,
    ts_max: int,
    params: SessionsParams,
    kind: str,
) -> tuple[int, int]:
    """``(test_after, valid_after)`` of the global cut-off over ``m`` events with a user.

    ``kth(ks)``: the 0-based order statistics ``ks`` of those events' timestamps;
    ``ts_min`` / ``ts_max``: their least and greatest timestamp. Raises
    :class:`SplitError` when the test or train part would be empty.
    """
    n_test = int(round_half_up(m * params.global_test_fraction))
    n_held = int(round_half_up(m * (params.global_test_fraction + params.global_valid_fraction)))
    if n_test == 0:
        raise _empty_test(
            kind,
            f"round({m} events x global_test_fraction={params.global_test_fraction}) = 0",
            "increase sessions.global_test_fraction",
        )
    if n_held >= m:
        raise SplitError(
            f"{kind} split: the train part is empty (global_test_fraction + "
            f"global_valid_fraction = {params.global_test_fraction + params.global_valid_fraction} "
            f"of {m} events); lower sessions.global_valid_fraction or global_test_fraction"
        )
    k_test, k_valid = m - n_test - 1, m - n_held - 1  # 0-based order statistics
    test_after, valid_after = kth([k_test, k_valid])
    if not ts_max > test_after:  # no test row
        raise _empty_test(
            kind,
            f"every event is at or before the cut-off {iso(test_after)}: the last "
            f"{n_test} events share the last timestamp",
            "increase sessions.global_test_fraction",
        )
    if not ts_min <= valid_after:  # no train row
        raise SplitError(
            f"{kind} split: the train part is empty (all events share the first timestamp "
            f"{iso(valid_after)}); lower sessions.global_valid_fraction"
        )
    return test_after, valid_after


def _global_temporal_split(table: _Table, params: SessionsParams) -> SplitResult:
    t0 = time.perf_counter()
    kind = "global_temporal"
    reason = _not_applicable(kind, table)
    if reason:
        raise SplitError(f"{kind} split: {reason}")
    table.prefetch("user", "item", "session")
    part, test_after, valid_after = _global_cut(table, params, kind)
    m = int(np.count_nonzero(table.has_user))
    counts = np.bincount(part, minlength=4)
    cutoffs, used = cut_cutoffs(kind, test_after, valid_after, params)
    extra = {"fractions": cut_fractions(counts, m)}
    dropped = {"null_user": int(table.n - m)}
    return _finish(kind, table, part, used, cutoffs, dropped, extra, t0)


def cut_fractions(counts: np.ndarray, m: int) -> dict[str, float]:
    """``stats["fractions"]`` of the global temporal split (``counts``: rows per part code)."""
    return {
        name: round(float(counts[code]) / m, 6)
        for name, code in (("train", _TRAIN), ("valid", _VALID), ("test", _TEST))
    }


def cut_cutoffs(
    kind: str, test_after: int, valid_after: int, params: SessionsParams
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``stats["cutoffs"]`` and ``stats["params"]`` of the global temporal / cold-start split."""
    rule = "train <= valid_after < valid <= test_after < test"
    used = {
        "global_test_fraction": params.global_test_fraction,
        "global_valid_fraction": params.global_valid_fraction,
    }
    if kind == "cold_start":
        rule += "; train and valid lose every event of a held-out item or user"
        used |= {
            "cold_item_fraction": params.cold_item_fraction,
            "cold_user_fraction": params.cold_user_fraction,
            "cold_seed": params.cold_seed,
        }
    cutoffs = {"valid_after": iso(valid_after), "test_after": iso(test_after), "rule": rule}
    return cutoffs, used


# --------------------------------------------------------------------------- cold start
def cold_start_split(events: pd.DataFrame, params: SessionsParams) -> SplitResult:
    """A global cut-off that also holds out whole items and whole users (cold start).

    Parameters
    ----------
    events : pandas.DataFrame
        Canonical events with user ids (events without a user are dropped, counted
        as ``null_user``).
    params : SessionsParams
        ``global_test_fraction``, ``global_valid_fraction`` (the cut-off, as in
        :func:`global_temporal_split`), ``cold_item_fraction``,
        ``cold_user_fraction`` and ``cold_seed``.

    Returns
    -------
    SplitResult
        ``tables["cold_items"]`` / ``tables["cold_users"]``: one row per cold
        item / user (columns ``item_id`` / ``user_id`` (string), ``held_out``
        (bool: drawn by the seed; else the id has test events but no train
        event anyway: first seen after the train part, or only with held-out ids) and
        ``test_rows`` (int64: its test events)), sorted by id;
        ``stats["cold"]``: for ``items`` and ``users``, ``candidates`` (ids with
        test events), ``held_out``, ``new``, ``cold`` (held out + new) and
        ``test_rows`` (test events of cold ids), and ``test_rows_cold_item_or_user``;
        ``stats["dropped"]``: ``null_user``, ``cold_item`` (train / valid events of
        held-out items) and ``cold_user`` (those of held-out users, on warm items).

    Raises
    ------
    SplitError
        No user ids; the test or train part is empty; or the fractions hold out no
        item and no user (too few events after the cut-off). :func:`build_splits`
        reports each of these as a :class:`SkippedSplit` with the message.

    Notes
    -----
    1. The global cut-off of :func:`global_temporal_split`: events strictly after
       ``test_after`` are test, those after ``valid_after`` valid, the rest train.
    2. Candidates: the items, and the users, with at least one test event. Sorted
       by id, ``round(n * cold_item_fraction)`` items and ``round(n *
       cold_user_fraction)`` users (halves up) are drawn without replacement by
       ``numpy.random.default_rng([cold_seed, 0])`` (items) and ``[cold_seed, 1]``
       (users): the draw depends on the ids and the seed only, not the row order.
    3. Every train and valid event of a held-out item or user is dropped; test
       keeps every event after the cut-off, of warm and cold items and users
       alike. No held-out item or user appears in train or valid; items and users
       first seen after the train part are cold too (``held_out`` false).
    4. With ``cold_anonymous="session"`` (the default) an event without a user but
       with a session gets the user id ``session:<session_id>`` first: on click logs
       where most visitors are anonymous (DIGINETICA), each anonymous session is a
       user, and a held-out or new one is a cold user.
    """
    return _cold_start_split(_Table(_anonymous_as_users(events, params)), params)


def _anonymous_as_users(events: pd.DataFrame, params: SessionsParams) -> pd.DataFrame:
    """``events`` with anonymous sessions' user ids set to ``session:<session_id>`` when
    ``params.cold_anonymous == "session"`` (a copy; ``events`` itself when unchanged)."""
    if params.cold_anonymous != "session" or "session_id" not in events:
        return events
    anonymous = (events["user_id"].isna() & events["session_id"].notna()).to_numpy()
    if not anonymous.any():
        return events
    events = events.copy()
    users = events["user_id"].astype("string")
    users[anonymous] = "session:" + events.loc[anonymous, "session_id"].astype("string")
    events["user_id"] = users
    return events


def _draw(
    codes: Codes, candidates: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """``round(len(candidates) * fraction)`` of ``candidates`` (codes), drawn in id order."""
    return np.sort(candidates[draw_ids(codes.uniques.take(pa.array(candidates)), fraction, rng)])


def draw_ids(ids: pa.Array, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Positions in ``ids`` (distinct) of ``round(len(ids) * fraction)`` ids drawn in id order."""
    n = int(round_half_up(len(ids) * fraction))
    if n == 0:
        return np.zeros(0, np.int64)
    order = pc.sort_indices(ids).to_numpy()
    return order[rng.permutation(len(order))[:n]]


def _cold_table(
    column: str, codes: Codes, part: np.ndarray, held: np.ndarray
) -> tuple[pd.DataFrame, dict[str, int], np.ndarray]:
    """The cold ids of one id column: held out, or with test but no train events.

    Returns the table (``column``, ``held_out``, ``test_rows``; sorted by id), the
    counts of ``stats["cold"]`` and a ``(max(n_uniques, 1),)`` bool mask of the cold codes.
    """
    k = max(codes.n_uniques, 1)
    c = codes.codes
    ok = c >= 0
    test_rows = np.bincount(c[ok & (part == _TEST)], minlength=k)
    in_train = np.bincount(c[ok & (part == _TRAIN)], minlength=k) > 0
    return cold_frame(column, codes.uniques, test_rows, in_train, held)


def cold_frame(
    column: str, uniques: pa.Array, test_rows: np.ndarray, in_train: np.ndarray, held: np.ndarray
) -> tuple[pd.DataFrame, dict[str, int], np.ndarray]:
    """:func:`_cold_table` from per-id summaries: test rows and train presence per code
    (arrays of ``max(len(uniques), 1)``), and the held-out codes."""
    k = max(len(uniques), 1)
    is_held = np.zeros(k, bool)
    is_held[held] = True
    is_cold = is_held | ((test_rows > 0) & ~in_train)
    cold = np.flatnonzero(is_cold)
    ids = pd.Series(uniques.take(pa.array(cold)).to_pylist(), dtype="string")
    frame = pd.DataFrame(
        {column: ids, "held_out": is_held[cold], "test_rows": test_rows[cold].astype(np.int64)}
    )
    frame = frame.sort_values(column, kind="stable", ignore_index=True)
    counts = {
        "candidates": int(np.count_nonzero(test_rows)),
        "held_out": len(held),
        "new": int(len(cold) - len(held)),
        "cold": len(cold),
        "test_rows": int(test_rows[cold].sum()),
    }
    return frame, counts, is_cold


def nothing_held(test_after: int, items: int, users: int, params: SessionsParams) -> SplitError:
    """The cold-start error for a draw that holds out nothing (``items``/``users``: candidates)."""
    return SplitError(
        f"cold_start split: too few events after the cut-off {iso(test_after)} to hold out "
        f"anything: round({items} items x cold_item_fraction="
        f"{params.cold_item_fraction}) = 0 and round({users} users x "
        f"cold_user_fraction={params.cold_user_fraction}) = 0; increase "
        "sessions.cold_item_fraction or sessions.cold_user_fraction"
    )


def cold_train_empty(params: SessionsParams) -> SplitError:
    """The cold-start error for a train part emptied by the held-out ids."""
    return SplitError(
        "cold_start split: the train part is empty once the held-out items and users are "
        f"removed; lower sessions.cold_item_fraction={params.cold_item_fraction} or "
        f"sessions.cold_user_fraction={params.cold_user_fraction}"
    )


def _mask_rows(codes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n,) bool: the row's code is marked in ``mask`` (null codes never are)."""
    return (codes >= 0) & mask[np.maximum(codes, 0)]


def _cold_start_split(table: _Table, params: SessionsParams) -> SplitResult:
    t0 = time.perf_counter()
    kind = "cold_start"
    reason = _not_applicable(kind, table)
    if reason:
        raise SplitError(f"{kind} split: {reason}")
    table.prefetch("user", "item", "session")
    part, test_after, valid_after = _global_cut(table, params, kind)
    item, user = table.item.codes, table.user.codes
    test = part == _TEST
    cand_items = np.unique(item[test & (item >= 0)]).astype(np.int64)
    cand_users = np.unique(user[test]).astype(np.int64)  # test rows all have a user
    held_items = _draw(
        table.item,
        cand_items,
        params.cold_item_fraction,
        np.random.default_rng([params.cold_seed, 0]),
    )
    held_users = _draw(
        table.user,
        cand_users,
        params.cold_user_fraction,
        np.random.default_rng([params.cold_seed, 1]),
    )
    if not len(held_items) and not len(held_users):
        raise nothing_held(test_after, len(cand_items), len(cand_users), params)
    item_held = np.zeros(max(table.item.n_uniques, 1), bool)
    item_held[held_items] = True
    user_held = np.zeros(max(table.user.n_uniques, 1), bool)
    user_held[held_users] = True
    earlier = (part == _TRAIN) | (part == _VALID)
    cold_item_rows = earlier & _mask_rows(item, item_held)
    cold_user_rows = earlier & ~cold_item_rows & _mask_rows(user, user_held)
    part[cold_item_rows | cold_user_rows] = _DROPPED
    if not (part == _TRAIN).any():
        raise cold_train_empty(params)
    items_frame, item_counts, cold_items = _cold_table("item_id", table.item, part, held_items)
    users_frame, user_counts, cold_users = _cold_table("user_id", table.user, part, held_users)
    either = (part == _TEST) & (_mask_rows(item, cold_items) | _mask_rows(user, cold_users))
    m = int(np.count_nonzero(table.has_user))
    cutoffs, used = cut_cutoffs(kind, test_after, valid_after, params)
    extra = {
        "cold": {
            "items": item_counts,
            "users": user_counts,
            "test_rows_cold_item_or_user": int(np.count_nonzero(either)),
        }
    }
    dropped = {
        "null_user": int(table.n - m),
        "cold_item": int(np.count_nonzero(cold_item_rows)),
        "cold_user": int(np.count_nonzero(cold_user_rows)),
    }
    tables = {"cold_items": items_frame, "cold_users": users_frame}
    return _finish(kind, table, part, used, cutoffs, dropped, extra, t0, tables)


# --------------------------------------------------------------------------- per-user splits
def user_temporal_split(events: pd.DataFrame, params: SessionsParams) -> SplitResult:
    """Per user, the last share of the user's events (in time) is test.

    Parameters
    ----------
    events : pandas.DataFrame
        Canonical events with user ids (events without a user are dropped, counted
        as ``null_user``).
    params : SessionsParams
        ``user_test_fraction``, ``user_valid_fraction``.

    Returns
    -------
    SplitResult
        ``stats["users_by_events"]`` counts users with 1, 2 and 3+ events;
        ``stats["cold_start"]`` counts valid/test items with no train event.

    Raises
    ------
    SplitError
        No user ids, or no user has two events (empty test part).

    Notes
    -----
    A user with ``c >= 2`` events, ordered by time (ties in input order), has
    ``n_test = min(max(round(c * user_test_fraction), 1), c - 1)`` test events
    (the last ones) and ``n_valid = min(round(c * user_valid_fraction), c - 1 -
    n_test)`` validation events just before them, rounding halves up; so each
    such user has at least one train and one test event, and every test
    timestamp is >= every train timestamp of the same user. A user with one
    event stays in train. This is the per-user "last N%" protocol of Campos et
    al., UMUAI 2014; unlike a global cut-off it evaluates every user.
    """
    return _per_user_split(_Table(events), params, "user_temporal")


def leave_last_out_split(events: pd.DataFrame, params: SessionsParams) -> SplitResult:
    """Per user, the last event is test and the one before it validation.

    Parameters
    ----------
    events : pandas.DataFrame
        Canonical events with user ids (events without a user are dropped, counted
        as ``null_user``).
    params : SessionsParams
        Unused (the protocol has no knobs); kept for a uniform signature.

    Returns
    -------
    SplitResult

    Raises
    ------
    SplitError
        No user ids, or no user has two events.

    Notes
    -----
    Users with 3+ events: last -> test, second last -> valid, the rest train;
    with 2 events: last -> test, first -> train; with 1 event: train. "Last"
    is by timestamp, ties in input order. The leave-one-out protocol of He et
    al. (WWW 2017) and Kang & McAuley (ICDM 2018), without sampled negatives
    (evaluation ranks all items).
    """
    return _per_user_split(_Table(events), params, "leave_last_out")


def _per_user_split(table: _Table, params: SessionsParams, kind: str) -> SplitResult:
    t0 = time.perf_counter()
    reason = _not_applicable(kind, table)
    if reason:
        raise SplitError(f"{kind} split: {reason}")
    table.prefetch("user", "item", "session")
    part, count, used, rule = per_user_parts(table.user, table.ts, params, kind)
    if not np.any(count >= 2):
        raise per_user_no_test(kind)
    extra = {"users_by_events": users_by_events(count)}
    dropped = {"null_user": int(np.count_nonzero(part == _DROPPED))}
    return _finish(kind, table, part, used, {"rule": rule}, dropped, extra, t0)


def per_user_no_test(kind: str) -> SplitError:
    """The per-user splits' error when no user has two events."""
    return _empty_test(
        kind,
        "no user has 2 or more events",
        "use data with repeat users, or the session split (sessions.splits)",
    )


def users_by_events(count: np.ndarray) -> dict[str, int]:
    """``stats["users_by_events"]`` of the per-user splits from per-user event counts."""
    return {
        "1": int(np.count_nonzero(count == 1)),
        "2": int(np.count_nonzero(count == 2)),
        "3+": int(np.count_nonzero(count >= 3)),
    }


def per_user_parts(
    user: Codes, ts: np.ndarray, params: SessionsParams, kind: str
) -> tuple[np.ndarray, np.ndarray, dict[str, Any], str]:
    """Per-row part codes of a per-user split, events per user, the params used and the rule.

    Rows without a user are dropped. Per user only: a table holding whole users
    (e.g. one user-hash partition) gives the rows of the whole table's result.
    """
    after, count = user_rank(user, ts)  # per row; per user
    if kind == "user_temporal":
        n_test = np.maximum(round_half_up(count * params.user_test_fraction), 1)
        n_test = np.minimum(n_test, count - 1)
        n_valid = np.minimum(round_half_up(count * params.user_valid_fraction), count - 1 - n_test)
        n_valid = np.maximum(n_valid, 0)
        used: dict[str, Any] = {
            "user_test_fraction": params.user_test_fraction,
            "user_valid_fraction": params.user_valid_fraction,
        }
        rule = (
            "per user with c >= 2 events: last min(max(round(c * user_test_fraction), 1), c - 1) "
            "test, the round(c * user_valid_fraction) before valid (train keeps >= 1); "
            "round half up; 1 event: train"
        )
    else:
        n_test = (count >= 2).astype(np.int64)
        n_valid = (count >= 3).astype(np.int64)
        used = {}
        rule = "per user: last event test (2+ events), the one before valid (3+ events)"
    # per user: test if after < n_test, valid if after < n_test + n_valid
    codes = user.codes
    has = after >= 0
    part = np.full(len(codes), _DROPPED, np.int8)
    row_user = codes[has]
    rank = after[has]
    part[has] = np.where(
        rank < n_test.astype(np.int32)[row_user],
        _TEST,
        np.where(rank < (n_test + n_valid).astype(np.int32)[row_user], _VALID, _TRAIN),
    )
    return part, count, used, rule


# --------------------------------------------------------------------------- all splits
_SPLITS: dict[str, Callable[[_Table, SessionsParams], SplitResult]] = {
    "session": _session_split,
    "global_temporal": _global_temporal_split,
    "user_temporal": lambda t, p: _per_user_split(t, p, "user_temporal"),
    "leave_last_out": lambda t, p: _per_user_split(t, p, "leave_last_out"),
    "cold_start": _cold_start_split,
}
#: Splits whose :class:`SplitError` means "not applicable to this data" (skipped, not raised).
_SKIP_ON_ERROR: frozenset[str] = frozenset({"cold_start"})
assert set(_SPLITS) == set(SPLIT_KINDS)


def iter_splits(
    events: pd.DataFrame, params: SessionsParams
) -> Iterator[tuple[str, SplitResult | SkippedSplit]]:
    """:func:`build_splits` one split at a time, as ``(kind, result)`` pairs.

    The encoding of ``events`` is still shared; a caller that writes each split
    and lets it go holds one split in memory instead of all of them (the
    ``sessions`` stage on large logs).
    """
    table = _Table(events)
    if len(events):
        table.prefetch("user", "item", "session")
    for kind in dict.fromkeys(params.splits):
        this = table
        if kind == "cold_start":
            converted = _anonymous_as_users(events, params)
            this = table if converted is events else _Table(converted)
        reason = _not_applicable(kind, this)
        if not reason:
            try:
                result = _SPLITS[kind](this, params)
            except SplitError as exc:
                if kind not in _SKIP_ON_ERROR:
                    raise
                reason = str(exc).removeprefix(f"{kind} split: ")
            else:
                yield kind, result
                continue
        log.info("%s split skipped: %s", kind, reason)
        yield kind, SkippedSplit(reason=reason, kind=kind)


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
        on too few events, see :func:`cold_start_split`) is a
        :class:`SkippedSplit` with the reason.

    Raises
    ------
    SplitError
        A split that applies comes out with an empty test (or train) part; the
        message names the params to change.
    """
    return dict(iter_splits(events, params))


# --------------------------------------------------------------------------- leakage
def check_leakage(result: SplitResult, kind: str) -> dict[str, bool]:
    """Re-check a split's invariants from its three frames alone.

    Parameters
    ----------
    result : SplitResult
    kind : str
        One of :data:`~recpipe.config.SPLIT_KINDS`.

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
    parts = [result.train, result.valid, result.test]
    ts = [timestamps_ns(p["timestamp"]) for p in parts]
    checks: dict[str, bool] = {"test_nonempty": len(result.test) > 0}
    pairs = (("test_after_train", 0, 2), ("valid_after_train", 0, 1), ("test_after_valid", 1, 2))
    if kind == "session":
        sessions = encode_parts([p["session_id"] for p in parts])
        items = encode_parts([p["item_id"] for p in parts])
        n_sessions = sessions[0].n_uniques
        starts = []
        for codes, t in zip(sessions, ts, strict=True):
            start = np.full(n_sessions, np.iinfo(np.int64).max, np.int64)
            np.minimum.at(start, codes.codes, t)
            starts.append(start[np.unique(codes.codes)])
        for name, a, b in pairs:
            checks[name] = _all_after(starts[b], starts[a], strict=True)
        present = [np.bincount(c.codes, minlength=n_sessions) > 0 for c in sessions]
        checks["sessions_disjoint"] = not bool(
            (present[0] & present[1]).any()
            or (present[0] & present[2]).any()
            or (present[1] & present[2]).any()
        )
        train_items = np.zeros(items[0].n_uniques, bool)
        train_items[items[0].codes] = True
        checks["test_items_in_train"] = bool(train_items[items[2].codes].all())
        checks["valid_items_in_train"] = bool(train_items[items[1].codes].all())
        checks["heldout_sessions_min_length_2"] = all(
            bool((np.bincount(c.codes)[np.unique(c.codes)] >= 2).all()) for c in sessions[1:]
        )
    elif kind in ("global_temporal", "cold_start"):
        for name, a, b in pairs:
            checks[name] = _all_after(ts[b], ts[a], strict=True)
        if kind == "cold_start":
            checks.update(_cold_checks(result))
    else:
        users = encode_parts([p["user_id"] for p in parts])
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


def _cold_checks(result: SplitResult) -> dict[str, bool]:
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
        ids = table[column]
        held = ids[table["held_out"].to_numpy(dtype=bool)]
        out[keys[0]] = not bool(result.train[column].isin(ids).any())
        out[keys[1]] = not bool(result.valid[column].isin(held).any())
        out[keys[2]] = bool(ids.isin(result.test[column]).all())
    return out


def _all_after(later: np.ndarray, earlier: np.ndarray, *, strict: bool) -> bool:
    """Every value of ``later`` after every value of ``earlier`` (vacuous if one is empty)."""
    if not len(later) or not len(earlier):
        return True
    return bool(later.min() > earlier.max()) if strict else bool(later.min() >= earlier.max())
