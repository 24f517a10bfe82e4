"""Great Expectations validation: every rule, quarantine, reports, speed-critical helpers."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recpipe.config import ValidateParams
from recpipe.data.schema import EVENT_COLUMNS, CanonicalTables
from recpipe.errors import DataValidationError
from recpipe.validation import (
    format_markdown,
    format_report,
    raise_if_failed,
    validate_tables,
    write_quarantine,
    write_report,
)
from recpipe.validation.suites import (
    DUPLICATE_KEY,
    _string_key,
    duplicate_candidates,
    import_gx,
)

NOW = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
N = 20


@pytest.fixture(scope="module", autouse=True)
def _gx_imported() -> None:
    """Import great_expectations once for the module (~3 s)."""
    import_gx()


def events_frame(n: int = N) -> pd.DataFrame:
    """A clean events frame: unique hourly timestamps, every event type, items i0..i6."""
    event_types = ["view", "click", "cart", "purchase", "rating"]
    types = [event_types[i % 5] for i in range(n)]
    return pd.DataFrame(
        {
            "user_id": [f"u{i % 5}" for i in range(n)],
            "item_id": [f"i{i % 7}" for i in range(n)],
            "timestamp": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"),
            "event_type": types,
            "value": [4.0 if t == "rating" else 1.0 for t in types],
            "session_id": [f"s{i // 4}" for i in range(n)],
        }
    )


def items_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"item_id": [f"i{i}" for i in range(7)], "title": [f"t{i}" for i in range(7)]}
    )


def tables_with(
    events: pd.DataFrame, items: pd.DataFrame | None = None, **kw: Any
) -> CanonicalTables:
    return CanonicalTables(events=events, items=items_frame() if items is None else items, **kw)


def with_values(row: int, **values: Any) -> pd.DataFrame:
    frame = events_frame()
    for column, value in values.items():
        frame.loc[row, column] = value
    return frame


def run(tables: CanonicalTables, **params: Any):
    return validate_tables(tables, ValidateParams(**params), now=NOW)


def failed(outcome) -> dict[str, dict[str, Any]]:
    return {f["rule"]: f for f in outcome.report["failures"]}


# --- the clean case ------------------------------------------------------------------


def test_clean_tables_pass() -> None:
    tables = tables_with(events_frame())
    outcome = run(tables)
    assert outcome.success and outcome.passed
    assert outcome.clean is tables
    assert outcome.quarantine.empty
    assert list(outcome.quarantine.columns) == [*EVENT_COLUMNS, "reason"]
    report = outcome.report
    assert report["failures"] == []
    assert report["counts"] == {
        "events": N,
        "items": 7,
        "users": 0,
        "bad_rows": 0,
        "quarantined": 0,
        "bad_fraction": 0.0,
    }
    rules = {e["rule"] for e in report["expectations"]}
    assert {
        "events_columns",
        "item_id_not_null",
        "user_or_session_not_null",
        "user_id_not_negative",
        "event_type_known",
        "timestamp_in_range",
        "rating_in_range",
        "value_not_null",
        "no_duplicate_events",
        "item_id_in_items",
        "items_item_id_unique",
        "users_user_id_unique",
    } <= rules
    assert all(e["success"] for e in report["expectations"])
    assert all(e["expectation"].startswith("expect_") for e in report["expectations"])


# --- every rule, each broken on rows of its own ------------------------------------

#: rule -> (row -> values to break it, the examples and rows the report must show)
BROKEN: dict[str, tuple[dict[int, dict[str, Any]], list[Any]]] = {
    "item_id_not_null": ({3: {"item_id": None}}, [None]),
    "user_or_session_not_null": ({4: {"user_id": None, "session_id": None}}, [None]),
    "user_id_not_negative": ({5: {"user_id": "-5"}}, ["-5"]),
    "session_id_not_negative": ({6: {"session_id": "-12"}}, ["-12"]),
    "event_type_known": ({7: {"event_type": "bogus"}}, ["bogus"]),
    "rating_in_range": ({9: {"value": 7.5}, 14: {"value": 0.0}}, [7.5, 0.0]),
    "value_not_null": ({2: {"value": np.nan}}, [None]),
    "timestamp_in_range": (
        {
            1: {"timestamp": pd.Timestamp("1980-05-01T00:00Z")},  # too old
            8: {"timestamp": pd.Timestamp("2024-06-01T02:00Z")},  # future (now + 2 h)
        },
        ["1980-05-01T00:00:00+00:00", "2024-06-01T02:00:00+00:00"],
    ),
}


@pytest.fixture(scope="module")
def broken_outcome():
    """One validation of a frame that breaks every rule of BROKEN on its own rows."""
    frame = events_frame()
    for mutations, _ in BROKEN.values():
        for row, values in mutations.items():
            for column, value in values.items():
                frame.loc[row, column] = value
    return run(tables_with(frame))


def test_an_unknown_event_type_points_at_the_mapping_param(broken_outcome) -> None:
    assert "data.event_type_map" in failed(broken_outcome)["event_type_known"]["description"]
    assert "data.event_type_map" in format_report(broken_outcome)


def test_every_broken_rule_and_only_those_fail(broken_outcome) -> None:
    assert not broken_outcome.success and not broken_outcome.passed
    assert set(failed(broken_outcome)) == set(BROKEN)
    assert broken_outcome.report["counts"]["bad_rows"] == sum(len(m) for m, _ in BROKEN.values())


@pytest.mark.parametrize("rule", list(BROKEN))
def test_each_rule_is_named_with_count_and_examples(broken_outcome, rule: str) -> None:
    mutations, examples = BROKEN[rule]
    f = failed(broken_outcome)[rule]
    assert f["unexpected_count"] == len(mutations)
    assert f["unexpected_percent"] == pytest.approx(100.0 * len(mutations) / N)
    assert f["examples"] == examples
    assert [r["row"] for r in f["example_rows"]] == sorted(mutations)
    assert f["expectation"].startswith("expect_") and f["table"] == "events"
    text = format_report(broken_outcome)
    assert f"{rule} - {f['expectation']}" in text
    assert f"{len(mutations)} unexpected" in text


def test_negative_item_id_is_named() -> None:
    # no items table: only the negative-id rule can fire
    outcome = run(tables_with(with_values(2, item_id="-3"), items=pd.DataFrame({"item_id": []})))
    f = failed(outcome)
    assert set(f) == {"item_id_not_negative"}
    assert f["item_id_not_negative"]["examples"] == ["-3"]


def test_tricky_but_valid_data_passes() -> None:
    frame = events_frame()
    frame["session_id"] = [f"a-{i // 4}" for i in range(N)]  # a dash inside is fine
    frame.loc[0:4, "user_id"] = None  # session only
    frame.loc[5:9, "session_id"] = None  # user only
    frame.loc[10:15, "timestamp"] = pd.Timestamp("2024-01-02", tz="UTC")  # ties, other events
    frame.loc[[4, 9], "value"] = [0.5, 5.0]  # ratings on the bounds
    frame.loc[19, "timestamp"] = pd.Timestamp("2024-06-01T01:00Z")  # now + max_future_seconds
    frame.loc[17, "event_type"] = "like"
    params = {"event_types": ["view", "click", "cart", "purchase", "rating", "like"]}
    outcome = run(tables_with(frame), **params)
    assert outcome.success, format_report(outcome)


def test_now_is_injectable_and_bounds_come_from_params() -> None:
    frame = with_values(8, timestamp=pd.Timestamp("2024-06-01T00:30Z"))
    strict = ValidateParams(max_future_seconds=0, rating_min=4.5)
    outcome = validate_tables(tables_with(frame), strict, now=NOW)
    assert set(failed(outcome)) == {"timestamp_in_range", "rating_in_range"}
    later = validate_tables(tables_with(frame), strict, now=dt.datetime(2024, 7, 1, tzinfo=dt.UTC))
    assert set(failed(later)) == {"rating_in_range"}


def test_duplicates_forbid_versus_allow() -> None:
    frame = pd.concat([events_frame(), events_frame().iloc[[3, 3, 11]]], ignore_index=True)
    forbid = run(tables_with(frame), duplicates="forbid")
    f = failed(forbid)
    assert set(f) == {"no_duplicate_events"}
    # GX counts every copy: rows 3, 20, 21 (one group) and 11, 22
    assert f["no_duplicate_events"]["unexpected_count"] == 5
    assert f["no_duplicate_events"]["repeated_rows"] == 3
    assert f["no_duplicate_events"]["columns"] == list(DUPLICATE_KEY)
    assert [r["row"] for r in f["no_duplicate_events"]["example_rows"]] == [3, 11, 20, 21, 22]
    assert run(tables_with(frame), duplicates="allow").success


def test_duplicates_with_null_session_compare_equal() -> None:
    frame = events_frame()
    frame["session_id"] = None
    frame = pd.concat([frame, frame.iloc[[5]]], ignore_index=True)
    assert failed(run(tables_with(frame)))["no_duplicate_events"]["unexpected_count"] == 2


def test_event_item_missing_from_items_table() -> None:
    items = items_frame()
    items = items[items["item_id"] != "i3"]
    outcome = run(tables_with(events_frame(), items=items))
    f = failed(outcome)
    assert set(f) == {"item_id_in_items"}
    expected_rows = [i for i in range(N) if i % 7 == 3]
    assert f["item_id_in_items"]["unexpected_count"] == len(expected_rows)
    assert f["item_id_in_items"]["examples"] == ["i3"] * len(expected_rows)
    assert [r["row"] for r in f["item_id_in_items"]["example_rows"]] == expected_rows
    # no check when the items table is empty or the check is off
    assert run(tables_with(events_frame(), items=pd.DataFrame({"item_id": []}))).success
    assert run(tables_with(events_frame(), items=items), referential_integrity=False).success


def test_duplicate_item_ids_fail_and_cannot_be_quarantined() -> None:
    items = pd.concat([items_frame(), items_frame().iloc[[2]]], ignore_index=True)
    outcome = run(tables_with(events_frame(), items=items), on_failure="quarantine")
    f = failed(outcome)
    assert set(f) == {"items_item_id_unique"}
    assert f["items_item_id_unique"]["unexpected_count"] == 2
    assert f["items_item_id_unique"]["examples"] == ["i2", "i2"]
    assert outcome.report["counts"]["bad_rows"] == 0
    assert not outcome.passed  # a table-level failure is not fixed by moving event rows


def test_extra_events_column_fails_the_table_rule() -> None:
    tables = tables_with(events_frame())
    tables.events = tables.events.assign(extra=1)  # CanonicalTables would drop it
    outcome = run(tables, on_failure="quarantine")
    f = failed(outcome)
    assert set(f) == {"events_columns"}
    assert f["events_columns"]["details"] == {"mismatched": {"unexpected": ["extra"]}}
    assert not outcome.passed and outcome.report["table_level_failure"]
    assert "events_columns" in format_report(outcome)


def test_duplicate_user_ids_fail() -> None:
    users = pd.DataFrame({"user_id": ["u1", "u2", "u1"]})
    outcome = run(tables_with(events_frame(), users=users))
    assert set(failed(outcome)) == {"users_user_id_unique"}


# --- quarantine -----------------------------------------------------------------------


def bad_frame() -> pd.DataFrame:
    frame = events_frame()
    frame.loc[3, "item_id"] = None
    frame.loc[5, ["user_id", "event_type"]] = ["-5", "bogus"]
    frame.loc[9, "value"] = 9.0
    frame.loc[12, ["user_id", "session_id"]] = [None, None]
    frame = pd.concat([frame, frame.iloc[[15]]], ignore_index=True)  # row 20 repeats 15
    return frame


@pytest.fixture(scope="module")
def quarantined() -> tuple[CanonicalTables, Any]:
    """The tables of bad_frame() and their validation in quarantine mode (tolerance 50%)."""
    tables = tables_with(bad_frame())
    before = tables.events.copy(deep=True)
    outcome = run(tables, on_failure="quarantine", max_bad_fraction=0.5)
    pd.testing.assert_frame_equal(tables.events, before)
    return tables, outcome


def test_quarantine_moves_bad_rows_with_reasons_and_loses_nothing(quarantined) -> None:
    tables, outcome = quarantined
    frame = bad_frame()
    assert not outcome.success and outcome.passed
    q = outcome.quarantine
    assert q.index.tolist() == [3, 5, 9, 12, 20]
    assert q["reason"].tolist() == [
        "item_id_not_null",
        "user_id_not_negative; event_type_known",
        "rating_in_range",
        "user_or_session_not_null",
        "no_duplicate_events",
    ]
    # original values untouched
    pd.testing.assert_frame_equal(q.drop(columns="reason"), tables.events.loc[[3, 5, 9, 12, 20]])
    clean = outcome.clean.events
    kept = [i for i in range(len(frame)) if i not in {3, 5, 9, 12, 20}]
    pd.testing.assert_frame_equal(clean, tables.events.loc[kept].reset_index(drop=True))
    assert len(clean) + len(q) == len(frame)
    counts = outcome.report["counts"]
    assert counts["bad_rows"] == counts["quarantined"] == 5
    assert counts["bad_fraction"] == pytest.approx(5 / 21)
    assert outcome.report["reasons"] == {
        "item_id_not_null": 1,
        "user_id_not_negative": 1,
        "event_type_known": 1,
        "user_or_session_not_null": 1,
        "rating_in_range": 1,
        "no_duplicate_events": 1,
    }
    pd.testing.assert_frame_equal(outcome.clean.items, tables.items)
    # the clean tables validate
    assert run(outcome.clean).success


def test_quarantine_over_tolerance_does_not_pass() -> None:
    outcome = run(tables_with(bad_frame()), on_failure="quarantine", max_bad_fraction=0.2)
    assert not outcome.passed
    assert outcome.report["counts"]["quarantined"] == 5
    assert "above validate.max_bad_fraction" in format_report(outcome)
    with pytest.raises(DataValidationError) as err:
        raise_if_failed(outcome)
    assert err.value.report is outcome.report


def test_fail_mode_keeps_input_lists_bad_rows_and_modifies_nothing() -> None:
    tables = tables_with(bad_frame().set_axis(range(100, 121)))
    before = {name: getattr(tables, name).copy(deep=True) for name in ("events", "items", "users")}
    ids = {name: id(getattr(tables, name)) for name in before}
    outcome = run(tables)
    assert not outcome.passed
    assert outcome.clean is tables
    assert outcome.report["counts"]["quarantined"] == 0
    assert outcome.report["counts"]["bad_rows"] == 5
    assert outcome.quarantine.index.tolist() == [103, 105, 109, 112, 120]  # the input's labels
    assert [r["row"] for r in failed(outcome)["rating_in_range"]["example_rows"]] == [9]
    for name, frame in before.items():  # the input frames are untouched
        assert id(getattr(tables, name)) == ids[name]
        pd.testing.assert_frame_equal(getattr(tables, name), frame)


def test_report_is_json_and_written(quarantined, tmp_path) -> None:
    _, outcome = quarantined
    text = json.dumps(outcome.report, allow_nan=False)
    assert json.loads(text) == outcome.report
    write_report(outcome, tmp_path / "reports" / "validation.json", tmp_path / "reports" / "v.md")
    saved = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert saved["passed"] is True and saved["mode"] == "quarantine"
    assert {"events", "bad_rows", "quarantined", "bad_fraction"} <= set(saved["counts"])
    md = (tmp_path / "reports" / "v.md").read_text()
    assert md == format_markdown(outcome)
    for rule in ("item_id_not_null", "rating_in_range", "no_duplicate_events"):
        assert rule in md
    assert "| **FAIL** |" in md and "| pass |" in md

    summary = write_quarantine(outcome, tmp_path / "quarantine")
    back = pd.read_parquet(tmp_path / "quarantine" / "events.parquet")
    assert back["row"].tolist() == [3, 5, 9, 12, 20]
    assert back["reason"].tolist() == outcome.quarantine["reason"].tolist()
    assert json.loads((tmp_path / "quarantine" / "summary.json").read_text()) == summary
    assert summary["rows"] == 5 and summary["by_rule"]["rating_in_range"] == 1


def test_quarantine_files_exist_when_nothing_is_bad(tmp_path) -> None:
    outcome = run(tables_with(events_frame()))
    summary = write_quarantine(outcome, tmp_path)
    assert summary["rows"] == 0
    assert pd.read_parquet(tmp_path / "events.parquet").empty
    raise_if_failed(outcome)  # passes silently


def test_importing_the_package_does_not_import_gx() -> None:
    code = (
        "import sys, recpipe.validation as v; "
        "assert callable(v.validate_tables); "
        "assert 'great_expectations' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the duplicate pre-filter (no GX) ---------------------------------------------------


@pytest.mark.parametrize("sorted_by_time", [True, False])
def test_duplicate_candidates_contain_every_duplicate(sorted_by_time: bool) -> None:
    rng = np.random.default_rng(7)
    n = 3000
    frame = pd.DataFrame(
        {
            "user_id": pd.array(rng.integers(0, 40, n).astype(str), dtype="string"),
            "item_id": pd.array(
                np.char.add("item-long-prefix-", rng.integers(0, 30, n).astype(str)), dtype="string"
            ),
            "timestamp": pd.to_datetime(rng.integers(0, 200, n), unit="s", utc=True),
            "event_type": pd.array(rng.choice(["view", "click"], n), dtype="string"),
            "session_id": pd.array(
                np.where(rng.random(n) < 0.3, None, rng.integers(0, 9, n).astype(str)),
                dtype="string",
            ),
        }
    )
    if sorted_by_time:
        frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    truth = np.flatnonzero(frame[list(DUPLICATE_KEY)].duplicated(keep=False).to_numpy())
    assert len(truth) > 0
    cands = duplicate_candidates(frame, ["timestamp", "item_id", "user_id", "session_id"])
    assert set(truth) <= set(cands)
    assert len(cands) <= 2 * len(truth) + 5  # few false candidates


def test_string_key_depends_only_on_the_value() -> None:
    values = ["", "a", "ab", "abcdefgh", "abcdefghi", "xabcdefghi", None, "ab", None, ""]
    series = pd.Series(pd.array(values, dtype="string"))
    key = _string_key(series)
    assert key[2] == key[7] and key[6] == key[8] and key[0] == key[9]
    assert len({key[i] for i in (0, 1, 2, 3, 4, 6)}) == 6
    assert key[4] == key[5]  # only the last 8 bytes count: a harmless extra candidate
    # a slice and a chunked array give the same keys as the whole
    assert (_string_key(series.iloc[4:].reset_index(drop=True)) == key[4:]).all()
    chunked = pd.concat([series.iloc[:5], series.iloc[5:]], ignore_index=True)
    assert (_string_key(chunked) == key).all()
