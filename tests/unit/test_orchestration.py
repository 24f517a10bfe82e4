"""Candidate fan-out pieces: orchestration params, MLflow nesting from another thread."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from recpipe.config import load_params
from recpipe.errors import ConfigError
from recpipe.paths import Paths


def test_orchestration_defaults_to_sequential_and_checks_values() -> None:
    params = load_params(None)
    assert params.orchestration.task_runner == "sequential"
    assert params.orchestration.dask_address is None
    with pytest.raises(ConfigError, match=r"orchestration\.task_runner"):
        load_params(None, ["orchestration.task_runner=ray"])
    with pytest.raises(ConfigError, match=r"orchestration\.dask_workers"):
        load_params(None, ["orchestration.dask_workers=0"])


def test_candidate_run_nests_under_the_pipeline_run_from_another_thread(tmp_path: Path) -> None:
    import mlflow

    from recpipe import tracking

    paths = Paths.at(tmp_path)
    params = load_params(None)
    seen: dict[str, object] = {}

    def worker(parent: str) -> None:  # no active run in this thread, as on a Dask worker
        assert not mlflow.active_run()
        with tracking.candidate_run("mf_bpr", "user_temporal", {}) as none:
            seen["without"] = none
        with (
            tracking.under_run(params, paths, parent),
            tracking.candidate_run("mf_bpr", "user_temporal", {"factors": 8}) as run,
        ):
            seen["with"] = run
            run.on_epoch({"epoch": 0, "loss": 1.0, "examples_per_s": 10.0})

    with tracking.pipeline_run(params, paths, run_name="retrain") as run_id:
        thread = threading.Thread(target=worker, args=(run_id,))
        thread.start()
        thread.join()
    assert seen["without"] is None and seen["with"] is not None
    runs = mlflow.search_runs(experiment_names=[params.tracking.experiment])
    child = runs[runs["tags.mlflow.parentRunId"] == run_id]
    assert list(child["tags.recpipe.model"]) == ["mf_bpr"]
    assert list(child["params.factors"]) == ["8"]
    assert list(child["metrics.loss"]) == [1.0]


def test_dask_task_runner_follows_the_params() -> None:
    pytest.importorskip("prefect_dask")
    from flows.retrain import dask_task_runner

    local = dask_task_runner(load_params(None, ["orchestration.threads_per_worker=2"]))
    assert local.cluster_kwargs["n_workers"] == 2
    assert local.cluster_kwargs["threads_per_worker"] == 2
    assert local.cluster_kwargs["dashboard_address"] == "127.0.0.1:0"  # never :8787
    remote = dask_task_runner(load_params(None, ["orchestration.dask_address=tcp://h:8786"]))
    assert remote.address == "tcp://h:8786"


def test_params_and_paths_pickle_for_workers(tmp_path: Path) -> None:
    import pickle

    params = load_params(None, ["orchestration.task_runner=dask"])
    paths = Paths.at(tmp_path)
    assert pickle.loads(pickle.dumps(params)) == params
    assert pickle.loads(pickle.dumps(paths)) == paths


def test_missing_prefect_dask_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from flows.retrain import dask_task_runner

    monkeypatch.setitem(sys.modules, "prefect_dask", None)  # import fails
    with pytest.raises(ConfigError, match="prefect-dask"):
        dask_task_runner(load_params(None, ["orchestration.task_runner=dask"]))
