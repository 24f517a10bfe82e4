"""The retraining flow: the pipeline's stage functions chained as Prefect tasks.

This module orchestrates only: every step is a function of ``recpipe.stages``, the
same one that ``recpipe stage NAME`` and dvc.yaml run (``register``, which writes to
the MLflow registry only, has no dvc.yaml stage). The run ends by packaging the
champion (after this run's promotion, if any) as a Bento.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from recpipe import stages, tracking
from recpipe.config import Params
from recpipe.paths import Paths


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(params: Params, paths: Paths) -> dict[str, Any]:
    return stages.ingest(params, paths)


def _publish(report: Path, key: str, description: str) -> None:
    """Show a Markdown report a stage wrote (if any) as a Prefect artifact."""
    if report.exists():
        create_markdown_artifact(report.read_text(), key=key, description=description)


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(params: Params, paths: Paths) -> dict[str, Any]:
    try:
        return stages.validate(params, paths)
    finally:  # a failed validation's report is the one people need to see
        _publish(paths.validation_md, "validation-summary", "Great Expectations validation")


@task(name="sessions", cache_policy=NO_CACHE)
def sessions_task(params: Params, paths: Paths) -> dict[str, Any]:
    return stages.sessions(params, paths)


@task(name="features", cache_policy=NO_CACHE)
def features_task(params: Params, paths: Paths) -> dict[str, Any]:
    return stages.features(params, paths)


@task(name="train", cache_policy=NO_CACHE)
def train_task(params: Params, paths: Paths, model: str) -> dict[str, Any]:
    return stages.train(params, paths, model)[model]


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(params: Params, paths: Paths) -> dict[str, Any]:
    report = stages.evaluate(params, paths)
    _publish(paths.leaderboard_md, "leaderboard", "Baselines on every split (full ranking)")
    return report


@task(name="gate", cache_policy=NO_CACHE)
def gate_task(params: Params, paths: Paths) -> dict[str, Any]:
    report = stages.gate(params, paths)
    _publish(paths.gate_md, "gate", "Gate decision: the best candidate against the rules")
    return report


@task(name="register", cache_policy=NO_CACHE)
def register_task(params: Params, paths: Paths) -> dict[str, Any]:
    return stages.register(params, paths)


@task(name="package", cache_policy=NO_CACHE)
def package_task(params: Params, paths: Paths) -> dict[str, Any]:
    # nothing to serve yet (no champion, no gate candidate) is reported, not raised
    return stages.package(params, paths, missing_ok=True)


@flow(name="recpipe-retrain")
def retrain(
    params_file: str | None = None,
    overrides: list[str] | None = None,
    root: str | None = None,
) -> dict[str, Any]:
    """Run the pipeline on the data that params name; one MLflow run per flow run.

    ``params_file`` defaults to ``<root>/params.yaml``; ``overrides`` are ``key=value``
    strings as for ``recpipe run --set``; ``root`` is the workspace (default: cwd).
    """
    logger = get_run_logger()
    paths = Paths.at(root)
    params = stages.workspace_params(paths, params_file, overrides)
    with tracking.pipeline_run(params, paths, run_name="retrain") as run_id:
        logger.info("MLflow run %s at %s", run_id, tracking.tracking_uri(params, paths))
        manifest = ingest_task(params, paths)
        logger.info("ingested %s events from %s", manifest["rows"]["events"], manifest["source"])
        report = validate_task(params, paths)
        logger.info("validation passed: %s", report["passed"])
        splits = sessions_task(params, paths)
        features = features_task(params, paths)
        training = {
            model: train_task.with_options(name=f"train-{model}")(params, paths, model)
            for model in params.train.candidates
        }
        evaluation = evaluate_task(params, paths)
        gate = gate_task(params, paths)  # a failed gate is a decision: the run goes on
        logger.info("gate %s: %s", "passed" if gate["passed"] else "NOT passed", gate["reasons"])
        registry = register_task(params, paths)
        logger.info("registry: %s", registry["message"])
        package = package_task(params, paths)
        logger.info("Bento: %s", package.get("bento_tag") or package.get("message"))
    return {
        "mlflow_run_id": run_id,
        "manifest": manifest,
        "validation": {"passed": report["passed"], "counts": report.get("counts", {})},
        "splits": {k: v.get("skipped", "built") for k, v in splits["splits"].items()},
        "features": features,
        "training": training,
        "evaluation": evaluation,
        "gate": {k: gate[k] for k in ("passed", "reasons", "candidate", "champion")},
        "registry": registry,
        "package": package,
        "outputs": {
            "data": str(paths.validated_dir),
            "splits": str(paths.splits_json),
            "features": str(paths.features_dir),
            "models": str(paths.models_dir),
            "leaderboard": str(paths.leaderboard_md),
            "metrics": str(paths.metrics_json),
            "gate": str(paths.gate_md),
            "validation_report": str(paths.validation_md),
            "mlflow": tracking.tracking_uri(params, paths),
        },
    }
