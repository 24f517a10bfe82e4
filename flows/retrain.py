"""The retraining flow: the pipeline's stage functions chained as Prefect tasks.

This module orchestrates only: every step is a function of ``recpipe.stages``, the
same one that ``recpipe stage NAME`` and dvc.yaml run (``register``, which writes to
the MLflow registry only, has no dvc.yaml stage). The run ends by packaging the
champion (after this run's promotion, if any) as a Bento, and records the run's
lineage (``dvc commit`` and ``dvc push`` in a DVC repository, then MLflow tags;
:func:`recpipe.lineage.record_run`).

With ``orchestration.task_runner: dask`` the candidates train concurrently on a
Prefect Dask task runner (a ``train-candidates`` subflow: a temporary local cluster,
or the scheduler at ``orchestration.dask_address``), one candidate per worker, each
logging its MLflow runs under this run's; evaluation starts once all have finished.

Only the I/O steps that can fail transiently (reading the data drop, writing the
Bento) are retried, and only for the errors :func:`recpipe.transient.is_transient`
accepts. The whole run holds the workspace's retraining lock
(:mod:`recpipe.locks`), so two runs never share a workspace; a deployment of this
flow also has a concurrency limit of 1 (``flows/deploy.py``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import TaskRunContext
from prefect.logging.handlers import APILogHandler
from prefect.states import Completed
from prefect.task_runners import TaskRunner

from recpipe import retraining, stages, tracking
from recpipe.config import Params
from recpipe.errors import ConfigError
from recpipe.lineage import override_notice, record_run
from recpipe.paths import Paths
from recpipe.recovery import holding_workspace
from recpipe.scheduling import FLOW_NAME
from recpipe.transient import is_transient

#: Retries of the I/O steps, and the seconds before each.
IO_RETRIES = 2
IO_RETRY_DELAYS = [2, 10]


#: The library's logger: its records (stage and epoch lines) go to the flow run's logs.
LIBRARY_LOGGER = "recpipe"


@contextlib.contextmanager
def library_logs_to_prefect() -> Iterator[None]:
    """Send recpipe's own INFO records to the Prefect API (the flow run's logs in the
    UI) inside the block, each named after the task run it was logged in.

    ``PREFECT_LOGGING_EXTRA_LOGGERS=recpipe`` (which ``recpipe run`` sets) gives the
    ``recpipe`` logger Prefect's API handler, but only in a process that set it before
    importing prefect, and not its level: a deployment's run process, whose root logger
    is at WARNING, dropped every stage and epoch line. Here the logger gets the handler
    when it lacks one, and INFO when its effective level is above that; and every
    record made in a task run carries ``task_run_name`` (what the console format of
    ``recpipe`` shows; Prefect's own records get it from Prefect, as ``extra``). All
    three are undone at the end of the block.
    """
    lib = logging.getLogger(LIBRARY_LOGGER)
    added = None
    if not any(isinstance(h, APILogHandler) for h in lib.handlers):
        added = APILogHandler()
        lib.addHandler(added)
    level = lib.level
    if lib.getEffectiveLevel() > logging.INFO:
        lib.setLevel(logging.INFO)
    factory = logging.getLogRecordFactory()

    def named_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        # Prefect's loggers pass the name as ``extra``, which must not be set already
        if not record.name.startswith("prefect") and not hasattr(record, "task_run_name"):
            context = TaskRunContext.get()
            if context is not None:
                record.task_run_name = context.task_run.name
        return record

    logging.setLogRecordFactory(named_record)
    try:
        yield
    finally:
        logging.setLogRecordFactory(factory)
        lib.setLevel(level)
        if added is not None:
            lib.removeHandler(added)


def retry_if_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect's ``retry_condition_fn``: retry only a transient I/O fault."""
    try:
        state.result()
    except BaseException as exc:  # the task's exception, re-raised by result()
        return is_transient(exc)
    return False


@task(
    name="ingest",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=retry_if_transient,
)
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
def train_task(
    params: Params,
    paths: Paths,
    model: str,
    parent_run_id: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    return retraining.train_candidate(params, paths, model, parent_run_id, threads)


def dask_task_runner(params: Params) -> TaskRunner[Any]:
    """The Dask task runner ``orchestration`` names: the scheduler at ``dask_address``,
    else a temporary local cluster of ``dask_workers`` processes."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise ConfigError(
            "orchestration.task_runner='dask' needs prefect-dask and dask[distributed] "
            "(pip install -e '.[scale]'); or set orchestration.task_runner=sequential"
        ) from exc
    orch = params.orchestration
    if orch.dask_address:
        return DaskTaskRunner(address=orch.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": orch.dask_workers,
            "threads_per_worker": orch.threads_per_worker,
            "processes": True,
            # a free loopback port: None does not turn the dashboard off (dask/distributed
            # #8136) and the default :8787 clashes with a second cluster on the machine
            "dashboard_address": "127.0.0.1:0",
        }
    )


@flow(name="train-candidates", validate_parameters=False)
def train_candidates(
    params: Params, paths: Paths, models: list[str], parent_run_id: str | None
) -> dict[str, dict[str, Any]]:
    """Train ``models`` concurrently on this flow's task runner (Dask: one per worker);
    return every candidate's summary once all are done."""
    threads = params.orchestration.threads_per_worker
    futures = {
        model: train_task.with_options(name=f"train-{model}").submit(
            params, paths, model, parent_run_id, threads
        )
        for model in models
    }
    return {model: future.result() for model, future in futures.items()}


@task(name="tune", cache_policy=NO_CACHE)
def tune_task(params: Params, paths: Paths, force: bool) -> dict[str, Any]:
    report = stages.tune_stage(params, paths, force=force)
    if not report.get("tuned"):
        return report
    _publish(paths.reports_dir / "tuning.md", "tuning", "Tuned configs, default against tuned")
    return report


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(params: Params, paths: Paths) -> dict[str, Any]:
    report = stages.evaluate(params, paths)
    _publish(paths.leaderboard_md, "leaderboard", "Baselines on every split (full ranking)")
    return report


@task(name="gate", cache_policy=NO_CACHE)
def gate_task(params: Params, paths: Paths, mlflow: dict[str, str]) -> dict[str, Any]:
    report = stages.gate(params, paths)
    if paths.gate_md.exists():  # the decision, and where its MLflow run is
        create_markdown_artifact(
            paths.gate_md.read_text() + "\n" + retraining.mlflow_markdown(mlflow),
            key="gate",
            description="Gate decision: the best candidate against the rules",
        )
    return report


@task(name="register", cache_policy=NO_CACHE)
def register_task(params: Params, paths: Paths, gate: dict[str, Any]) -> dict[str, Any]:
    registry = stages.register(params, paths)
    outcome = retraining.outcome_message(gate, registry)
    create_markdown_artifact(
        retraining.registry_markdown(registry, outcome), key="registry", description=outcome
    )
    rows = retraining.registry_rows(registry)
    if rows:
        create_table_artifact(rows, key="registry-versions", description=outcome)
    return registry


@task(
    name="package",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=retry_if_transient,
)
def package_task(params: Params, paths: Paths) -> dict[str, Any]:
    # nothing to serve yet (no champion, no gate candidate) is reported, not raised
    return stages.package(params, paths, missing_ok=True)


@task(name="lineage", cache_policy=NO_CACHE)
def lineage_task(params: Params, paths: Paths, packaged: bool) -> dict[str, Any]:
    # dvc commit + push, then tags; a skipped or failed step is reported, not raised
    return record_run(params, paths, packaged=packaged)


class Steps:
    """Runs the flow's steps, each after its ``stage k of N`` line
    (:class:`recpipe.retraining.StageClock`), and times them."""

    def __init__(self, logger: Any, clock: retraining.StageClock) -> None:
        self.logger = logger
        self.clock = clock

    def start(self, name: str) -> None:
        """Log the line of step ``name``, about to run."""
        self.logger.info(self.clock.starting(name))

    def __call__(self, name: str, call: Any, *args: Any) -> Any:
        """Run ``call(*args)`` as step ``name``; returns what it returns."""
        self.start(name)
        result = call(*args)
        self.clock.finished(name)
        return result


@flow(name=FLOW_NAME)
def retrain(
    params_file: str | None = None,
    overrides: list[str] | None = None,
    root: str | None = None,
    data_path: str | None = None,
    data_source: str | None = None,
    models: list[str] | None = None,
    lock_timeout: float = 0.0,
) -> State[dict[str, Any]]:
    """Run the pipeline on the data that params name; one MLflow run per flow run.

    ``params_file`` defaults to ``<root>/params.yaml``; ``overrides`` are ``key=value``
    strings as for ``recpipe run --set``; ``root`` is the workspace (default: cwd).
    ``data_path`` is a new data drop (sets ``data.path``; ``data_source`` sets
    ``data.source``, else the params' source is kept); ``models`` trains only these
    of ``train.candidates``. The run holds the workspace's retraining lock
    throughout: another run fails at once, or waits ``lock_timeout`` seconds for it.
    Holding it, the run first removes what a killed run left: staging folders, and
    MLflow runs left RUNNING, marked KILLED (:func:`recpipe.recovery.tidy_workspace`).

    The run ends Completed whether or not the gate passed; the final state's message
    (and the summary's ``outcome``) says ``promoted ...`` or ``not promoted ...``.
    Calling the flow returns the summary dict.
    """
    logger = get_run_logger()
    paths = Paths.at(root)
    params, overrides = retraining.run_params(
        paths,
        params_file,
        overrides,
        data_path=data_path,
        data_source=data_source,
        models=models,
    )
    with (
        library_logs_to_prefect(),
        holding_workspace(paths, lock_timeout, "retrain", params) as lock,
        tracking.pipeline_run(params, paths, run_name="retrain") as run_id,
    ):
        logger.info("holding %s", lock.path if lock else "the workspace lock of the parent")
        notice = override_notice(params, paths)
        if notice:
            logger.info(notice)
        mlflow = retraining.run_links(params, paths, run_id)
        logger.info("MLflow run %s at %s", run_id, mlflow["run_url"])
        n = len(params.train.candidates)
        last = retraining.stage_times(paths, n)
        step = Steps(logger, retraining.StageClock(retraining.FLOW_STAGES, last))
        manifest = step("ingest", ingest_task, params, paths)
        logger.info("ingested %s events from %s", manifest["rows"]["events"], manifest["source"])
        report = step("validate", validate_task, params, paths)
        logger.info("validation passed: %s", report["passed"])
        splits = step("sessions", sessions_task, params, paths)
        features = step("features", features_task, params, paths)
        tuning = step("tune", tune_task, params, paths, retraining.tune_due(params, paths))
        if tuning.get("tuned"):
            logger.info("tuned %s on %s", ", ".join(tuning["tuned"]), tuning["split"])
        step.start("train")
        if params.orchestration.task_runner == "dask":  # fan out, gather before evaluate
            fan_out = train_candidates.with_options(task_runner=dask_task_runner(params))
            training = fan_out(params, paths, list(params.train.candidates), run_id)
        else:
            training = {}
            clock = retraining.CandidateClock(params.train.candidates)
            for model in params.train.candidates:
                logger.info(clock.starting(model))
                training[model] = train_task.with_options(name=f"train-{model}")(
                    params, paths, model
                )
                clock.finished()
        step.clock.finished("train")
        if params.tune.use:  # lineage: the tuned configs this run used
            tracking.log_tuned(paths)
        evaluation = step("evaluate", evaluate_task, params, paths)
        # a failed gate is a decision: the run goes on
        gate = step("gate", gate_task, params, paths, mlflow)
        logger.info("gate %s: %s", "passed" if gate["passed"] else "NOT passed", gate["reasons"])
        registry = step("register", register_task, params, paths, gate)
        outcome = retraining.outcome_message(gate, registry)
        logger.info("registry: %s", outcome)
        package = step("package", package_task, params, paths)
        logger.info("Bento: %s", package.get("bento_tag") or package.get("message"))
        lineage = step("lineage", lineage_task, params, paths, bool(package.get("bento_tag")))
        logger.info(
            "lineage: dvc %s, push %s, dvc.lock %s",
            lineage["dvc"]["status"],
            lineage["push"]["status"],
            lineage["dvc_lock_sha256"][:12],
        )
        retraining.save_stage_times(paths, step.clock.seconds, n)
    summary = {
        "mlflow_run_id": run_id,
        "mlflow": mlflow,
        "outcome": outcome,
        "promoted": bool(registry.get("promoted")),
        "manifest": manifest,
        "validation": {"passed": report["passed"], "counts": report.get("counts", {})},
        "splits": {k: v.get("skipped", "built") for k, v in splits["splits"].items()},
        "features": features,
        "tuning": tuning,
        "training": training,
        "evaluation": evaluation,
        "gate": {k: gate[k] for k in ("passed", "reasons", "candidate", "champion")},
        "registry": registry,
        "package": package,
        "lineage": lineage,
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
    # Completed either way: a failed gate is a decision, named in the state's message
    return Completed(message=outcome, data=summary)
