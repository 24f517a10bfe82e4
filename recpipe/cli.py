"""The ``recpipe`` command line (typer).

Every command calls the same stage and library functions as dvc.yaml and the Prefect
flow. Errors recpipe raises on purpose are printed as one readable message (no
traceback) with a non-zero exit: 1 for data problems, 2 for bad params or usage.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recpipe.cli_logging import PLAIN_FORMAT, RICH_FORMAT, TaskRunFormatter
from recpipe.cli_logging import quiet_expected_tracebacks as _quiet_expected_tracebacks
from recpipe.cli_summary import print_lineage_info, print_run
from recpipe.errors import (
    ConfigError,
    DataValidationError,
    RecpipeError,
    StageError,
    Terminated,
    WorkspaceError,
)
from recpipe.scheduling import DEFAULT_PORT, DEFAULT_TIMEZONE, DEPLOYMENT_NAME

app = typer.Typer(
    name="recpipe",
    help="Workflow-orchestrated MLOps pipeline for deep-learning recommender systems.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Import, fetch or generate data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

T = TypeVar("T")

ParamsOpt = Annotated[
    Path | None, typer.Option("--params", "-p", help="params file (default: ROOT/params.yaml)")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="override a param: key=value (repeatable), e.g. synth.seed=7"),
]
RootOpt = Annotated[Path, typer.Option("--root", help="workspace directory for all outputs")]
LockOpt = Annotated[
    float,
    typer.Option("--lock-timeout", help="seconds to wait for a busy workspace (<0: no limit)"),
]


#: The stages of ``recpipe stage NAME`` (those of :data:`recpipe.pipeline.STAGES`, which a
#: test keeps in step; named here so that ``--help`` lists them without importing it).
STAGE_NAMES: tuple[str, ...] = (
    "ingest",
    "validate",
    "sessions",
    "features",
    "tune",
    "train",
    "evaluate",
    "gate",
    "package",
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"recpipe {version('recpipe')}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version, exit"
        ),
    ] = False,
) -> None:
    """Configure logging once, and turn the tools' telemetry off, for every command."""
    from rich.logging import RichHandler

    from recpipe.config import telemetry_off

    telemetry_off()

    if console.is_terminal:  # Rich's columns in a terminal; plain lines in a log file
        handler: logging.Handler = RichHandler(
            console=console, show_path=False, rich_tracebacks=False
        )
        handler.setFormatter(TaskRunFormatter(RICH_FORMAT, datefmt="[%X]"))
    else:  # (Rich would wrap every line at 80 columns and drop the date and the logger)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(TaskRunFormatter(PLAIN_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True
    )
    for noisy in ("alembic", "urllib3", "httpx", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # MLflow draws a progress bar for every artifact download (the gate's champion)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _guard(fn: Callable[[], T]) -> T:
    """Run ``fn``; turn recpipe's own errors into a message and an exit code.

    A file-system error that no stage translated (``recpipe data import --out DIR`` on
    a read-only folder, say) is turned into a :class:`~recpipe.errors.WorkspaceError`
    here, so it too is one line naming the path, the operation and the fix (exit 1).
    """
    try:
        try:
            return fn()
        except OSError as exc:
            if not WorkspaceError.translates(exc):
                raise
            raise WorkspaceError.from_os_error(exc) from exc
    except (ConfigError, StageError) as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    except DataValidationError as exc:
        console.print(f"[bold red]data validation failed[/]\n{escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    except RecpipeError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    except Terminated as exc:  # staging folders removed, MLflow runs ended, lock released
        console.print(f"[bold red]stopped:[/] {exc}; the previous outputs are in place")
        raise typer.Exit(128 + exc.signum) from None


def _params(root: Path, params_file: Path | None, overrides: list[str] | None) -> Any:
    from recpipe.paths import Paths
    from recpipe.pipeline import workspace_params

    return workspace_params(Paths.at(root), params_file, overrides or [])


def _write_canonical(
    root: Path,
    params_file: Path | None,
    overrides: list[str] | None,
    out_dir: Path | None,
    make_tables: Callable[[Any], Any],
) -> None:
    """Build canonical tables from the params, write them (default ROOT/data/interim) and
    print the manifest: the shared body of `data import` and `data synth`."""
    from recpipe.data.schema import write_tables
    from recpipe.paths import Paths

    def go() -> dict[str, Any]:
        tables = make_tables(_params(root, params_file, overrides))
        return write_tables(tables, out_dir or Paths.at(root).interim_dir)

    out.print(json.dumps(_guard(go), indent=2))


@app.command()
def run(
    params_file: ParamsOpt = None,
    overrides: SetOpt = None,
    root: RootOpt = Path("."),
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="a first look: two candidates of at most 3 epochs, the cheap baselines, "
            "no cold-start split, no DVC lineage (recpipe.config.QUICK_OVERRIDES; "
            "--set goes on top)",
        ),
    ] = False,
    lock_timeout: LockOpt = 0.0,
    save: Annotated[
        bool,
        typer.Option(
            "--save-params",
            help="first write the --set values into the params file for good (only their "
            "lines change); without it the file is left exactly as it is",
        ),
    ] = False,
) -> None:
    """Run the retraining flow (Prefect) on the data that params name."""
    if save and overrides:
        from recpipe.lineage import save_overrides
        from recpipe.paths import Paths

        keys = _guard(lambda: save_overrides(Paths.at(root), params_file, list(overrides)))
        console.print(f"--save-params: wrote {', '.join(keys) or 'nothing (no change)'} first")
    if quick:
        from recpipe.config import QUICK_OVERRIDES

        overrides = [*QUICK_OVERRIDES, *(overrides or [])]
    print_run(out, _run_flow(root, params_file, overrides, lock_timeout=lock_timeout))


def _run_params(
    root: Path, params_file: Path | None, overrides: list[str] | None, **options: Any
) -> Any:
    """The params of a retraining run with its flow options (data drop, models)."""
    from recpipe.paths import Paths
    from recpipe.retraining import run_params

    return run_params(Paths.at(root), params_file, overrides or [], **options)[0]


def _run_flow(
    root: Path, params_file: Path | None, overrides: list[str] | None, **options: Any
) -> dict[str, Any]:
    """Run the retraining flow in this process and return its summary (`recpipe run`,
    `recpipe retrain`); ``options`` are the flow's other parameters (``data_path``,
    ``data_source``, ``models``)."""

    def go() -> dict[str, Any]:
        # fail fast on bad params, models or data path, before Prefect starts
        from recpipe.data.sources import preflight

        run_options = {k: v for k, v in options.items() if k != "lock_timeout"}
        preflight(_run_params(root, params_file, overrides, **run_options).data)
        # forward the library's log records to Prefect's run logs (set only now: Prefect
        # reads it once, when first imported, and a run that failed above imports none)
        os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "recpipe")
        # lines logged before the flow run starts (the temporary server's) stay on the
        # console: without this Prefect warns that they have no flow run to go to
        os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
        from flows.retrain import retrain

        _quiet_expected_tracebacks()
        with sigterm_as_exit(), _prefect_api(root):
            return retrain(
                params_file=str(params_file) if params_file else None,
                overrides=overrides or [],
                root=str(root.resolve()),
                **options,
            )

    from recpipe.recovery import sigterm_as_exit

    return _guard(go)


@contextlib.contextmanager
def _prefect_api(root: Path) -> Iterator[None]:
    """The configured Prefect API, else a temporary server of recpipe's own for the run
    (:func:`recpipe.recovery.start_temporary_server`: stopped with the run, also on
    SIGTERM to its process group or SIGKILL); its log in ``.recpipe/``."""
    if _prefect_api_url() is not None:
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from recpipe.recovery import start_temporary_server

    log_file = root / ".recpipe" / "prefect-server.log"
    with start_temporary_server(log_file) as url, temporary_settings({PREFECT_API_URL: url}):
        try:
            yield
        finally:  # what the run's logs and events still queue goes out before the server
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            for worker in (APILogWorker, EventsWorker):
                worker.drain_all(timeout=10)


@app.command()
def stage(
    name: Annotated[
        str, typer.Argument(help=f"stage name, as in dvc.yaml: {', '.join(STAGE_NAMES)}")
    ],
    params_file: ParamsOpt = None,
    overrides: SetOpt = None,
    root: RootOpt = Path("."),
    model: Annotated[
        str | None, typer.Option(help="train stage: the one candidate to train (dvc.yaml foreach)")
    ] = None,
    nproc: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="train stage: processes per candidate (DDP under torchrun; sets train.nproc)",
        ),
    ] = None,
    lock_timeout: LockOpt = 0.0,
) -> None:
    """Run one pipeline stage (what dvc.yaml calls), holding the workspace lock."""
    from recpipe.paths import Paths
    from recpipe.pipeline import run_stage
    from recpipe.recovery import holding_workspace, sigterm_as_exit

    def go() -> dict[str, Any]:
        extra = [f"train.nproc={nproc}"] if nproc is not None else []
        params = _params(root, params_file, [*(overrides or []), *extra])
        options: dict[str, Any] = {}
        if model is not None or name == "train":
            options = {"model": model, "progress": out.is_terminal}
        paths = Paths.at(root.resolve())
        with sigterm_as_exit(), holding_workspace(paths, lock_timeout, f"stage {name}"):
            return run_stage(name, params, paths, **options)

    _guard(go)
    out.print(f"stage {name} done")


@app.command()
def validate(
    directory: Annotated[
        Path | None, typer.Argument(help="canonical tables (default: ROOT/data/interim)")
    ] = None,
    params_file: ParamsOpt = None,
    overrides: SetOpt = None,
    root: RootOpt = Path("."),
) -> None:
    """Validate canonical tables; exit 0 when they pass, 1 with a report when not."""
    from recpipe import stages
    from recpipe.paths import Paths

    def go() -> dict[str, Any]:
        params = _params(root, params_file, overrides)
        return stages.validate(params, Paths.at(root.resolve()), source_dir=directory)

    report = _guard(go)
    paths = Paths.at(root.resolve())
    counts = report.get("counts", {})
    out.print(
        f"[green]validation passed[/]: {counts.get('events', '?')} events, "
        f"{counts.get('quarantined', 0)} quarantined; report: {paths.validation_md}"
    )


@app.command()
def tune(
    model: Annotated[
        list[str] | None, typer.Option("--model", help="a model to tune (repeatable)")
    ] = None,
    split: Annotated[str | None, typer.Option(help="the split (default: tune.split)")] = None,
    trials: Annotated[int | None, typer.Option(min=1, help="finished trials per model")] = None,
    timeout: Annotated[float | None, typer.Option(min=0.001, help="seconds per model")] = None,
    params_file: ParamsOpt = None,
    overrides: SetOpt = None,
    root: RootOpt = Path("."),
) -> None:
    """Tune models (Optuna, the same budget each) on a split's validation part.

    Needs the features stage's output. Writes tuned/<split>/<model>.yaml (used by train
    and evaluate with tune.use=true), tuning/optuna.db and reports/tuning.json.
    """
    from recpipe import stages
    from recpipe.paths import Paths

    def go() -> dict[str, Any]:
        params = _params(root, params_file, overrides)
        return stages.tune(params, Paths.at(root.resolve()), model, split, trials, timeout)

    report = _guard(go)
    table = Table(title=f"tuned on {report['split']} (validation part)")
    for column in ("model", "default", "tuned", "trials", "seconds"):
        table.add_column(column)
    for name, entry in report["models"].items():
        if "skipped" in entry:
            table.add_row(name, "-", "-", "-", escape(entry["skipped"]))
            continue
        default = entry["default_value"]
        table.add_row(
            name,
            "-" if default is None else f"{default:.4f}",
            f"{entry['best_value']:.4f}",
            ", ".join(f"{k} {v}" for k, v in entry["trials"].items()),
            f"{entry['seconds']:.1f}",
        )
    out.print(table)


@app.command()
def register(
    params_file: ParamsOpt = None,
    overrides: SetOpt = None,
    root: RootOpt = Path("."),
) -> None:
    """Register every trained candidate in the MLflow registry; apply reports/gate.json.

    The step `recpipe run` takes after the gate; run it yourself after `dvc repro`.
    """
    from recpipe import stages
    from recpipe.paths import Paths

    def go() -> dict[str, Any]:
        return stages.register(_params(root, params_file, overrides), Paths.at(root.resolve()))

    summary = _guard(go)
    for key, version in summary["versions"].items():
        out.print(f"registered {key} as {summary['registered_model']} v{version}")
    out.print(escape(summary["message"]))


@app.command()
def promote(
    version: Annotated[int, typer.Option("--version", help="registry version to make champion")],
    reason: Annotated[str, typer.Option("--reason", help="why (recorded as a tag)")],
    params_file: ParamsOpt = None,
    overrides: SetOpt = None,
    root: RootOpt = Path("."),
) -> None:
    """Make a registered version the champion by hand; the current one becomes `previous`.

    Who, why and when are recorded as tags of the version (promotion.by / .reason / .at).
    """
    from recpipe.gates.registry import Registry
    from recpipe.paths import Paths

    def go() -> Any:
        params = _params(root, params_file, overrides)
        registry = Registry.for_workspace(params, Paths.at(root.resolve()))
        return registry.promote(version, reason=reason, kind="manual")

    result = _guard(go)
    out.print(escape(result.message))


@app.command()
def rollback(
    reason: Annotated[
        str, typer.Option("--reason", help="why (recorded as a tag)")
    ] = "manual rollback",
    params_file: ParamsOpt = None,
    overrides: SetOpt = None,
    root: RootOpt = Path("."),
) -> None:
    """Make the `previous` version the champion again (who and why recorded as tags)."""
    from recpipe.gates.registry import Registry
    from recpipe.paths import Paths

    def go() -> Any:
        params = _params(root, params_file, overrides)
        return Registry.for_workspace(params, Paths.at(root.resolve())).rollback(reason=reason)

    result = _guard(go)
    out.print(escape(result.message))


@app.command()
def lineage(
    version: Annotated[str, typer.Argument(help="registered model version, e.g. 3")],
    as_json: Annotated[bool, typer.Option("--json", help="print the lineage as JSON")] = False,
    params_file: ParamsOpt = None,
    overrides: SetOpt = None,
    root: RootOpt = Path("."),
) -> None:
    """Show where a registered version comes from: data -> params -> run -> version -> Bento.

    Read from the MLflow registry and the version's run (tags and its lineage/ files),
    so it needs neither Git history nor the current workspace files.
    """
    from recpipe.lineage import describe
    from recpipe.paths import Paths

    def go() -> dict[str, Any]:
        params = _params(root, params_file, overrides)
        return describe(params, Paths.at(root.resolve()), version)

    info = _guard(go)
    if as_json:
        out.print_json(json.dumps(info, default=str))
        return
    print_lineage_info(out, info)


@app.command()
def reproduce(
    version: Annotated[str, typer.Argument(help="registered model version, e.g. 3")],
    params_file: ParamsOpt = None,
    overrides: SetOpt = None,
    root: RootOpt = Path("."),
) -> None:
    """Restore the data, params and outputs a registered version was built from (DVC).

    Puts the version's dvc.lock and params.yaml (kept with its MLflow run) back into the
    workspace and runs `dvc checkout`, fetching from the DVC remote what the cache lacks.
    The current dvc.lock, params.yaml and dvc.yaml are first copied to
    .recpipe/backups/<time>/; outputs never committed to the DVC cache are overwritten.
    """
    from recpipe.lineage import reproduce as restore
    from recpipe.paths import Paths

    def go() -> dict[str, Any]:
        params = _params(root, params_file, overrides)
        return restore(params, Paths.at(root.resolve()), version)

    done = _guard(go)
    out.print(f"[bold green]restored v{done['version']}[/] (MLflow run {done['run_id']})")
    out.print(f"  files:            {', '.join(done['restored'])}")
    out.print(f"  dvc.lock sha256:  {done['dvc_lock_sha256']}")
    manifest = done["manifest"]
    out.print(
        f"  data:             {manifest.get('source')} {manifest.get('rows')} "
        f"(content hash {manifest.get('content_hash')})"
    )
    if done["fetched"]:
        out.print("  fetched:          missing objects from the DVC remote")
    out.print(f"  backup:           {done['backup']}")
    if done["git_commit"] not in ("unknown", done["head"]):
        out.print(
            f"  [yellow]code:[/]             the run used {done['git_commit']}, the workspace "
            f"is at {done['head']} (git checkout {done['git_commit']} for the same code)"
        )


def _run_child(command: list[str], env: dict[str, str]) -> None:
    """Run a server process in the foreground; SIGTERM and Ctrl-C are passed on to it."""
    import signal
    import subprocess

    child = subprocess.Popen(command, env=env)

    def forward(signum: int, _frame: Any) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    try:
        code = child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        code = child.wait()
    raise typer.Exit(code)


@app.command()
def recommend(
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="a user's top-k (seen items excluded)")
    ] = None,
    session: Annotated[
        list[str] | None,
        typer.Option("--session", help="a live session's items, oldest first (repeatable)"),
    ] = None,
    similar: Annotated[
        str | None, typer.Option("--similar", help="items similar to this item")
    ] = None,
    all_users: Annotated[
        bool, typer.Option("--all-users", help="every known user's top-k into --out")
    ] = False,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="--all-users: the Parquet (or .csv) file")
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="how many items")] = 10,
    root: RootOpt = Path("."),
) -> None:
    """Recommendations of the packaged champion, in-process (what the HTTP service answers).

    One of --user, --session, --similar or --all-users (with --out). Python:
    `recpipe.serve.champion.load_champion(root)`.
    """
    chosen = [n for n, v in (("--user", user), ("--session", session), ("--similar", similar),
                             ("--all-users", all_users)) if v]  # fmt: skip
    if len(chosen) != 1:
        console.print(
            "error: give one of --user, --session, --similar or --all-users "
            f"(got {chosen or 'none'})"
        )
        raise typer.Exit(2)
    if all_users and out_file is None:
        console.print("error: --all-users writes a file: give --out FILE.parquet (or .csv)")
        raise typer.Exit(2)

    def go() -> Any:
        from recpipe.serve.champion import export_top_k, load_champion

        predictor = load_champion(root)  # a bad request raises RequestError: exit 1
        if user is not None:
            return predictor.recommend(user, k=k)
        if session:
            return predictor.recommend_session(list(session), k=k)
        if similar is not None:
            return predictor.similar(similar, k=k)
        assert out_file is not None
        return export_top_k(predictor, k, out_file, console)

    answer = _guard(go)
    out.print(json.dumps(answer if isinstance(answer, dict) else answer.model_dump(), indent=2))


@app.command()
def serve(
    port: Annotated[
        int | None, typer.Option("--port", help="port (default: serve.port, 3000)")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="interface to listen on")] = "127.0.0.1",
    bento: Annotated[
        str | None,
        typer.Option("--bento", help="Bento tag (default: the one the package stage built)"),
    ] = None,
    params_file: ParamsOpt = None,
    overrides: SetOpt = None,
    root: RootOpt = Path("."),
) -> None:
    """Serve the packaged champion: `bentoml serve` of the workspace's Bento on 127.0.0.1.

    The Bento is the one reports/package.json names (imported from bentos/recpipe.bento
    when the local BentoML store lacks it), else the store's latest `recpipe` Bento (with
    a warning naming it). Its model is loaded first (a corrupt one stops here) and the
    Bento's own code serves it. Endpoints: POST /recommend, /recommend/session, /similar;
    GET /model; Swagger at /.
    """
    from recpipe.paths import Paths

    paths = Paths.at(root.resolve())

    def go() -> tuple[Any, int, int]:
        from recpipe.serve.package import check_bento, choose_bento, require_free_port

        params = _params(root, params_file, overrides)
        chosen = port or params.serve.port
        require_free_port(host, chosen)
        served, warning = choose_bento(bento, paths.package_json, paths.bento_archive)
        if warning:
            console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
        check_bento(served)
        return served, chosen, params.serve.workers

    served, chosen_port, workers = _guard(go)
    from recpipe.serve.package import serve_command, serve_env, serve_workers

    out.print(
        f"serving {escape(served.describe())} on http://{host}:{chosen_port} with "
        f"{serve_workers(workers)} worker(s) (Ctrl-C stops it)",
        highlight=False,
    )
    _run_child(serve_command(served.path, chosen_port, host), serve_env(workers))


DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="a new data drop, a path or a URL such as s3://bucket/key (sets data.path; give "
        "--source unless params do)",
    ),
]
SourceOpt = Annotated[
    str | None,
    typer.Option("--source", help="source kind of --data: parquet, csv, movielens-100k, ..."),
]
ModelOpt = Annotated[
    list[str] | None,
    typer.Option("--model", "-m", help="train only this candidate (repeatable; default: all)"),
]


def _flow_options(
    data: str | Path | None, source: str | None, models: list[str] | None
) -> dict[str, Any]:
    """The retraining flow's data-drop and model parameters that were given (a local
    ``data`` made absolute; a URL kept as it is)."""
    options: dict[str, Any] = {}
    if data is not None:
        url = isinstance(data, str) and "://" in data
        options["data_path"] = data if url else str(Path(data).expanduser().resolve())
    if source is not None:
        options["data_source"] = source
    if models:
        options["models"] = list(models)
    return options


def _prefect_api_url() -> str | None:
    """PREFECT_API_URL from the environment or the active Prefect profile."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


@app.command()
def retrain(
    data: Annotated[
        str,
        typer.Option("--data", help="the new data drop (file or folder, or a URL; sets data.path)"),
    ],
    source: SourceOpt = None,
    models: ModelOpt = None,
    deployment: Annotated[
        str | None,
        typer.Option(
            "--deployment",
            help="start a run of this served deployment (see `recpipe schedule`) and return",
        ),
    ] = None,
    params_file: ParamsOpt = None,
    overrides: SetOpt = None,
    root: Annotated[
        Path | None,
        typer.Option("--root", help="workspace (default: cwd; with --deployment: the served one)"),
    ] = None,
    lock_timeout: LockOpt = 0.0,
) -> None:
    """Retrain on a new data drop: the retraining flow on --data, here or on the server.

    Without --deployment the flow runs in this process, as `recpipe run` does. With
    --deployment NAME (and PREFECT_API_URL set) a run of the served deployment
    `recpipe-retrain/NAME` is created and its id and UI link printed; the serving
    process (`recpipe schedule`) runs it, after any run in progress.
    """
    options = _flow_options(data, source, models)
    if deployment is None:
        run = _run_flow(
            root or Path("."), params_file, overrides, **options, lock_timeout=lock_timeout
        )
        print_run(out, run)
        return
    from recpipe.scheduling import check_api, deployment_full_name, flow_run_url

    _guard(lambda: _run_params(root or Path("."), params_file, overrides, **options))
    api = _guard(lambda: check_api(_prefect_api_url()))
    parameters: dict[str, Any] = dict(options)  # the deployment's own values stay otherwise
    if lock_timeout:
        parameters["lock_timeout"] = lock_timeout
    if params_file is not None:
        parameters["params_file"] = str(params_file.resolve())
    if overrides:
        parameters["overrides"] = list(overrides)
    if root is not None:
        parameters["root"] = str(root.resolve())
    full_name = deployment if "/" in deployment else deployment_full_name(deployment)

    def go() -> Any:
        from prefect.deployments import run_deployment
        from prefect.exceptions import ObjectNotFound

        from recpipe.errors import SchedulerError

        try:
            return run_deployment(full_name, parameters=parameters, timeout=0)
        except ObjectNotFound:
            raise SchedulerError(
                f"no deployment {full_name!r} on the Prefect server at {api}; serve it first "
                f"with `recpipe schedule --name {full_name.split('/', 1)[1]}`"
            ) from None

    flow_run = _guard(go)
    out.print(f"created flow run {flow_run.name} ({flow_run.id}) of {full_name}")
    out.print(f"  parameters: {json.dumps(parameters)}")
    out.print(f"  follow it:  {flow_run_url(api, str(flow_run.id))}")


@app.command()
def schedule(
    cron: Annotated[
        str | None,
        typer.Option("--cron", help='cron schedule (default "0 3 * * *": nightly at 03:00)'),
    ] = None,
    interval: Annotated[
        float | None,
        typer.Option("--interval", help="run every SECONDS instead of a cron schedule"),
    ] = None,
    timezone: Annotated[
        str, typer.Option("--timezone", help="IANA timezone of the schedule, e.g. Europe/Paris")
    ] = DEFAULT_TIMEZONE,
    name: Annotated[str, typer.Option("--name", help="deployment name")] = DEPLOYMENT_NAME,
    data: DataOpt = None,
    source: SourceOpt = None,
    models: ModelOpt = None,
    params_file: ParamsOpt = None,
    overrides: SetOpt = None,
    root: RootOpt = Path("."),
) -> None:
    """Serve the retraining flow on a schedule until SIGTERM or Ctrl-C.

    Creates (or updates) the Prefect deployment `recpipe-retrain/NAME` on the server
    that PREFECT_API_URL names, with the schedule, the flow parameters given here and
    a concurrency limit of 1 (a run due while another runs waits for it), and runs its
    scheduled runs in subprocesses. Needs a running server: `recpipe server`.
    """
    from recpipe.scheduling import DEFAULT_CRON, check_api, ui_url

    options = _flow_options(data, source, models)
    _guard(lambda: _run_params(root, params_file, overrides, **options))
    api = _guard(lambda: check_api(_prefect_api_url()))
    from flows import deploy

    when = _guard(
        lambda: deploy.make_schedule(
            cron if cron is not None or interval is not None else DEFAULT_CRON, interval, timezone
        )
    )
    parameters = {
        "params_file": str(params_file.resolve()) if params_file is not None else None,
        "overrides": list(overrides or []),
        "root": str(root.resolve()),
        **options,
    }
    what = f"every {interval:g} s" if interval is not None else f"cron {when.cron!r}"
    out.print(
        f"serving recpipe-retrain/{name} ({what}, {timezone}; at most one run at a time) "
        f"on {api}\n  workspace: {parameters['root']}\n  runs in the UI: "
        f"{ui_url(api)}/deployments\n  SIGTERM or Ctrl-C stops it (the schedule is paused)"
    )
    # the served runs' subprocesses forward the library's log records to Prefect
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "recpipe")
    deploy.serve(when, name=name, parameters=parameters)


@app.command()
def server(
    port: Annotated[int, typer.Option("--port", help="port of the API and the UI")] = DEFAULT_PORT,
    host: Annotated[str, typer.Option("--host", help="interface to listen on")] = "127.0.0.1",
) -> None:
    """Start a Prefect server (API and UI, analytics off) for scheduled retraining.

    Runs `prefect server start` until Ctrl-C or SIGTERM. Point recpipe at it with the
    `export PREFECT_API_URL=...` line it prints (in the terminal of `recpipe schedule`).
    Its database is under PREFECT_HOME (default ~/.prefect).
    """

    from recpipe.scheduling import api_url, server_command, server_env, ui_url

    api = api_url(port, host)
    out.print(f"starting a Prefect server on {host}:{port} (Ctrl-C stops it)")
    out.print(f"  point recpipe at it:  export PREFECT_API_URL={api}")
    out.print(f"  UI:                   {ui_url(api)}")
    out.print('  then schedule:        recpipe schedule --cron "0 3 * * *"')
    _run_child(server_command(port, host), server_env(port=port, host=host))


@data_app.command("import")
def data_import(
    kind: Annotated[
        str,
        typer.Argument(
            help="movielens-100k, movielens-latest, yoochoose, "
            "session-tsv, diginetica, retailrocket, csv, parquet, jsonl"
        ),
    ],
    path: Annotated[
        str, typer.Argument(help="raw data file or folder (csv, parquet: or a URL, s3://...)")
    ],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="output folder (default: ROOT/data/interim)")
    ] = None,
    params_file: ParamsOpt = None,
    overrides: SetOpt = None,
    root: RootOpt = Path("."),
) -> None:
    """Convert a raw data set into canonical Parquet tables plus a manifest."""
    from recpipe.data.sources import import_source

    _write_canonical(
        root, params_file, overrides, out_dir, lambda p: import_source(kind, path, p.data)
    )


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="public data set name, e.g. movielens-100k")],
    cache_dir: Annotated[
        Path | None, typer.Option("--cache", help="cache (default: $RECPIPE_CACHE_DIR)")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="download even when cached")] = False,
) -> None:
    """Download a public data set (sha256-checked, cached) and print its folder."""
    from recpipe.data.fetch import default_cache_dir, fetch

    folder = _guard(lambda: fetch(name, cache_dir or default_cache_dir(), force=force))
    out.print(str(folder))


@data_app.command("synth")
def data_synth(
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="output folder (default: ROOT/data/interim)")
    ] = None,
    params_file: ParamsOpt = None,
    overrides: SetOpt = None,
    root: RootOpt = Path("."),
) -> None:
    """Generate the synthetic click-stream (params section `synth`) as canonical tables."""
    from recpipe.data.synth import generate

    _write_canonical(root, params_file, overrides, out_dir, lambda p: generate(p.synth))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
