"""The ingest and validate stages on the arrow engine write the pandas engine's outputs.

Both engines run the stage functions on the same raw files (written here from the
synthetic generator, or the real data sets when present) in separate workspaces;
the arrow engine with small ``prep.batch_rows`` (many batches) and 1 and 7 partitions.
Compared: the canonical events (sorted by all columns, index reset, dtypes equal),
the manifests (equal, ``content_hash`` included: the arrow engine's Parquet files are
byte for byte the pandas engine's), the validation report (JSON, ``timings_s`` aside,
and Markdown), the quarantine (rows and summary) and the validated tables. The
"future timestamp" bound is pinned so that both reports share one ``now``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recpipe.config import Params, load_params
from recpipe.data.chunked import read_side_tables
from recpipe.errors import DataImportError, DataValidationError
from recpipe.paths import Paths
from recpipe.stages import ingest, validate

SMALL = ["synth.n_users=60", "synth.n_items=40", "synth.n_sessions=300", "synth.days=6"]
NOW = pd.Timestamp("2026-06-01T00:00:00Z")


@pytest.fixture(autouse=True)
def _fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    from recpipe.validation import partitioned, runner, suites

    def fixed(now: dt.datetime | None = None) -> pd.Timestamp:
        return NOW if now is None else suites.resolve_now(now)

    monkeypatch.setattr(runner, "resolve_now", fixed)
    monkeypatch.setattr(partitioned, "resolve_now", fixed)


def _synthetic() -> tuple[pd.DataFrame, pd.DataFrame]:
    from recpipe.data.synth import generate

    tables = generate(load_params(None, SMALL).synth)
    return tables.events, tables.items


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    columns = [
        c
        for c in frame.columns
        if frame[c].dtype != object or not any(isinstance(v, list | np.ndarray) for v in frame[c])
    ]
    return frame.sort_values(columns, kind="stable", na_position="first").reset_index(drop=True)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _run(root: Path, overrides: list[str]) -> dict[str, Any]:
    """Run ingest and validate in the workspace ``root``; collect every output."""
    paths = Paths.at(root)
    params: Params = load_params(None, overrides)
    out: dict[str, Any] = {"manifest": ingest(params, paths)}
    try:
        validate(params, paths)
        out["error"] = None
    except DataValidationError as exc:
        out["error"] = str(exc)
    report = _read_json(paths.validation_json)
    out["timings"] = report.pop("timings_s")
    out["report"] = report
    out["report_md"] = paths.validation_md.read_text()
    out["interim"] = {
        "events": pd.read_parquet(paths.interim_dir / "events.parquet"),
        "manifest": _read_json(paths.interim_dir / "manifest.json"),
        "bytes": (paths.interim_dir / "events.parquet").read_bytes(),
    }
    out["quarantine"] = {
        "events": pd.read_parquet(paths.quarantine_dir / "events.parquet"),
        "summary": _read_json(paths.quarantine_dir / "summary.json"),
    }
    validated = paths.validated_dir
    out["validated"] = None
    if validated.exists():
        out["validated"] = {
            p.name: pd.read_parquet(p) if p.suffix == ".parquet" else _read_json(p)
            for p in sorted(validated.iterdir())
        }
    out["leftovers"] = sorted(p.name for p in paths.data_dir.iterdir() if p.name.startswith("."))
    return out


def _assert_same(got: dict[str, Any], want: dict[str, Any], label: str) -> None:
    assert got["manifest"] == want["manifest"], label
    assert got["interim"]["manifest"] == want["interim"]["manifest"], label
    pd.testing.assert_frame_equal(
        _canonical(got["interim"]["events"]), _canonical(want["interim"]["events"]), obj=label
    )
    assert got["interim"]["bytes"] == want["interim"]["bytes"], label
    assert got["report"] == want["report"], label
    assert got["report_md"] == want["report_md"], label
    assert got["error"] == want["error"], label
    assert got["quarantine"]["summary"] == want["quarantine"]["summary"], label
    pd.testing.assert_frame_equal(
        _canonical(got["quarantine"]["events"]), _canonical(want["quarantine"]["events"]), obj=label
    )
    assert (got["validated"] is None) == (want["validated"] is None), label
    if want["validated"] is not None:
        assert list(got["validated"]) == list(want["validated"]), label
        for name, table in want["validated"].items():
            if isinstance(table, pd.DataFrame):
                pd.testing.assert_frame_equal(
                    _canonical(got["validated"][name]), _canonical(table), obj=f"{label} {name}"
                )
            else:
                assert got["validated"][name] == table, f"{label} {name}"
    assert got["leftovers"] == [], label


def _compare(
    tmp_path: Path, overrides: list[str], partitions: tuple[int, ...] = (1, 7), batch_rows: int = 97
) -> dict[str, Any]:
    """Run both engines; assert the same outputs; return the pandas engine's."""
    want = _run(tmp_path / "pandas", overrides)
    for n in partitions:
        root = tmp_path / f"arrow{n}"
        arrow = [*overrides, "prep.engine=arrow", f"prep.partitions={n}"]
        got = _run(root, [*arrow, f"prep.batch_rows={batch_rows}"])
        _assert_same(got, want, f"{n} partitions")
        assert got["timings"]["partitions"] <= n
        shutil.rmtree(root)
    return want


def _write_raw(events: pd.DataFrame, items: pd.DataFrame, folder: Path, kind: str) -> list[str]:
    """Write raw events (ISO text timestamps in CSV) and an items table; the overrides."""
    folder.mkdir(parents=True, exist_ok=True)
    items.to_parquet(folder / "items.parquet", index=False)
    if kind == "csv":
        raw = events.assign(timestamp=events["timestamp"].map(lambda t: t.isoformat()))
        raw.to_csv(folder / "events.csv", index=False)
        path = folder / "events.csv"
    else:
        events.to_parquet(folder / "events.parquet", index=False, row_group_size=150)
        path = folder / "events.parquet"
    return [
        f"data.source={kind}",
        f"data.path={path}",
        f"data.items_path={folder / 'items.parquet'}",
    ]


# ------------------------------------------------------------------------ clean ---


@pytest.mark.parametrize(("kind", "partitions"), [("csv", 7), ("parquet", 1)])
def test_clean_data_same_tables(tmp_path: Path, kind: str, partitions: int) -> None:
    events, items = _synthetic()
    overrides = _write_raw(events, items, tmp_path / "raw", kind)
    want = _compare(tmp_path, overrides, partitions=(partitions,))
    assert want["report"]["success"] and want["error"] is None
    assert want["manifest"]["rows"]["events"] == len(events) > 1000  # ~10+ batches of 97


def _dirty(events: pd.DataFrame) -> pd.DataFrame:
    """Every kind of bad row, some of them repeated far apart (across batches)."""
    ev = events.copy()
    n = len(ev)
    ev.loc[3, "event_type"] = "teleport"  # unknown event type
    ev.loc[11, "item_id"] = None  # null item
    ev.loc[12, ["user_id", "session_id"]] = None  # nobody
    ev.loc[13, "user_id"] = None  # anonymous, has a session
    ev.loc[20, ["event_type", "value"]] = ["rating", 11.0]  # rating out of range
    ev.loc[30, "timestamp"] = pd.Timestamp("2099-01-01T00:00:00Z")  # future
    ev.loc[40, "item_id"] = "no-such-item"  # unknown item
    ev.loc[50, "user_id"] = "-7"  # negative-looking id
    ev.loc[60, "value"] = np.nan  # null value
    # duplicates: exact copies of (some bad) rows appended at the end, batches apart;
    # row 12 (nobody) and 13 (anonymous) test the shared/session buckets
    copies = ev.iloc[[5, 12, 13, 13, n - 1, 40]]
    return pd.concat([ev, copies], ignore_index=True)


def test_dirty_data_fails_with_same_report(tmp_path: Path) -> None:
    events, items = _synthetic()
    overrides = _write_raw(_dirty(events), items, tmp_path / "raw", "csv")
    want = _compare(tmp_path, [*overrides, "validate.on_failure=fail"], partitions=(7,))
    assert want["error"] is not None and want["validated"] is None
    failed = {f["rule"] for f in want["report"]["failures"]}
    assert {
        "event_type_known",
        "item_id_not_null",
        "user_or_session_not_null",
        "rating_in_range",
        "timestamp_in_range",
        "item_id_in_items",
        "user_id_not_negative",
        "value_not_null",
        "no_duplicate_events",
    } <= failed
    dup = next(f for f in want["report"]["failures"] if f["rule"] == "no_duplicate_events")
    assert dup["repeated_rows"] == 6 and dup["unexpected_count"] == 11


@pytest.mark.parametrize(("kind", "partitions"), [("csv", 1), ("parquet", 7)])
def test_dirty_data_quarantined_same_tables(tmp_path: Path, kind: str, partitions: int) -> None:
    events, items = _synthetic()
    overrides = _write_raw(_dirty(events), items, tmp_path / "raw", kind)
    quarantine = ["validate.on_failure=quarantine", "validate.max_bad_fraction=0.05"]
    want = _compare(tmp_path, [*overrides, *quarantine], partitions=(partitions,))
    assert want["error"] is None and want["report"]["passed"]
    assert want["report"]["counts"]["quarantined"] == len(want["quarantine"]["events"]) > 10
    kept = want["validated"]["events.parquet"]
    assert len(kept) == len(want["interim"]["events"]) - want["report"]["counts"]["quarantined"]


def test_check_partition_frees_its_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GX run leaves the partition's frames in reference cycles (pydantic v1's union
    parsing keeps exceptions whose tracebacks hold the running calls' frames): once
    ``COLLECT_ROWS`` rows were checked, check_partition collects them before returning,
    so a worker checking partition after partition does not hold earlier ones."""
    import gc
    import weakref

    from recpipe.validation import partitioned
    from recpipe.validation.runner import _expectations, _session
    from recpipe.validation.suites import build_suites, checks_references

    events, items = _synthetic()
    overrides = _write_raw(_dirty(events), items, tmp_path / "raw", "parquet")
    params = load_params(None, [*overrides, "validate.on_failure=quarantine"])
    paths = Paths.at(tmp_path / "ws")
    ingest(params, paths)
    events_path = paths.interim_dir / "events.parquet"
    files, n = partitioned.partition_events(events_path, tmp_path / "work", 1, 1000)
    side = read_side_tables(paths.interim_dir)
    check_refs = checks_references(side, params.validate_)
    with partitioned._SESSION_LOCK:
        _session()  # GX suites are built in a context
        suites = build_suites(params.validate_, now=NOW, check_references=check_refs)
        order = [e.meta["rule"] for e in _expectations(suites)]
    made: list[weakref.ref[pd.DataFrame]] = []
    read = partitioned._read_partition

    def reading(path: Any, source: Any) -> tuple[pd.DataFrame, np.ndarray]:
        frame, rows = read(path, source)
        made.append(weakref.ref(frame))
        return frame, rows

    monkeypatch.setattr(partitioned, "_read_partition", reading)
    monkeypatch.setattr(partitioned, "COLLECT_ROWS", n)  # one partition's rows
    gc.collect()
    gc.disable()  # only check_partition's collection may free the cycles
    try:
        check = partitioned.check_partition(
            files[0], events_path, params.validate_, NOW, check_refs, side.items, order
        )
        assert len(made) == 1 and made[0]() is None
        assert check.rows == n and len(check.bad_rows) > 10
    finally:
        gc.enable()


def test_failed_validation_leaves_validated_and_cleans_work_dir(tmp_path: Path) -> None:
    events, items = _synthetic()
    raw = tmp_path / "raw"
    overrides = [
        *_write_raw(events, items, raw, "csv"),
        "prep.engine=arrow",
        "prep.batch_rows=200",
        "prep.partitions=2",
    ]
    paths = Paths.at(tmp_path / "ws")
    ingest(load_params(None, overrides), paths)
    validate(load_params(None, overrides), paths)
    before = (paths.validated_dir / "events.parquet").read_bytes()
    # a later, dirty drop fails: data/validated stays, the reports are rewritten
    _write_raw(_dirty(events), items, raw, "csv")
    ingest(load_params(None, overrides), paths)
    with pytest.raises(DataValidationError, match="event_type_known"):
        validate(load_params(None, overrides), paths)
    assert (paths.validated_dir / "events.parquet").read_bytes() == before
    assert _read_json(paths.validation_json)["passed"] is False
    assert not [p for p in paths.data_dir.iterdir() if p.name.startswith(".")]


def test_work_dir_removed_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recpipe.validation import partitioned

    events, items = _synthetic()
    overrides = [
        *_write_raw(events, items, tmp_path / "raw", "parquet"),
        "prep.engine=arrow",
        "prep.partitions=2",
    ]
    paths = Paths.at(tmp_path / "ws")
    ingest(load_params(None, overrides), paths)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(partitioned, "derived_frame", boom)
    with pytest.raises(RuntimeError, match="boom"):
        validate(load_params(None, overrides), paths)
    assert not [p for p in paths.data_dir.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- bad raw input ---


def _both_errors(tmp_path: Path, overrides: list[str]) -> tuple[str, str]:
    messages = []
    for engine in ("pandas", "arrow"):
        params = load_params(None, [*overrides, f"prep.engine={engine}", "prep.batch_rows=50"])
        paths = Paths.at(tmp_path / engine)
        with pytest.raises(DataImportError) as info:
            ingest(params, paths)
        assert not paths.interim_dir.exists() or not any(paths.interim_dir.iterdir())
        messages.append(str(info.value))
    return messages[0], messages[1]


def _bad_csv(tmp_path: Path, line: int, text: str) -> list[str]:
    events, _ = _synthetic()
    path = tmp_path / "events.csv"
    raw = events.head(300).assign(timestamp=lambda f: f["timestamp"].map(lambda t: t.isoformat()))
    raw.to_csv(path, index=False)
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")
    return ["data.source=csv", f"data.path={path}"]


def test_bad_value_same_error(tmp_path: Path) -> None:
    # a non-numeric value in a late batch: located over the whole file by both engines
    overrides = _bad_csv(tmp_path, 250, "u1,i1,2026-01-01T00:00:00+00:00,view,abc,s1")
    pandas_msg, arrow_msg = _both_errors(tmp_path, overrides)
    assert arrow_msg == pandas_msg
    assert "line 250" in arrow_msg and "'abc'" in arrow_msg and "events.csv" in arrow_msg


def test_wrong_field_count_same_error(tmp_path: Path) -> None:
    overrides = _bad_csv(tmp_path, 280, "u1,i1,2026-01-01T00:00:00+00:00,view")
    pandas_msg, arrow_msg = _both_errors(tmp_path, overrides)
    assert arrow_msg == pandas_msg and "line 280" in arrow_msg


def test_bad_timestamp_names_file_and_row(tmp_path: Path) -> None:
    overrides = _bad_csv(tmp_path, 200, "u1,i1,not-a-time,view,1.0,s1")
    pandas_msg, arrow_msg = _both_errors(tmp_path, overrides)
    for message in (pandas_msg, arrow_msg):
        assert "events.csv" in message and "row 198: 'not-a-time'" in message
    assert "data rows 150-199" in arrow_msg  # the batch the count is about


# ------------------------------------------------------------------------ stats ---


def test_incremental_stats_equal_table_stats() -> None:
    from recpipe.data.chunked import EventStats
    from recpipe.data.schema import CanonicalTables, table_stats

    events = pd.DataFrame(
        {
            "user_id": ["b", "a", None, "a", "c", "d"],
            "item_id": ["x", "y", "x", "z", None, "x"],
            "timestamp": pd.to_datetime([None, 5, 3, 9, 1, 4], unit="s", utc=True),
            "event_type": ["cart", "view", "view", "cart", None, "buy"],
            "value": 1.0,
            "session_id": [None, None, "s", "s", "t", None],
        }
    )
    tables = CanonicalTables(events=events, source="t")
    stats = EventStats()
    for lo in range(0, 6, 2):
        stats.update(tables.events.iloc[lo : lo + 2])
    got = stats.result("t", 0, 0)
    want = table_stats(tables)
    assert json.dumps(got) == json.dumps(want)  # same order of event types, too


# --------------------------------------------------------------------- real data ---


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize(
    ("folder", "file", "options"),
    [
        (
            "yoochoose-rsc15-100k",
            "yoochoose-clicks-100k_train_full.txt",
            [
                "data.sep=tab",
                "data.timestamp_unit=s",
                "data.columns.session_id=SessionId",
                "data.columns.item_id=ItemId",
                "data.columns.timestamp=Time",
                "data.columns.user_id=null",
                "data.columns.event_type=null",
                "data.columns.value=null",
            ],
        ),
        (
            "diginetica",
            "sample_train-item-views.csv",
            [
                "data.sep=;",
                "data.columns.timestamp=eventdate",
                "data.columns.event_type=null",
                "data.columns.value=null",
                "data.default_event_type=view",
            ],
        ),
    ],
)
def test_real_data(
    tmp_path: Path, real_data: Path, folder: str, file: str, options: list[str]
) -> None:
    path = real_data / folder / file
    if not path.exists():
        pytest.skip(f"{path} not found")
    overrides = ["data.source=csv", f"data.path={path}", *options]
    want = _compare(tmp_path, overrides, partitions=(7,), batch_rows=5000)
    assert want["manifest"]["rows"]["events"] > 10_000
