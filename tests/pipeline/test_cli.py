"""The command line: stage commands, validation exit codes, readable errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from recpipe.cli import app
from tests.pipeline.conftest import SMALL

runner = CliRunner()


def _sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def test_stage_ingest_then_validate(tmp_path: Path) -> None:
    root = ["--root", str(tmp_path)]
    res = runner.invoke(app, ["stage", "ingest", *root, *_sets(SMALL)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["validate", *root])
    assert res.exit_code == 0, res.output
    assert "validation passed" in res.output
    assert (tmp_path / "data" / "validated" / "events.parquet").exists()


def test_version_and_the_stage_list_in_the_help() -> None:
    from importlib.metadata import version

    from recpipe.cli import STAGE_NAMES
    from recpipe.pipeline import STAGES

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"recpipe {version('recpipe')}"
    assert tuple(STAGES) == STAGE_NAMES  # the help's list is the stage table's
    shown = runner.invoke(app, ["stage", "--help"], env={"COLUMNS": "200"}).output
    assert all(name in shown for name in STAGE_NAMES)


def test_otto_and_other_plural_event_spellings_are_known_aliases() -> None:
    from recpipe.data.schema import normalise_event_types

    raw = pd.Series(["clicks", "carts", "orders", "Transactions", "ratings", "clickout"])
    got = normalise_event_types(raw).tolist()
    assert got == ["click", "cart", "purchase", "purchase", "rating", "clickout"]


def test_a_missing_data_path_fails_before_prefect_starts(tmp_path: Path, monkeypatch) -> None:
    import recpipe.cli as cli

    def no_flow(*args, **kwargs):  # the flow must not even be imported and called
        raise AssertionError("the flow ran")

    monkeypatch.setattr(cli, "_quiet_expected_tracebacks", no_flow)
    missing = tmp_path / "nowhere.csv"
    result = runner.invoke(
        app,
        [
            "run",
            "--root",
            str(tmp_path),
            "--set",
            "data.source=csv",
            "--set",
            f"data.path={missing}",
        ],
    )
    assert result.exit_code == 1, result.output
    assert f"data.path '{missing}' does not exist" in result.output


def test_logs_outside_a_terminal_are_plain_lines(tmp_path: Path) -> None:
    result = runner.invoke(app, ["stage", "ingest", "--root", str(tmp_path), *_sets(SMALL)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if " INFO " in line]
    assert lines and all(line[:4].isdigit() for line in lines)  # date first, no Rich columns
    assert any(" recpipe.stages: " in line or " recpipe." in line for line in lines)


def test_unknown_stage_and_bad_param_exit_2(tmp_path: Path) -> None:
    res = runner.invoke(app, ["stage", "nope", "--root", str(tmp_path)])
    assert res.exit_code == 2
    assert "unknown stage 'nope'" in res.output and "ingest" in res.output
    res = runner.invoke(app, ["stage", "ingest", "--root", str(tmp_path), "--set", "synth.sede=1"])
    assert res.exit_code == 2
    assert "synth.sede: unknown key" in res.output
    assert "Traceback" not in res.output


def test_validate_corrupted_data_reports_without_traceback(tmp_path: Path) -> None:
    src = tmp_path / "in"
    res = runner.invoke(app, ["data", "synth", "--out", str(src), *_sets(SMALL)])
    assert res.exit_code == 0, res.output
    events = pd.read_parquet(src / "events.parquet")
    events.loc[:4, "item_id"] = None
    events.loc[5:6, "event_type"] = "teleport"
    events.to_parquet(src / "events.parquet", index=False)

    res = runner.invoke(app, ["validate", str(src), "--root", str(tmp_path)])
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    assert "item_id" in res.output and "teleport" in res.output
    report = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert report["passed"] is False
    # the input is untouched
    assert pd.read_parquet(src / "events.parquet")["item_id"].isna().sum() == 5


@pytest.mark.realdata
def test_import_movielens_100k_and_corrupted_copy(tmp_path: Path, real_data: Path) -> None:
    out = tmp_path / "ml"
    res = runner.invoke(
        app, ["data", "import", "movielens-100k", str(real_data / "ml-100k"), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"]["events"] == 100_000
    assert manifest["n_users"] == 943 and manifest["n_items"] == 1682
    res = runner.invoke(app, ["validate", str(out), "--root", str(tmp_path)])
    assert res.exit_code == 0, res.output

    # a corrupted copy: an out-of-range rating, a negative user id, a repeated row
    bad = tmp_path / "ml-bad"
    shutil.copytree(real_data / "ml-100k", bad)
    with open(bad / "u.data", "a") as fh:
        fh.write("1\t1\t9\t881250949\n-3\t2\t4\t881250949\n")
        fh.write((real_data / "ml-100k" / "u.data").read_text().splitlines()[0] + "\n")
    out_bad = tmp_path / "ml-bad-out"
    res = runner.invoke(app, ["data", "import", "movielens-100k", str(bad), "--out", str(out_bad)])
    assert res.exit_code == 0, res.output
    assert json.loads((out_bad / "manifest.json").read_text())["rows"]["events"] == 100_003
    res = runner.invoke(app, ["validate", str(out_bad), "--root", str(tmp_path)])
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    for needle in ("value", "user_id", "unique"):
        assert needle in res.output
