"""The retraining flow with ``orchestration.task_runner: dask``: candidates in parallel."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from recpipe.paths import Paths
from tests.pipeline.conftest import CHEAP

pytest.importorskip("prefect_dask")
pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

DASK = [
    *CHEAP,
    "orchestration.task_runner=dask",
    "orchestration.dask_workers=2",
    "orchestration.threads_per_worker=1",
]


def test_retrain_flow_trains_candidates_on_dask_workers(workspace: Paths) -> None:
    import mlflow

    from flows.retrain import retrain

    summary = retrain(overrides=DASK, root=str(workspace.root))

    training = summary["training"]
    assert set(training) == {"mf_bpr", "mf_wals"}
    pids = {name: entry["worker"]["pid"] for name, entry in training.items()}
    # each candidate on its own worker process, neither in the flow's process
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values(), pids
    for name, entry in training.items():
        assert entry["worker"]["torch_threads"] == 1
        split = entry["splits"]["user_temporal"]
        assert (workspace.root / split["artifact"]).is_dir(), name
        assert json.loads((workspace.model_dir(name) / "training.json").read_text())["model"]
    # the results were gathered before evaluate: both candidates are on the leaderboard
    metrics = json.loads(workspace.metrics_json.read_text())
    assert metrics["split"] == "user_temporal"
    evaluation = json.loads(workspace.evaluation_json.read_text())["results"]["user_temporal"]
    assert {"mf_bpr", "mf_wals"} <= {n for n, e in evaluation.items() if "metrics" in e}
    gate = json.loads(workspace.gate_json.read_text())  # the gate ran on the gathered results
    assert gate["candidate"]["model"] in {"mf_bpr", "mf_wals"}
    assert summary["gate"]["passed"] == gate["passed"]

    # each worker's candidate run is nested under the flow's pipeline run
    mlflow.set_tracking_uri(f"sqlite:///{workspace.mlflow_db}")
    runs: pd.DataFrame = mlflow.search_runs(experiment_names=["recpipe"])
    children = runs[runs["tags.mlflow.parentRunId"] == summary["mlflow_run_id"]]
    trained = children[children["tags.recpipe.stage"] == "train"]
    assert set(trained["tags.recpipe.model"]) == {"mf_bpr", "mf_wals"}
    assert (trained["status"] == "FINISHED").all()
    assert trained["metrics.train.best_epoch"].notna().all()
