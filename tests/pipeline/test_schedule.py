"""Scheduled retraining against a real Prefect server: `recpipe schedule` serves the
flow, a scheduled run completes on a new data drop with a model subset, the deployment
allows one run at a time; prefect.yaml agrees with recpipe.scheduling; `recpipe
schedule` without a server says how to start one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from recpipe import scheduling
from tests.conftest import REPO_ROOT
from tests.pipeline.conftest import CHEAP, SMALL

RECPIPE = [sys.executable, "-m", "recpipe.cli"]


def _env(api: str | None, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(home)
    env["PREFECT_RUNNER_POLL_FREQUENCY"] = "2"  # pick up a due run within seconds
    if api is not None:
        env["PREFECT_API_URL"] = api
    return env


def _data_drop(folder: Path) -> Path:
    """A new data drop: the small synthetic click-stream as one Parquet file."""
    from recpipe.config import load_params
    from recpipe.data.synth import generate

    folder.mkdir(parents=True)
    path = folder / "events.parquet"
    generate(load_params(None, SMALL).synth).events.to_parquet(path)
    return path


def _runs(client: httpx.Client, deployment_id: str) -> list[dict[str, Any]]:
    response = client.post(
        "/flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": [deployment_id]}}}
    )
    response.raise_for_status()
    return response.json()


def _stop(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """SIGTERM, then (if it hangs) kill its whole process group, flow runs included."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.slow
def test_schedule_runs_the_flow_on_a_new_data_drop(prefect_server: str, tmp_path: Path) -> None:
    workspace, home = tmp_path / "ws", tmp_path / "prefect-home"
    workspace.mkdir()
    drop = _data_drop(tmp_path / "drop")
    drop_options = ["--data", str(drop), "--source", "parquet", "--model", "mf_bpr"]
    command = [
        *RECPIPE,
        "schedule",
        "--interval",
        "5",
        "--name",
        "test-nightly",
        "--root",
        str(workspace),
        *drop_options,
        *[a for o in CHEAP for a in ("--set", o)],
    ]
    log_path = tmp_path / "schedule.log"
    with open(log_path, "w") as log:
        served = subprocess.Popen(
            command,
            env=_env(prefect_server, home),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, flow runs included
        )
    # a fresh connection per request: a busy server may drop an idle kept-alive one
    client = httpx.Client(
        base_url=prefect_server, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
    )

    def fail(why: str) -> None:
        pytest.fail(f"{why}\n--- recpipe schedule output ---\n{log_path.read_text()[-6000:]}")

    try:
        deadline = time.monotonic() + 400
        deployment = None
        completed: dict[str, Any] | None = None
        most_running = 0
        while completed is None:
            if served.poll() is not None:
                fail(f"recpipe schedule exited with {served.returncode}")
            if time.monotonic() > deadline:
                fail("no scheduled run completed within 400 s")
            time.sleep(2)
            if deployment is None:
                found = client.get("/deployments/name/recpipe-retrain/test-nightly")
                if found.status_code == 404:
                    continue
                found.raise_for_status()
                deployment = found.json()
            runs = _runs(client, deployment["id"])
            running = [r for r in runs if r["state_type"] in ("RUNNING", "PENDING")]
            most_running = max(most_running, len(running))
            if running and not deployment["paused"]:
                # one run is under way and the others wait for it; keep the test to that
                # one: pause the schedule and drop the runs it queued
                waiting = [r for r in runs if r["state_type"] == "SCHEDULED"]
                client.patch(f"/deployments/{deployment['id']}", json={"paused": True})
                for run in waiting:
                    client.delete(f"/flow_runs/{run['id']}")
                deployment["paused"] = True
            for run in runs:
                if run["state_type"] in ("FAILED", "CRASHED"):
                    fail(f"flow run {run['name']} {run['state_name']}: {run['state']['message']}")
                if run["state_type"] == "COMPLETED":
                    completed = run
        # let the run's process finish its teardown before stopping the runner
        finished = f"Flow run {completed['name']!r} - Finished in state Completed"
        while finished not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        _stop(served)
    assert served.returncode is not None
    completed = client.get(f"/flow_runs/{completed['id']}").json()
    assert completed["state_type"] == "COMPLETED"  # stopping the runner left it alone

    # the deployment: the interval schedule, at most one run at a time (the rest queued)
    assert deployment is not None and completed is not None
    assert deployment["global_concurrency_limit"]["limit"] == scheduling.CONCURRENCY_LIMIT == 1
    assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    assert deployment["schedules"][0]["schedule"]["interval"] == 5.0
    assert most_running == 1
    # the run was made by the schedule, with the data drop and the model subset
    assert completed["auto_scheduled"] is True
    assert completed["parameters"]["data_path"] == str(drop)
    assert completed["parameters"]["models"] == ["mf_bpr"]
    assert completed["parameters"]["root"] == str(workspace)
    manifest = json.loads((workspace / "data" / "interim" / "manifest.json").read_text())
    assert manifest["source"] == "parquet"
    assert sorted(p.name for p in (workspace / "models").iterdir()) == ["mf_bpr"]
    # a failed gate ends Completed and says "not promoted"
    gate = json.loads((workspace / "reports" / "gate.json").read_text())
    message = completed["state"]["message"]
    assert message.startswith("promoted" if gate["passed"] else "not promoted"), message
    # the artifacts: validation, leaderboard, gate with its MLflow run, registry outcome
    response = client.post(
        "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [completed["id"]]}}}
    )
    response.raise_for_status()
    artifacts = {a["key"]: a for a in response.json()}
    expected = {"validation-summary", "leaderboard", "gate", "registry", "registry-versions"}
    assert expected <= set(artifacts)
    assert "/#/experiments/" in artifacts["gate"]["data"]
    assert str(workspace / "mlflow.db") in artifacts["gate"]["data"]
    assert artifacts["registry"]["data"].startswith("# Registry: ")
    table = artifacts["registry-versions"]["data"]
    table = json.loads(table) if isinstance(table, str) else table
    assert [row["model"] for row in table] == ["mf_bpr"]

    # `recpipe retrain --deployment` asks the server for a run of the served deployment
    triggered = subprocess.run(
        [*RECPIPE, "retrain", "--deployment", "test-nightly", *drop_options],
        env=_env(prefect_server, home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert triggered.returncode == 0, triggered.stderr
    ui = scheduling.ui_url(prefect_server)
    assert f"{ui}/runs/flow-run/" in triggered.stdout
    run_id = triggered.stdout.split(f"{ui}/runs/flow-run/")[1].split()[0]
    run = client.get(f"/flow_runs/{run_id}").json()
    assert run["deployment_id"] == deployment["id"] and run["auto_scheduled"] is False
    assert run["parameters"]["data_path"] == str(drop)
    assert run["parameters"]["root"] == str(workspace)  # the deployment's own workspace


def test_schedule_without_a_server_says_how_to_start_one(tmp_path: Path) -> None:
    home = tmp_path / "prefect-home"
    unset = subprocess.run(
        [*RECPIPE, "schedule", "--root", str(tmp_path)],
        env=_env(None, home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unset.returncode != 0
    assert "PREFECT_API_URL is not set" in unset.stderr
    assert "recpipe server" in unset.stderr and "export PREFECT_API_URL=" in unset.stderr
    assert "Traceback" not in unset.stderr  # an unreachable URL: tests/unit/test_retraining.py


def test_bad_schedules_are_refused_with_the_expected_form() -> None:
    from flows.deploy import make_schedule
    from recpipe.errors import SchedulerError

    assert make_schedule(cron="0 3 * * *").cron == "0 3 * * *"
    assert make_schedule(interval=5).interval.total_seconds() == 5
    for kwargs in (
        {"cron": "every night"},
        {"cron": "0 3 * * *", "timezone": "Mars/Olympus"},
        {"interval": 0},
        {"cron": "0 3 * * *", "interval": 5},
        {},
    ):
        with pytest.raises(SchedulerError, match=r"cron|interval"):
            make_schedule(**kwargs)


def test_prefect_yaml_describes_the_same_deployment() -> None:
    config = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    (deployment,) = config["deployments"]
    assert deployment["name"] == scheduling.DEPLOYMENT_NAME
    assert deployment["entrypoint"] == scheduling.FLOW_ENTRYPOINT
    assert deployment["schedules"] == [
        {"cron": scheduling.DEFAULT_CRON, "timezone": scheduling.DEFAULT_TIMEZONE, "active": True}
    ]
    assert deployment["concurrency_limit"] == {
        "limit": scheduling.CONCURRENCY_LIMIT,
        "collision_strategy": scheduling.COLLISION_STRATEGY,
    }
    assert deployment["work_pool"]["name"] == scheduling.WORK_POOL
    assert deployment["tags"] == list(scheduling.DEPLOYMENT_TAGS)
    assert " ".join(deployment["description"].split()) == scheduling.DESCRIPTION
    # the entrypoint names the flow the CLI serves
    from prefect.flows import load_flow_from_entrypoint

    flow = load_flow_from_entrypoint(str(REPO_ROOT / scheduling.FLOW_ENTRYPOINT))
    assert flow.name == scheduling.FLOW_NAME
    params = flow.parameters.properties
    assert {"params_file", "overrides", "root", "data_path", "data_source", "models"} <= set(params)
