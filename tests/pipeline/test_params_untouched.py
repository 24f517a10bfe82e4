"""`recpipe run --set` and `recpipe retrain --model` leave params.yaml as its user wrote it.

One temporary Git + DVC repository (a copy of the project) gets a cheap `recpipe run
--set ...` and then a `recpipe retrain --model ...` on a data drop: params.yaml keeps its
bytes while each run used its overrides, and dvc.lock records the values the run used.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from recpipe.cli import app
from tests.pipeline.conftest import CHEAP, copy_project

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}


def _sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def _lock_params(ws: Path, stage: str) -> dict:
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    return lock["stages"][stage]["params"]["params.yaml"]


def test_run_set_and_retrain_model_leave_params_yaml_byte_for_byte(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    copy_project(ws)
    env = {**os.environ, **ENV}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "t"]):
        subprocess.run(cmd, cwd=ws, env=env, check=True, capture_output=True)
    before = (ws / "params.yaml").read_bytes()
    assert b"path: null" in before  # the spellings a rewrite used to lose
    runner = CliRunner()
    cheap = [o for o in CHEAP if not o.startswith("train.candidates")]

    res = runner.invoke(
        app, ["run", "--root", str(ws), *_sets([*cheap, "train.candidates=[mf_bpr, mf_wals]"])]
    )
    assert res.exit_code == 0, res.output
    assert (ws / "params.yaml").read_bytes() == before
    assert "params.yaml:        left as it was; dvc.lock records this run's" in res.output
    assert sorted(p.name for p in (ws / "models").iterdir()) == ["mf_bpr", "mf_wals"]
    assert _lock_params(ws, "ingest")["synth"]["n_users"] == 60  # the override, not 2000
    assert _lock_params(ws, "evaluate")["train.candidates"] == ["mf_bpr", "mf_wals"]
    assert not list(ws.glob(".params.yaml.*"))  # no backup or temporary file left

    drop = tmp_path / "drop"
    res = runner.invoke(
        app, ["data", "synth", "--out", str(drop), *_sets([o for o in cheap if "synth." in o])]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "retrain",
            "--data",
            str(drop / "events.parquet"),
            "--source",
            "parquet",
            "--model",
            "mf_wals",
            "--root",
            str(ws),
            *_sets(cheap),
        ],
    )
    assert res.exit_code == 0, res.output
    assert (ws / "params.yaml").read_bytes() == before
    training = yaml.safe_load((ws / "models" / "mf_wals" / "training.json").read_text())
    assert training["model"] == "mf_wals"
    assert _lock_params(ws, "evaluate")["train.candidates"] == ["mf_wals"]
    assert _lock_params(ws, "ingest")["data"]["path"] == str(drop / "events.parquet")
    assert "train@mf_wals" in yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
