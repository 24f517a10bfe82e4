"""Run the validation suites with GX checkpoints; derive the outcome, report and quarantine.

Two passes keep the common case cheap:

1. every suite runs with ``result_format="BOOLEAN_ONLY"`` (one GX checkpoint per
   batch: a checkpoint hands the same batch parameters, i.e. the same dataframe, to
   all of its validation definitions, so each frame gets its own);
2. only when something failed, the failed expectations run again with ``COMPLETE``
   results, which carry the unexpected row indices that the quarantine and the
   report's example rows need.

GX fingerprints every pandas batch under 1 GB by hashing the whole frame
(``pandas.util.hash_pandas_object``, 6-11 s for 5M events here, and only used as a
batch marker); that is switched off while recpipe's checkpoints run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import logging
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recpipe.data.schema import CanonicalTables
from recpipe.validation.suites import (
    DUPLICATE_KEY,
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
    import_gx,
    positional,
    resolve_now,
    rule_info,
)

if TYPE_CHECKING:
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.data_context import AbstractDataContext

    from recpipe.config import ValidateParams

log = logging.getLogger(__name__)

#: How many example values / rows a failure carries into the report.
N_EXAMPLES = 5

#: Result format of the second pass (failed expectations only).
COMPLETE_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "partial_unexpected_count": N_EXAMPLES,
    "return_unexpected_index_query": False,
    # the unexpected values come from the rows (by index) instead: cheaper to store
    "exclude_unexpected_values": True,
}

REASON_SEPARATOR = "; "


@dataclass
class ValidationOutcome:
    """What :func:`validate_tables` found.

    ``success``: every expectation passed. ``passed``: success, or quarantine mode where
    only event rows failed and their share is at most ``max_bad_fraction``.
    ``report``: JSON-able summary (see :func:`validate_tables`). ``clean``: the input
    tables when nothing failed or in fail mode; in quarantine mode the events minus
    the bad rows. ``quarantine``: the bad event rows (original values and index) plus
    a ``reason`` column naming every rule the row broke, joined by ``"; "``; in fail
    mode these rows are only listed, not removed from ``clean``.
    """

    success: bool
    passed: bool
    report: dict[str, Any]
    clean: CanonicalTables
    quarantine: pd.DataFrame


@dataclass
class _Failure:
    info: RuleInfo
    expectation_type: str
    kwargs: dict[str, Any]
    result: dict[str, Any]
    exception: str | None
    positions: np.ndarray | None = None  # rows of the table that broke the rule
    quarantine_positions: np.ndarray | None = None  # rows moved out for this rule


def validate_tables(
    tables: CanonicalTables, params: ValidateParams, *, now: dt.datetime | None = None
) -> ValidationOutcome:
    """Validate the canonical tables with the GX suites of :mod:`recpipe.validation.suites`.

    ``now`` (default: the current time) fixes the "future timestamp" bound. The input
    frames are never modified.

    The report holds ``success``, ``passed``, ``mode``, ``now``, ``counts``
    (``events``, ``items``, ``users``, ``bad_rows``, ``quarantined``, ``bad_fraction``),
    ``failures`` (per failed expectation: ``rule``, ``table``, ``batch``,
    ``expectation``, ``columns``, ``kwargs``, ``description``, ``unexpected_count``,
    ``unexpected_percent`` of the table's rows, ``examples`` and ``example_rows``, up to
    five each), ``expectations`` (all of them with ``success``), ``reasons`` (bad rows
    per rule), ``params`` and ``timings_s``. A ``row`` in the report is a 0-based
    position in the table; the ``quarantine`` frame keeps the input's index labels.
    """
    with _SESSION_LOCK:  # one validation at a time uses the process's GX context
        return _validate(tables, params, now)


def _validate(
    tables: CanonicalTables, params: ValidateParams, now: dt.datetime | None
) -> ValidationOutcome:
    started = time.perf_counter()
    now_ts = resolve_now(now)
    events = positional(tables.events)
    check_refs = checks_references(tables, params)
    session = _session()
    suites = build_suites(params, now=now_ts, check_references=check_refs)
    order = {e.meta["rule"]: i for i, e in enumerate(_expectations(suites))}
    frames: dict[str, pd.DataFrame] = {
        EVENTS: events,
        ITEMS: positional(tables.items),
        USERS: positional(tables.users),
    }
    # The events suite runs in a worker thread while this one derives the other
    # frames: both spend most of their time in Arrow/numpy kernels that release the
    # GIL. Only the worker touches GX until it is joined.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="recpipe-gx") as pool:
        events_run = pool.submit(
            session.run, {EVENTS: suites.pop(EVENTS)}, frames, "BOOLEAN_ONLY", "check"
        )
        frames[EVENTS_DERIVED] = derived_frame(
            events, tables.items, params, check_references=check_refs
        )
        if params.duplicates == "forbid":
            frames[EVENTS_DUPLICATES] = duplicates_frame(events)
        prepared = time.perf_counter()
        first = events_run.result()
    first.update(session.run(suites, frames, "BOOLEAN_ONLY", "check"))
    checked = time.perf_counter()

    all_results: list[tuple[RuleInfo, str, bool]] = []
    for suite_result in first.values():
        for res in suite_result.results:
            all_results.append((_info(res), res.expectation_config.type, bool(res.success)))
    all_results.sort(key=lambda item: order.get(item[0].rule, len(order)))
    failed_rules = {info.rule for info, _, ok in all_results if not ok}

    failures: list[_Failure] = []
    if failed_rules:
        detail_suites = build_suites(
            params, now=now_ts, check_references=check_refs, only=failed_rules
        )
        second = session.run(detail_suites, frames, COMPLETE_FORMAT, "detail")
        for suite_result in second.values():
            for res in suite_result.results:
                if not res.success:
                    failures.append(_failure(res))
        failures.sort(key=lambda f: order.get(f.info.rule, len(order)))
    detailed = time.perf_counter()

    outcome = _outcome(tables, events, params, now_ts, all_results, failures, frames)
    elapsed = time.perf_counter() - started
    outcome.report["timings_s"] = {
        "prepare": round(prepared - started, 4),
        "check": round(checked - prepared, 4),
        "detail": round(detailed - checked, 4),
        "total": round(elapsed, 4),
    }
    counts = outcome.report["counts"]
    log.info(
        "validated %d events in %.2f s: %d of %d expectations passed, %d bad rows, %s",
        counts["events"],
        elapsed,
        sum(1 for _, _, ok in all_results if ok),
        len(all_results),
        counts["bad_rows"],
        "passed" if outcome.passed else "FAILED",
    )
    return outcome


# ----------------------------------------------------------------------------------
# GX plumbing
# ----------------------------------------------------------------------------------


class _GXSession:
    """An in-memory GX context (no files, progress bars or analytics) with our data source.

    One per process (:func:`_session`); the data assets and batch definitions are made
    once, the suites, validation definitions and checkpoints of a call are removed
    after it, and so are their stored results. Callers hold :data:`_SESSION_LOCK`.
    """

    def __init__(self) -> None:
        gx = import_gx()
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            progress_bars=ProgressBarsConfig(globally=False),
            analytics_enabled=False,
        )
        self.context: AbstractDataContext = gx.get_context(project_config=config, mode="ephemeral")
        self.datasource = self.context.data_sources.add_pandas("recpipe")
        self.batch_definitions: dict[str, Any] = {}
        self.calls = itertools.count()

    def batch_definition(self, batch: str) -> Any:
        if batch not in self.batch_definitions:
            asset = self.datasource.add_dataframe_asset(name=batch)
            self.batch_definitions[batch] = asset.add_batch_definition_whole_dataframe("whole")
        return self.batch_definitions[batch]

    def run(
        self,
        suites: dict[str, Any],
        frames: dict[str, pd.DataFrame],
        result_format: str | dict[str, Any],
        tag: str,
    ) -> dict[str, ExpectationSuiteValidationResult]:
        """Run each batch's suite through its own checkpoint; results by batch name."""
        gx = import_gx()
        context = self.context
        results: dict[str, ExpectationSuiteValidationResult] = {}
        with _without_batch_fingerprint():
            for batch, suite in suites.items():
                name = f"recpipe-{batch}-{tag}-{next(self.calls)}"
                suite.name = name
                added: list[Any] = []
                try:
                    suite = context.suites.add(suite)
                    added.append(context.suites)
                    definition = context.validation_definitions.add(
                        gx.ValidationDefinition(
                            name=name, data=self.batch_definition(batch), suite=suite
                        )
                    )
                    added.append(context.validation_definitions)
                    checkpoint = context.checkpoints.add(
                        gx.Checkpoint(
                            name=name,
                            validation_definitions=[definition],
                            result_format=result_format,
                        )
                    )
                    added.append(context.checkpoints)
                    # a shallow copy: GX never gets a handle on the caller's frame object
                    frame = frames[batch].copy(deep=False)
                    run = checkpoint.run(batch_parameters={"dataframe": frame})
                    ((key, results[batch]),) = run.run_results.items()
                    context.validation_results_store.remove_key(key)
                finally:
                    for factory in reversed(added):
                        factory.delete(name)
        return results


_SESSION_LOCK = threading.RLock()
_SESSION: _GXSession | None = None


def _session() -> _GXSession:
    """The process's GX session, made on first use (callers hold ``_SESSION_LOCK``)."""
    global _SESSION
    if _SESSION is None:
        _SESSION = _GXSession()
    return _SESSION


@contextlib.contextmanager
def _without_batch_fingerprint() -> Iterator[None]:
    """Skip GX's whole-frame hash (a batch marker only) while our checkpoints run."""
    from great_expectations.execution_engine import pandas_execution_engine as engine

    if not hasattr(engine, "HASH_THRESHOLD"):  # a GX version without it
        yield
        return
    previous = engine.HASH_THRESHOLD
    engine.HASH_THRESHOLD = 0
    try:
        yield
    finally:
        engine.HASH_THRESHOLD = previous


def _expectations(suites: dict[str, Any]) -> list[Any]:
    """The suites' expectations in suite order."""
    return [e for suite in suites.values() for e in suite.expectations]


def _info(res: ExpectationValidationResult) -> RuleInfo:
    config = res.expectation_config
    return rule_info(config.meta or {}, config.description)


def _failure(res: ExpectationValidationResult) -> _Failure:
    config = res.expectation_config
    info = _info(res)
    kwargs = {k: v for k, v in dict(config.kwargs).items() if k != "batch_id"}
    exception = None
    exc = res.exception_info or {}
    if exc.get("raised_exception"):
        exception = str(exc.get("exception_message") or "unknown error")
    result = dict(res.result or {})
    positions = None
    if exception is None and "unexpected_index_list" in result:
        positions = _positions(result["unexpected_index_list"])
    return _Failure(info, config.type, kwargs, result, exception, positions)


def _positions(index_list: list[Any]) -> np.ndarray:
    """Row positions from GX's unexpected_index_list (ints, or dicts with the index)."""
    if not index_list:
        return np.zeros(0, dtype=np.int64)
    first = index_list[0]
    if isinstance(first, dict):
        values = [next(iter(d.values())) for d in index_list]
        return np.unique(np.asarray(values, dtype=np.int64))
    return np.unique(np.asarray(index_list, dtype=np.int64))


# ----------------------------------------------------------------------------------
# outcome
# ----------------------------------------------------------------------------------


def _outcome(
    tables: CanonicalTables,
    events: pd.DataFrame,
    params: ValidateParams,
    now_ts: pd.Timestamp,
    all_results: list[tuple[RuleInfo, str, bool]],
    failures: list[_Failure],
    batch_frames: dict[str, pd.DataFrame],
) -> ValidationOutcome:
    n = len(events)
    success = all(ok for _, _, ok in all_results)
    quarantine_mode = params.on_failure == "quarantine"

    # per-row reasons (event rules only) ------------------------------------------
    rule_order = [info.rule for info, _, _ in all_results]  # suite order (see validate_tables)
    pieces, table_level = _row_pieces(failures, events, all_results)

    bad_positions, reasons = _reasons(pieces, rule_order)
    bad_rows = len(bad_positions)
    bad_fraction = bad_rows / n if n else 0.0
    passed = success or (
        quarantine_mode and not table_level and bad_fraction <= params.max_bad_fraction
    )

    quarantine = tables.events.iloc[bad_positions].assign(reason=pd.array(reasons, dtype="string"))
    if success or not quarantine_mode or bad_rows == 0:
        clean = tables
        quarantined = 0
    else:
        keep = np.ones(n, dtype=bool)
        keep[bad_positions] = False
        clean = dataclasses.replace(
            tables,
            events=tables.events.iloc[keep].reset_index(drop=True),
            input_files=list(tables.input_files),
        )
        quarantined = bad_rows

    reason_counts: dict[str, int] = {}
    for positions, rule in pieces:
        reason_counts[rule] = reason_counts.get(rule, 0) + len(positions)

    frames = {"events": tables.events, "items": tables.items, "users": tables.users}
    report = _report(
        success=success,
        passed=passed,
        params=params,
        now_ts=now_ts,
        counts={
            "events": n,
            "items": len(tables.items),
            "users": len(tables.users),
            "bad_rows": bad_rows,
            "quarantined": quarantined,
            "bad_fraction": bad_fraction,
        },
        table_level=table_level,
        entries=[_failure_entry(f, frames, batch_frames) for f in failures],
        all_results=all_results,
        reason_counts=reason_counts,
        source=tables.source,
    )
    return ValidationOutcome(
        success=success,
        passed=passed,
        report=report,
        clean=clean,
        quarantine=quarantine,
    )


def _row_pieces(
    failures: list[_Failure],
    events: pd.DataFrame,
    all_results: list[tuple[RuleInfo, str, bool]],
) -> tuple[list[tuple[np.ndarray, str]], bool]:
    """The bad rows of each row-level failure (``(positions, rule)``, in ``failures``
    order; sets each failure's ``quarantine_positions``) and whether a table-level
    rule failed. ``events`` is the frame validated (positional index)."""
    pieces: list[tuple[np.ndarray, str]] = []
    table_level = False
    for failure in failures:
        if failure.positions is None or not failure.info.row_level:
            table_level = True
            continue
        positions = failure.positions
        if failure.info.batch == EVENTS_DUPLICATES:
            # keep the first of each group of equal events; the later copies are bad
            subset = events.iloc[positions][list(DUPLICATE_KEY)]
            positions = positions[subset.duplicated(keep="first").to_numpy()]
        failure.quarantine_positions = positions
        pieces.append((positions, failure.info.rule))
    # a failed expectation whose rerun passed (cannot happen with fixed inputs) still counts
    failed_now = {f.info.rule for f in failures}
    for info, _, ok in all_results:
        if not ok and info.rule not in failed_now:
            table_level = True
    return pieces, table_level


def _report(
    *,
    success: bool,
    passed: bool,
    params: ValidateParams,
    now_ts: pd.Timestamp,
    counts: dict[str, Any],
    table_level: bool,
    entries: list[dict[str, Any]],
    all_results: list[tuple[RuleInfo, str, bool]],
    reason_counts: dict[str, int],
    source: str,
) -> dict[str, Any]:
    """The JSON-able report (the layout :func:`validate_tables` documents)."""
    report: dict[str, Any] = {
        "success": success,
        "passed": passed,
        "mode": params.on_failure,
        "now": now_ts.isoformat(),
        "counts": counts,
        "max_bad_fraction": params.max_bad_fraction,
        "table_level_failure": table_level,
        "failures": entries,
        "expectations": [
            {
                "rule": info.rule,
                "table": info.table,
                "batch": info.batch,
                "expectation": etype,
                "description": info.description,
                "success": ok,
            }
            for info, etype, ok in all_results
        ],
        "reasons": reason_counts,
        "params": params.model_dump(mode="json"),
        "source": source,
    }
    return to_jsonable(report)


def _reasons(
    pieces: list[tuple[np.ndarray, str]], rule_order: list[str]
) -> tuple[np.ndarray, list[str]]:
    """Sorted bad row positions and, for each, its broken rules joined in suite order."""
    if not pieces or not any(len(p) for p, _ in pieces):
        return np.zeros(0, dtype=np.int64), []
    rank = {rule: i for i, rule in enumerate(rule_order)}
    ordered = sorted(pieces, key=lambda piece: rank.get(piece[1], len(rank)))
    positions = np.concatenate([p for p, _ in ordered])
    codes = np.concatenate([np.full(len(p), i, dtype=np.int64) for i, (p, _) in enumerate(ordered)])
    names = np.array([rule for _, rule in ordered], dtype=object)
    order = np.lexsort((codes, positions))
    positions, codes = positions[order], codes[order]
    unique_positions, starts = np.unique(positions, return_index=True)
    bounds = [*starts.tolist(), len(positions)]
    reasons = [
        REASON_SEPARATOR.join(names[codes[a:b]].tolist()) for a, b in itertools.pairwise(bounds)
    ]
    return unique_positions, reasons


def _failure_entry(
    failure: _Failure, frames: dict[str, pd.DataFrame], batch_frames: dict[str, pd.DataFrame]
) -> dict[str, Any]:
    """The report entry of one failed expectation (``frames``: tables by name)."""
    info = failure.info
    table_rows = len(frames[info.table])
    result = failure.result
    count = result.get("unexpected_count")
    if count is None and failure.positions is not None:
        count = len(failure.positions)
    entry: dict[str, Any] = {
        "rule": info.rule,
        "table": info.table,
        "batch": info.batch,
        "expectation": failure.expectation_type,
        "columns": _columns(failure.kwargs),
        "kwargs": _summarise_kwargs(failure.kwargs),
        "description": info.description,
        "unexpected_count": count,
        "unexpected_percent": (100.0 * count / table_rows)
        if count is not None and table_rows
        else None,
        "examples": [],
        "example_rows": [],
    }
    if failure.quarantine_positions is not None and info.batch == EVENTS_DUPLICATES:
        # GX counts every copy; only the copies after the first are bad rows
        entry["repeated_rows"] = len(failure.quarantine_positions)
    if failure.exception is not None:
        entry["error"] = failure.exception
    if "observed_value" in result:
        entry["observed_value"] = result["observed_value"]
    if "details" in result:
        entry["details"] = result["details"]
    if failure.positions is not None and len(failure.positions):
        first = failure.positions[:N_EXAMPLES]
        # the offending values, from the frame GX validated (index label = table row)
        checked = batch_frames[info.batch].loc[first, entry["columns"]]
        if len(entry["columns"]) == 1:
            entry["examples"] = checked.iloc[:, 0].tolist()
        else:
            entry["examples"] = checked.to_dict(orient="records")
        rows = frames[info.table].iloc[first]
        entry["example_rows"] = [
            {"row": int(pos), **row}
            for pos, row in zip(first, rows.to_dict(orient="records"), strict=True)
        ]
    return entry


def _columns(kwargs: dict[str, Any]) -> list[str]:
    if "column" in kwargs:
        return [str(kwargs["column"])]
    if "column_list" in kwargs:
        return [str(c) for c in kwargs["column_list"]]
    if "column_set" in kwargs:
        return [str(c) for c in kwargs["column_set"] or []]
    return []


def _summarise_kwargs(kwargs: dict[str, Any], max_items: int = 10) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in ("column", "column_list", "catch_exceptions", "result_format"):
            continue
        if isinstance(value, list | tuple | set) and len(value) > max_items:
            items = list(value)
            value = [*items[:max_items], f"... ({len(items)} values)"]
        out[key] = value
    return out


def to_jsonable(value: Any) -> Any:
    """Convert numpy/pandas scalars, timestamps and NA to plain JSON values."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, pd.Timestamp | dt.datetime | dt.date):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, pd.Timedelta | dt.timedelta):
        return str(value)
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(value, "to_json_dict"):
        return to_jsonable(value.to_json_dict())
    return str(value)


__all__ = ["ValidationOutcome", "to_jsonable", "validate_tables"]
