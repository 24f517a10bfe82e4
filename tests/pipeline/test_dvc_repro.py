"""`dvc repro` runs the pipeline from a clean clone (slow: a real DVC run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recpipe.pipeline import STAGES
from tests.pipeline.conftest import SMALL, copy_project

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout}\n{res.stderr}"
    return res


@pytest.fixture
def clone(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A clean copy of the project's files (what a clone holds) in a new git repository."""
    dest = tmp_path / "clone"
    copy_project(dest)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
    )
    # small synthetic data keeps the run short
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for override in SMALL:
        key, value = override.split("=")
        section, name = key.split(".")
        params[section][name] = yaml.safe_load(value)
    # two candidates (a factorization and a session model) and a few baselines cover
    # the DAG's shapes: the test re-runs training three times, at ~10 s a stage
    params["train"]["candidates"] = ["mf_bpr", "gru4rec"]
    params["train"]["model_splits"] = {}
    params["evaluate"]["models"] = ["pop", "itemknn", "markov"]
    (dest / "params.yaml").write_text(yaml.safe_dump(params))
    _run(["git", "init", "-q"], dest, env)
    _run(["git", "add", "-A"], dest, env)
    _run(["git", "commit", "-qm", "clone"], dest, env)
    return dest, env


def test_dvc_repro_runs_the_pipeline(clone: tuple[Path, dict[str, str]]) -> None:
    dest, env = clone
    dvc = [sys.executable, "-m", "dvc"]
    _run([*dvc, "repro"], dest, env)
    assert (dest / "data" / "validated" / "events.parquet").exists()
    lock = yaml.safe_load((dest / "dvc.lock").read_text())
    params = yaml.safe_load((dest / "params.yaml").read_text())
    candidates = params["train"]["candidates"]
    expected = {n for n, s in STAGES.items() if s.foreach is None}
    expected |= {f"train@{c}" for c in candidates}  # one train stage per candidate
    assert set(lock["stages"]) == expected
    assert (dest / "data" / "features" / "session" / "train.parquet").exists()
    for name in candidates:
        assert (dest / "models" / name / "training.json").is_file()
    # one candidate's options changed: every train@ stage re-runs (they share the train
    # section), and evaluate after them; nothing upstream
    params["train"]["model_configs"] = {candidates[0]: {"factors": 8}}
    (dest / "params.yaml").write_text(yaml.safe_dump(params))
    res = _run([*dvc, "repro"], dest, env)
    assert f"Running stage 'train@{candidates[0]}'" in res.stdout
    assert "Running stage 'evaluate'" in res.stdout
    assert "Running stage 'features'" not in res.stdout
    # nothing changed: no stage is out of date but the two that read the MLflow registry,
    # which lives outside the workspace (dvc.yaml: always_changed)
    res = _run([*dvc, "status", "--json"], dest, env)
    assert json.loads(res.stdout) == {"gate": ["always changed"], "package": ["always changed"]}
    # tune.use: the tune stage tunes (one trial of one candidate here), then train
    # re-runs with the tuned config
    first, split = candidates[0], params["gate"]["split"]
    params["tune"].update(use=True, models=[first], trials=1)
    (dest / "params.yaml").write_text(yaml.safe_dump(params))
    res = _run([*dvc, "repro"], dest, env)
    assert "Running stage 'tune'" in res.stdout
    assert f"Running stage 'train@{first}'" in res.stdout
    tuned = dest / "tuned" / split / f"{first}.yaml"
    entry = yaml.safe_load(tuned.read_text())
    # the tuned config changes (by hand here): dvc re-runs that training with it; the
    # tune stage keeps the file (its search and data are unchanged: nothing to re-tune)
    entry["best_config"]["factors"] = 12
    tuned.write_text(yaml.safe_dump(entry))
    res = _run([*dvc, "repro"], dest, env)
    assert f"Running stage 'train@{first}'" in res.stdout
    assert "Running stage 'evaluate'" in res.stdout
    config = json.loads((dest / "models" / first / split / "config.json").read_text())
    assert config["factors"] == 12
    assert yaml.safe_load(tuned.read_text())["best_config"]["factors"] == 12
    # one validate param changed: validate is the one stage out of date, not ingest
    # (`dvc status` names the stages whose own deps changed, without re-running them)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["validate"]["max_future_seconds"] = 7200
    (dest / "params.yaml").write_text(yaml.safe_dump(params))
    status = json.loads(_run([*dvc, "status", "--json"], dest, env).stdout)
    assert set(status) == {"validate", "gate", "package"}  # gate, package: always_changed
    assert "params.yaml" in json.dumps(status["validate"])
    # a features param: features is the first stage out of date, nothing upstream of it
    params["features"]["gap_buckets"] = 8
    (dest / "params.yaml").write_text(yaml.safe_dump(params))
    status = json.loads(_run([*dvc, "status", "--json"], dest, env).stdout)
    assert set(status) == {"validate", "features", "gate", "package"}
    assert "params.yaml" in json.dumps(status["features"])
    _run([*dvc, "push"], dest, env)
    assert any((dest / "dvc-remote").rglob("*"))
