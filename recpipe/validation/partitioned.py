"""Validation of an events table larger than memory, one user-hash partition at a time.

:func:`validate_partitioned` is the ``arrow`` engine of the validate stage (see
:class:`recpipe.config.PrepParams`). It never loads the whole events table:

1. the events file is streamed in batches of ``batch_rows`` rows and split into
   ``partitions`` bucket files by a stable hash of ``user_id`` (of ``session_id`` for
   anonymous events; events with neither share one bucket), each row tagged with its
   row number in the file (:func:`partition_events`);
2. the same GX suites as :func:`recpipe.validation.validate_tables` (the same two
   passes: ``BOOLEAN_ONLY``, then ``COMPLETE`` for what failed) run on one partition at
   a time; the small items and users tables are validated once;
3. the per-partition results are aggregated into one report, equal to the pandas
   engine's (``timings_s`` aside), and the bad rows into global row numbers with their
   reasons; the quarantine and the clean events are then written by streaming the
   events file once more, in row order (:meth:`PartitionedOutcome.write_quarantine`,
   :meth:`PartitionedOutcome.write_clean`), so they equal the pandas engine's files.

Why each rule can be checked on a partition:

* row-local (a row's verdict depends on that row only): ``*_not_null``,
  ``*_not_negative``, ``event_type_known``, ``timestamp_in_range``,
  ``user_or_session_not_null``, ``rating_in_range``, and ``item_id_in_items``
  (a row against the whole items table, which every partition gets);
* per user: ``no_duplicate_events``. Its key (``DUPLICATE_KEY``) holds ``user_id`` and
  ``session_id``: equal rows have the same user, or both no user and the same session,
  or neither -- in every case the same bucket. Rows keep file order within a bucket, so
  "keep the first copy" keeps the same row;
* schema-level: ``events_columns`` (every partition has the file's columns; the
  verdict is the same everywhere);
* items/users rules: run once on the whole (small) tables.

What is global, and how it is aggregated exactly: the verdict of a rule (all
partitions pass); ``unexpected_count`` (sum; duplicate groups never span
partitions) and ``repeated_rows`` (sum); ``unexpected_percent`` (of the whole table's
rows); ``examples`` / ``example_rows`` (the first five rows of the table: each
partition's first five, mapped to table rows, merged, the first five kept); the row
positions (partition row -> table row); bad-row totals, the bad fraction and the
pass/fail decision (on the totals); rows per rule (sum, in suite order). GX's
``partial_unexpected_list`` and index lists never reach the report.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recpipe.data import workfs
from recpipe.data.chunked import (
    EventsWriter,
    empty_events,
    iter_event_batches,
    read_side_tables,
    write_chunked_tables,
)
from recpipe.data.cluster import Mapper, serial_map
from recpipe.data.partitions import bucket_of, write_bucket_pieces, write_buckets
from recpipe.data.schema import EVENTS_FILE, CanonicalTables, coerce_events
from recpipe.data.workfs import WorkPath
from recpipe.errors import ConfigError
from recpipe.validation.report import QUARANTINE_EVENTS_FILE, QUARANTINE_SUMMARY_FILE
from recpipe.validation.runner import (
    _SESSION_LOCK,
    COMPLETE_FORMAT,
    N_EXAMPLES,
    _expectations,
    _Failure,
    _failure,
    _failure_entry,
    _GXSession,
    _info,
    _reasons,
    _report,
    _row_pieces,
    _session,
    to_jsonable,
)
from recpipe.validation.suites import (
    EVENTS,
    EVENTS_DERIVED,
    EVENTS_DUPLICATES,
    ITEMS,
    USERS,
    RuleInfo,
    build_suites,
    checks_references,
    derived_frame,
    duplicates_frame,
    positional,
    resolve_now,
)
from recpipe.workspace import shown

if TYPE_CHECKING:
    from recpipe.config import ValidateParams

log = logging.getLogger(__name__)

_P = ParamSpec("_P")

__all__ = [
    "PartitionCheck",
    "PartitionedOutcome",
    "check_partition",
    "partition_events",
    "partition_events_in_pieces",
    "validate_partitioned",
]

#: Column holding each event's row number in the events file, in the partition files.
ROW_COLUMN = "__recpipe_row"

#: Bucket key of events with neither a user nor a session (they can only duplicate
#: each other, so they share a bucket).
_NOBODY = "\x00nobody"

_EVENT_BATCHES = (EVENTS, EVENTS_DERIVED, EVENTS_DUPLICATES)
_SIDE_BATCHES = (ITEMS, USERS)

Result = tuple[RuleInfo, str, bool]


@dataclass
class PartitionedOutcome:
    """What :func:`validate_partitioned` found; the events stay on disk.

    ``success``, ``passed`` and ``report`` are those of the pandas engine's
    :class:`~recpipe.validation.ValidationOutcome` (the report functions of
    :mod:`recpipe.validation.report` take either). The bad rows are ``bad_rows`` (sorted
    row numbers of the events file) with ``reason_names[bad_codes[i]]`` as the reason
    of row ``bad_rows[i]``; :meth:`write_quarantine` and :meth:`write_clean` write the
    quarantine and the clean tables from them by streaming ``source_dir`` again.
    """

    success: bool
    passed: bool
    report: dict[str, Any]
    source_dir: Path
    side: CanonicalTables  # items, users and source of the input (no events)
    bad_rows: np.ndarray
    bad_codes: np.ndarray
    reason_names: list[str]
    batch_rows: int = 1_000_000

    @property
    def removes_rows(self) -> bool:
        """Whether the clean events are the input minus the bad rows (quarantine mode)."""
        return bool(self.report["counts"]["quarantined"])

    def _bad_frames(self) -> Iterator[pd.DataFrame]:
        """The quarantine frame (bad rows, ``row``, ``reason``) in pieces, in row order."""
        names = np.asarray(self.reason_names, dtype=object)
        for frame in iter_event_batches(self.source_dir / EVENTS_FILE, self.batch_rows):
            start = int(frame.index[0]) if len(frame) else 0
            lo, hi = np.searchsorted(self.bad_rows, [start, start + len(frame)])
            if lo == hi:
                continue
            local = self.bad_rows[lo:hi] - start
            reasons = pd.array(names[self.bad_codes[lo:hi]].tolist(), dtype="string")
            yield frame.iloc[local].assign(reason=reasons).rename_axis("row").reset_index()

    def summary(self) -> dict[str, Any]:
        """:func:`recpipe.validation.quarantine_summary` of the pandas engine."""
        by_reason: dict[str, int] = {}
        if len(self.bad_codes):
            codes, first, counts = np.unique(self.bad_codes, return_index=True, return_counts=True)
            seen = np.argsort(first, kind="stable")  # value_counts: first appearance,
            ranked = seen[np.argsort(-counts[seen], kind="stable")]  # then count desc
            by_reason = {self.reason_names[int(codes[i])]: int(counts[i]) for i in ranked}
        counts_ = self.report["counts"]
        return to_jsonable(
            {
                "mode": self.report["mode"],
                "removed_from_clean": counts_["quarantined"],
                "rows": len(self.bad_rows),
                "events": counts_["events"],
                "by_rule": self.report["reasons"],
                "by_reason": by_reason,
            }
        )

    def write_quarantine(self, directory: str | Path) -> dict[str, Any]:
        """Write the quarantine files of :func:`recpipe.validation.write_quarantine`
        (``events.parquet``: bad rows with ``row`` and ``reason``; ``summary.json``),
        streaming the events; returns the summary."""
        import json

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        template = (
            empty_events()
            .assign(reason=pd.array([], dtype="string"))
            .rename_axis("row")
            .reset_index()
        )
        with EventsWriter(directory / QUARANTINE_EVENTS_FILE, template=template) as writer:
            for piece in self._bad_frames():
                writer.write(piece)
        summary = self.summary()
        (directory / QUARANTINE_SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        log.info("wrote %d quarantined event rows to %s", writer.rows, shown(directory))
        return summary

    def write_clean(self, out_dir: str | Path) -> dict[str, Any]:
        """Write the clean tables (what ``write_tables(outcome.clean, out_dir)`` writes in
        the pandas engine: the events minus the quarantined rows, in file order, the
        items and users tables, the manifest); returns the manifest."""

        def events() -> Iterator[pd.DataFrame]:
            for frame in iter_event_batches(self.source_dir / EVENTS_FILE, self.batch_rows):
                if not self.removes_rows or not len(frame):
                    yield frame
                    continue
                start = int(frame.index[0])
                lo, hi = np.searchsorted(self.bad_rows, [start, start + len(frame)])
                keep = np.ones(len(frame), dtype=bool)
                keep[self.bad_rows[lo:hi] - start] = False
                yield frame.iloc[keep]

        return write_chunked_tables(events(), out_dir, self.side)


# ------------------------------------------------------------------- partitioning ---


def partition_events(
    events_path: WorkPath, out_dir: WorkPath, n_partitions: int, batch_rows: int
) -> tuple[list[WorkPath], int]:
    """Split a canonical events file into user-hash bucket files, tagging row numbers.

    Like :func:`recpipe.data.partitions.partition_by_user` (the same bucket of each
    user or anonymous session), plus: each row carries its row number in the file in
    :data:`ROW_COLUMN`, and events with neither ``user_id`` nor ``session_id`` (which
    validation reports rather than rejects) go to one shared bucket. Rows keep file
    order within a bucket. Returns the bucket files with rows and the number of rows.
    """
    if n_partitions < 1:
        raise ConfigError(f"prep.partitions must be at least 1, got {n_partitions}")
    out = workfs.work_path(out_dir)
    workfs.make_dir(out)
    source = workfs.parquet_file(events_path)
    offset = 0

    def tagged() -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        nonlocal offset
        for batch in source.iter_batches(batch_size=batch_rows):
            n = batch.num_rows
            if n == 0:
                continue
            yield _tag(batch, offset, n_partitions)
            offset += n

    paths = write_buckets(tagged(), out, n_partitions)  # counts the rows as it reads
    return paths, offset


def _tag(
    batch: pa.RecordBatch | pa.Table, offset: int, n_partitions: int
) -> tuple[pa.RecordBatch | pa.Table, np.ndarray]:
    """``batch`` with its row numbers (from ``offset``) and each row's bucket."""
    user, session = batch.column("user_id"), batch.column("session_id")
    nobody = pc.and_(pc.is_null(user), pc.is_null(session))
    key = pc.if_else(nobody, pa.scalar(_NOBODY, session.type), session)
    bucket = bucket_of(pa.table([user, key], names=["user_id", "session_id"]), n_partitions)
    rows = pa.array(np.arange(offset, offset + batch.num_rows, dtype=np.int64))
    return batch.append_column(ROW_COLUMN, rows), bucket


def partition_events_in_pieces(
    events_path: WorkPath, out_dir: WorkPath, n_partitions: int, batch_rows: int, mapper: Mapper
) -> tuple[list[WorkPath], int]:
    """:func:`partition_events` as one task per piece of the file (whole row groups,
    about ``batch_rows`` rows) run by ``mapper``, each writing its rows of every bucket
    as ``bucket-<k>/piece-<i>.parquet``: the same rows, row numbers and order per bucket.
    Returns the bucket folders with rows and the number of rows."""
    if n_partitions < 1:
        raise ConfigError(f"prep.partitions must be at least 1, got {n_partitions}")
    out = workfs.work_path(out_dir)
    workfs.make_dir(out)
    meta = workfs.parquet_file(events_path).metadata
    pieces: list[tuple[list[int], int]] = []
    group: list[int] = []
    offset = start = 0
    for g in range(meta.num_row_groups):
        group.append(g)
        offset += meta.row_group(g).num_rows
        if offset - start >= batch_rows or g == meta.num_row_groups - 1:
            pieces.append((group, start))
            group, start = [], offset
    args = [(events_path, gs, o, i, out, n_partitions) for i, (gs, o) in enumerate(pieces)]
    got = set().union(*mapper(_bucket_event_piece, args)) if args else set()
    return [workfs.join(out, f"bucket-{k:05d}") for k in sorted(got)], offset


def _bucket_event_piece(
    path: WorkPath, row_groups: list[int], offset: int, i: int, out_dir: WorkPath, n_partitions: int
) -> set[int]:
    """Write piece ``i`` of the events file (rows from ``offset``) into the buckets."""
    table = workfs.parquet_file(path).read_row_groups(row_groups)
    if not table.num_rows:
        return set()
    table, bucket = _tag(table, offset, n_partitions)
    return write_bucket_pieces(table, bucket, i, out_dir)


def _read_partition(
    path: WorkPath | None, events_path: WorkPath
) -> tuple[pd.DataFrame, np.ndarray]:
    """A partition's events (as ``read_tables`` gives them, positional) and table rows."""
    if path is None:  # no events at all: one empty partition
        schema = workfs.parquet_file(events_path).schema_arrow
        events = coerce_events(schema.empty_table().to_pandas())
        return positional(events), np.zeros(0, dtype=np.int64)
    table = workfs.read_table(path)
    rows = table.column(ROW_COLUMN).to_numpy()
    events = coerce_events(table.drop_columns([ROW_COLUMN]).to_pandas())
    return positional(events), np.asarray(rows, dtype=np.int64)


# --------------------------------------------------------------------- validation ---


def validate_partitioned(
    in_dir: str | Path,
    params: ValidateParams,
    work_dir: WorkPath,
    *,
    partitions: int = 16,
    batch_rows: int = 1_000_000,
    now: dt.datetime | None = None,
    mapper: Mapper | None = None,
    copy_input: bool = False,
) -> PartitionedOutcome:
    """Validate the canonical tables in ``in_dir`` one user-hash partition at a time.

    The arrow engine's :func:`recpipe.validation.validate_tables` (see the module
    docstring): the same rules, report (``timings_s`` aside), quarantine, verdict and
    clean tables, with peak memory about one partition of the events. ``work_dir``
    holds the partition files; it is created and removed (also on error). ``now``
    fixes the "future timestamp" bound as in ``validate_tables``. ``mapper`` runs the
    per-piece partitioning and the per-partition checks (:func:`check_partition`) as
    tasks, e.g. on a Dask cluster (:func:`recpipe.data.cluster.dask_mapper`;
    ``work_dir`` must then be a folder every worker reaches: a mount, or the URL of a
    store, :mod:`recpipe.data.workfs`); ``None``: one after the other in this process.
    ``copy_input``: the tasks read a copy of the events file in ``work_dir`` (workers on
    other machines then need no access to ``in_dir``).
    """
    work = workfs.work_path(work_dir)
    workfs.remove(work)
    with _SESSION_LOCK:  # one validation at a time uses the process's GX context
        try:
            return _validate(
                Path(in_dir), params, work, partitions, batch_rows, now, mapper, copy_input
            )
        finally:
            workfs.remove(work)


@dataclass
class _Merged:
    """One failed rule's report entry, aggregated over partitions."""

    entry: dict[str, Any]
    count: int | None
    repeated: int | None
    examples: list[tuple[int, Any, dict[str, Any]]]


def _validate(
    in_dir: Path,
    params: ValidateParams,
    work: WorkPath,
    partitions: int,
    batch_rows: int,
    now: dt.datetime | None,
    mapper: Mapper | None,
    copy_input: bool = False,
) -> PartitionedOutcome:
    started = time.perf_counter()
    now_ts = resolve_now(now)
    side = read_side_tables(in_dir)
    events_path: WorkPath = in_dir / EVENTS_FILE
    if copy_input:  # what the tasks read; the outcome streams from in_dir
        events_path = workfs.copy_into(in_dir / EVENTS_FILE, workfs.join(work, "input"))
    check_refs = checks_references(side, params)
    session = _session()
    order = {
        e.meta["rule"]: i
        for i, e in enumerate(
            _expectations(build_suites(params, now=now_ts, check_references=check_refs))
        )
    }
    rule_order = sorted(order, key=order.__getitem__)
    if mapper is None:
        files, n = partition_events(events_path, work, partitions, batch_rows)
    else:
        files, n = partition_events_in_pieces(events_path, work, partitions, batch_rows, mapper)
    log.info("partitioned %d events into %d bucket(s) under %s", n, len(files), work)
    timer = {"prepare": time.perf_counter() - started, "check": 0.0, "detail": 0.0}

    results: dict[str, Result] = {}

    def record(part_results: list[Result]) -> None:
        for info, etype, ok in part_results:
            prev = results.get(info.rule)
            results[info.rule] = (info, etype, ok and (prev is None or prev[2]))

    # items and users: small, validated once --------------------------------------
    side_frames = {ITEMS: positional(side.items), USERS: positional(side.users)}
    side_results, side_failures = _two_pass(
        session, params, now_ts, check_refs, _SIDE_BATCHES, side_frames, timer
    )
    record(side_results)
    _, table_level = _row_pieces(side_failures, empty_events(), side_results)
    tables = {"events": empty_events(), "items": side.items, "users": side.users}
    merged: dict[str, _Merged] = {}
    for failure in side_failures:
        _merge(merged, failure.info.rule, _failure_entry(failure, tables, side_frames), None)

    # events: one partition at a time (as tasks through ``mapper``) ----------------
    reason_counts: dict[str, int] = {}
    reason_index: dict[str, int] = {}
    bad_parts: list[np.ndarray] = []
    code_parts: list[np.ndarray] = []
    checked = (mapper or serial_map)(
        check_partition,
        [
            (p, events_path, params, now_ts, check_refs, side.items, rule_order)
            for p in files or [None]
        ],
    )
    for part in checked:
        record(part.results)
        table_level |= part.table_level
        for rule, count in part.reason_counts.items():
            reason_counts[rule] = reason_counts.get(rule, 0) + count
        if len(part.bad_rows):
            codes = [reason_index.setdefault(r, len(reason_index)) for r in part.reasons]
            bad_parts.append(part.bad_rows)
            code_parts.append(np.asarray(codes, dtype=np.int32))
        for rule, piece in part.merged.items():
            _combine(merged, rule, piece)
        timer["check"] += part.timer["check"]
        timer["detail"] += part.timer["detail"]

    # aggregate ----------------------------------------------------------------------
    all_results = sorted(results.values(), key=lambda r: order.get(r[0].rule, len(order)))
    success = all(ok for _, _, ok in all_results)
    bad_rows = np.concatenate(bad_parts) if bad_parts else np.zeros(0, dtype=np.int64)
    bad_codes = np.concatenate(code_parts) if code_parts else np.zeros(0, dtype=np.int32)
    sort = np.argsort(bad_rows, kind="stable")
    bad_rows, bad_codes = bad_rows[sort], bad_codes[sort]
    n_bad = len(bad_rows)
    bad_fraction = n_bad / n if n else 0.0
    quarantine_mode = params.on_failure == "quarantine"
    passed = success or (
        quarantine_mode and not table_level and bad_fraction <= params.max_bad_fraction
    )
    quarantined = 0 if (success or not quarantine_mode or n_bad == 0) else n_bad
    entries = [
        _finish(merged[rule], n if merged[rule].entry["table"] == "events" else None)
        for rule in sorted(merged, key=lambda r: order.get(r, len(order)))
    ]
    report = _report(
        success=success,
        passed=passed,
        params=params,
        now_ts=now_ts,
        counts={
            "events": n,
            "items": len(side.items),
            "users": len(side.users),
            "bad_rows": n_bad,
            "quarantined": quarantined,
            "bad_fraction": bad_fraction,
        },
        table_level=table_level,
        entries=entries,
        all_results=all_results,
        reason_counts={r: reason_counts[r] for r in rule_order if r in reason_counts},
        source=side.source,
    )
    elapsed = time.perf_counter() - started
    report["timings_s"] = {
        "prepare": round(timer["prepare"], 4),
        "check": round(timer["check"], 4),
        "detail": round(timer["detail"], 4),
        "total": round(elapsed, 4),
        "partitions": len(files),
    }
    log.info(
        "validated %d events in %d partition(s) in %.2f s: %d of %d expectations passed, "
        "%d bad rows, %s",
        n,
        len(files),
        elapsed,
        sum(1 for _, _, ok in all_results if ok),
        len(all_results),
        n_bad,
        "passed" if passed else "FAILED",
    )
    names = [""] * len(reason_index)
    for reason, code in reason_index.items():
        names[code] = reason
    return PartitionedOutcome(
        success=success,
        passed=passed,
        report=report,
        source_dir=in_dir,
        side=side,
        bad_rows=bad_rows,
        bad_codes=bad_codes,
        reason_names=names,
        batch_rows=batch_rows,
    )


@dataclass
class PartitionCheck:
    """What :func:`check_partition` found in one partition."""

    results: list[Result]
    table_level: bool
    reason_counts: dict[str, int]
    bad_rows: np.ndarray  # rows of the events file, sorted
    reasons: list[str]  # each bad row's broken rules
    merged: dict[str, _Merged]  # failed rules' report entries, examples as file rows
    timer: dict[str, float]
    rows: int = 0  # events in the partition


#: Rows of partitions checked in a process between two collections of the cycles the GX
#: runs leave (:func:`check_partition`): what the process may hold of them, at most.
COLLECT_ROWS = 2_000_000

_uncollected_rows = 0


def _collects_cycles(
    check: Callable[_P, PartitionCheck],
) -> Callable[_P, PartitionCheck]:
    """``check``, then a collection once the partitions checked since the last one hold
    :data:`COLLECT_ROWS` rows.

    A GX run leaves the partition's frames in reference cycles: GX parses its
    expectations and checkpoints with pydantic v1, whose union fields keep the failed
    attempts' exceptions, and their tracebacks hold the frames of the calls that were
    running (the check's among them). Only a collection frees them, and Python's own
    full collections come after a count of new objects, not of bytes, so a worker kept
    several partitions' frames (100M events in 32 partitions on one worker: a peak of
    2.7 GiB, 1.3 GiB with this collection). The collection runs once the check's frame
    has returned; not after every small partition, as a full one costs ~0.15 s.
    """

    @functools.wraps(check)
    def checked(*args: _P.args, **kwargs: _P.kwargs) -> PartitionCheck:
        global _uncollected_rows
        result = check(*args, **kwargs)
        with _SESSION_LOCK:
            _uncollected_rows += result.rows
            due = _uncollected_rows >= COLLECT_ROWS
            if due:
                _uncollected_rows = 0
        if due:
            started = time.perf_counter()
            found = gc.collect()
            log.debug("collected %d objects in %.2f s", found, time.perf_counter() - started)
        return result

    return checked


@_collects_cycles
def check_partition(
    path: WorkPath | None,
    events_path: WorkPath,
    params: ValidateParams,
    now_ts: pd.Timestamp,
    check_refs: bool,
    items: pd.DataFrame,
    rule_order: list[str],
) -> PartitionCheck:
    """Run the events suites on one bucket (a file or folder of pieces; ``None``: no
    events) with this process's GX session; its results, bad rows and report entries.
    The cycles GX leaves are collected every :data:`COLLECT_ROWS` rows
    (:func:`_collects_cycles`)."""
    timer = {"check": 0.0, "detail": 0.0}
    events, rows = _read_partition(path, events_path)
    frames: dict[str, pd.DataFrame] = {
        EVENTS: events,
        EVENTS_DERIVED: derived_frame(events, items, params, check_references=check_refs),
    }
    if params.duplicates == "forbid":
        frames[EVENTS_DUPLICATES] = duplicates_frame(events)
    with _SESSION_LOCK:  # re-entrant: the arrow engine's caller holds it already
        results, failures = _two_pass(
            _session(), params, now_ts, check_refs, _EVENT_BATCHES, frames, timer
        )
    pieces, table_level = _row_pieces(failures, events, results)
    reason_counts: dict[str, int] = {}
    for positions, rule in pieces:
        reason_counts[rule] = reason_counts.get(rule, 0) + len(positions)
    local, reasons = _reasons(pieces, rule_order)
    merged: dict[str, _Merged] = {}
    tables = {"events": events, "items": items}
    for failure in failures:
        _merge(merged, failure.info.rule, _failure_entry(failure, tables, frames), rows)
    log.debug("validated partition %s: %d events", path, len(events))
    return PartitionCheck(
        results, table_level, reason_counts, rows[local], reasons, merged, timer, len(events)
    )


def _two_pass(
    session: _GXSession,
    params: ValidateParams,
    now_ts: pd.Timestamp,
    check_refs: bool,
    batches: tuple[str, ...],
    frames: dict[str, pd.DataFrame],
    timer: dict[str, float],
) -> tuple[list[Result], list[_Failure]]:
    """The suites of ``batches`` on ``frames``: all results, then the failures in detail."""
    t0 = time.perf_counter()
    suites = {
        b: s
        for b, s in build_suites(params, now=now_ts, check_references=check_refs).items()
        if b in batches
    }
    first = session.run(suites, frames, "BOOLEAN_ONLY", "check")
    results = [
        (_info(res), res.expectation_config.type, bool(res.success))
        for suite_result in first.values()
        for res in suite_result.results
    ]
    t1 = time.perf_counter()
    timer["check"] += t1 - t0
    failed = {info.rule for info, _, ok in results if not ok}
    failures: list[_Failure] = []
    if failed:
        detail = {
            b: s
            for b, s in build_suites(
                params, now=now_ts, check_references=check_refs, only=failed
            ).items()
            if b in batches
        }
        second = session.run(detail, frames, COMPLETE_FORMAT, "detail")
        failures = [
            _failure(res)
            for suite_result in second.values()
            for res in suite_result.results
            if not res.success
        ]
    timer["detail"] += time.perf_counter() - t1
    return results, failures


def _merge(
    merged: dict[str, _Merged], rule: str, entry: dict[str, Any], rows: np.ndarray | None
) -> None:
    """Add one partition's report entry of a failed rule (``rows``: partition -> table
    row; ``None``: the entry is already about the whole table)."""
    examples = []
    for example, row in zip(entry["examples"], entry["example_rows"], strict=True):
        pos = int(row["row"]) if rows is None else int(rows[int(row["row"])])
        examples.append((pos, example, {**row, "row": pos}))
    part = _Merged(entry, entry["unexpected_count"], entry.get("repeated_rows"), examples)
    _combine(merged, rule, part)


def _combine(merged: dict[str, _Merged], rule: str, part: _Merged) -> None:
    """Add ``part`` (one or more partitions' entry of ``rule``) to ``merged``."""
    if rule not in merged:
        merged[rule] = part
        return
    into = merged[rule]
    if part.count is not None:
        into.count = part.count if into.count is None else into.count + part.count
    if part.repeated is not None:
        into.repeated = part.repeated if into.repeated is None else into.repeated + part.repeated
    into.examples.extend(part.examples)


def _finish(merged: _Merged, table_rows: int | None) -> dict[str, Any]:
    """The aggregated entry: totals, percentages of the whole table, first examples."""
    entry = dict(merged.entry)  # same keys, same order as the pandas engine's entry
    if table_rows is not None:
        count = merged.count
        entry["unexpected_count"] = count
        entry["unexpected_percent"] = (
            100.0 * count / table_rows if count is not None and table_rows else None
        )
        if "repeated_rows" in entry:
            entry["repeated_rows"] = merged.repeated
        first = sorted(merged.examples, key=lambda e: e[0])[:N_EXAMPLES]
        entry["examples"] = [example for _, example, _ in first]
        entry["example_rows"] = [row for _, _, row in first]
    return entry
