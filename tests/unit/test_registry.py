"""Registry and promotion against a real MLflow SQLite store (one per module, in tmp).

Each test uses its own registered model name (``gate.registered_model``), so tests
share the store's set-up cost but never each other's versions or aliases.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from recpipe import stages
from recpipe.cli import app
from recpipe.errors import RegistryError
from recpipe.gates.registry import CHAMPION, PREVIOUS, Registry
from recpipe.paths import Paths
from tests.unit.gate_workspace import SPLIT, build_workspace, small_params

ARTIFACT = Path("models") / "markov" / SPLIT


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    """The tiny workspace; MLflow's global tracking URI is restored afterwards."""
    import mlflow

    before = mlflow.get_tracking_uri()
    yield build_workspace(tmp_path_factory.mktemp("gate-ws"))
    mlflow.set_tracking_uri(before)


def _registry(paths: Paths, name: str) -> Registry:
    return Registry.for_workspace(small_params(paths.root, f"gate.registered_model={name}"), paths)


def _register(paths: Paths, name: str, n: int = 1) -> list[str]:
    """Register the candidate artifact ``n`` times (inside one MLflow run)."""
    from recpipe import tracking

    params = small_params(paths.root, f"gate.registered_model={name}")
    registry = Registry.for_workspace(params, paths)
    with tracking.stage_run(params, paths, "test"):
        return [registry.register(paths.root / ARTIFACT, {"test": "yes"}) for _ in range(n)]


def _gate_and_register(paths: Paths, name: str, *overrides: str) -> tuple[dict, dict]:
    params = small_params(paths.root, f"gate.registered_model={name}", *overrides)
    return stages.gate(params, paths), stages.register(params, paths)


def test_runs_promote_on_a_passing_gate_and_leave_aliases_on_a_failing_one(workspace):
    # first run: no champion; markov beats pop significantly -> v1 becomes champion
    gate, reg = _gate_and_register(workspace, "runs")
    assert gate["passed"], gate["reasons"]
    assert gate["champion"] is None and gate["candidate"]["model"] == "markov"
    assert reg["versions"] == {f"markov/{SPLIT}": "1"} and reg["promoted"]
    assert (reg["champion"], reg["previous"]) == ("1", None)
    registry = _registry(workspace, "runs")
    tags = registry.get_version("1").tags
    assert tags["recpipe.model"] == "markov" and tags["recpipe.split"] == SPLIT
    assert tags["gate.decision"] == "passed" and tags["promotion.kind"] == "gate"
    assert float(tags["metric.recall_at_20"]) == pytest.approx(gate["candidate"]["value"], rel=1e-5)
    # a few tags (model, split, gate outcome, gate metric; then the promotion's), not one
    # per metric: the rest is the version's record, one JSON file logged with it
    registration = {k: v for k, v in tags.items() if not k.startswith(("promotion.", "lineage."))}
    assert set(registration) == {
        "recpipe.model",
        "recpipe.split",
        "gate.decision",
        "metric.recall_at_20",
    }
    record = registry.details("1")
    assert record["model"] == "markov" and record["split"] == SPLIT
    assert record["gate"] == {
        "decision": "passed",
        "metric": "recall@20",
        "reasons": gate["reasons"],
    }
    assert record["metrics"]["recall@20"] == pytest.approx(gate["candidate"]["value"])
    assert {"ndcg@10", "mrr@20", "coverage@20"} <= set(record["metrics"])
    lineage = record["lineage"]
    assert lineage["data.content_hash"] == "hash-0" and len(lineage["data.manifest_sha256"]) == 64
    assert lineage["dvc.lock.sha256"] == "none" and lineage["git.commit"]
    assert record["pipeline_run_id"] == registry.get_version("1").run_id
    # the version list says which model each version is
    description = registry.get_version("1").description
    assert description == (
        f"markov on {SPLIT}: gate passed, recall@20 {gate['candidate']['value']:.4f}"
    )

    # second run: the champion is re-evaluated on the same split: equal -> v2 promoted
    gate, reg = _gate_and_register(workspace, "runs")
    assert gate["passed"], gate["reasons"]
    assert gate["champion"]["version"] == "1" and gate["champion"]["remapped"] is False
    assert gate["champion"]["value"] == pytest.approx(gate["candidate"]["value"])
    assert (reg["champion"], reg["previous"]) == ("2", "1")
    # the headline metrics file holds the champion's figures beside the compared models'
    headline = json.loads(workspace.metrics_json.read_text())
    assert headline["champion"]["version"] == "1" and headline["champion"]["model"] == "markov"
    assert headline["champion"]["recall@20"] == pytest.approx(gate["champion"]["value"])
    assert set(headline["champion"]) >= {"ndcg@20", "mrr@20"}
    assert headline["candidate"] == "markov" and headline["passed"]
    assert headline["models"]["markov"]["recall@20"] == pytest.approx(gate["candidate"]["value"])
    assert registry.get_version("2").tags["lineage.previous"] == "1"
    assert registry.get_version("1").tags["demotion.kind"] == "gate"

    # a weak candidate (here: a lift no model reaches) fails; registered, no alias moves
    gate, reg = _gate_and_register(workspace, "runs", "gate.min_lift=100")
    assert not gate["passed"] and "lift below the minimum" in gate["reasons"][0]
    assert reg["versions"] == {f"markov/{SPLIT}": "3"} and not reg["promoted"]
    assert "not promoted: the gate failed (beats_baseline)" in reg["message"]
    assert registry.aliases() == {CHAMPION: "2", PREVIOUS: "1"}
    assert registry.get_version("3").tags["gate.decision"] == "failed"
    assert "lift below the minimum" in registry.details("3")["gate"]["reasons"][0]
    md = workspace.gate_md.read_text()
    assert "NOT PASSED" in md and "Champion: registry version 2" in md


def test_the_gate_promotes_only_the_champion_it_compared_against(workspace):
    (v1, v2) = _register(workspace, "moved", 2)
    registry = _registry(workspace, "moved")
    registry.promote(v1, reason="start")
    gate = stages.gate(small_params(workspace.root, "gate.registered_model=moved"), workspace)
    assert gate["passed"] and gate["champion"]["version"] == v1
    registry.promote(v2, reason="someone else, meanwhile")
    reg = stages.register(small_params(workspace.root, "gate.registered_model=moved"), workspace)
    assert not reg["promoted"] and "the champion moved from v1 to v2" in reg["message"]
    assert registry.aliases() == {CHAMPION: v2, PREVIOUS: v1}


def test_manual_promote_and_rollback_record_who_and_why(workspace):
    v1, v2, v3 = _register(workspace, "manual", 3)
    registry = _registry(workspace, "manual")
    registry.promote(v1, reason="first")
    registry.promote(v2, reason="second")
    result = registry.promote(v3, reason="third", who="alice")
    assert result.changed and (result.champion, result.previous) == (v3, v2)
    tags = registry.get_version(v3).tags
    assert (tags["promotion.by"], tags["promotion.reason"]) == ("alice", "third")
    assert tags["promotion.kind"] == "manual" and tags["promotion.at"]
    assert not registry.promote(v3, reason="again").changed  # already the champion

    back = registry.rollback(reason="v3 hurts conversions", who="bob")
    assert (back.champion, back.previous) == (v2, v1)  # chained: v2 had replaced v1
    assert registry.aliases() == {CHAMPION: v2, PREVIOUS: v1}
    assert registry.get_version(v3).tags["demotion.reason"] == "v3 hurts conversions"
    assert registry.get_version(v2).tags["promotion.kind"] == "rollback"
    assert registry.get_version(v2).tags["promotion.by"] == "bob"
    registry.rollback(reason="further")
    assert registry.aliases() == {CHAMPION: v1}  # v1 replaced nothing: no previous left
    with pytest.raises(RegistryError, match="no 'previous' alias"):
        registry.rollback(reason="nothing left")
    with pytest.raises(RegistryError, match=r"has no version '99'; its versions: 1, 2, 3"):
        registry.promote(99, reason="typo")


def test_two_concurrent_promotions_leave_a_consistent_state(workspace):
    v0, a, b = _register(workspace, "race", 3)
    _registry(workspace, "race").promote(v0, reason="start")
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def promote(version: str) -> None:
        try:
            registry = _registry(workspace, "race")  # its own client, as another process
            start.wait()
            registry.promote(version, reason=f"promote {version}")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(v,)) for v in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    aliases = _registry(workspace, "race").aliases()
    # serialised: whichever went second is the champion and the other one previous;
    # without the lock both would have moved v0 to previous and lost one promotion
    assert {aliases[CHAMPION], aliases[PREVIOUS]} == {a, b}
    winner = _registry(workspace, "race").get_version(aliases[CHAMPION]).tags
    assert winner["lineage.previous"] == aliases[PREVIOUS]


def test_an_unloadable_champion_fails_the_gate_with_a_clear_reason(workspace):
    (version,) = _register(workspace, "broken")
    registry = _registry(workspace, "broken")
    registry.promote(version, reason="start")
    # damage the stored artifact of the champion
    model_id = registry.get_version(version).source.rsplit("/", 1)[-1]  # models:/m-...
    (meta,) = workspace.root.glob(
        f"mlruns/**/{model_id}/artifacts/artifacts/recpipe_model/meta.json"
    )
    meta.write_text("{not json")

    params = small_params(workspace.root, "gate.registered_model=broken")
    gate = stages.gate(params, workspace)
    assert not gate["passed"]
    (reason,) = gate["reasons"]
    assert f"champion v{version} (markov) could not be evaluated on the gate split" in reason
    assert "ArtifactError" in reason and "is not valid JSON" in reason
    assert gate["champion"]["error"] and gate["champion"]["value"] is None
    reg = stages.register(params, workspace)
    assert not reg["promoted"] and registry.aliases() == {CHAMPION: version}


def test_a_registered_candidate_answers_as_the_service(workspace, tmp_path):
    import mlflow

    from recpipe.serve.packaging import build_bundle
    from recpipe.serve.predictor import Predictor

    _, reg = _gate_and_register(workspace, "as-served")
    version = reg["versions"][f"markov/{SPLIT}"]
    model = mlflow.pyfunc.load_model(f"models:/as-served/{version}")
    params = small_params(workspace.root)
    events = pd.read_parquet(workspace.sessions_dir / "events.parquet")
    # what the package stage would serve for this artifact
    bundle = build_bundle(
        tmp_path / "bundle",
        workspace.root / ARTIFACT,
        {},
        events,
        params.serve,
        legacy_gap_buckets=params.features.gap_buckets,
    )
    predictor = Predictor.from_artifact(bundle)
    frame = pd.DataFrame({"user_id": ["u1", None, "nobody"], "items": [[], ["i10"], []]})
    out = model.predict(frame, params={"k": 5})
    expected = [
        predictor.recommend("u1", k=5),
        predictor.recommend_session(["i10"], k=5),
        predictor.recommend("nobody", k=5),
    ]
    assert [list(x) for x in out["items"]] == [e.items for e in expected]
    assert list(out["strategy"]) == [e.strategy for e in expected]
    seen = set(events.loc[events["user_id"] == "u1", "item_id"])
    assert not set(out["items"][0]) & seen  # the user's own items are left out


def test_a_bare_model_version_serves_ids_through_mlflow_pyfunc(workspace):
    import mlflow

    # registered without a serving bundle: the model's own scores, nothing excluded
    (version,) = _register(workspace, "served")
    _registry(workspace, "served").promote(version, reason="serve")
    model = mlflow.pyfunc.load_model("models:/served@champion")
    assert model.metadata.signature.params.params[0].name == "k"
    frame = pd.DataFrame({"user_id": ["u1", None], "items": [["i03", "i04"], ["i10"]]})
    out = model.predict(frame, params={"k": 3})
    assert list(out.columns) == ["items", "scores"] and len(out) == 2
    assert out["items"][0][0] == "i05" and out["items"][1][0] == "i11"  # the ring's next
    assert len(out["items"][0]) == 3


def test_cli_promote_and_rollback(workspace):
    v1, v2 = _register(workspace, "cli", 2)
    runner = CliRunner()
    common = ["--root", str(workspace.root), "--set", "gate.registered_model=cli"]
    for argv in (["promote", "--version", "7", "--reason", "x"], ["rollback"]):
        res = runner.invoke(app, [*argv, *common])
        assert res.exit_code == 1 and "Traceback" not in res.output
    assert (
        "has no version '7'; its versions: 1, 2"
        in runner.invoke(app, ["promote", "--version", "7", "--reason", "x", *common]).output
    )
    res = runner.invoke(app, ["promote", "--version", v1, "--reason", "first", *common])
    assert res.exit_code == 0 and f"v{v1} is the champion" in res.output
    res = runner.invoke(app, ["promote", "--version", v2, "--reason", "A/B won", *common])
    assert f"v{v1} is previous" in res.output
    res = runner.invoke(app, ["rollback", "--reason", "alerts", *common])
    assert res.exit_code == 0 and f"v{v1} is the champion again" in res.output
    registry = _registry(workspace, "cli")
    assert registry.get_version(v2).tags["demotion.reason"] == "alerts"
    assert registry.get_version(v1).tags["promotion.reason"] == "alerts"


def test_no_store_no_champion_and_clear_errors(tmp_path):
    registry = Registry(f"sqlite:///{tmp_path / 'none.db'}", "x")
    assert registry.aliases() == {} and registry.champion() is None
    assert not (tmp_path / "none.db").exists()  # reading never creates a store
    with pytest.raises(RegistryError, match="no MLflow registry at"):
        registry.promote(1, reason="x")
    with pytest.raises(RegistryError, match="no MLflow registry at"):
        registry.rollback(reason="x")
    assert json.loads(json.dumps(registry.versions())) == []


def test_a_gate_split_that_was_not_evaluated_fails_the_gate(workspace):
    params = small_params(workspace.root, "gate.split=user_temporal")
    gate = stages.gate(params, workspace)
    assert not gate["passed"] and gate["candidate"] is None
    assert "the gate split 'user_temporal' was not evaluated" in " ".join(gate["reasons"])
    assert "set gate.split" in workspace.gate_md.read_text()
