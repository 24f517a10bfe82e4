"""Orchestration overhead: the retraining flow's wall time against its stages' own compute.

Runs the whole retraining flow (``flows.retrain.retrain``, what ``recpipe run`` calls)
once on MovieLens 100K in a temporary workspace, with a fresh Prefect home (so the
temporary Prefect server starts as on a fresh machine), a temporary BentoML store and
the workspace's own SQLite MLflow store. Three clocks:

- **stage compute**: each ``recpipe.stages`` function the flow calls is wrapped with a
  timer in this process (the same function, called by the same Prefect task, in the
  same run), so its figure is the stage's own work: I/O, compute and whatever MLflow
  logging the stage does itself (the train stage's nested runs, ``register``'s models);
- **Prefect task run time**: each task run's ``total_run_time`` read back from the
  Prefect API after the run (stage compute plus the task engine's bookkeeping inside
  the running state);
- **flow wall time**: the ``retrain()`` call from start to end, which adds the
  temporary server's start, flow and task run creation and state changes, the
  workspace lock, and the pipeline-level MLflow run (``tracking.pipeline_run``: its
  start and the reports ``log_outputs`` logs at the end, timed separately).

The overhead is wall time minus the sum of stage compute. Run (quietly: one torch
thread, since other processes share the cores; figures are noisy on a shared machine)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/orchestration.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/orchestration.py --max-epochs 2 \\
        --set train.candidates=[mf_bpr,gru4rec]
    OMP_NUM_THREADS=1 .venv/bin/python bench/orchestration.py --default   # what make run runs

The data come from $RECPIPE_DATA_DIR/ml-100k (default ../shared/data/ml-100k). With
``--default`` the flow runs on the default params as they stand (the built-in synthetic
data, every candidate, each model's own epochs): the full default retrain that
``make run`` does, the one issue 22's "overhead <= 10%" target is about.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from recpipe import config

log = logging.getLogger("bench.orchestration")
REPO = Path(__file__).resolve().parents[1]

#: The stage functions the retraining flow calls (those that exist are timed).
FLOW_STAGES = (
    "ingest",
    "validate",
    "sessions",
    "features",
    "train",
    "evaluate",
    "gate",
    "register",
    "package",
    "lineage",
)

TELEMETRY_OFF = {
    **config.TELEMETRY_OFF,
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "OPENBLAS_NUM_THREADS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


class Clock:
    """Seconds spent in named calls (a name may repeat: ``train-<model>``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.order: list[str] = []

    def add(self, name: str, seconds: float) -> None:
        if name not in self.seconds:
            self.order.append(name)
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            key = name
            if name == "train":  # one task per candidate: train-<model>
                model = kwargs.get("model", args[2] if len(args) > 2 else None)
                key = f"train-{model}" if model else "train"
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(key, time.perf_counter() - t0)

        return timed


def instrument(clock: Clock) -> None:
    """Time every stage function the flow calls and the pipeline-level MLflow run."""
    from recpipe import stages, tracking

    for name in FLOW_STAGES:
        if hasattr(stages, name):
            setattr(stages, name, clock.wrap(name, getattr(stages, name)))
    tracking.log_outputs = clock.wrap("mlflow: log_outputs", tracking.log_outputs)
    pipeline_run = tracking.pipeline_run

    @contextlib.contextmanager
    def timed_run(*args: Any, **kwargs: Any) -> Iterator[str]:
        t0 = time.perf_counter()
        with pipeline_run(*args, **kwargs) as run_id:
            clock.add("mlflow: start run, log params", time.perf_counter() - t0)
            yield run_id

    tracking.pipeline_run = timed_run


def task_runs(flow_run_id: Any) -> dict[str, float]:
    """``{task run name: total_run_time seconds}`` of one flow run, from the Prefect API,
    and the flow run's own run time under ``"flow"``."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    out = {"flow": flow_run.total_run_time.total_seconds()}
    for run in runs:
        name = _task_name(run.name)
        out[name] = out.get(name, 0.0) + run.total_run_time.total_seconds()
    return out


def _task_name(run_name: str) -> str:
    """``train-mf_bpr-0`` -> ``train-mf_bpr``; ``ingest-a1b`` -> ``ingest`` (Prefect adds
    a suffix to each task run's name)."""
    return run_name.rsplit("-", 1)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=None, help="MovieLens 100K folder")
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=3,
        help="train.max_epochs: cap every candidate's epochs (keeps the run to minutes)",
    )
    parser.add_argument(
        "--default",
        action="store_true",
        help="the full default retrain: default params and data, no epoch cap",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="more key=value params"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the flow's logs")
    args = parser.parse_args(argv)

    console = Console()
    root = Path(os.environ.get("RECPIPE_DATA_DIR", REPO.parent / "shared" / "data"))
    data = args.data or root / "ml-100k"
    if not args.default and not (data / "u.data").is_file():
        console.print(f"MovieLens 100K not found at {data} (set RECPIPE_DATA_DIR or --data)")
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="recpipe-bench-orch-"))
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    os.environ["PREFECT_HOME"] = str(tmp / "prefect")  # a fresh database: a cold start
    os.environ["BENTOML_HOME"] = str(tmp / "bentoml")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "recpipe")
    if not args.verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    sys.path.insert(0, str(REPO))

    overrides = [
        *(
            []
            if args.default
            else [
                "data.source=movielens-100k",
                f"data.path={data}",
                f"train.max_epochs={args.max_epochs}",
            ]
        ),
        *args.overrides,
    ]
    workspace = tmp / "workspace"
    workspace.mkdir()
    clock = Clock()
    t_import = time.perf_counter()
    instrument(clock)
    from flows.retrain import retrain

    import_s = time.perf_counter() - t_import
    console.print(f"workspace {workspace}; params {' '.join(overrides)}")
    t0 = time.perf_counter()
    state = retrain(overrides=overrides, root=str(workspace), return_state=True)
    wall = time.perf_counter() - t0
    summary = state.result()  # raises if the flow failed
    prefect = task_runs(state.state_details.flow_run_id)

    title = "the default data and params" if args.default else "MovieLens 100K"
    table = Table(title=f"Retraining flow on {title}: stage compute vs Prefect task run")
    table.add_column("step")
    table.add_column("stage compute s", justify="right")
    table.add_column("Prefect task run s", justify="right")
    table.add_column("task bookkeeping s", justify="right")
    stage_names = [n for n in clock.order if not n.startswith("mlflow")]
    for name in stage_names:
        own = clock.seconds[name]
        task = prefect.get(name)
        table.add_row(
            name,
            f"{own:.2f}",
            "-" if task is None else f"{task:.2f}",
            "-" if task is None else f"{task - own:+.2f}",
        )
    stages_s = sum(clock.seconds[n] for n in stage_names)
    tasks_s = sum(prefect.get(n, 0.0) for n in stage_names)
    table.add_row("[bold]sum", f"[bold]{stages_s:.2f}", f"[bold]{tasks_s:.2f}", "")
    console.print(table)

    mlflow_s = sum(s for n, s in clock.seconds.items() if n.startswith("mlflow"))
    overhead = Table(title="Where the rest of the wall time goes")
    overhead.add_column("part")
    overhead.add_column("s", justify="right")
    overhead.add_column("share of wall", justify="right")
    before_flow = wall - prefect["flow"]
    rows = [
        ("flow wall time (retrain() call)", wall),
        ("sum of stage compute", stages_s),
        ("overhead = wall - stage compute", wall - stages_s),
        ("  Prefect: server start + flow run creation (wall - flow run time)", before_flow),
        ("  Prefect: task bookkeeping (task runs - stage compute)", tasks_s - stages_s),
        ("  MLflow pipeline run (start, params, log_outputs)", mlflow_s),
        (
            "  the rest (flow body, lock, state changes between tasks)",
            prefect["flow"] - tasks_s - mlflow_s,
        ),
        ("(importing flows.retrain, before the call)", import_s),
    ]
    for name, seconds in rows:
        overhead.add_row(name, f"{seconds:.2f}", f"{seconds / wall:.1%}")
    console.print(overhead)
    gate = summary["gate"]
    console.print(
        f"gate {'passed' if gate['passed'] else 'not passed'}; candidate "
        f"{(gate.get('candidate') or {}).get('model')}; torch threads "
        f"{os.environ.get('OMP_NUM_THREADS', 'default')}; cores {os.cpu_count()}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    if args.keep:
        console.print(f"kept {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
