"""The package stage: which model it packages (champion, else the gate's candidate), the
bundle's lineage labels, the exported archive, and a clear error with nothing to package."""

from __future__ import annotations

import json

import pytest

from recpipe import stages
from recpipe.errors import StageError
from recpipe.gates.promote import metrics_from_tags
from recpipe.paths import Paths
from tests.unit.gate_workspace import build_workspace, ring_sessions, small_params

pytestmark = pytest.mark.slow

pytest.importorskip("bentoml")


@pytest.fixture
def workspace(tmp_path):
    """The gate tests' tiny workspace (with the sessionized events the package stage reads)."""
    import mlflow

    before = mlflow.get_tracking_uri()
    paths = build_workspace(tmp_path)
    assert (paths.sessions_dir / "events.parquet").is_file()
    yield paths
    mlflow.set_tracking_uri(before)


def test_metrics_come_back_from_registry_tags() -> None:
    tags = {"metric.recall_at_20": "0.5", "metric.cold_items.ndcg_at_10": "0.25", "git": "x"}
    assert metrics_from_tags(tags) == {"recall@20": 0.5, "cold_items.ndcg@10": 0.25}


def test_nothing_to_package_is_a_clear_error(tmp_path) -> None:
    paths = Paths.at(tmp_path)
    params = small_params(tmp_path)
    with pytest.raises(StageError, match="run the sessions stage"):
        stages.package(params, paths)
    paths.sessions_dir.mkdir(parents=True)
    ring_sessions(0).to_parquet(paths.sessions_dir / "events.parquet", index=False)
    with pytest.raises(StageError, match="nothing to package"):
        stages.package(params, paths)
    assert stages.package(params, paths, missing_ok=True)["bento_tag"] is None
    assert not paths.bento_archive.exists()


def test_recpipe_serve_without_the_bento_is_a_clear_error(tmp_path) -> None:
    from typer.testing import CliRunner

    from recpipe.cli import app

    result = CliRunner().invoke(
        app, ["serve", "--root", str(tmp_path), "--bento", "recpipe:nosuchversion"]
    )
    assert result.exit_code == 1
    assert "no Bento recpipe:nosuchversion" in result.output


def test_recpipe_serve_on_a_port_in_use_is_one_line(tmp_path) -> None:
    import socket

    from typer.testing import CliRunner

    from recpipe.cli import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--root", str(tmp_path), "--port", str(port)])
    assert result.exit_code == 2  # a usage error, as a bad param
    assert f"port {port} on 127.0.0.1 is in use" in result.output
    assert "Traceback" not in result.output


def test_the_gate_candidate_then_the_champion_is_packaged(workspace: Paths) -> None:
    from recpipe.serve.predictor import Predictor

    params = small_params(workspace.root, "gate.registered_model=pkg", "serve.max_k=15")
    gate = stages.gate(params, workspace)
    assert gate["passed"]
    # before `register`: no champion, the gate's (passing) candidate, unregistered
    first = stages.package(params, workspace)
    assert first["labels"]["source"] == "gate_candidate"
    assert first["labels"]["registry_version"] is None
    assert first["labels"]["gate_decision"] == "passed"
    assert first["labels"]["data_hash"] == "hash-0"
    assert first["smoke_test"]["session"] == "model"
    assert workspace.bento_archive.is_file()

    register = stages.register(params, workspace)
    assert register["promoted"] and register["champion"] == "1"
    second = stages.package(params, workspace)
    labels = second["labels"]
    assert labels["source"] == "champion" and labels["registry_version"] == "1"
    assert labels["registered_model"] == "pkg" and labels["model"] == "markov"
    # lineage and metrics from the version's record (its tags are only a few)
    assert labels["data_hash"] == "hash-0" and labels["git_commit"] != "unknown"
    assert float(labels["metric.ndcg@10"]) > 0
    assert float(labels["metric.recall@20"]) == pytest.approx(gate["candidate"]["value"], rel=1e-5)
    assert second["bento_tag"] != first["bento_tag"]
    assert json.loads(workspace.package_json.read_text())["bento_tag"] == second["bento_tag"]

    import bentoml

    stored = bentoml.models.get(second["model_tag"])
    assert stored.info.labels["registry_version"] == "1"
    predictor = Predictor.from_artifact(stored.path)
    info = predictor.info()
    assert info["registry_version"] == "1" and info["source"] == "champion"
    assert info["limits"]["max_k"] == 15
    assert info["metrics"]["recall@20"] == pytest.approx(gate["candidate"]["value"], rel=1e-5)
    # the fallback and the seen items come from every sessionized event
    assert predictor.seen is not None and predictor.seen.nnz > 0


def test_each_bento_references_the_model_packaged_with_it(tmp_path, monkeypatch) -> None:
    """Packaging twice in one process (a long-lived worker, a test session): BentoML
    writes the version it resolves for ``recpipe-champion:latest`` into the service's
    reference, so the second Bento referenced the first model."""
    import bentoml

    from recpipe.serve.package import package_bundle
    from tests.serve.helpers import make_bundle

    monkeypatch.delenv("RECPIPE_BUNDLE", raising=False)
    reports = [
        package_bundle(
            make_bundle(tmp_path / f"bundle{i}" / "bundle"),
            tmp_path / f"ws{i}" / "bentos" / "recpipe.bento",
            labels={"registry_version": str(i)},
        )
        for i in (1, 2)
    ]
    assert reports[0]["model_tag"] != reports[1]["model_tag"]
    for report in reports:
        bento = bentoml.bentos.get(report["bento_tag"])
        assert [str(m.tag) for m in bento.info.all_models] == [report["model_tag"]]
