"""`recpipe run`'s flow end to end on small synthetic data, under the Prefect test harness."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from recpipe.errors import DataValidationError
from recpipe.paths import Paths
from tests.pipeline.conftest import CHEAP, SMALL

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _all_runs(paths: Paths, experiment: str = "recpipe") -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{paths.mlflow_db}")
    return mlflow.search_runs(experiment_names=[experiment])


def _mlflow_runs(paths: Paths) -> pd.DataFrame:
    """The pipeline runs (the candidates' training runs are nested in them)."""
    runs = _all_runs(paths)
    if "tags.mlflow.parentRunId" not in runs:
        return runs
    return runs[runs["tags.mlflow.parentRunId"].isna()].reset_index(drop=True)


@pytest.fixture(scope="module")
def small_run(
    tmp_path_factory: pytest.TempPathFactory, prefect_harness: None
) -> tuple[Paths, dict]:
    """One retraining run on the small synthetic data, in a workspace of its own; the
    tests below only read what it wrote (one run instead of three, about 13 s each)."""
    from flows.retrain import retrain

    workspace = Paths.at(tmp_path_factory.mktemp("small_run"))
    return workspace, retrain(overrides=SMALL, root=str(workspace.root))


def test_retrain_flow_ingests_validates_and_tracks(small_run: tuple[Paths, dict]) -> None:
    workspace, summary = small_run

    manifest = json.loads((workspace.interim_dir / "manifest.json").read_text())
    assert manifest["source"] == "synthetic"
    assert summary["manifest"]["rows"]["events"] == manifest["rows"]["events"] > 0
    assert summary["validation"]["passed"] is True
    validated = pd.read_parquet(workspace.validated_dir / "events.parquet")
    assert len(validated) == manifest["rows"]["events"]  # nothing lost
    assert json.loads(workspace.validation_json.read_text())["passed"] is True

    runs = _mlflow_runs(workspace)
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["run_id"] == summary["mlflow_run_id"]
    # the candidates' training runs are nested in it, in the same experiment (not Default)
    nested = _all_runs(workspace)
    nested = nested[nested["tags.mlflow.parentRunId"] == summary["mlflow_run_id"]]
    assert len(nested) >= 1 and nested["tags.mlflow.runName"].str.startswith("train-").all()
    assert len(_all_runs(workspace, "Default")) == 0
    assert run["params.synth.n_users"] == "60"
    assert run["tags.validation.passed"] == "True"
    assert run["tags.data.content_hash"] == manifest["content_hash"]
    assert run["metrics.data.rows.events"] == manifest["rows"]["events"]


def test_library_logs_reach_the_flow_runs_logs_named_by_task(
    workspace: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from flows.retrain import retrain

    # as in a deployment's run process: the root logger at WARNING, and no API handler
    # on recpipe's logger (PREFECT_LOGGING_EXTRA_LOGGERS unset when prefect started)
    monkeypatch.setattr(logging.getLogger(), "level", logging.WARNING)
    lib = logging.getLogger("recpipe")
    seen: list[logging.LogRecord] = []
    collect = logging.Handler()
    collect.emit = seen.append  # type: ignore[method-assign]
    kept = [h for h in lib.handlers if not isinstance(h, APILogHandler)]
    monkeypatch.setattr(lib, "handlers", [*kept, collect])  # the list is back after the test
    level = lib.level
    state = retrain(overrides=CHEAP, root=str(workspace.root), return_state=True)
    assert state.is_completed()
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
        names = {t.id: t.name for t in client.read_task_runs()}
    lines = [(log.name, names.get(log.task_run_id), log.message) for log in logs]
    stage = [x for x in lines if x[0] == "recpipe.stages" and "training mf_bpr" in x[2]]
    assert stage and stage[0][1].startswith("train-mf_bpr"), lines
    epochs = [x for x in lines if x[0] == "recpipe.train.loop" and "epoch 1/2" in x[2]]
    assert len(epochs) == 2  # mf_bpr and mf_wals
    assert sum(name.startswith("recpipe.") for name, _, _ in lines) > 20
    # the console lines name the task run too (what `recpipe run` prints)
    record = next(r for r in seen if "training mf_wals" in r.getMessage())
    assert record.task_run_name.startswith("train-mf_wals")
    # and the flow put the logger back as it found it
    assert lib.level == level and not any(isinstance(h, APILogHandler) for h in lib.handlers)


def test_retrain_flow_stops_at_failed_validation(workspace: Paths) -> None:
    from flows.retrain import retrain

    # every synthetic event is a 'view': allowing only purchases makes validation fail
    bad = [*SMALL, "validate.event_types=[purchase]"]
    with pytest.raises(DataValidationError):
        retrain(overrides=bad, root=str(workspace.root))
    report = json.loads(workspace.validation_json.read_text())
    assert report["passed"] is False
    # nothing downstream gets bad data: a failed drop writes no validated tables (a
    # workspace with a previous good drop keeps it: tests/pipeline/test_faults.py)
    assert not (workspace.validated_dir / "events.parquet").exists()
    assert not workspace.sessions_dir.exists()
    runs = _mlflow_runs(workspace)
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FAILED"
    assert runs.iloc[0]["tags.validation.passed"] == "False"


def test_retrain_flow_writes_leak_free_splits_and_features(
    small_run: tuple[Paths, dict],
) -> None:
    workspace, summary = small_run
    report = json.loads(workspace.splits_json.read_text())
    for kind, entry in report["splits"].items():
        assert summary["splits"][kind] == "built"
        assert all(entry["leakage"].values()), (kind, entry["leakage"])
        meta = json.loads((workspace.features_dir / kind / "meta.json").read_text())
        train = pd.read_parquet(workspace.features_dir / kind / "train.parquet")
        split_rows = entry["stats"]["parts"]["train"]["rows"]
        assert len(train) == meta["parts"]["train"]["rows"] == split_rows
        assert train["item_idx"].between(2, meta["n_items"] - 1).all()  # no reserved slot in train
    runs = _mlflow_runs(workspace)
    assert runs.iloc[0]["metrics.split.session.test.rows"] > 0
    # the leaderboard: every baseline evaluated; metrics.json: the gate split's headline
    evaluation = json.loads(workspace.evaluation_json.read_text())
    session = {
        n: e["metrics"] for n, e in evaluation["results"]["session"].items() if "metrics" in e
    }
    assert {"pop", "markov", "itemknn"} <= set(session)
    assert session["markov"]["recall@20"] > session["pop"]["recall@20"]  # planted sequences
    headline = json.loads(workspace.metrics_json.read_text())
    assert headline["split"] == "user_temporal" and headline["metric"] == "recall@20"
    assert set(next(iter(headline["models"].values()))) <= {
        "recall@20",
        "ndcg@20",
        "mrr@20",
        "coverage@20",
    }
    user = evaluation["results"]["user_temporal"]
    # only the two models the gate compared: every other figure is in evaluation.json
    compared = {headline["candidate"], headline["best_baseline"]} - {None}
    assert set(headline["models"]) == compared
    for name in compared:
        assert headline["models"][name]["recall@20"] == user[name]["metrics"]["recall@20"]
    assert "| markov |" in workspace.leaderboard_md.read_text()
    assert (workspace.plots_dir / "session_recall.png").exists()
    best = max(session, key=lambda m: session[m]["recall@20"])
    assert evaluation["significance"]["session"]["best"] == best
    assert runs.iloc[0]["metrics.session.markov.recall_at_20"] == session["markov"]["recall@20"]


def test_retrain_flow_gates_and_registers_every_candidate(
    small_run: tuple[Paths, dict],
) -> None:
    from recpipe.gates.registry import Registry
    from recpipe.pipeline import workspace_params

    workspace, summary = small_run
    gate = json.loads(workspace.gate_json.read_text())
    assert {"passed", "reasons", "candidate", "champion", "rules"} <= set(gate)
    assert gate["split"] == "user_temporal" and gate["reasons"]
    assert [r["name"] for r in gate["rules"]] == [
        "beats_baseline",
        "champion",
        "latency",
        "artifact_size",
        "validation",
    ]
    assert workspace.gate_md.read_text().startswith("# Gate: ")
    registry = summary["registry"]
    params = workspace_params(workspace, None, SMALL)
    trained = {
        f"{name}/{split}"
        for name in params.train.candidates
        for split in params.train.model_splits.get(name, params.train.splits)
        if (workspace.model_dir(name) / split / "meta.json").is_file()
    }
    assert set(registry["versions"]) == trained
    aliases = Registry.for_workspace(params, workspace).aliases()
    if gate["passed"]:  # the gate's candidate became the champion
        key = f"{gate['candidate']['model']}/{gate['split']}"
        assert aliases == {"champion": registry["versions"][key]}
    else:  # a failed gate moves no alias; the run still completes, "not promoted"
        assert aliases == {} and "not promoted" in registry["message"]
        assert summary["outcome"].startswith("not promoted") and not summary["promoted"]
    assert summary["gate"]["passed"] == gate["passed"]
    runs = _mlflow_runs(workspace)
    pipeline_run = runs.set_index("run_id").loc[summary["mlflow_run_id"]]
    assert pipeline_run["tags.gate.passed"] == str(gate["passed"])


def test_a_scheduled_run_tunes_and_trains_with_the_tuned_config(workspace: Paths) -> None:
    import mlflow
    import yaml

    from flows.retrain import retrain
    from tests.pipeline.conftest import CHEAP

    overrides = [
        *CHEAP,
        "train.candidates=[mf_bpr]",
        "tune.every=1",
        "tune.use=true",
        "tune.trials=2",
        "tune.models=[mf_bpr, itemknn]",
        "tune.split=user_temporal",
        "evaluate.models=[pop, itemknn]",
    ]
    summary = retrain(overrides=overrides, root=str(workspace.root))
    assert set(summary["tuning"]["models"]) == {"mf_bpr", "itemknn"}
    tuned = yaml.safe_load((workspace.tuned_dir / "user_temporal" / "mf_bpr.yaml").read_text())
    config = json.loads(
        (workspace.model_dir("mf_bpr") / "user_temporal" / "config.json").read_text()
    )
    for key in ("factors", "learning_rate", "l2", "negatives"):
        assert config[key] == tuned["best_config"][key], key
    gate = json.loads(workspace.gate_json.read_text())
    assert gate["tuning"]["use"] and gate["tuning"]["models"]["mf_bpr"]["tuned"]
    run = _mlflow_runs(workspace).iloc[0]
    assert run["tags.tune.use"] == "true"
    artifacts = mlflow.MlflowClient().list_artifacts(run["run_id"], "tuned/user_temporal")
    assert {a.path for a in artifacts} >= {"tuned/user_temporal/mf_bpr.yaml"}
