"""The ``recpipe`` command line (typer).

Every command calls the same stage and library functions as dvc.yaml and the Prefect
flow. Errors recpipe raises on purpose are printed as one readable message (no
traceback) with a non-zero exit: 1 for data problems, 2 for bad params or usage.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from recpipe.errors import ConfigError, DataValidationError, RecpipeError, StageError

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


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    """Configure logging once, for every command."""
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("alembic", "urllib3", "httpx", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # MLflow draws a progress bar for every artifact download (the gate's champion)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _guard(fn: Callable[[], T]) -> T:
    """Run ``fn``; turn recpipe's own errors into a message and an exit code."""
    try:
        return fn()
    except (ConfigError, StageError) as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    except DataValidationError as exc:
        console.print(f"[bold red]data validation failed[/]\n{escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    except RecpipeError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None


def _params(root: Path, params_file: Path | None, overrides: list[str] | None) -> Any:
    from recpipe.paths import Paths
    from recpipe.stages import workspace_params

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
) -> None:
    """Run the retraining flow (Prefect) on the data that params name."""
    # forward the library's log records to Prefect's run logs
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "recpipe")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

    def go() -> dict[str, Any]:
        _params(root, params_file, overrides)  # fail fast on bad params, before Prefect starts
        from flows.retrain import retrain

        return retrain(
            params_file=str(params_file) if params_file else None,
            overrides=overrides or [],
            root=str(root.resolve()),
        )

    summary = _guard(go)
    outputs = summary["outputs"]
    out.print("[bold green]recpipe run finished[/]")
    out.print(f"  validated data:     {outputs['data']}")
    out.print(f"  validation report:  {outputs['validation_report']}")
    out.print(f"  split report:       {outputs['splits']}")
    out.print(f"  features:           {outputs['features']}")
    out.print(f"  trained models:     {outputs['models']}")
    out.print(f"  leaderboard:        {outputs['leaderboard']}")
    out.print(f"  metrics:            {outputs['metrics']}")
    gate, registry = summary["gate"], summary["registry"]
    verdict = "[green]passed[/]" if gate["passed"] else "[yellow]not passed[/]"
    out.print(f"  gate decision:      {verdict} - {outputs['gate']}")
    if not gate["passed"]:
        for reason in gate["reasons"]:
            out.print(f"                      - {escape(reason)}")
    versions = ", ".join(f"{k} v{v}" for k, v in registry["versions"].items()) or "none"
    out.print(f"  registered:         {registry['registered_model']}: {versions}")
    out.print(f"  registry:           {escape(registry['message'])}")
    out.print(
        f"  champion:           {_version(registry['champion'])} "
        f"(previous: {_version(registry['previous'])})"
    )
    package = summary.get("package") or {}
    if package.get("bento_tag"):
        out.print(f"  Bento:              {package['bento_tag']} - {package['archive']}")
        out.print(f"  serve it with:      {package['serve']} (GET /model, POST /recommend ...)")
    else:
        out.print(f"  Bento:              none - {escape(str(package.get('message')))}")
    out.print(f"  MLflow run:         {summary['mlflow_run_id']} in {outputs['mlflow']}")
    out.print(f"  look at runs with:  mlflow ui --backend-store-uri {outputs['mlflow']}")


def _version(version: str | None) -> str:
    return "none" if version is None else f"v{version}"


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="stage name, as in dvc.yaml")],
    params_file: ParamsOpt = None,
    overrides: SetOpt = None,
    root: RootOpt = Path("."),
    model: Annotated[
        str | None, typer.Option(help="train stage: the one candidate to train (dvc.yaml foreach)")
    ] = None,
) -> None:
    """Run one pipeline stage (what dvc.yaml calls)."""
    from recpipe.paths import Paths
    from recpipe.stages import run_stage

    def go() -> dict[str, Any]:
        params = _params(root, params_file, overrides)
        options: dict[str, Any] = {}
        if model is not None or name == "train":
            options = {"model": model, "progress": out.is_terminal}
        return run_stage(name, params, Paths.at(root.resolve()), **options)

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
    """Serve the packaged champion: `bentoml serve` of the latest Bento on 127.0.0.1.

    The Bento is the one reports/package.json names (imported from bentos/recpipe.bento
    when the local BentoML store lacks it), else the latest `recpipe` Bento in the store.
    Endpoints: POST /recommend, /recommend/session, /similar; GET /model.
    """
    import signal
    import subprocess

    from recpipe.paths import Paths

    paths = Paths.at(root.resolve())

    def go() -> tuple[str, int, int]:
        from recpipe.serve.package import resolve_bento

        params = _params(root, params_file, overrides)
        tag = bento
        if tag is None and paths.package_json.is_file():
            tag = json.loads(paths.package_json.read_text()).get("bento_tag")
        chosen = port or params.serve.port
        return resolve_bento(tag, paths.bento_archive), chosen, params.serve.workers

    tag, chosen_port, workers = _guard(go)
    from recpipe.serve.package import serve_command, serve_env, serve_workers

    out.print(
        f"serving Bento {tag} on http://{host}:{chosen_port} with "
        f"{serve_workers(workers)} worker(s) (Ctrl-C stops it)"
    )
    child = subprocess.Popen(serve_command(tag, chosen_port, host), env=serve_env(workers))

    def forward(signum: int, _frame: Any) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    try:
        code = child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        code = child.wait()
    raise typer.Exit(code)


@data_app.command("import")
def data_import(
    kind: Annotated[
        str,
        typer.Argument(
            help="movielens-100k, movielens-latest, yoochoose, "
            "session-tsv, diginetica, retailrocket, csv, parquet"
        ),
    ],
    path: Annotated[Path, typer.Argument(help="raw data file or folder")],
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
