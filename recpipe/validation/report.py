"""Validation reports: JSON, Markdown, console text, the quarantine files, and the raise."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

from recpipe.errors import DataValidationError
from recpipe.validation.runner import ValidationOutcome, to_jsonable
from recpipe.workspace import shown

log = logging.getLogger(__name__)


class ReportedOutcome(Protocol):
    """What the report functions read: a :class:`ValidationOutcome` or the arrow engine's
    :class:`~recpipe.validation.partitioned.PartitionedOutcome`."""

    passed: bool
    report: dict[str, Any]


QUARANTINE_EVENTS_FILE = "events.parquet"
QUARANTINE_SUMMARY_FILE = "summary.json"


def _pct(value: float | None) -> str:
    if value is None:
        return "n/a"
    if 0 < value < 0.01:
        return "<0.01%"
    return f"{value:.2f}%"


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _row_text(row: dict[str, Any]) -> str:
    fields = ", ".join(f"{k}={_short(v, 40)}" for k, v in row.items() if k != "row")
    return f"row {row.get('row')}: {fields}"


def _headline(report: dict[str, Any]) -> str:
    counts = report["counts"]
    n_fail = len(report["failures"])
    n_all = len(report["expectations"])
    status = "PASSED" if report["passed"] else "FAILED"
    if report["success"]:
        detail = f"all {n_all} expectations passed"
    else:
        detail = f"{n_fail} of {n_all} expectations failed"
    return (
        f"Validation {status} (mode: {report['mode']}): {detail}; "
        f"{counts['bad_rows']:,} of {counts['events']:,} events bad "
        f"({_pct(100.0 * counts['bad_fraction'])}, tolerance "
        f"{_pct(100.0 * report['max_bad_fraction'])}), {counts['quarantined']:,} quarantined"
    )


def format_report(outcome: ReportedOutcome) -> str:
    """Plain-text summary for the console: every failed expectation, counts, examples.

    No ``[word]`` brackets of our own, so that a rich console prints it verbatim
    (rich would take them for markup); values are JSON or quoted.
    """
    report = outcome.report
    lines = [_headline(report)]
    for f in report["failures"]:
        columns = ", ".join(f["columns"]) or "-"
        count = f["unexpected_count"]
        count_text = (
            f"{count:,} unexpected ({_pct(f['unexpected_percent'])} of {f['table']})"
            if count is not None
            else "failed"
        )
        lines.append(
            f"  FAILED {f['table']}: {f['rule']} - {f['expectation']} ({columns}): {count_text}"
        )
        if f.get("description"):
            lines.append(f"      expected: {f['description']}")
        if f.get("repeated_rows") is not None:
            lines.append(
                f"      {f['repeated_rows']:,} repeated copies are bad rows "
                "(the first of each group of equal events is kept)"
            )
        if f.get("error"):
            lines.append(f"      error: {f['error']}")
        if f.get("details"):
            lines.append(f"      details: {_short(f['details'], 200)}")
        elif f.get("observed_value") is not None and count is None:
            lines.append(f"      observed: {_short(f['observed_value'], 200)}")
        if f.get("examples") and len(f["columns"]) == 1:
            lines.append(f"      examples: {', '.join(_short(v, 60) for v in f['examples'])}")
        for row in f.get("example_rows") or []:
            lines.append(f"      {_row_text(row)}")
    if report["reasons"]:
        lines.append(
            "  rows per rule: " + ", ".join(f"{k}={v:,}" for k, v in report["reasons"].items())
        )
    if not report["passed"] and report["mode"] == "quarantine":
        if report.get("table_level_failure"):
            lines.append("  a table-level rule failed: it cannot be fixed by quarantining rows")
        else:
            lines.append("  the bad fraction is above validate.max_bad_fraction")
    return "\n".join(lines)


def format_markdown(outcome: ReportedOutcome) -> str:
    """The human Markdown report: status, counts, expectations table, failure examples."""
    report = outcome.report
    counts = report["counts"]
    failures = {f["rule"]: f for f in report["failures"]}
    lines = [
        "# Data validation report",
        "",
        f"**{'PASSED' if report['passed'] else 'FAILED'}** - {_headline(report)}",
        "",
        f"- source: `{report.get('source')}`; checked at {report['now']}",
        f"- rows: {counts['events']:,} events, {counts['items']:,} items, "
        f"{counts['users']:,} users",
        f"- bad event rows: {counts['bad_rows']:,} ({_pct(100.0 * counts['bad_fraction'])}); "
        f"quarantined: {counts['quarantined']:,}; tolerance "
        f"{_pct(100.0 * report['max_bad_fraction'])} (mode `{report['mode']}`)",
        "",
        "## Expectations",
        "",
        "Percentages are of the table's rows.",
        "",
        "| status | table | rule | expectation | unexpected | % | examples |",
        "|---|---|---|---|---:|---:|---|",
    ]
    for e in report["expectations"]:
        f = failures.get(e["rule"])
        count = f["unexpected_count"] if f else 0
        examples = ", ".join(_short(v, 30) for v in (f["examples"] if f else []))
        lines.append(
            f"| {'pass' if e['success'] else '**FAIL**'} | {e['table']} | `{e['rule']}` | "
            f"`{e['expectation']}` | {'' if count is None else f'{count:,}'} | "
            f"{_pct(f['unexpected_percent']) if f else ''} | {_md_cell(examples)} |"
        )
    if report["failures"]:
        lines += ["", "## Failures", ""]
        for f in report["failures"]:
            lines.append(f"### `{f['rule']}` ({f['table']})")
            lines.append("")
            lines.append(f"- expected: {f.get('description', '')}")
            lines.append(f"- expectation: `{f['expectation']}` on {', '.join(f['columns']) or '-'}")
            lines.append(f"- kwargs: `{_short(f['kwargs'], 300)}`")
            if f["unexpected_count"] is not None:
                lines.append(
                    f"- unexpected: {f['unexpected_count']:,} ({_pct(f['unexpected_percent'])})"
                )
            if f.get("repeated_rows") is not None:
                lines.append(
                    f"- bad rows: {f['repeated_rows']:,} repeated copies "
                    "(the first of each group of equal events is kept)"
                )
            if f.get("error"):
                lines.append(f"- error: {f['error']}")
            if f.get("details"):
                lines.append(f"- details: `{_short(f['details'], 300)}`")
            for row in f.get("example_rows") or []:
                lines.append(f"  - {_md_cell(_row_text(row))}")
            lines.append("")
    if report["reasons"]:
        moved = (
            "These rows were moved to the quarantine."
            if counts["quarantined"]
            else "Fail mode: these rows are listed, nothing was removed."
        )
        lines += ["## Bad event rows per rule", "", moved, ""]
        lines += ["| rule | rows |", "|---|---:|"]
        lines += [f"| `{k}` | {v:,} |" for k, v in report["reasons"].items()]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_report(outcome: ReportedOutcome, json_path: Path, md_path: Path) -> None:
    """Write the JSON report (``reports/validation.json``) and the Markdown report."""
    json_path, md_path = Path(json_path), Path(md_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(outcome.report, indent=2, allow_nan=False) + "\n")
    md_path.write_text(format_markdown(outcome))
    log.info("wrote validation report to %s and %s", json_path, md_path)


def quarantine_summary(outcome: ValidationOutcome) -> dict[str, Any]:
    """Counts of the quarantine: rows, rows per rule and per full reason string."""
    q = outcome.quarantine
    by_reason = q["reason"].value_counts().to_dict() if len(q) else {}
    return to_jsonable(
        {
            "mode": outcome.report["mode"],
            "removed_from_clean": outcome.report["counts"]["quarantined"],
            "rows": len(q),
            "events": outcome.report["counts"]["events"],
            "by_rule": outcome.report["reasons"],
            "by_reason": {str(k): int(v) for k, v in by_reason.items()},
        }
    )


def write_quarantine(outcome: ValidationOutcome, directory: Path) -> dict[str, Any]:
    """Write ``events.parquet`` (bad rows, original ``row`` position kept, ``reason``) and
    ``summary.json`` into ``directory``; both are written even when nothing is bad."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    frame = outcome.quarantine.rename_axis("row").reset_index()
    frame.to_parquet(directory / QUARANTINE_EVENTS_FILE, index=False)
    summary = quarantine_summary(outcome)
    (directory / QUARANTINE_SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    log.info("wrote %d quarantined event rows to %s", len(frame), shown(directory))
    return summary


def raise_if_failed(outcome: ReportedOutcome) -> None:
    """Raise :class:`DataValidationError` (with the report) when the data did not pass."""
    if not outcome.passed:
        raise DataValidationError(format_report(outcome), report=outcome.report)
