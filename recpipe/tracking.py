"""MLflow tracking: one run per pipeline run, pointed at a SQLite store by default.

The default store is ``sqlite:///<workspace>/mlflow.db`` with artifacts under
``<workspace>/mlruns``; ``tracking.tracking_uri`` in params points it at an MLflow
server instead. Nothing is configured at import time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from recpipe.config import Params
from recpipe.paths import Paths

log = logging.getLogger(__name__)


def tracking_uri(params: Params, paths: Paths) -> str:
    """The MLflow tracking URI these params and workspace use."""
    return params.tracking.tracking_uri or f"sqlite:///{paths.mlflow_db.resolve()}"


def _experiment_id(name: str, paths: Paths) -> str:
    import mlflow

    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    return mlflow.create_experiment(
        name, artifact_location=paths.mlflow_artifacts.resolve().as_uri()
    )


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, full + "."))
        else:
            out[full] = value
    return out


@contextmanager
def pipeline_run(params: Params, paths: Paths, run_name: str | None = None) -> Iterator[str]:
    """Open one MLflow run for a pipeline run; yields its run id.

    Params are logged flattened (``synth.seed``); whatever happens inside, the data
    manifest and the validation reports that exist are logged on exit, so a failed
    validation is recorded too.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(params, paths))
    experiment_id = _experiment_id(params.tracking.experiment, paths)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        flat = {
            k: json.dumps(v) if isinstance(v, list) else v
            for k, v in _flatten(params.dump()).items()
        }
        mlflow.log_params(flat)
        try:
            yield run.info.run_id
        finally:
            log_outputs(paths)


def log_outputs(paths: Paths) -> None:
    """Log the data manifest and validation summary of the active run (those that exist)."""
    import mlflow

    manifest = paths.interim_dir / "manifest.json"
    if manifest.exists():
        data = json.loads(manifest.read_text())
        mlflow.log_dict(data, "data/manifest.json")
        mlflow.set_tags(
            {
                "data.source": data.get("source", ""),
                "data.content_hash": data.get("content_hash", ""),
            }
        )
        mlflow.log_metrics({f"data.rows.{k}": float(v) for k, v in data.get("rows", {}).items()})
    if paths.validation_json.exists():
        report = json.loads(paths.validation_json.read_text())
        mlflow.log_dict(report, "validation/validation.json")
        mlflow.set_tag("validation.passed", str(report.get("passed")))
        counts = report.get("counts", {})
        mlflow.log_metrics(
            {f"validation.{k}": float(v) for k, v in counts.items() if isinstance(v, int | float)}
        )
    if paths.validation_md.exists():
        mlflow.log_artifact(str(paths.validation_md), "validation")
    if paths.splits_json.exists():
        splits = json.loads(paths.splits_json.read_text())
        mlflow.log_dict(splits, "splits/splits.json")
        for kind, entry in splits.get("splits", {}).items():
            parts = entry.get("stats", {}).get("parts", {})
            mlflow.log_metrics(
                {
                    f"split.{kind}.{part}.rows": float(stats["rows"])
                    for part, stats in parts.items()
                    if _is_number(stats.get("rows"))
                }
            )
    if paths.evaluation_json.exists():
        evaluation = json.loads(paths.evaluation_json.read_text())
        mlflow.log_dict(evaluation, "evaluation/evaluation.json")
        for split, models in evaluation.get("results", {}).items():
            mlflow.log_metrics(
                {
                    f"{split}.{model}.{key.replace('@', '_at_')}": float(value)
                    for model, entry in models.items()
                    for key, value in entry.get("metrics", {}).items()
                    if _is_number(value)
                }
            )
        if paths.leaderboard_md.exists():
            mlflow.log_artifact(str(paths.leaderboard_md), "evaluation")
        if paths.plots_dir.is_dir():
            mlflow.log_artifacts(str(paths.plots_dir), "evaluation/plots")
    if paths.features_json.exists():
        mlflow.log_dict(json.loads(paths.features_json.read_text()), "features/features.json")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
