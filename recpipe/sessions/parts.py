"""Shared pieces of the train / validation / test splits.

The part codes, :class:`SplitResult`, the lazily encoded :class:`Table` every split
runs on, and the statistics each split reports. The protocols themselves are in
:mod:`recpipe.sessions.splits` (session split, the split table and the leakage
checks), :mod:`recpipe.sessions.temporal` (global and per-user temporal splits) and
:mod:`recpipe.sessions.cold` (cold start).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recpipe.errors import SplitError
from recpipe.sessions._arrays import (
    Codes,
    encode,
    group_time_order,
    iso,
    parallel_map,
    take_rows,
    timestamps_ns,
)

log = logging.getLogger(__name__)

__all__ = ["PART_NAMES", "SplitResult"]

PART_NAMES: tuple[str, ...] = ("train", "valid", "test")
TRAIN, VALID, TEST, DROPPED = 0, 1, 2, 3


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


# --------------------------------------------------------------------------- shared encoding
class Table:
    """A frame with lazily computed integer views of its columns.

    :func:`~recpipe.sessions.splits.build_splits` makes one and hands it to every
    split, so each string column is hashed once however many splits run.
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


def table_not_applicable(kind: str, table: Table) -> str | None:
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
def presence(codes: Codes, part: np.ndarray) -> np.ndarray:
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
    table: Table, part: np.ndarray, frames: list[pd.DataFrame]
) -> tuple[dict[str, Any], dict[str, int]]:
    """Per-part rows, distinct users/items/sessions and time range; cold-start counts.

    One counting pass per id column for all parts at once; time ranges from the
    parts' own (already materialised) timestamps.
    """
    users = presence(table.user, part)
    items = presence(table.item, part)
    has_sessions = bool(table.has_session.any())
    sessions = presence(table.session, part) if has_sessions else None
    rows = np.bincount(part, minlength=4)
    ranges = []
    for frame in frames:
        ts = timestamps_ns(frame["timestamp"])
        ranges.append((ts.min(), ts.max()) if len(ts) else (None, None))
    item_codes = table.item.codes

    def new_item_rows(code: int, new_items: np.ndarray) -> int:
        in_part = part == code
        return int(np.count_nonzero(new_items[item_codes[in_part & (item_codes >= 0)]]))

    user_counts = user_presence_counts(users)
    return summarise_parts(rows, user_counts, items, sessions, ranges, new_item_rows)


def user_presence_counts(users: np.ndarray) -> dict[str, int]:
    """The user counts :func:`summarise_parts` needs, from a ``(4, n_users)`` presence."""
    return {
        "train": int(users[TRAIN].sum()),
        "valid": int(users[VALID].sum()),
        "test": int(users[TEST].sum()),
        "test_with_train": int((users[TEST] & users[TRAIN]).sum()),
        "valid_not_in_train": int((users[VALID] & ~users[TRAIN]).sum()),
        "test_not_in_train": int((users[TEST] & ~users[TRAIN]).sum()),
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

    ``rows``: rows per part code; ``users``: counts (see :func:`user_presence_counts`);
    ``items`` / ``sessions``: ``(4, n)`` presence (sessions ``None`` when no row has
    one); ``ranges``: ``(min, max)`` ns (or ``None``) of train, valid, test;
    ``new_item_rows(code, mask)``: rows of part ``code`` whose item is in ``mask``.
    """
    stats: dict[str, Any] = {}
    for name, code, (lo, hi) in zip(PART_NAMES, (TRAIN, VALID, TEST), ranges, strict=True):
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
    for name, code in (("valid", VALID), ("test", TEST)):
        new_items = items[code] & ~items[TRAIN]
        cold[f"{name}_items_not_in_train"] = int(new_items.sum())
        cold[f"{name}_users_not_in_train"] = users[f"{name}_not_in_train"]
        cold[f"{name}_rows_with_item_not_in_train"] = new_item_rows(code, new_items)
    return stats, cold


def finish(
    kind: str,
    table: Table,
    part: np.ndarray,
    params: dict[str, Any],
    cutoffs: dict[str, Any],
    dropped: dict[str, int],
    extra: dict[str, Any] | None = None,
    t0: float | None = None,
    tables: dict[str, pd.DataFrame] | None = None,
) -> SplitResult:
    """Materialise the parts of ``part`` (per-row part code) and assemble the stats."""
    frames = [take_rows(table.frame, part == code) for code in (TRAIN, VALID, TEST)]
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


def empty_test(kind: str, detail: str, change: str) -> SplitError:
    return SplitError(f"{kind} split: the test part is empty ({detail}); {change}")
