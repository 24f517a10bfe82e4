"""dvc.yaml, Paths and the stage functions agree, on paper and in what stages write."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from recpipe.config import Params
from recpipe.paths import Paths
from recpipe.pipeline import STAGES, run_stage

REPO = Path(__file__).resolve().parents[2]


def _entries(items: list) -> dict[str, dict]:
    """dvc.yaml list entries (plain strings or {path: {options}}) as {path: options}."""
    out: dict[str, dict] = {}
    for item in items or []:
        if isinstance(item, str):
            out[item] = {}
        else:
            ((path, opts),) = item.items()
            out[path] = opts or {}
    return out


def test_dvc_yaml_declares_exactly_what_stages_declare() -> None:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    paths = Paths.at(REPO)
    assert set(dvc) == set(STAGES)
    for name, spec in STAGES.items():
        stage = dvc[name]
        if spec.foreach is not None:  # one stage per item: the template is under "do"
            assert stage["foreach"] == spec.foreach, name
            stage = stage["do"]
            assert stage["cmd"] == f"recpipe stage {name} --model ${{item}}"
        else:
            assert stage["cmd"] == f"recpipe stage {name}"
        assert set(stage.get("params", [])) == set(spec.params), name
        deps = set(spec.code) | {paths.rel(p) for p in spec.deps(paths)}
        assert set(stage["deps"]) == deps, name
        outs = _entries(stage.get("outs", []))
        cached = {p for p, o in outs.items() if o.get("cache", True)}
        uncached = {p for p, o in outs.items() if not o.get("cache", True)}
        assert cached == {paths.rel(p) for p in spec.outs(paths)}, name
        assert uncached == {paths.rel(p) for p in spec.plain_outs(paths)}, name
        metrics = _entries(stage.get("metrics", []))
        assert set(metrics) == {paths.rel(p) for p in spec.metrics(paths)}, name
        for path, options in {**outs, **metrics}.items():  # dvc keeps a persisting out
            assert options.get("persist", False) == spec.persist, (name, path)
        for code in spec.code:
            assert (REPO / code).exists(), f"{name}: code dep {code} does not exist"


def test_params_sections_exist() -> None:
    sections = set(Params().dump())
    for spec in STAGES.values():
        assert {p.split(".")[0] for p in spec.params} <= sections, spec.name


def test_stages_write_exactly_their_declared_outputs(
    small_params: Params, workspace: Paths
) -> None:
    """Run every stage in order in an empty workspace and compare files with declarations."""
    root = workspace.root
    produced: set[Path] = set()
    for name, spec in STAGES.items():
        before = {p for p in root.rglob("*") if p.is_file()}
        run_stage(name, small_params, workspace)
        written = {p for p in root.rglob("*") if p.is_file()} - before
        declared = (
            spec.all_outs(workspace, small_params)
            + spec.metrics(workspace)
            + spec.plain_outs(workspace)
        )
        for out in declared:
            assert out.exists(), f"{name} did not write {workspace.rel(out)}"
        for path in written:
            assert any(path == d or d in path.parents for d in declared), (
                f"{name} wrote undeclared {workspace.rel(path)}"
            )
        for dep in spec.deps(workspace):
            assert any(dep == p or dep in p.parents for p in produced), (
                f"{name} depends on {workspace.rel(dep)}, which no earlier stage wrote"
            )
        produced |= set(declared)


#: Figures of two models on a cold-start split and training histories, for the plots.
_RESULTS = {
    "cold_start": {
        "pop": {
            "metrics": {
                f"{p}{m}@{k}": k / 40
                for p in ("", "cold_users/")
                for m in ("recall", "ndcg")
                for k in (5, 20)
            }
        },
        "mf_bpr": {
            "role": "candidate",
            "metrics": {f"{m}@{k}": k / 30 for m in ("recall", "ndcg") for k in (5, 20)},
        },
    }
}
_TRAINING = {
    "mf_bpr": {
        "splits": {
            "cold_start": {
                "monitor": "recall@20",
                "history": [
                    {"epoch": 0, "loss": 0.7, "metrics": {"recall@20": 0.2}},
                    {"epoch": 1, "loss": 0.6, "metrics": {"recall@20": 0.3}},
                ],
            }
        }
    }
}


def test_dvc_plots_show_draws_every_plot_from_what_evaluate_writes(tmp_path: Path) -> None:
    import subprocess
    import sys

    from recpipe.evaluate.plots import write_plots

    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    plots = {name: opts for item in dvc_yaml["plots"] for name, opts in item.items()}
    evaluate_outs = _entries(dvc_yaml["stages"]["evaluate"]["outs"])
    for name, opts in plots.items():
        (source,) = opts["y"]
        assert any(source.startswith(f"{out}/") for out in evaluate_outs), name
        assert (REPO / ".dvc" / "plots" / f"{opts['template']}.json").is_file(), name
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"plots": dvc_yaml["plots"]}))
    env = {"DVC_NO_ANALYTICS": "1"}
    run = {"cwd": tmp_path, "capture_output": True, "text": True, "timeout": 120}
    init = [sys.executable, "-m", "dvc", "init", "--no-scm", "-q"]
    done = subprocess.run(init, **run, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    (tmp_path / ".dvc" / "plots").mkdir(exist_ok=True)
    for template in (REPO / ".dvc" / "plots").glob("*.json"):
        (tmp_path / ".dvc" / "plots" / template.name).write_text(template.read_text())
    write_plots(_RESULTS, [5, 20], _TRAINING, tmp_path / "reports" / "plots")
    cmd = [sys.executable, "-m", "dvc", "plots", "show", "--json"]
    done = subprocess.run(cmd, **run, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert not shown.get("errors"), shown["errors"]
    assert set(shown["data"]) == set(plots)
    recall = shown["data"]["recall@K"][0]["content"]["data"]["values"]
    panels = {row["panel"] for row in recall}
    assert panels == {"cold_start: all test queries", "cold_start: cold users"}
    assert {row["model"] for row in recall} == {"pop", "mf_bpr"}
    loss = shown["data"]["training loss"][0]["content"]["data"]["values"]
    assert [float(row["loss"]) for row in loss] == [0.7, 0.6]
