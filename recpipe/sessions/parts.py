"""Shared pieces of the train / validation / test splits.

The part codes, :class:`SplitResult`, the lazily encoded :class:`Table` every split
runs on, and the statistics each split reports. The protocols themselves are in
:mod:`recpipe.sessions.splits` (session split, the split table and the leakage
checks), :mod:`recpipe.sessions.temporal` (global and per-user temporal splits) and
:mod:`recpipe.sessions.cold` (cold start).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recpipe.errors import SplitError
from recpipe.sessions._arrays import (
    Codes,
    encode,
    group_time_order,
    iso,
    parallel_map,
    stable_argsort,
    take_rows,
    timestamps_ns,
)

log = logging.getLogger(__name__)

__all__ = ["PART_NAMES", "SplitResult", "write_parts"]

PART_NAMES: tuple[str, ...] = ("train", "valid", "test")
TRAIN, VALID, TEST, DROPPED = 0, 1, 2, 3
#: The part code of each part name.
PART_CODES: dict[str, int] = {"train": TRAIN, "valid": VALID, "test": TEST}


class SplitResult:
    """The three parts of one split and its JSON-able statistics.

    A split built by :func:`~recpipe.sessions.splits.build_splits` holds its parts
    as one ``int8`` part code per input row (:attr:`part`) over the shared input
    (:attr:`source`, never copied) and its integer-coded :class:`Table`; a part's
    frame is gathered on first access of :attr:`train` / :attr:`valid` /
    :attr:`test` and kept. :func:`write_parts` writes the parts without
    materialising them as frames, and :func:`~recpipe.sessions.splits.check_leakage`
    reads the codes, so five splits of a large log cost five ``int8`` arrays
    instead of five copies of its string columns. ``SplitResult(train, valid, test,
    stats, tables)`` wraps frames that exist already.

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
    part : numpy.ndarray or None
        ``(len(source),)`` int8 part code of each input row (``TRAIN``, ``VALID``,
        ``TEST``, ``DROPPED``); ``None`` when the result wraps frames.
    table : Table or None
        The encoded input the codes refer to; ``None`` when the result wraps frames.
    """

    __slots__ = ("_frames", "part", "stats", "table", "tables")

    def __init__(
        self,
        train: pd.DataFrame,
        valid: pd.DataFrame,
        test: pd.DataFrame,
        stats: dict[str, Any] | None = None,
        tables: dict[str, pd.DataFrame] | None = None,
    ) -> None:
        self._frames: dict[str, pd.DataFrame] = {"train": train, "valid": valid, "test": test}
        self.stats: dict[str, Any] = {} if stats is None else stats
        self.tables: dict[str, pd.DataFrame] = {} if tables is None else tables
        self.part: np.ndarray | None = None
        self.table: Table | None = None

    @classmethod
    def of_rows(
        cls,
        table: Table,
        part: np.ndarray,
        stats: dict[str, Any],
        tables: dict[str, pd.DataFrame] | None = None,
    ) -> SplitResult:
        """A split of ``table.frame`` given as one part code per row (nothing copied)."""
        if part.shape != (table.n,):
            raise ValueError(f"part codes of shape {part.shape} for a table of {table.n} rows")
        result = cls.__new__(cls)
        result._frames = {}
        result.stats, result.tables = stats, dict(tables or {})
        result.part, result.table = part.astype(np.int8, copy=False), table
        return result

    @property
    def source(self) -> pd.DataFrame | None:
        """The input frame the part codes index (``None`` when the result wraps frames)."""
        return None if self.table is None else self.table.frame

    def mask(self, name: str) -> np.ndarray | None:
        """(n,) bool: the input rows of part ``name``; ``None`` when the result wraps frames."""
        if self.part is None:
            return None
        return self.part == PART_CODES[name]

    def _frame(self, name: str) -> pd.DataFrame:
        frame = self._frames.get(name)
        if frame is None:
            mask = self.mask(name)
            assert mask is not None and self.table is not None
            frame = self._frames[name] = take_rows(self.table.frame, mask)
        return frame

    @property
    def train(self) -> pd.DataFrame:
        return self._frame("train")

    @property
    def valid(self) -> pd.DataFrame:
        return self._frame("valid")

    @property
    def test(self) -> pd.DataFrame:
        return self._frame("test")

    @property
    def kind(self) -> str:
        return str(self.stats.get("kind", ""))

    def rows(self, name: str) -> int:
        """Rows of part ``name`` (without materialising it)."""
        if self.part is None:
            return len(self._frames[name])
        return int(np.count_nonzero(self.part == PART_CODES[name]))

    def parts(self) -> dict[str, pd.DataFrame]:
        """``{"train": ..., "valid": ..., "test": ...}`` (materialises every part)."""
        return {"train": self.train, "valid": self.valid, "test": self.test}


def write_parts(result: SplitResult, out: Path) -> None:
    """Write ``result``'s parts as ``out/{train,valid,test}.parquet`` and its tables as
    ``out/<name>.parquet``.

    The files are those ``frame.to_parquet(path, index=False)`` writes for each part
    (same schema, pandas metadata and rows). A split given as part codes is written
    from one Arrow view of its input, filtered part by part (the three parts on threads):
    the string columns are copied once, into the file being written, never into a
    frame.
    """
    out.mkdir(parents=True, exist_ok=True)
    if result.table is None:
        for name in PART_NAMES:
            result.parts()[name].to_parquet(out / f"{name}.parquet", index=False)
    else:
        arrow = result.table.arrow()

        def write(name: str) -> None:
            mask = result.mask(name)
            assert mask is not None
            rows = arrow.filter(pa.array(mask)) if mask.any() else arrow.slice(0, 0)
            pq.write_table(rows, out / f"{name}.parquet", compression="snappy")

        # the parts side by side: Arrow's filter and Parquet encoding release the GIL, and
        # the parts partition the rows, so together they hold at most the input once more
        parallel_map(write, PART_NAMES)
    for name, table in result.tables.items():  # cold_start: cold_items, cold_users
        table.to_parquet(out / f"{name}.parquet", index=False)


# --------------------------------------------------------------------------- shared encoding
class Table:
    """A frame with lazily computed integer views of its columns.

    :func:`~recpipe.sessions.splits.build_splits` makes one and hands it to every
    split, so each string column is hashed once however many splits run.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        # a shallow copy: shares the data, but (copy-on-write) a later change to the
        # caller's frame does not reach the splits that gather their rows from it
        self.frame = frame.copy(deep=False)
        self.n = len(frame)
        self._cache: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def _get(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` once per key, also when splits on several threads ask at once (one
        computes, the others wait for it)."""
        if key in self._cache:
            return self._cache[key]
        with self._locks_lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._cache:
                self._cache[key] = make()
        return self._cache[key]

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()``, computed once per table and ``key`` (e.g. the global cut-off that
        the global temporal and cold-start splits share); an exception is not kept."""
        return self._get(f"cached:{key}", make)

    def with_users(self, frame: pd.DataFrame) -> Table:
        """A table of ``frame``: this table's rows with other ``user_id`` values only
        (cold start's anonymous sessions as users). The timestamps and the item and
        session codes are shared, not recomputed."""
        if len(frame) != self.n:
            raise ValueError(f"a frame of {len(frame)} rows for a table of {self.n} rows")
        out = Table(frame)
        for key in ("ts", "item", "session", "has_session"):
            if key in self._cache:
                out._cache[key] = self._cache[key]
        return out

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

    def codes(self, column: str) -> Codes:
        """The codes of id column ``column`` (``user_id``, ``item_id`` or ``session_id``)."""
        key = {"user_id": "user", "item_id": "item", "session_id": "session"}.get(column)
        if key is None:
            raise ValueError(
                f"no codes of column {column!r}; expected user_id, item_id or session_id"
            )
        return getattr(self, key)

    def prefetch(self, *keys: str) -> None:
        """Encode several id columns at once, on threads (Arrow hashing releases the GIL)."""
        todo = [k for k in keys if k not in self._cache]
        column = {"user": "user_id", "item": "item_id", "session": "session_id"}
        series = [self.frame[column[k]] for k in todo]
        for key, codes in zip(todo, parallel_map(encode, series), strict=True):
            self._cache[key] = codes

    def warm(self) -> None:
        """Compute, on this thread, every array of the frame that the splits read (the
        timestamps, id codes and null masks), so that splits running on other threads
        touch NumPy arrays only, never the pandas frame."""
        if self.n:  # an empty table: every split is skipped before reading anything
            self.prefetch("user", "item", "session")
            for name in ("ts", "has_user", "has_session"):
                getattr(self, name)

    def arrow(self) -> pa.Table:
        """The frame as an Arrow table, as ``DataFrame.to_parquet(index=False)`` converts
        it (pandas metadata included); the Arrow-backed columns are shared, not copied."""
        return self._get("arrow", lambda: pa.Table.from_pandas(self.frame, preserve_index=False))

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
    if rows is None:
        after_runs = _rank_by_runs(codes, n_users, counts, ts)
        if after_runs is not None:
            return after_runs, counts
    order = group_time_order(keys, n_users, ts if rows is None else ts[rows])
    ends = np.cumsum(counts).astype(np.int32)  # one past each user's last position
    # sorted by user, position i holds a row of the user whose rows end at repeat(ends)[i]
    rank = np.repeat(ends, counts) - 1 - np.arange(len(order), dtype=np.int32)
    after = np.full(len(codes), -1, np.int32)
    after[order if rows is None else rows[order]] = rank
    return after, counts


def _rank_by_runs(
    codes: np.ndarray, n_users: int, counts: np.ndarray, ts: np.ndarray
) -> np.ndarray | None:
    """:func:`user_rank`'s per-row counts without sorting the rows, for a table whose
    rows come in runs of one user (a sessionized table: one run per session), each
    user's rows in time order; ``None`` when the rows are not so (or too many runs).

    Checked in one pass over the rows (time order within each run) and one over the
    runs sorted by user (each run starts at or after the end of the user's run
    before); then a row's later events are those after it in its run plus the
    lengths of its user's later runs. The same result as the sorting path, as ties
    are in row order either way."""
    n = len(codes)
    if n < 2 or n >= 2**31:
        return None
    change = codes[1:] != codes[:-1]
    n_runs = 1 + int(np.count_nonzero(change))
    if n_runs > n // 2:  # few rows per run: sorting the rows is as cheap
        return None
    if not bool(((ts[1:] >= ts[:-1]) | change).all()):
        return None
    starts = np.empty(n_runs, np.int64)
    starts[0] = 0
    starts[1:] = np.flatnonzero(change) + 1
    del change
    lengths = np.diff(starts, append=n)
    run_user = codes[starts]
    order = stable_argsort(run_user, n_users)
    sorted_user = run_user[order]
    first_ts, last_ts = ts[starts][order], ts[starts + lengths - 1][order]
    same_user = sorted_user[1:] == sorted_user[:-1]
    if not bool(((first_ts[1:] >= last_ts[:-1]) | ~same_user).all()):
        return None
    # rows of the user after each run: the user's end (runs sorted by user) minus the
    # rows up to and including this run
    through = np.cumsum(lengths[order])
    later = np.empty(n_runs, np.int64)
    later[order] = np.cumsum(counts)[sorted_user] - through
    # a row at offset o of a run starting at row r: later + (length - 1 - o) events after
    # it, i.e. (later + length - 1 + r) - its row
    after = np.repeat((later + lengths - 1 + starts).astype(np.int32), lengths)
    after -= np.arange(n, dtype=np.int32)
    return after


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
    index = np.multiply(p, dtype(k), dtype=dtype)  # one pass: cast and scale
    np.add(index, c, out=index)
    out = np.zeros(4 * k, bool)
    out[index] = True  # a scatter of flags: half the time of counting with bincount
    return out.reshape(4, k)


def part_counts(part: np.ndarray) -> np.ndarray:
    """Rows per part code (``TRAIN``, ``VALID``, ``TEST``, ``DROPPED``): four counts over
    the ``int8`` codes (``bincount`` would first widen them to ``intp``)."""
    return np.array([np.count_nonzero(part == code) for code in range(4)], dtype=np.int64)


def _parts_stats(table: Table, part: np.ndarray) -> tuple[dict[str, Any], dict[str, int]]:
    """Per-part rows, distinct users/items/sessions and time range; cold-start counts.

    One counting pass per id column for all parts at once; time ranges from the
    table's integer timestamps.
    """
    users = presence(table.user, part)
    items = presence(table.item, part)
    has_sessions = bool(table.has_session.any())
    sessions = presence(table.session, part) if has_sessions else None
    rows = part_counts(part)
    ranges = part_time_ranges(table.ts, part)
    item_codes = table.item.codes
    item_null = table.item.has_null

    def new_item_rows(code: int, new_items: np.ndarray) -> int:
        rows = part == code
        if item_null:
            rows &= item_codes >= 0
        return int(np.count_nonzero(new_items[item_codes[rows]]))

    user_counts = user_presence_counts(users)
    return summarise_parts(rows, user_counts, items, sessions, ranges, new_item_rows)


def part_time_ranges(ts: np.ndarray, part: np.ndarray) -> list[tuple[Any, Any]]:
    """``(min, max)`` of ``ts`` (int64 ns) over the rows of train, valid and test;
    ``(None, None)`` for an empty part."""
    if not len(ts):
        return [(None, None)] * 3
    grouped = (
        pa.table({"part": part, "ts": ts})
        .group_by("part", use_threads=False)  # Arrow's hash aggregate: one pass
        .aggregate([("ts", "min_max")])
        .to_pydict()
    )
    found = dict(zip(grouped["part"], grouped["ts_min_max"], strict=True))
    return [
        (found[c]["min"], found[c]["max"]) if c in found else (None, None)
        for c in (TRAIN, VALID, TEST)
    ]


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
    """The split of ``table`` given by ``part`` (per-row part code), with its stats.

    The parts stay part codes over ``table`` (:meth:`SplitResult.of_rows`): nothing
    of the input is copied here.
    """
    parts, cold = _parts_stats(table, part)
    stats = assemble_stats(kind, table.n, parts, cold, params, cutoffs, dropped, extra)
    log.info(
        "%s split: train %d, valid %d, test %d rows; dropped %s%s",
        kind,
        *(parts[name]["rows"] for name in PART_NAMES),
        stats["dropped"],
        "" if t0 is None else f" in {time.perf_counter() - t0:.2f} s",
    )
    return SplitResult.of_rows(table, part, stats, tables)


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
