"""End to end in a temporary Git + DVC repository: three retraining runs on a data drop.

One module-scoped workspace (a copy of the project's files, working-tree content, in a
new Git repository whose DVC remote is the shipped ``../dvc-remote``, i.e. a folder in
the temporary directory) goes through, once:

1. a run on a CSV drop (the first five days of a small synthetic click-stream);
2. a run on the same drop with the sixth day appended as a second CSV file;
3. a run on the drop with a corrupt third file (an event type outside the suite);
4. ``recpipe reproduce`` of the first version.

The tests then check the registry aliases, the Bento, DVC's status and remote, each
version's lineage, that the corrupt drop stopped at validation with nothing changed
downstream, and that reproducing restored the first run's data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from recpipe.errors import DataValidationError, LineageError
from recpipe.paths import Paths
from tests.pipeline.conftest import copy_project

pytestmark = pytest.mark.slow

#: The drop: a small synthetic click-stream over six days, split into daily files.
SYNTH = {"n_users": 60, "n_items": 50, "n_categories": 5, "n_sessions": 300, "days": 6}
#: One cheap candidate that clearly beats the one baseline on the session split.
PARAMS: dict[str, dict[str, Any]] = {
    "sessions": {"splits": ["session"]},
    "train": {
        "candidates": ["gru4rec"],
        "splits": ["session"],
        "model_splits": {},
        "max_epochs": 2,
        "checkpoints": False,
        "model_configs": {"gru4rec": {"layers": [32], "n_sample": 0}},
    },
    "evaluate": {"models": ["pop"], "splits": ["session"]},
    # latency is not what this test is about: a loaded CI machine must not fail the gate
    "gate": {"split": "session", "latency_requests": 20, "latency_p99_ms": 10000.0},
}
ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
    "DVC_NO_ANALYTICS": "1",
}


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ENV}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout}\n{res.stderr}"
    return res


def _dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "dvc", *args], cwd)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bento_labels(archive: Path) -> dict[str, str]:
    with tarfile.open(archive, "r:xz") as tar:
        member = next(m for m in tar.getmembers() if m.name.lstrip("./") == "bento.yaml")
        return yaml.safe_load(tar.extractfile(member))["labels"]  # type: ignore[arg-type]


def _write_drop(drop: Path) -> pd.DataFrame:
    """Write days 1-5 as ``events-1.csv`` and the items; return day 6's events."""
    from recpipe.config import load_params
    from recpipe.data.synth import generate

    tables = generate(load_params(None, [f"synth.{k}={v}" for k, v in SYNTH.items()]).synth)
    events = tables.events.copy()
    cut = events["timestamp"].min() + pd.Timedelta(days=SYNTH["days"] - 1)
    late = events["timestamp"] >= cut
    events["timestamp"] = events["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    drop.mkdir()
    events[~late].to_csv(drop / "events-1.csv", index=False)
    tables.items.to_parquet(drop / "items.parquet", index=False)
    return events[late]


def _state(paths: Paths) -> dict[str, Any]:
    from recpipe.gates.registry import Registry
    from recpipe.pipeline import workspace_params

    registry = Registry.for_workspace(workspace_params(paths), paths)
    manifest = json.loads(paths.manifest_json.read_text())
    return {
        "aliases": registry.aliases(),
        "versions": registry.versions(),
        "lock_sha256": _sha256(paths.dvc_lock) if paths.dvc_lock.is_file() else None,
        "content_hash": manifest["content_hash"],
        "bento_sha256": _sha256(paths.bento_archive),
        "training_mtime": (paths.model_dir("gru4rec") / "training.json").stat().st_mtime_ns,
    }


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> dict[str, Any]:
    from flows.retrain import retrain
    from recpipe.lineage import reproduce
    from recpipe.pipeline import workspace_params

    base = tmp_path_factory.mktemp("e2e")
    ws, drop = base / "ws", base / "drop"
    copy_project(ws)
    late = _write_drop(drop)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["synth"].update(SYNTH)
    # canonical column names in the files: the default column mapping reads them
    params["data"].update(source="csv", path=str(drop), items_path=str(drop / "items.parquet"))
    for section, values in PARAMS.items():
        params[section].update(values)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], ws)
    _run(["git", "add", "-A"], ws)
    _run(["git", "commit", "-qm", "e2e"], ws)
    paths = Paths.at(ws)
    out: dict[str, Any] = {"paths": paths}

    out["run1"] = retrain(root=str(ws))
    out["state1"] = _state(paths)
    late.to_csv(drop / "events-2.csv", index=False)  # the drop grows by one day
    out["run2"] = retrain(root=str(ws))
    out["state2"] = _state(paths)
    out["status"] = json.loads(_dvc(["status", "--json"], ws).stdout or "{}")
    out["cloud_status"] = json.loads(_dvc(["status", "--cloud", "--json"], ws).stdout or "{}")

    corrupt = late.head(30).assign(event_type="teleport")  # not an event type of the suite
    corrupt.to_csv(drop / "events-3.csv", index=False)
    with pytest.raises(DataValidationError) as failed:
        retrain(root=str(ws))
    out["run3_error"] = str(failed.value)
    out["state3"] = _state(paths)
    (drop / "events-3.csv").unlink()

    # an empty cache (another machine, a fresh clone): reproduce fetches from the remote
    shutil.rmtree(ws / ".dvc" / "cache")
    first = out["run1"]["registry"]["candidate_version"]
    out["reproduced"] = reproduce(workspace_params(paths), paths, first)
    out["state_reproduced"] = _state(paths)
    out["status_reproduced"] = json.loads(_dvc(["status", "--json"], ws).stdout or "{}")
    return out


def test_runs_promote_by_the_gate_and_package_the_champion(e2e: dict[str, Any]) -> None:
    run1, run2 = e2e["run1"], e2e["run2"]
    v1, v2 = run1["registry"]["candidate_version"], run2["registry"]["candidate_version"]
    assert run1["gate"]["passed"], run1["gate"]["reasons"]  # clear margin over pop
    assert e2e["state1"]["aliases"] == {"champion": v1}
    assert int(v2) > int(v1)
    if run2["gate"]["passed"]:
        assert e2e["state2"]["aliases"] == {"champion": v2, "previous": v1}
    else:  # a failed gate moves no alias
        assert e2e["state2"]["aliases"] == {"champion": v1}
    champion = e2e["state2"]["aliases"]["champion"]
    paths: Paths = e2e["paths"]
    assert run2["package"]["labels"]["registry_version"] == champion
    assert paths.bento_archive.is_file()
    assert e2e["state2"]["bento_sha256"] != e2e["state1"]["bento_sha256"]


def test_bento_archive_labels_name_the_champion(e2e: dict[str, Any]) -> None:
    paths: Paths = e2e["paths"]
    # after reproduce of v1 the archive is run 1's Bento again: it serves v1
    labels = _bento_labels(paths.bento_archive)
    assert labels["registry_version"] == e2e["run1"]["registry"]["candidate_version"]
    assert labels["source"] == "champion"
    assert e2e["state_reproduced"]["bento_sha256"] == e2e["state1"]["bento_sha256"]


def test_dvc_lock_is_committed_and_pushed(e2e: dict[str, Any]) -> None:
    # only the stages that read the registry (always_changed) are reported
    assert set(e2e["status"]) <= {"gate", "package"}, e2e["status"]
    assert all(v == ["always changed"] for v in e2e["status"].values())
    assert e2e["cloud_status"] == {}, e2e["cloud_status"]  # the remote has every object
    paths: Paths = e2e["paths"]
    remote = paths.root / "dvc-remote"
    assert sum(1 for p in remote.rglob("*") if p.is_file()) > 10
    for key in ("run1", "run2"):
        lineage = e2e[key]["lineage"]
        assert lineage["dvc"]["status"] == "committed", lineage
        assert lineage["push"]["status"] == "pushed", lineage
        assert lineage["push"]["url"] == str(remote)
        assert lineage["dvc"]["params_overridden"] == []
    assert e2e["state1"]["lock_sha256"] != e2e["state2"]["lock_sha256"]


def test_lineage_of_each_version_points_at_its_own_run(e2e: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from recpipe.cli import app
    from recpipe.lineage import describe
    from recpipe.pipeline import workspace_params

    paths: Paths = e2e["paths"]
    params = workspace_params(paths)
    for key, state in (("run1", "state1"), ("run2", "state2")):
        run, expected = e2e[key], e2e[state]
        version = run["registry"]["candidate_version"]
        info = describe(params, paths, version)
        assert info["run"]["run_id"] == run["mlflow_run_id"]
        assert info["run"]["dvc_lock_sha256"] == expected["lock_sha256"]
        assert info["version"]["dvc_lock_sha256"] == expected["lock_sha256"]  # re-tagged
        assert info["data"]["content_hash"] == expected["content_hash"]
        assert info["data"]["source"] == "csv"
        assert info["data"]["rows"]["events"] == run["manifest"]["rows"]["events"]
        assert info["data"]["dvc"]["interim"]["md5"].endswith(".dir")
        assert info["data"]["dvc"]["validated"]["md5"].endswith(".dir")
        assert info["params"]["key"]["train.candidates"] == ["gru4rec"]
        assert len(info["params"]["sha256"]) == 64
        assert info["run"]["git_commit"] not in (None, "unknown")
        assert info["version"]["model"] == "gru4rec"
        assert info["bento"]["tag"] == run["package"]["bento_tag"]
        assert info["bento"]["archive_sha256"] == expected["bento_sha256"]
        assert info["bento"]["archive_dvc"]["md5"]
        assert info["run"]["lineage_files"] == [
            "dvc.lock",
            "lineage.json",
            "package.json",
            "params.effective.yaml",
        ]
    v1 = e2e["run1"]["registry"]["candidate_version"]
    aliases = describe(params, paths, v1)["version"]["aliases"]
    assert aliases == (["previous"] if e2e["run2"]["gate"]["passed"] else ["champion"])

    runner = CliRunner()
    res = runner.invoke(app, ["lineage", v1, "--json", "--root", str(paths.root)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["data"]["content_hash"] == e2e["state1"]["content_hash"]
    res = runner.invoke(app, ["lineage", v1, "--root", str(paths.root)])
    assert res.exit_code == 0, res.output
    assert e2e["state1"]["content_hash"] in res.stdout and "Bento" in res.stdout
    res = runner.invoke(app, ["lineage", "99", "--root", str(paths.root)])
    assert res.exit_code == 1
    assert "no version '99'" in res.output and v1 in res.output  # lists the versions


def test_corrupt_drop_stops_at_validation_and_changes_nothing(e2e: dict[str, Any]) -> None:
    before, after = e2e["state2"], e2e["state3"]
    assert "teleport" in e2e["run3_error"]
    assert after["versions"] == before["versions"]  # nothing registered
    assert after["aliases"] == before["aliases"]
    assert after["bento_sha256"] == before["bento_sha256"]
    assert after["training_mtime"] == before["training_mtime"]  # nothing trained
    assert after["lock_sha256"] == before["lock_sha256"]  # nothing committed


def test_reproduce_restores_the_first_runs_data(e2e: dict[str, Any]) -> None:
    done, first = e2e["reproduced"], e2e["state1"]
    assert done["manifest"]["content_hash"] == first["content_hash"]
    assert e2e["state_reproduced"]["content_hash"] == first["content_hash"]
    assert done["dvc_lock_sha256"] == first["lock_sha256"]
    assert set(done["restored"]) >= {"dvc.lock", "params.yaml"}
    assert done["fetched"] is True  # the cache was emptied: every object came from the remote
    assert "reports/validation.json" in done["restored"]  # uncached, kept with the run
    # the workspace matches the restored dvc.lock (the registry readers always re-run)
    assert set(e2e["status_reproduced"]) <= {"gate", "package"}, e2e["status_reproduced"]
    backup = Path(done["backup"])
    assert _sha256(backup / "dvc.lock") == e2e["state3"]["lock_sha256"]  # kept


def test_reproduce_refuses_outside_a_dvc_repository(tmp_path: Path) -> None:
    from recpipe.config import load_params
    from recpipe.lineage import reproduce

    with pytest.raises(LineageError, match="not a DVC repository"):
        reproduce(load_params(), Paths.at(tmp_path), "1")
