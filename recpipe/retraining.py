"""What a retraining run needs besides the stages: its params, its outcome, its links.

The Prefect flow (``flows/retrain.py``) and the CLI call these functions; they hold
the logic so that the flow only orchestrates. Nothing here imports prefect.

- :func:`run_params`: the params of one run: the workspace's params file and
  overrides, then a new data drop (``data_path``, ``data_source``) and a subset of the
  candidates (``models``), each checked with a message that names the valid values.
- :func:`outcome_message`: the one line a run ends with (``promoted ...`` or
  ``not promoted ...``).
- :func:`mlflow_links` and :func:`registry_rows`: what the flow's artifacts show.
- :func:`train_candidate`: one candidate's train stage as a flow task runs it, in the
  flow's process or on a Dask worker (``orchestration.task_runner: dask``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from recpipe.config import Params
from recpipe.errors import ConfigError
from recpipe.paths import Paths

#: Where ``mlflow ui`` serves by default; ``RECPIPE_MLFLOW_UI_URL`` overrides it.
DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"


def _yaml_value(value: Any) -> str:
    """``value`` written so that an override parses it back unchanged (JSON is YAML)."""
    return json.dumps(value)


def run_overrides(
    params: Params,
    data_path: str | Path | None = None,
    data_source: str | None = None,
    models: list[str] | None = None,
) -> list[str]:
    """The ``key=value`` overrides that point ``params`` at a data drop and a model subset.

    Parameters
    ----------
    params : Params
        The run's params before these choices (params file plus overrides).
    data_path : path-like, optional
        A new data drop: sets ``data.path`` (a local path, or for ``csv`` and
        ``parquet`` an fsspec URL such as ``s3://bucket/drop.parquet``). The source kind
        stays ``data.source`` unless ``data_source`` is given; ``synthetic`` reads no
        file, so a data path with that source is an error.
    data_source : str, optional
        Sets ``data.source`` (``parquet``, ``csv``, ``movielens-100k``, ...).
    models : list of str, optional
        Train only these of ``train.candidates`` (in the order given).

    Raises
    ------
    ConfigError
        An unknown or empty model list (the message lists ``train.candidates``), a
        data path that does not exist, a malformed URL, or a data path with the
        synthetic source.
    """
    extra: list[str] = []
    if data_source is not None:
        extra.append(f"data.source={_yaml_value(data_source)}")
    if data_path is not None:
        from recpipe.data.storage import check_url, exists, is_url

        path: Path | str
        if is_url(str(data_path)):
            path = check_url(str(data_path), "data_path")
            if not exists(path):
                raise ConfigError(f"data_path {path!r} does not exist; expected a file or folder")
        else:
            path = Path(data_path).expanduser()
            if not path.exists():
                raise ConfigError(
                    f"data_path {str(path)!r} does not exist; expected a file or folder"
                )
        source = data_source or params.data.source
        if source == "synthetic":
            raise ConfigError(
                f"data_path {str(path)!r} was given but data.source is 'synthetic', which "
                "reads no file; give the source kind of the drop (data_source / --source, "
                "e.g. parquet, csv, movielens-100k)"
            )
        extra.append(f"data.path={_yaml_value(str(path))}")
    if models is not None:
        valid = list(params.train.candidates)
        if not models:
            raise ConfigError(f"models is empty; expected one or more of train.candidates {valid}")
        unknown = [m for m in models if m not in valid]
        if unknown:
            raise ConfigError(
                f"unknown model(s) {unknown} in models; expected a subset of "
                f"train.candidates {valid}"
            )
        chosen = list(dict.fromkeys(models))  # drop repeats, keep the order
        extra.append(f"train.candidates={_yaml_value(chosen)}")
    return extra


#: The last few runs' params, by what made them (see :func:`run_params`).
_PARSED: dict[tuple[Any, ...], tuple[Params, list[str]]] = {}


def _params_key(
    paths: Paths, params_file: str | Path | None, overrides: list[str], *options: Any
) -> tuple[Any, ...]:
    """What a run's params come from: the file (with its size and modification time),
    the overrides and the flow options."""
    path = Path(params_file) if params_file is not None else paths.params_file
    stat = path.stat() if path.is_file() else None
    found = (str(path.resolve()), stat.st_size, stat.st_mtime_ns) if stat else (str(path), None)
    return (str(paths.root.resolve()), params_file is None, found, tuple(overrides), *options)


def run_params(
    paths: Paths,
    params_file: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    data_path: str | Path | None = None,
    data_source: str | None = None,
    models: list[str] | None = None,
) -> tuple[Params, list[str]]:
    """The params of one retraining run, and every override that made them.

    ``params_file`` defaults to ``<root>/params.yaml`` (else the defaults); then the
    ``overrides``; then :func:`run_overrides` for the data drop and the models. The
    returned overrides are what to record or pass on (``recpipe run --set`` form).

    A run parses its params once: ``recpipe run`` checks them before Prefect starts and
    the flow, in the same process, gets the same object back (unless the file changed).
    """
    from recpipe.pipeline import workspace_params

    overrides = list(overrides or [])
    key = _params_key(
        paths, params_file, overrides, str(data_path), data_source, tuple(models or ())
    )
    if key in _PARSED:
        params, everything = _PARSED[key]
        return params, list(everything)
    base = workspace_params(paths, params_file, overrides)
    extra = run_overrides(base, data_path, data_source, models)
    result = (base, overrides)
    if extra:
        everything = [*overrides, *extra]
        result = (workspace_params(paths, params_file, everything), everything)
    _PARSED.clear()  # only the latest run's params are kept
    _PARSED[key] = result
    return result[0], list(result[1])


def tune_due(params: Params, paths: Paths) -> bool:
    """Whether this retraining run tunes first (``tune.every``: the 1st run and every Nth
    after; 0: never). Counts the runs in ``tuning/flow_runs.json``; call it once per run."""
    every = params.tune.every
    if every == 0:
        return False
    counter = paths.tuning_dir / "flow_runs.json"
    runs = json.loads(counter.read_text()).get("runs", 0) if counter.is_file() else 0
    counter.parent.mkdir(parents=True, exist_ok=True)
    counter.write_text(json.dumps({"runs": runs + 1}) + "\n")
    return runs % every == 0


class CandidateClock:
    """``candidate k of N`` lines for a run's candidates, with the time left at the pace
    of the candidates done so far (the flow logs one before each candidate trains).

    Examples
    --------
    >>> clock = CandidateClock(["mf_bpr", "gru4rec"], clock=iter([0.0, 60.0]).__next__)
    >>> clock.starting("mf_bpr")
    'candidate 1 of 2: mf_bpr'
    >>> clock.finished()
    >>> clock.starting("gru4rec")
    'candidate 2 of 2: gru4rec (1 done in 1.0 min; about 1.0 min left at that pace)'
    """

    def __init__(self, names: Sequence[str], clock: Callable[[], float] = time.perf_counter):
        self.names = list(names)
        self._clock = clock
        self._t0 = clock()
        self.done = 0

    def starting(self, name: str) -> str:
        """The line for ``name``, about to train."""
        n = len(self.names)
        k = self.names.index(name) + 1 if name in self.names else self.done + 1
        line = f"candidate {k} of {n}: {name}"
        if self.done:
            spent = self._clock() - self._t0
            left = spent / self.done * (n - self.done)
            line += (
                f" ({self.done} done in {spent / 60:.1f} min; about {left / 60:.1f} min left "
                "at that pace)"
            )
        return line

    def finished(self) -> None:
        """One more candidate is done."""
        self.done += 1


#: The steps of a retraining run, in order (``train``: every candidate), as
#: :class:`StageClock` counts them.
FLOW_STAGES: tuple[str, ...] = (
    "ingest",
    "validate",
    "sessions",
    "features",
    "tune",
    "train",
    "evaluate",
    "gate",
    "register",
    "package",
    "lineage",
)
#: Where a workspace keeps the seconds each step took in its last complete run.
STAGE_TIMES = "stage_times.json"


def _minutes(seconds: float) -> str:
    """``42 s`` under a minute, else ``3.5 min``."""
    return f"{seconds:.0f} s" if seconds < 59.5 else f"{seconds / 60:.1f} min"


class StageClock:
    """``stage k of N`` lines for a run's steps, with the time the run has taken and,
    from the last complete run's step times (:func:`stage_times`), about how long the
    steps left take; the flow logs one before each step.

    Examples
    --------
    >>> clock = StageClock(["ingest", "train"], {"ingest": 6.0, "train": 120.0},
    ...                    clock=iter([0.0, 0.0, 30.0, 30.0]).__next__)
    >>> clock.starting("ingest")
    'stage 1 of 2: ingest (about 2.1 min left, as the last run took)'
    >>> clock.finished("ingest")
    >>> clock.starting("train")
    'stage 2 of 2: train (30 s so far; about 2.0 min left, as the last run took)'
    """

    def __init__(
        self,
        names: Sequence[str],
        last: dict[str, float] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.names = list(names)
        self.last = dict(last or {})
        self._clock = clock
        self._t0 = clock()
        self._started: float | None = None
        self.seconds: dict[str, float] = {}

    def starting(self, name: str) -> str:
        """The line for step ``name``, about to run."""
        now = self._clock()
        self._started = now
        k = self.names.index(name) + 1 if name in self.names else len(self.seconds) + 1
        notes = []
        if self.seconds:
            notes.append(f"{_minutes(now - self._t0)} so far")
        left = self.names[k - 1 :]
        if left and all(n in self.last for n in left):
            remaining = sum(self.last[n] for n in left)
            notes.append(f"about {_minutes(remaining)} left, as the last run took")
        line = f"stage {k} of {len(self.names)}: {name}"
        return f"{line} ({'; '.join(notes)})" if notes else line

    def finished(self, name: str) -> None:
        """Step ``name`` is done: its time counts towards the next run's estimates."""
        if self._started is not None:
            self.seconds[name] = round(self._clock() - self._started, 3)
        self._started = None


def stage_times(paths: Paths, candidates: int) -> dict[str, float]:
    """The seconds each step took in the workspace's last complete run, ``train`` scaled
    to ``candidates`` candidates (empty before the first run, or when the record is
    unreadable)."""
    from recpipe.locks import STATE_DIR

    path = paths.root / STATE_DIR / STAGE_TIMES
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    times = {k: float(v) for k, v in data.items() if isinstance(v, int | float)}
    if "train_per_candidate" in times:
        times["train"] = times.pop("train_per_candidate") * candidates
    return times


def save_stage_times(paths: Paths, seconds: dict[str, float], candidates: int) -> None:
    """Keep a complete run's step times (``train`` per candidate) for the next run's
    :class:`StageClock`."""
    from recpipe.locks import STATE_DIR

    times = dict(seconds)
    if "train" in times:
        times["train_per_candidate"] = round(times.pop("train") / max(candidates, 1), 3)
    path = paths.root / STATE_DIR / STAGE_TIMES
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(times, indent=2) + "\n")


def outcome_message(gate: dict[str, Any], registry: dict[str, Any]) -> str:
    """The line a run ends with: ``promoted: ...`` or ``not promoted: ...`` (a failed
    gate, or a passed one that moved no alias), with the registry's own words."""
    message = str(registry.get("message") or "")
    if registry.get("promoted"):
        text = message if message.startswith("promoted") else f"promoted: {message}"
    elif message.startswith("not promoted"):
        text = message
    else:
        why = "the gate failed" if not gate.get("passed") else "no alias moved"
        text = f"not promoted ({why}): {message}" if message else f"not promoted ({why})"
    return text


def mlflow_ui_url(tracking_uri: str) -> str:
    """The MLflow UI for a tracking URI: the server itself for ``http(s)`` URIs, else
    ``$RECPIPE_MLFLOW_UI_URL`` or ``mlflow ui``'s default ``http://127.0.0.1:5000``."""
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return tracking_uri.rstrip("/")
    return os.environ.get("RECPIPE_MLFLOW_UI_URL", DEFAULT_MLFLOW_UI_URL).rstrip("/")


def mlflow_links(tracking_uri: str, experiment_id: str, run_id: str) -> dict[str, str]:
    """Where to look at an MLflow run: ``run_url`` (the UI's run page),
    ``tracking_uri`` and ``ui_command`` (how to start the UI for a local store)."""
    ui = mlflow_ui_url(tracking_uri)
    links = {
        "run_url": f"{ui}/#/experiments/{experiment_id}/runs/{run_id}",
        "tracking_uri": tracking_uri,
        "experiment_id": str(experiment_id),
        "run_id": run_id,
    }
    if urlparse(tracking_uri).scheme not in ("http", "https"):
        links["ui_command"] = f"mlflow ui --backend-store-uri {tracking_uri}"
    return links


def run_links(params: Params, paths: Paths, run_id: str) -> dict[str, str]:
    """:func:`mlflow_links` of a run of this workspace's tracking store."""
    import mlflow

    from recpipe.tracking import tracking_uri

    uri = tracking_uri(params, paths)
    experiment_id = mlflow.MlflowClient(tracking_uri=uri).get_run(run_id).info.experiment_id
    return mlflow_links(uri, experiment_id, run_id)


def mlflow_markdown(links: dict[str, str]) -> str:
    """A Markdown section with the MLflow run link, to append to the gate report."""
    lines = [
        "## MLflow",
        "",
        f"- run: [{links['run_id']}]({links['run_url']})",
        f"- tracking URI: `{links['tracking_uri']}`",
    ]
    if "ui_command" in links:
        lines.append(f"- open it with: `{links['ui_command']}`, then follow the run link")
    return "\n".join(lines) + "\n"


def registry_rows(registry: dict[str, Any]) -> list[dict[str, str]]:
    """One row per version this run registered (``model``, ``split``, ``version``,
    ``role``: champion / previous / candidate / registered), for a table artifact."""
    champion, previous = registry.get("champion"), registry.get("previous")
    candidate = registry.get("candidate_version")
    rows = []
    for key, version in registry.get("versions", {}).items():
        model, _, split = key.partition("/")
        version = str(version)
        if version == str(champion):
            role = "champion"
        elif version == str(previous):
            role = "previous"
        elif version == str(candidate):
            role = "candidate (not promoted)"
        else:
            role = "registered"
        rows.append({"model": model, "split": split, "version": version, "role": role})
    return rows


def registry_markdown(registry: dict[str, Any], outcome: str) -> str:
    """The registry outcome of a run as Markdown: the outcome, aliases and versions."""
    lines = [
        f"# Registry: {outcome}",
        "",
        f"- registered model: `{registry.get('registered_model')}`",
        f"- champion: {_version(registry.get('champion'))}",
        f"- previous: {_version(registry.get('previous'))}",
        "",
        "| model | split | version | role |",
        "|---|---|---|---|",
    ]
    for row in registry_rows(registry):
        lines.append(f"| {row['model']} | {row['split']} | v{row['version']} | {row['role']} |")
    if len(lines) == 8:
        lines.append("| - | - | - | nothing registered |")
    return "\n".join(lines) + "\n"


def _version(version: Any) -> str:
    return "none" if version is None else f"v{version}"


def train_candidate(
    params: Params,
    paths: Paths,
    model: str,
    parent_run_id: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train one candidate (:func:`recpipe.stages.train`) and return its summary.

    ``parent_run_id`` is the pipeline's MLflow run: on a Dask worker, where that run is
    not active, the candidate's runs are nested under it all the same
    (:func:`recpipe.tracking.under_run`). ``threads`` caps torch's intra-op threads in
    this process (a worker's share of the cores); None leaves them as they are. The
    summary gains ``worker``: the process id and torch thread count it trained with.
    """
    import torch

    from recpipe import stages, tracking

    if threads is not None:
        torch.set_num_threads(threads)
    with tracking.under_run(params, paths, parent_run_id):
        summary = stages.train(params, paths, model)[model]
    return summary | {"worker": {"pid": os.getpid(), "torch_threads": torch.get_num_threads()}}
