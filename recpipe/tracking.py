"""MLflow tracking: one run per pipeline run, pointed at a SQLite store by default.

The default store is ``sqlite:///<workspace>/mlflow.db`` with artifacts under
``<workspace>/mlruns``; ``tracking.tracking_uri`` in params points it at an MLflow
server instead. Nothing is configured at import time.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from recpipe.config import Params
from recpipe.paths import Paths
from recpipe.workspace import pid_alive

log = logging.getLogger(__name__)

#: The pipeline run that :func:`candidate_run` nests under where no run is active here
#: (a Dask worker of the retraining flow); set by :func:`under_run`.
_PARENT_RUN: ContextVar[str | None] = ContextVar("recpipe_parent_run", default=None)


#: Tags naming the process that runs an MLflow run, so that the next run can end the runs
#: a killed process left RUNNING (:func:`end_stale_runs`).
PID_TAG, HOST_TAG = "recpipe.pid", "recpipe.host"


def _owner_tags() -> dict[str, str]:
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


@contextmanager
def _killed_on_signal() -> Iterator[None]:
    """End the active run as KILLED when a signal (SIGTERM, Ctrl-C: not an ``Exception``)
    interrupts the block; MLflow's own exit marks an error FAILED."""
    try:
        yield
    except Exception:
        raise
    except BaseException:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.end_run("KILLED")
        raise


#: Columns of MLflow's SQL store that hold artifact locations (absolute URIs: MLflow
#: resolves a relative location against the current directory when it records it).
_LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)


# ------------------------------------------- SIGTERM and the store's SQLite database ---


def hold_sigterm_in_database_work() -> None:
    """From now on in this process, a SIGTERM that arrives while the main thread has a
    SQLAlchemy connection checked out (MLflow's tracking and registry stores, Optuna's)
    is acted on when the connection returns to its pool
    (:func:`recpipe.workspace.hold_sigterm`).

    Why: a SIGTERM handler that raises (:func:`recpipe.recovery.sigterm_as_exit`'s, or
    Prefect's inside a flow run) could land in the middle of a SQLite query. SQLAlchemy
    then invalidates the connection, but the half-read cursor lives on in the
    exception's traceback and keeps SQLite's shared lock, so every write of the clean-up
    that follows (ending the MLflow runs as KILLED) waited out MLflow's 20 s busy timeout
    and failed: the run exited 1 after a minute instead of 143 at once. Idempotent;
    :func:`recpipe.recovery.sigterm_as_exit` and :func:`tracking_uri` call it."""
    global _LISTENING
    if _LISTENING:
        return
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    from recpipe.workspace import hold_sigterm, release_sigterm

    def checkout(_dbapi: Any, record: Any, _proxy: Any) -> None:
        hold_sigterm(id(record))

    def checkin(_dbapi: Any, record: Any) -> None:
        release_sigterm(id(record))

    event.listen(Pool, "checkout", checkout)
    event.listen(Pool, "checkin", checkin)
    event.listen(Pool, "detach", checkin)
    _LISTENING = True


_LISTENING = False


def tracking_uri(params: Params, paths: Paths) -> str:
    """The MLflow tracking URI these params and workspace use.

    With no ``tracking.tracking_uri`` it is the workspace's own SQLite store, derived
    from the workspace's location at every call; a store that was moved or copied with
    its workspace is first made to point at this workspace's ``mlruns/``
    (:func:`relocate_store`), so it never reads or writes the original's files.
    """
    hold_sigterm_in_database_work()  # a SIGTERM never cuts a store call in the middle
    if params.tracking.tracking_uri:
        return params.tracking.tracking_uri
    relocate_store(paths, params.tracking.experiment)
    return f"sqlite:///{paths.mlflow_db.resolve()}"


def _own_default_experiment(conn: Any, paths: Paths) -> None:
    """Point MLflow's Default experiment at this workspace's ``mlruns/0``: MLflow creates
    it with the store, at the ``mlruns/0`` of the directory the process ran in."""
    root = str(paths.mlflow_artifacts.resolve())
    row = conn.execute(
        "SELECT artifact_location FROM experiments WHERE experiment_id = 0"
    ).fetchone()
    uri = paths.mlflow_artifacts.resolve().as_uri()
    if row and not any(str(row[0] or "").startswith(r + "/") for r in (root, uri)):
        conn.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (root + "/0",)
        )


def relocate_store(paths: Paths, experiment: str = "recpipe") -> str | None:
    """Rebase the workspace store's artifact locations on this workspace; the old root.

    MLflow records absolute artifact locations (the experiment's ``mlruns`` folder,
    each run's, each logged model's and each model version's), so the store of a
    workspace that was moved or copied still points at the original folder: new runs
    would write there and the registry would read the original's files. When the
    workspace experiment's location is not this workspace's ``mlruns/``, every location
    under it is rewritten to the same place under this one's (in one transaction), so
    the moved workspace works on its own. MLflow's Default experiment (created with the
    store, at the then current directory's ``mlruns/0``) is pointed at this workspace's
    ``mlruns/0``. Returns the old root (None: nothing to rebase, no store yet, or no
    such experiment).

    Raises
    ------
    WorkspaceError
        The store cannot be read or written.
    """
    import sqlite3
    from contextlib import closing
    from urllib.parse import unquote, urlparse

    from recpipe.errors import WorkspaceError

    db = paths.mlflow_db
    if not db.is_file():
        return None
    new = paths.mlflow_artifacts.resolve().as_uri()
    try:
        with closing(sqlite3.connect(db, timeout=60)) as conn, conn:  # closed, committed
            try:
                row = conn.execute(
                    "SELECT artifact_location FROM experiments WHERE name = ?", (experiment,)
                ).fetchone()
            except sqlite3.OperationalError:  # not (yet) an MLflow store
                return None
            _own_default_experiment(conn, paths)
            old = row[0] if row else None
            if not old or old == new or not old.startswith("file:"):
                return None
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            # as URIs, and as plain paths (the Default experiment MLflow creates itself)
            pairs = [
                (old, new),
                (unquote(urlparse(old).path), str(paths.mlflow_artifacts.resolve())),
            ]
            for table, column in _LOCATION_COLUMNS:
                if table not in tables:
                    continue
                columns = {r[1] for r in conn.execute(f"PRAGMA table_info('{table}')")}
                if column not in columns:
                    continue
                for before, after in pairs:
                    n = len(before)
                    conn.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                        f"WHERE substr({column}, 1, ?) = ? "
                        f"AND (length({column}) = ? OR substr({column}, ?, 1) = '/')",
                        (after, n + 1, n, before, n, n + 1),
                    )
    except sqlite3.Error as exc:
        raise WorkspaceError(
            f"cannot update the MLflow store {db} for the workspace's new location: {exc}",
            path=str(db),
        ) from exc
    log.info("the MLflow store moved with the workspace: artifacts now under %s (was %s)", new, old)
    return old


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
        mlflow.set_tags(_owner_tags())
        flat = {
            k: json.dumps(v) if isinstance(v, list) else v
            for k, v in _flatten(params.dump()).items()
        }
        mlflow.log_params(flat)
        with _killed_on_signal():  # after the outputs are logged (MLflow would start a run)
            try:
                yield run.info.run_id
            finally:
                log_outputs(paths)


@contextmanager
def stage_run(params: Params, paths: Paths, run_name: str) -> Iterator[str]:
    """The active MLflow run, or a new one in the workspace's experiment; yields its id.

    Steps that log to MLflow by themselves (``register`` run by ``recpipe register``
    after ``dvc repro``) use it; inside the retraining flow they log into the pipeline run.
    """
    import mlflow

    active = mlflow.active_run() if run_active() else None
    if active is not None:
        yield active.info.run_id
        return
    mlflow.set_tracking_uri(tracking_uri(params, paths))
    experiment_id = _experiment_id(params.tracking.experiment, paths)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.set_tags({"recpipe.stage": run_name, **_owner_tags()})
        with _killed_on_signal():
            yield run.info.run_id


def log_outputs(paths: Paths) -> None:
    """Log the reports of the active run that exist (data manifest, validation, splits,
    evaluation, features, and this run's gate decision with a ``gate.passed`` tag)."""
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
    run = mlflow.active_run()
    started_ms = run.info.start_time if run is not None else 0
    # a gate report older than this run is a previous run's (this one stopped earlier)
    if paths.gate_json.exists() and paths.gate_json.stat().st_mtime * 1000 >= started_ms:
        gate = json.loads(paths.gate_json.read_text())
        mlflow.log_dict(gate, "gate/gate.json")
        mlflow.set_tag("gate.passed", str(gate.get("passed")))
        if paths.gate_md.exists():
            mlflow.log_artifact(str(paths.gate_md), "gate")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def run_active() -> bool:
    """Whether an MLflow run is active in this thread (without importing mlflow if unused)."""
    if "mlflow" not in sys.modules:
        return False
    import mlflow

    return mlflow.active_run() is not None


class CandidateLog:
    """Logs one candidate's training into a nested MLflow run (see :func:`candidate_run`)."""

    def on_epoch(self, record: dict[str, Any]) -> None:
        """Per-epoch metrics: loss, examples/s, validation metrics (``valid.recall_at_20``)."""
        import mlflow

        metrics = {"loss": record["loss"], "examples_per_s": record["examples_per_s"]}
        for key, value in record.get("metrics", {}).items():
            metrics[f"valid.{key.replace('@', '_at_')}"] = value
        mlflow.log_metrics(
            {k: float(v) for k, v in metrics.items() if _is_number(v)}, step=record["epoch"]
        )

    def finish(self, artifact: Any, summary: dict[str, Any]) -> None:
        """The training summary and the model artifact directory; a run that resumed from
        a checkpoint gets the ``train.resumed_from_epoch`` tag and metric."""
        import mlflow

        mlflow.log_dict(summary, "training.json")
        for key in ("best_epoch", "best_metric", "seconds", "resumed_from_epoch", "epochs_run"):
            if _is_number(summary.get(key)):
                mlflow.log_metric(f"train.{key}", float(summary[key]))
        resumed = summary.get("resumed_from_epoch")
        mlflow.set_tag("train.resumed_from_epoch", "none" if resumed is None else str(resumed))
        mlflow.log_artifacts(str(artifact), "model")


@contextmanager
def candidate_run(model: str, split: str, config: dict[str, Any]) -> Iterator[CandidateLog | None]:
    """A nested MLflow run for one candidate on one split, when a pipeline run is active.

    Yields None when no MLflow run is active (a stage run by DVC or by hand): stages
    then train without tracking, as they write nothing outside their outputs. Inside
    :func:`under_run` (another process or thread than the pipeline run's) the run is
    started as a child of that pipeline run, in its experiment.
    """
    parent = None if run_active() else _PARENT_RUN.get()
    if parent is None and not run_active():
        yield None
        return
    import mlflow

    if parent is None:  # nested in the active run, in its experiment (not Default)
        experiment_id = mlflow.active_run().info.experiment_id  # type: ignore[union-attr]
        started = mlflow.start_run(
            run_name=f"train-{model}-{split}", nested=True, experiment_id=experiment_id
        )
    else:
        experiment_id = mlflow.MlflowClient().get_run(parent).info.experiment_id
        started = mlflow.start_run(
            run_name=f"train-{model}-{split}", experiment_id=experiment_id, parent_run_id=parent
        )
    with started:
        tags = {"recpipe.stage": "train", "recpipe.model": model, "recpipe.split": split}
        mlflow.set_tags({**tags, **_owner_tags()})
        mlflow.log_params(
            {k: json.dumps(v) if isinstance(v, list) else v for k, v in _flatten(config).items()}
        )
        with _killed_on_signal():
            yield CandidateLog()


def log_tuned(paths: Paths) -> None:
    """Record in the active run which tuned configs it trained and evaluated with: the
    ``tuned/`` files as artifacts, and the ``tune.use`` tag."""
    import mlflow

    mlflow.set_tag("tune.use", "true")
    if paths.tuned_dir.is_dir():
        mlflow.log_artifacts(str(paths.tuned_dir), "tuned")


@contextmanager
def study_run(model: str, split: str, metric: str, budget: dict[str, Any]) -> Iterator[Any]:
    """A nested MLflow run for one tuning study, when a run is active; yields an Optuna
    callback ``(study, trial)`` that logs every finished trial as a run nested in it
    (its config, its value of ``metric``, its state and error), or None without a run."""
    if not run_active():
        yield None
        return
    import mlflow

    experiment_id = mlflow.active_run().info.experiment_id  # type: ignore[union-attr]

    def on_trial(study: Any, trial: Any) -> None:
        with mlflow.start_run(
            run_name=f"trial-{trial.number}", nested=True, experiment_id=experiment_id
        ):
            state = trial.state.name.lower()
            tags = {"recpipe.stage": "tune", "recpipe.model": model, "trial.state": state}
            if trial.user_attrs.get("error"):
                tags["trial.error"] = str(trial.user_attrs["error"])[:5000]
            mlflow.set_tags(tags)
            config = trial.user_attrs.get("config") or trial.params
            mlflow.log_params(
                {k: json.dumps(v) if isinstance(v, list) else v for k, v in config.items()}
            )
            if trial.value is not None:
                mlflow.log_metric(metric.replace("@", "_at_"), float(trial.value))

    # nested runs go to the parent's experiment (MLflow's default is the Default experiment)
    with mlflow.start_run(
        run_name=f"tune-{model}-{split}", nested=True, experiment_id=experiment_id
    ):
        tags = {"recpipe.stage": "tune", "recpipe.model": model, "recpipe.split": split}
        mlflow.set_tags({**tags, **_owner_tags()})
        mlflow.log_params({f"budget.{k}": v for k, v in budget.items()})
        with _killed_on_signal():
            yield on_trial


@contextmanager
def under_run(params: Params, paths: Paths, run_id: str | None) -> Iterator[None]:
    """Nest the :func:`candidate_run` runs of this block under the pipeline run ``run_id``.

    The retraining flow opens its pipeline run (:func:`pipeline_run`) in its own
    process; a candidate trained on a Dask worker has no active MLflow run there.
    Inside this block each candidate's run is started with ``run_id`` as its parent
    (the ``mlflow.parentRunId`` tag, as a nested run gets), on the tracking URI of
    ``params`` and ``paths``. Where a run is already active (the sequential flow) or
    ``run_id`` is None it changes nothing.
    """
    if run_id is None or run_active():
        yield
        return
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(params, paths))
    token = _PARENT_RUN.set(run_id)
    try:
        yield
    finally:
        _PARENT_RUN.reset(token)


def end_stale_runs(params: Params, paths: Paths) -> list[str]:
    """End as KILLED the runs of this workspace's experiment that a killed process left
    RUNNING: those whose :data:`PID_TAG` names a process of this host that no longer
    runs, and the RUNNING runs nested under them. Returns their ids (each logged).

    Call it holding the workspace lock (no live run of this workspace is then missed).
    Without a tracking store yet (no ``mlflow.db``, no ``tracking.tracking_uri``) it
    does nothing, and does not import MLflow.
    """
    if params.tracking.tracking_uri is None and not paths.mlflow_db.is_file():
        return []
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri(params, paths))
    client = MlflowClient()
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    if experiment is None:
        return []
    running = client.search_runs(
        [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'"
    )
    host = socket.gethostname()
    stale: dict[str, str] = {}
    for run in running:
        tags = run.data.tags
        pid = tags.get(PID_TAG, "")
        if tags.get(HOST_TAG) == host and pid.isdigit() and not pid_alive(int(pid)):
            stale[run.info.run_id] = f"its process (pid {pid}) ended without ending it"
    grown = True
    while grown:  # the runs nested under a stale run (a killed trial, say)
        grown = False
        for run in running:
            parent = run.data.tags.get("mlflow.parentRunId")
            if run.info.run_id not in stale and parent in stale:
                stale[run.info.run_id] = f"its parent run {parent} was left running"
                grown = True
    for run_id, why in stale.items():
        client.set_tag(run_id, "recpipe.ended_by", f"the next run: {why}")
        client.set_terminated(run_id, "KILLED")
        log.warning("MLflow run %s was left RUNNING (%s): marked KILLED", run_id, why)
    return list(stale)
