"""One function per pipeline stage: ``(params, paths) -> summary`` that writes its outputs.

These functions are the single code path behind ``recpipe stage NAME`` (what dvc.yaml
calls), the Prefect tasks in ``flows/`` and the Python API. Each stage is declared in
:data:`STAGES` with exactly the params sections, dependencies and outputs it reads and
writes; a test keeps dvc.yaml in step with these declarations.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recpipe.config import Params, load_params
from recpipe.errors import ConfigError, MissingContentError, StageError, WorkspaceError
from recpipe.paths import Paths

log = logging.getLogger(__name__)

StageFn = Callable[[Params, Paths], dict[str, Any]]


def workspace_params(
    paths: Paths, params_file: str | Path | None = None, overrides: list[str] | None = None
) -> Params:
    """Params of a workspace: ``params_file``, else ``<root>/params.yaml`` when it exists,
    else the defaults; then the ``key=value`` overrides."""
    if params_file is None and paths.params_file.exists():
        params_file = paths.params_file
    return load_params(params_file, overrides)


@contextlib.contextmanager
def workspace_io(context: str) -> Iterator[None]:
    """Turn a file-system error inside into :class:`~recpipe.errors.WorkspaceError`.

    A permission denied, a read-only file system, a full disk, a file where a folder
    belongs (and the like) raised as ``OSError`` becomes one readable error that names
    the operation, the path and the fix, prefixed with ``context`` (e.g. ``"stage
    ingest"``); the ``OSError`` is its ``__cause__``. Other errors pass unchanged. Every
    stage function runs under it (it works as a decorator too), so the CLI, dvc.yaml,
    the Prefect flow and the Python API all see the same error.
    """
    try:
        yield
    except OSError as exc:
        if not WorkspaceError.translates(exc):
            raise
        raise WorkspaceError.from_os_error(exc, context) from exc


@contextlib.contextmanager
def _replacing_dir(path: Path) -> Iterator[Path]:
    """A fresh staging folder beside ``path`` that replaces ``path`` when the block
    succeeds; when it raises, ``path`` is left as it was and the staging folder removed."""
    staging = path.with_name(f".{path.name}.new-{os.getpid()}")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    for leftover in (staging, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if path.exists():
        path.rename(old)
    staging.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def _reset_dir(path: Path) -> None:
    """Empty ``path`` (an output this stage owns) so no stale file survives a re-run."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


@workspace_io("stage ingest")
def ingest(params: Params, paths: Paths) -> dict[str, Any]:
    """Read the configured source into canonical Parquet tables under ``data/interim``.

    ``data.source: synthetic`` generates the built-in click-stream from ``synth``;
    any other source kind is imported from ``data.path``. Returns the manifest.

    ``prep.engine: arrow`` streams a ``csv`` or ``parquet`` source in batches of
    ``prep.batch_rows`` rows into the same files (:func:`recpipe.data.chunked.import_chunked`),
    written beside ``data/interim`` and swapped in when the import succeeded; the other
    kinds are bounded data sets and are imported in memory by both engines.
    """
    from recpipe.data.schema import write_tables

    source = params.data.source
    if params.prep.engine == "arrow":
        from recpipe.data.chunked import CHUNKED_KINDS, import_chunked

        if source in CHUNKED_KINDS:
            if not params.data.path:
                raise ConfigError(
                    f"data.path is not set; data.source={source!r} needs the path of the raw "
                    "data (e.g. --set data.path=events.csv)"
                )
            log.info(
                "importing %s data from %s in batches of %d rows (prep.engine=arrow)",
                source,
                params.data.path,
                params.prep.batch_rows,
            )
            # streamed into a staging folder: a failed import loses nothing
            with _replacing_dir(paths.interim_dir) as staging:
                manifest = import_chunked(
                    source,
                    params.data.path,
                    params.data,
                    staging,
                    batch_rows=params.prep.batch_rows,
                )
            return manifest
        log.info("prep.engine=arrow: %s is a bounded data set; importing it in memory", source)
    if source == "synthetic":
        from recpipe.data.synth import generate

        log.info("generating synthetic click-stream (seed %d)", params.synth.seed)
        tables = generate(params.synth)
    else:
        from recpipe.data.sources import import_source

        if not params.data.path:
            raise ConfigError(
                f"data.path is not set; data.source={source!r} needs the path of the raw data "
                "(e.g. --set data.path=../shared/data/ml-100k)"
            )
        log.info("importing %s data from %s", source, params.data.path)
        tables = import_source(source, params.data.path, params.data)
    # import fully before touching the previous output: a failed import loses nothing
    _reset_dir(paths.interim_dir)
    return write_tables(tables, paths.interim_dir)


@workspace_io("stage validate")
def validate(params: Params, paths: Paths, source_dir: Path | None = None) -> dict[str, Any]:
    """Validate canonical tables with Great Expectations.

    Always writes ``reports/validation.json`` and ``reports/validation.md`` and the
    quarantine folder (both about these tables). When the data passes (or quarantine
    keeps the bad share within tolerance) the clean tables replace ``data/validated``
    as a whole (written beside it, then swapped in); otherwise
    :class:`~recpipe.errors.DataValidationError` is raised with the summary and
    ``data/validated`` is left as it was: the last data that passed stays in place,
    so the stages after this one never see a failed drop. The input tables are never
    modified.

    ``prep.engine: arrow`` validates the events one user-hash partition at a time
    (:func:`recpipe.validation.validate_partitioned`; ``prep.partitions`` buckets in a
    work folder under ``data/``, removed afterwards) and streams the quarantine and
    the clean tables: the same reports, quarantine and validated tables.
    """
    from recpipe.data.schema import read_tables, write_tables
    from recpipe.validation import (
        raise_if_failed,
        validate_partitioned,
        validate_tables,
        write_quarantine,
        write_report,
    )

    in_dir = Path(source_dir) if source_dir is not None else paths.interim_dir
    if params.prep.engine == "arrow":
        outcome: Any = validate_partitioned(
            in_dir,
            params.validate_,
            paths.data_dir / f".validate-partitions-{os.getpid()}",
            partitions=params.prep.partitions,
            batch_rows=params.prep.batch_rows,
        )
        write_quarantined: Callable[[Path], Any] = outcome.write_quarantine
        write_clean: Callable[[Path], Any] = outcome.write_clean
    else:
        tables = read_tables(in_dir)
        outcome = validate_tables(tables, params.validate_)

        def write_quarantined(folder: Path) -> Any:
            return write_quarantine(outcome, folder)

        def write_clean(folder: Path) -> Any:
            return write_tables(outcome.clean, folder)

    paths.reports_dir.mkdir(parents=True, exist_ok=True)
    write_report(outcome, paths.validation_json, paths.validation_md)
    _reset_dir(paths.quarantine_dir)
    write_quarantined(paths.quarantine_dir)
    raise_if_failed(outcome)  # before touching data/validated: a failed drop changes nothing
    with _replacing_dir(paths.validated_dir) as staging:
        if outcome.success:
            # nothing removed: copy the files byte for byte rather than re-encode them
            for src in in_dir.iterdir():
                if src.is_file():
                    shutil.copy2(src, staging / src.name)
        else:
            write_clean(staging)
    return outcome.report


SPLIT_PARTS: tuple[str, ...] = ("train", "valid", "test")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


@workspace_io("stage sessions")
def sessions(params: Params, paths: Paths) -> dict[str, Any]:
    """Sessionize validated events, filter rare items and short sessions, build the splits.

    Writes ``data/sessions/events.parquet``, one folder per split under ``data/splits/``
    (``train``/``valid``/``test`` Parquet, and the ``cold_start`` split's
    ``cold_items``/``cold_users`` tables) and ``reports/splits.json`` with each split's
    statistics, dropped counts with reasons and the leakage checks. A split that does
    not apply to the data is reported as skipped, with the reason.

    With ``prep.engine: arrow`` the same files and report come from
    :func:`recpipe.sessions.scaled.prepare_sessions_arrow` (user-hash partitions, one at
    a time; scratch under ``data/_sessions_work``, removed also on error). Its tables
    hold the same rows, grouped by partition: equal after sorting by all columns. It
    writes into a staging folder and replaces the outputs only once every split is done.
    """
    if params.prep.engine == "arrow":
        return _sessions_arrow(params, paths)
    from recpipe.data.schema import read_tables
    from recpipe.sessions.sessionize import filter_support, select_event_types, sessionize
    from recpipe.sessions.splits import SkippedSplit, check_leakage, iter_splits

    sp = params.sessions
    tables = read_tables(paths.validated_dir)
    events, type_filter = select_event_types(tables.events, sp.event_types)
    events = sessionize(events, sp)
    events, filter_stats = filter_support(events, sp.min_item_support, 1)
    _reset_dir(paths.sessions_dir)
    events.to_parquet(paths.sessions_dir / "events.parquet", index=False)

    _reset_dir(paths.splits_dir)
    report: dict[str, Any] = {
        "events": len(events),
        "event_type_filter": type_filter,
        "filter": filter_stats,
        "splits": {},
    }
    for kind, result in iter_splits(events, sp):  # one split in memory at a time
        if isinstance(result, SkippedSplit):
            log.info("split %s skipped: %s", kind, result.reason)
            report["splits"][kind] = {"skipped": result.reason}
            continue
        out = paths.split_dir(kind)
        out.mkdir(parents=True)
        for part in SPLIT_PARTS:
            getattr(result, part).to_parquet(out / f"{part}.parquet", index=False)
        for name, table in result.tables.items():  # cold_start: cold_items, cold_users
            table.to_parquet(out / f"{name}.parquet", index=False)
        leakage = check_leakage(result, kind)
        report["splits"][kind] = {"stats": result.stats, "leakage": leakage}
        log.info(
            "split %s: %s train / %s valid / %s test events; leak-free: %s",
            kind,
            len(result.train),
            len(result.valid),
            len(result.test),
            all(leakage.values()),
        )
    _write_json(paths.splits_json, report)
    return report


def _sessions_arrow(params: Params, paths: Paths) -> dict[str, Any]:
    """The sessions stage on the arrow engine (see :func:`sessions`)."""
    from recpipe.data.schema import events_file
    from recpipe.sessions.scaled import prepare_sessions_arrow

    source = events_file(paths.validated_dir)  # a Parquet file or a folder of parts
    work = paths.sessions_dir.parent / "_sessions_work"
    staged = work / "out"
    try:
        report = prepare_sessions_arrow(
            source,
            staged / "events.parquet",
            staged / "splits",
            work / "scratch",
            params.sessions,
            n_partitions=params.prep.partitions,
            batch_rows=params.prep.batch_rows,
        )
        _reset_dir(paths.sessions_dir)
        shutil.move(staged / "events.parquet", paths.sessions_dir / "events.parquet")
        _reset_dir(paths.splits_dir)
        for kind in report["splits"]:
            if (staged / "splits" / kind).is_dir():
                shutil.move(staged / "splits" / kind, paths.split_dir(kind))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _write_json(paths.splits_json, report)
    return report


def _items_with_content(items: Any) -> Any:
    """Ids of the items-table rows with any non-empty content value (besides ``item_id``).

    Parameters
    ----------
    items : pandas.DataFrame
        The canonical items table.

    Returns
    -------
    pandas.Series
        The ``item_id`` values (nulls dropped) of rows where some other column holds
        a value that is not null and, for strings and lists, not empty.
    """
    import numpy as np
    import pandas as pd

    columns = [c for c in items.columns if c != "item_id"]
    has = np.zeros(len(items), dtype=bool)
    for column in columns:
        values = items[column]
        if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
            has |= np.fromiter(
                (
                    not (v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)))
                    and (not hasattr(v, "__len__") or len(v) > 0)
                    for v in values
                ),
                dtype=bool,
                count=len(values),
            )
        else:
            has |= values.notna().to_numpy()
    return items["item_id"][has].dropna()


def _cold_counts(split_dir: Path, items: Any, n_trained: int) -> dict[str, int]:
    """The cold-start entries of a split's meta.json (see :func:`features`)."""
    import pandas as pd

    from recpipe.features.idmap import N_RESERVED

    out = {}
    for name, column in (("items", "item_id"), ("users", "user_id")):
        path = split_dir / f"cold_{name}.parquet"
        cold = pd.read_parquet(path, columns=[column])[column] if path.is_file() else None
        if cold is None:
            log.warning("split %s has no %s; re-run the sessions stage", split_dir.name, path.name)
        out[f"n_cold_{name}"] = 0 if cold is None else len(cold)
        if name == "items":
            indexed = 0 if cold is None else int((items.encode(cold) >= N_RESERVED).sum())
            out["n_cold_items_indexed"] = indexed
    out["n_catalogue_items_added"] = items.n_ids - n_trained
    return out


@workspace_io("stage features")
def features(params: Params, paths: Paths) -> dict[str, Any]:
    """Fit id maps on each split's training part; encode every part; encode item content.

    For each split folder under ``data/splits`` writes ``data/features/<split>/`` with
    ``item_map.parquet``, ``user_map.parquet``, encoded ``train``/``valid``/``test`` and
    ``meta.json``; the content encoders and the encoded item and user content go to
    ``data/features/content/``; ``reports/features.json`` summarises it all.

    The ``cold_start`` split differs in three ways. Its item map also indexes every
    item of the items table that has content and no train event (count 0, after
    the trained ids; :meth:`~recpipe.features.idmap.IdMap.extend`), so that cold
    items are in the catalogue; cold users stay unknown (``UNK``). Its encoded test
    part keeps the raw ``user_id`` column, by which the ``cold_users`` protocol
    groups the events of unknown users. Its meta.json adds ``n_cold_items`` and
    ``n_cold_users`` (the split's cold ids), ``n_cold_items_indexed`` (cold items the
    item map holds: rankable) and ``n_catalogue_items_added``.
    """
    import pandas as pd

    from recpipe.data.schema import read_tables
    from recpipe.features.content import ContentEncoder, UserEncoder
    from recpipe.features.encode import encode_events, encoding_stats
    from recpipe.features.idmap import N_RESERVED, PAD, UNK, IdMap

    fp = params.features
    if not paths.splits_dir.is_dir():
        raise StageError(f"no splits at {paths.splits_dir}; run the sessions stage first")
    tables = read_tables(paths.validated_dir)
    _reset_dir(paths.features_dir)
    report: dict[str, Any] = {"splits": {}}
    for split_dir in sorted(d for d in paths.splits_dir.iterdir() if d.is_dir()):
        kind = split_dir.name
        parts = {part: pd.read_parquet(split_dir / f"{part}.parquet") for part in SPLIT_PARTS}
        items = IdMap.fit(parts["train"]["item_id"], fp.min_item_count)
        users = IdMap.fit(parts["train"]["user_id"], fp.min_user_count)
        cold: dict[str, int] = {}
        if kind == "cold_start":
            n_trained = items.n_ids
            items = items.extend(_items_with_content(tables.items))
            cold = _cold_counts(split_dir, items, n_trained)
        out = paths.features_dir / kind
        out.mkdir(parents=True)
        items.save(out / "item_map.parquet")
        users.save(out / "user_map.parquet")
        stats = {}
        for part, frame in parts.items():
            encoded = encode_events(frame, items, users, fp.gap_buckets)
            if kind == "cold_start" and part == "test":
                encoded["user_id"] = frame["user_id"].reset_index(drop=True)
            encoded.to_parquet(out / f"{part}.parquet", index=False)
            stats[part] = encoding_stats(encoded)
        meta = {
            "split": kind,
            "n_items": len(items),
            "n_users": len(users),
            "reserved": {"pad": PAD, "unk": UNK, "n_reserved": N_RESERVED},
            "gap_buckets": fp.gap_buckets,
            "parts": stats,
            **cold,
        }
        _write_json(out / "meta.json", meta)
        report["splits"][kind] = meta
        log.info(
            "features %s: %d items, %d users (with reserved slots)", kind, len(items), len(users)
        )

    content_dir = paths.features_dir / "content"
    item_encoder = ContentEncoder.from_params(fp).fit(tables.items)
    item_encoder.save(content_dir / "item_encoder")
    item_encoder.transform(tables.items).save(content_dir / "items")
    user_encoder = UserEncoder().fit(tables.users)
    user_encoder.save(content_dir / "user_encoder")
    report["content"] = {
        "items": item_encoder.summary(),
        "users": user_encoder.summary(),
    }
    _write_json(paths.features_json, report)
    return report


def _remove_empty(folder: Path | None, root: Path) -> None:
    """Remove ``folder`` and its empty parents up to ``root`` (after a completed run)."""
    while folder is not None and folder != root and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def _candidate_config(params: Params, name: str, cls: type) -> dict[str, Any]:
    """A candidate's options: ``train.model_configs[name]`` with the stage-wide device
    and epoch cap applied (torch models only)."""
    from recpipe.models import get_model
    from recpipe.models.torch_base import TorchRecommender

    config = dict(params.train.model_configs.get(name, {}))
    if issubclass(cls, TorchRecommender):
        config.setdefault("device", params.train.device)
        cap = params.train.max_epochs
        if cap is not None:
            config["epochs"] = min(int(config.get("epochs", cls.Config().epochs)), cap)
            if "factors_model" in cls.Config.model_fields:  # content2cf: its inner MF too
                inner = dict(config.get("factors_config", {}))
                inner_cls = get_model(config.get("factors_model", cls.Config().factors_model))
                inner["epochs"] = min(int(inner.get("epochs", inner_cls.Config().epochs)), cap)
                config["factors_config"] = inner
    return config


@workspace_io("stage train")
def train(
    params: Params,
    paths: Paths,
    model: str | None = None,
    *,
    progress: bool = False,
    on_epoch: Callable[[str, str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train deep candidates on each split of ``train.splits`` (or of their entry in
    ``train.model_splits``) their queries suit; a content model on data without item
    content is skipped with the reason.

    ``model`` names one candidate (what each dvc.yaml ``train@<name>`` stage runs);
    None trains every one of ``train.candidates``. Each candidate gets
    ``models/<name>/<split>/`` (a model artifact) and ``models/<name>/training.json``
    (per-epoch history, best epoch, device, time). Checkpoints go to
    ``checkpoints/<name>/<split>/`` during training, so a killed run resumes. With an
    active MLflow run (the retraining flow) each candidate and split is logged as a
    nested run: config, per-epoch metrics, the artifact.

    With ``train.nproc`` N > 1, outside torchrun, this function launches
    ``torchrun --standalone --nproc_per_node N -m recpipe.cli stage train`` with the same
    params (:func:`_launch_torchrun`; the CLI, DVC and the flow all come through here)
    and returns the summary the job wrote; ``on_epoch`` is not called then (epochs are
    logged by rank 0, and to MLflow under the active run). Inside torchrun each torch
    candidate trains with DistributedDataParallel (:mod:`recpipe.train.distributed`);
    rank 0 alone writes the artifacts, ``training.json``, checkpoints and MLflow runs.
    """
    from recpipe import tracking
    from recpipe.models import MODELS
    from recpipe.train import distributed as ddp

    tp = params.train
    names = [model] if model is not None else list(tp.candidates)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise StageError(
            f"unknown candidate model(s) {unknown} (train.candidates or --model); "
            f"known: {sorted(MODELS)}"
        )
    if tp.nproc > 1 and not ddp.in_torchrun():
        return _launch_torchrun(params, paths, names, model)
    with ddp.session(tp.device), tracking.under_run(params, paths, os.environ.get(PARENT_RUN_ENV)):
        return _train_candidates(params, paths, names, progress=progress, on_epoch=on_epoch)


#: The MLflow run a torchrun job's rank 0 nests its candidate runs under.
PARENT_RUN_ENV = "RECPIPE_MLFLOW_PARENT_RUN"


def _launch_torchrun(
    params: Params, paths: Paths, names: list[str], model: str | None
) -> dict[str, Any]:
    """Run the train stage as a ``torchrun`` job of ``train.nproc`` processes."""
    import subprocess
    import sys
    import tempfile

    import yaml

    from recpipe import tracking

    n = params.train.nproc
    env = dict(os.environ)
    if tracking.run_active():
        import mlflow

        env[PARENT_RUN_ENV] = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory(prefix="recpipe-torchrun-") as tmp:
        params_file = Path(tmp) / "params.yaml"
        params_file.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(n),
            "-m",
            "recpipe.cli",
            "stage",
            "train",
            "--root",
            str(paths.root),
            "--params",
            str(params_file),
        ]
        if model is not None:
            cmd += ["--model", model]
        log.info("training %s with %d processes: %s", ", ".join(names), n, " ".join(cmd))
        job = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if job.returncode != 0:
        tail = "\n".join((job.stderr or job.stdout).strip().splitlines()[-30:])
        raise StageError(
            f"distributed training (train.nproc={n}) failed with exit code {job.returncode}; "
            f"the end of its output:\n{tail}"
        )
    summary: dict[str, Any] = {}
    for name in names:
        report = paths.model_dir(name) / "training.json"
        summary[name] = json.loads(report.read_text()) if report.is_file() else {}
    return summary


def _train_candidates(
    params: Params,
    paths: Paths,
    names: list[str],
    *,
    progress: bool,
    on_epoch: Callable[[str, str, dict[str, Any]], None] | None,
) -> dict[str, Any]:
    """The train stage's loop over candidates and splits (in this process; as one rank
    of a torchrun job when a process group is up: rank 0 writes, every rank trains)."""
    from recpipe import tracking
    from recpipe.evaluate.leaderboard import split_query_kinds
    from recpipe.models import build_model, get_model
    from recpipe.models.base import DataMeta, Interactions
    from recpipe.models.torch_base import TorchRecommender
    from recpipe.train import distributed as ddp

    tp = params.train
    main = ddp.is_main()
    summary: dict[str, Any] = {}
    for name in names:
        cls = get_model(name)
        config = _candidate_config(params, name, cls)
        out = paths.model_dir(name)
        if main:
            _reset_dir(out)
        if not main and not issubclass(cls, TorchRecommender):
            continue  # a baseline trains on rank 0 only
        report: dict[str, Any] = {"model": name, "config": config, "splits": {}}
        for kind in tp.model_splits.get(name, tp.splits):
            folder = paths.features_dir / kind
            needed = split_query_kinds(kind)
            if not folder.is_dir():
                report["splits"][kind] = {"skipped": "the sessions stage did not build this split"}
                continue
            if not needed & cls.query_kinds:
                report["splits"][kind] = {
                    "skipped": f"scores {sorted(cls.query_kinds)} queries; {kind} needs "
                    + " or ".join(sorted(needed))
                }
                continue
            meta = DataMeta.from_features(folder)
            data = {
                p: Interactions.from_parquet(folder / f"{p}.parquet") for p in ("train", "valid")
            }
            try:
                candidate = build_model(name, config, meta)
            except MissingContentError as exc:  # e.g. content models on click logs only
                log.warning("%s: not trained on the %s split: %s", name, kind, exc)
                report["splits"][kind] = {"skipped": str(exc)}
                continue
            log.info("training %s on the %s split", name, kind)
            with (
                tracking.candidate_run(name, kind, candidate.config.model_dump(mode="json"))
                if main
                else contextlib.nullcontext()
            ) as run:

                def epoch_done(
                    record: dict[str, Any], name: str = name, kind: str = kind, run: Any = run
                ) -> None:
                    if run is not None:
                        run.on_epoch(record)
                    if on_epoch is not None:
                        on_epoch(name, kind, record)

                if isinstance(candidate, TorchRecommender):
                    checkpoints = paths.checkpoint_dir(name, kind) if tp.checkpoints else None
                    candidate.fit(
                        data["train"],
                        data["valid"],
                        checkpoint_dir=checkpoints,
                        progress=progress,
                        on_epoch=epoch_done,
                    )
                    entry = candidate.training.summary() if candidate.training else {}
                    if candidate.training is not None and ddp.world_size() > 1:
                        entry["processes"] = ddp.world_size()
                    if main:
                        _remove_empty(checkpoints, paths.root)
                else:
                    candidate.fit(data["train"], data["valid"])
                    entry = {}
                if not main:
                    continue
                artifact = candidate.save(out / kind)
                if run is not None:
                    run.finish(artifact, entry)
            report["splits"][kind] = entry | {"artifact": paths.rel(artifact)}
        if main:
            _write_json(out / "training.json", report)
        summary[name] = report
    ddp.barrier()  # the other ranks leave once rank 0 has written everything
    return summary


def _load_candidates(
    params: Params, paths: Paths, kind: str, meta: Any
) -> tuple[dict[str, Any], dict[str, float]]:
    """The trained candidates of one split (``models/<name>/<kind>/``) and their
    training seconds. A candidate trained on other features is an error."""
    from recpipe.models.base import Recommender

    loaded: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name in params.train.candidates:
        artifact = paths.model_dir(name) / kind
        if not artifact.is_dir():
            continue
        model = Recommender.load(artifact)
        if model.meta.sizes() != meta.sizes():
            raise StageError(
                f"candidate {name!r} at {paths.rel(artifact)} was trained on other features "
                f"({model.meta.sizes()}, now {meta.sizes()}); re-run the train stage"
            )
        loaded[name] = model
        report = paths.model_dir(name) / "training.json"
        if report.is_file():
            entry = json.loads(report.read_text()).get("splits", {}).get(kind, {})
            if isinstance(entry.get("seconds"), int | float):
                seconds[name] = round(float(entry["seconds"]), 3)
    return loaded, seconds


def _test_user_keys(folder: Path) -> Any:
    """Integer keys of the raw test user ids of a ``cold_start`` features folder.

    Returns
    -------
    numpy.ndarray or None
        ``(N,)`` int64 codes of the encoded test part's ``user_id`` column (-1 for a
        null), aligned with its events; ``None`` (with a warning) when the column is
        missing, so the cold_users protocol falls back to one user per session.
    """
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    path = folder / "test.parquet"
    if "user_id" not in pq.read_schema(path).names:
        log.warning("%s has no user_id column; re-run the features stage", path)
        return None
    codes, _ = pd.factorize(pd.read_parquet(path, columns=["user_id"])["user_id"])
    return np.asarray(codes, dtype=np.int64)


@workspace_io("stage evaluate")
def evaluate(params: Params, paths: Paths) -> dict[str, Any]:
    """Fit the configured baselines on each split and evaluate them, with the deep
    candidates the train stage left in ``models/`` (``train.candidates``), by full ranking.

    Writes ``reports/evaluation.json`` (every split), ``reports/metrics.json``
    (``{model: metrics}`` on the first evaluated split), ``reports/leaderboard.md`` and
    metric@K plots under ``reports/plots/``.

    On the ``cold_start`` split the models are also evaluated on the cold items and
    the cold users (:func:`~recpipe.evaluate.protocols.cold_start`): their metrics
    carry ``cold_items/`` and ``cold_users/`` prefixes (``cold_items/recall@20``, ...)
    and the leaderboard shows their recall and NDCG at the largest K.
    """
    from recpipe.evaluate.leaderboard import (
        compare_to_best,
        evaluate_models,
        leaderboard_markdown,
        plot_metric_curves,
    )
    from recpipe.evaluate.protocols import COLD_PROTOCOLS, COLD_START_SPLITS
    from recpipe.models.base import DataMeta, Interactions

    ep = params.evaluate
    results: dict[str, dict[str, Any]] = {}
    significance: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for kind in ep.splits:
        folder = paths.features_dir / kind
        if not folder.is_dir():
            skipped[kind] = "the sessions stage did not build this split"
            continue
        meta = DataMeta.from_features(folder)
        data = {p: Interactions.from_parquet(folder / f"{p}.parquet") for p in SPLIT_PARTS}
        candidates, trained_s = _load_candidates(params, paths, kind, meta)
        keys = _test_user_keys(folder) if kind in COLD_START_SPLITS else None
        results[kind], per_query = evaluate_models(
            kind,
            data,
            meta,
            ep.models,
            ep.model_configs,
            ep.ks,
            fitted=candidates,
            test_user_keys=keys,
            cold_given=ep.cold_users_given,
        )
        for name, seconds in trained_s.items():
            if "fit_s" in results[kind].get(name, {}):
                results[kind][name]["fit_s"] = seconds
        significance[kind] = compare_to_best(per_query, ep.primary_metric)
    if not results:
        raise StageError(
            f"none of evaluate.splits={ep.splits} was built ({skipped}); "
            "set evaluate.splits to splits the data supports"
        )
    _reset_dir(paths.plots_dir)
    for kind, models in results.items():
        for metric in ("recall", "ndcg"):
            plot_metric_curves(
                models, metric, ep.ks, paths.plots_dir / f"{kind}_{metric}.png", f"{kind} split"
            )
    first = next(iter(results))
    metrics = {m: e["metrics"] for m, e in results[first].items() if "metrics" in e}
    _write_json(paths.metrics_json, metrics)
    report = {
        "primary_split": first,
        "results": results,
        "significance": significance,
        "skipped_splits": skipped,
    }
    _write_json(paths.evaluation_json, report)
    columns = [f"{m}@{k}" for m in ("recall", "mrr", "ndcg") for k in ep.ks]
    columns += [f"{p}/{m}@{max(ep.ks)}" for p in COLD_PROTOCOLS for m in ("recall", "ndcg")]
    columns += [f"coverage@{max(ep.ks)}", f"popularity_bias@{max(ep.ks)}", "rmse", "mae"]
    columns += ["auc", "logloss"]  # CTR models (wide_deep, deepfm) on user splits
    paths.leaderboard_md.write_text(
        leaderboard_markdown(results, ep.primary_metric, columns, significance)
    )
    return report


def _gate_champion(
    params: Params,
    paths: Paths,
    split: str,
    data: dict[str, Any],
    meta: Any,
    metric: str,
    keys: Any,
) -> Any:
    """The registry's champion re-evaluated on the gate split (``ChampionFigures``), or
    None when there is none. A champion that cannot be read, downloaded, loaded or
    evaluated is returned with the error instead of a value (its rule then fails)."""
    import tempfile

    from recpipe.errors import RecpipeError
    from recpipe.gates import measure
    from recpipe.gates.registry import Registry
    from recpipe.gates.rules import ChampionFigures
    from recpipe.models.base import Recommender

    registry = Registry.for_workspace(params, paths)
    try:
        version = registry.champion()
    except RecpipeError as exc:
        return ChampionFigures(version="unknown", error=f"the registry cannot be read: {exc}")
    if version is None:
        return None
    tags = version.tags or {}
    found = {
        "version": str(version.version),
        "model": tags.get("recpipe.model", ""),
        "split": tags.get("recpipe.split", ""),
    }
    with tempfile.TemporaryDirectory(prefix="recpipe-champion-") as tmp:
        try:
            artifact = registry.download(version.version, tmp)
            model = Recommender.load(artifact)
            value, remapped = measure.evaluate_on_split(
                model,
                split,
                data,
                meta,
                params.evaluate.ks,
                metric,
                test_user_keys=keys,
                given=params.evaluate.cold_users_given,
            )
        except (RecpipeError, ValueError, OSError) as exc:
            log.warning("champion v%s cannot be evaluated: %s", version.version, exc)
            return ChampionFigures(**found, error=f"{type(exc).__name__}: {exc}")
    return ChampionFigures(**found, value=value, remapped=remapped)


@workspace_io("stage gate")
def gate(params: Params, paths: Paths) -> dict[str, Any]:
    """Judge the best candidate on the gate split; write ``reports/gate.json`` and ``gate.md``.

    The split is ``gate.split`` (default: the evaluate stage's primary split) and the
    metric ``gate.metric`` (default ``evaluate.primary_metric``, the metric the evaluate
    stage bootstraps). The candidate is the deep model with the best metric on that
    split in ``reports/evaluation.json``; the rules of :mod:`recpipe.gates.rules`
    compare it with the best baseline (lift and paired bootstrap), with the registry's
    ``champion`` (``models:/NAME@champion`` downloaded to a temporary folder and
    re-evaluated on the same split by the same protocol), with the latency and size
    budgets (measured here on its artifact) and with the validation report.

    A failed gate is a decision, not an error: the reports say why and the function
    returns normally. The registry is only read (a workspace without an MLflow store
    has no champion, and none is created); ``register`` applies the decision.
    Since the champion lives outside the workspace, dvc.yaml marks this stage
    ``always_changed``.

    A gate split the evaluate stage did not evaluate (session-only data has no
    ``user_temporal`` split) fails the gate with that reason.

    Raises
    ------
    StageError
        No evaluation report, or ``gate.metric`` has no paired bootstrap in it.
    """
    from datetime import UTC, datetime

    from recpipe.evaluate.protocols import COLD_START_SPLITS
    from recpipe.gates import measure, rules
    from recpipe.models.base import DataMeta, Interactions, Recommender

    gp = params.gate
    if not paths.evaluation_json.is_file():
        raise StageError(f"no {paths.rel(paths.evaluation_json)}; run the evaluate stage first")
    evaluation = json.loads(paths.evaluation_json.read_text())
    results = evaluation.get("results", {})
    split = gp.split or evaluation.get("primary_split")
    metric = gp.metric or params.evaluate.primary_metric
    context: dict[str, Any] = {
        "split": split,
        "metric": metric,
        "params": gp.model_dump(mode="json"),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if split not in results:  # e.g. session-only data has no user_temporal split
        missing = rules.RuleResult(
            "split",
            False,
            f"the gate split {split!r} was not evaluated (reports/evaluation.json has "
            f"{sorted(results)}, skipped: {evaluation.get('skipped_splits', {})}); set "
            "gate.split to one of the evaluated splits",
            {"split": split, "evaluated": sorted(results)},
        )
        return _write_gate(paths, rules.decide(None, None, [missing]), context)
    significance = evaluation.get("significance", {}).get(split, {})
    if significance.get("metric") != metric:
        raise StageError(
            f"gate.metric={metric!r} has no paired bootstrap in reports/evaluation.json (the "
            f"evaluate stage bootstrapped {significance.get('metric')!r} on {split}); set "
            "evaluate.primary_metric to the same metric, or leave gate.metric null"
        )
    models = results[split]
    name = rules.select_candidate(models, metric)
    baseline = rules.best_baseline(models, metric)
    baseline_value = float(models[baseline]["metrics"][metric]) if baseline else None
    validation = (
        json.loads(paths.validation_json.read_text()).get("passed")
        if paths.validation_json.is_file()
        else None
    )

    folder = paths.features_dir / split
    meta = DataMeta.from_features(folder)
    data = {p: Interactions.from_parquet(folder / f"{p}.parquet") for p in SPLIT_PARTS}
    keys = _test_user_keys(folder) if split in COLD_START_SPLITS else None
    champion = _gate_champion(params, paths, split, data, meta, metric, keys)

    checks: list[rules.RuleResult] = []
    candidate: dict[str, Any] | None = None
    interval = None
    if name is not None:
        value = float(models[name]["metrics"][metric])
        artifact = paths.model_dir(name) / split
        model = Recommender.load(artifact)
        size = measure.artifact_size_mb(artifact)
        interval = rules.bootstrap_vs_baseline(significance, name, baseline) if baseline else None
        checks.append(
            rules.beats_baseline(
                metric, name, value, baseline, baseline_value, interval, gp.min_lift
            )
        )
        checks.append(
            rules.not_worse_than_champion(metric, name, value, champion, gp.champion_tolerance)
        )
        try:
            requests = measure.single_requests(model, data["test"], gp.latency_requests)
            latency: dict[str, Any] | None = measure.request_latency(model, requests, gp.latency_k)
            latency["k"] = gp.latency_k
            checks.append(
                rules.latency_budget(
                    latency["p99_ms"], gp.latency_p99_ms, gp.latency_k, latency["n"]
                )
            )
        except ValueError as exc:
            latency = None
            checks.append(
                rules.RuleResult("latency", False, f"request latency cannot be measured: {exc}", {})
            )
        checks.append(rules.artifact_size_budget(size, gp.max_artifact_mb))
        candidate = {
            "model": name,
            "split": split,
            "artifact": paths.rel(artifact),
            "metric": metric,
            "value": value,
            "size_mb": size,
            "latency": latency,
        }
    checks.append(rules.data_validated(validation, gp.require_validation))
    context["candidate"] = candidate
    context["baseline"] = None if baseline is None else {"model": baseline, "value": baseline_value}
    context["bootstrap"] = interval
    return _write_gate(paths, rules.decide(name, champion, checks), context)


def _write_gate(paths: Paths, result: Any, context: dict[str, Any]) -> dict[str, Any]:
    """Write ``reports/gate.json`` and ``reports/gate.md`` for a decision; return the JSON."""
    from recpipe.gates.report import gate_json, gate_markdown

    report = gate_json(result, context)
    _write_json(paths.gate_json, report)
    paths.gate_md.write_text(gate_markdown(report))
    if result.passed:
        log.info("gate passed: %s (%s)", result.candidate, "; ".join(result.reasons))
    else:
        log.warning("gate not passed (%s): %s", result.candidate, "; ".join(result.reasons))
    return report


@workspace_io("stage register")
def register(params: Params, paths: Paths) -> dict[str, Any]:
    """Register every trained candidate in the MLflow registry; apply the gate's decision.

    Each ``models/<name>/<split>/`` artifact of ``train.candidates`` and ``train.splits``
    becomes a new version of ``gate.registered_model`` (a pyfunc model with lineage and
    metric tags; see :mod:`recpipe.gates.registry`). When ``reports/gate.json`` passed,
    the gate's candidate version becomes the ``champion`` and the old champion
    ``previous``, provided the champion is still the one the gate compared against;
    otherwise no alias moves. With an active MLflow run (the retraining flow) the
    models are logged in it, else in a new ``register`` run.

    This step writes to the registry only, so it is not a dvc.yaml stage: the flow
    runs it after ``gate``, and ``recpipe register`` after ``dvc repro``.

    Returns
    -------
    dict
        ``versions`` (``{"name/split": version}``), ``candidate_version``, ``promoted``,
        ``champion``, ``previous`` and ``message``.

    Raises
    ------
    StageError
        No gate report (run the gate stage first).
    """
    from recpipe import tracking
    from recpipe.gates.registry import CHAMPION, PREVIOUS, Registry, lineage_tags, metric_tags

    if not paths.gate_json.is_file():
        raise StageError(f"no {paths.rel(paths.gate_json)}; run the gate stage first")
    decision = json.loads(paths.gate_json.read_text())
    evaluation = (
        json.loads(paths.evaluation_json.read_text()) if paths.evaluation_json.is_file() else {}
    )
    results = evaluation.get("results", {})
    chosen = decision.get("candidate") or {}
    chosen_key = f"{chosen.get('model')}/{chosen.get('split')}" if chosen else None
    registry = Registry.for_workspace(params, paths)
    lineage = lineage_tags(paths)
    versions: dict[str, str] = {}
    with tracking.stage_run(params, paths, "register") as run_id:
        for name in params.train.candidates:
            for split in params.train.model_splits.get(name, params.train.splits):
                artifact = paths.model_dir(name) / split
                if not (artifact / "meta.json").is_file():
                    continue
                key = f"{name}/{split}"
                metrics = results.get(split, {}).get(name, {}).get("metrics", {})
                judged = key == chosen_key
                tags = {
                    **lineage,
                    **metric_tags(metrics),
                    "recpipe.model": name,
                    "recpipe.split": split,
                    "pipeline.run_id": run_id,
                    "gate.decision": (
                        ("passed" if decision["passed"] else "failed") if judged else "not_judged"
                    ),
                }
                if judged:
                    tags["gate.reasons"] = " | ".join(decision.get("reasons", []))
                versions[key] = registry.register(artifact, tags)
        version = versions.get(chosen_key) if chosen_key else None
        if decision["passed"] and version is not None:
            expected = (decision.get("champion") or {}).get("version")
            promotion = registry.promote(
                version,
                reason="gate passed: " + " | ".join(decision.get("reasons", [])),
                kind="gate",
                expect_champion=expected,
            )
            promoted, message = promotion.changed, promotion.message
        elif decision["passed"]:
            promoted = False
            message = f"not promoted: the gate's candidate {chosen_key} has no artifact"
        else:
            promoted = False
            failed = [r["name"] for r in decision.get("rules", []) if not r["passed"]]
            message = (
                f"not promoted: the gate failed ({', '.join(failed) or 'no candidate'}); "
                f"no alias moved (reasons in {paths.rel(paths.gate_md)})"
            )
        aliases = registry.aliases()
    summary = {
        "registered_model": registry.name,
        "versions": versions,
        "candidate_version": version,
        "promoted": promoted,
        "champion": aliases.get(CHAMPION),
        "previous": aliases.get(PREVIOUS),
        "message": message,
    }
    log.debug("registry: %s", message)  # the flow and the CLI report it
    return summary


def _metrics_from_tags(tags: dict[str, str]) -> dict[str, float]:
    """``{"recall@20": 0.5}`` from a registry version's ``metric.recall_at_20`` tags."""
    out: dict[str, float] = {}
    for key, value in tags.items():
        if key.startswith("metric."):
            try:
                out[key.removeprefix("metric.").replace("_at_", "@")] = float(value)
            except ValueError:
                continue
    return out


def _serving_source(params: Params, paths: Paths, tmp: Path) -> dict[str, Any] | None:
    """The model the package stage serves: ``{"artifact", "info"}``, or None if none.

    The registry's ``champion`` (downloaded into ``tmp``) when there is one; else the
    candidate of ``reports/gate.json`` (``source: gate_candidate``, unregistered: the
    first run, or a workspace used without the registry), whether or not it passed.
    """
    from recpipe.gates.registry import CHAMPION, Registry, lineage_tags

    registry = Registry.for_workspace(params, paths)
    version = registry.champion()
    if version is not None:
        tags = dict(version.tags or {})
        artifact = registry.download(version.version, tmp / "champion")
        return {
            "artifact": artifact,
            "info": {
                "source": CHAMPION,
                "registered_model": registry.name,
                "registry_version": str(version.version),
                "git_commit": tags.get("git.commit", "unknown"),
                "data_hash": tags.get("data.content_hash", "unknown"),
                "dvc_lock_sha256": tags.get("dvc.lock.sha256", "none"),
                "gate_decision": tags.get("gate.decision", "unknown"),
                "metrics": _metrics_from_tags(tags),
            },
        }
    if not paths.gate_json.is_file():
        return None
    decision = json.loads(paths.gate_json.read_text())
    candidate = decision.get("candidate") or {}
    if not candidate.get("artifact"):
        return None
    artifact = paths.root / candidate["artifact"]
    evaluation = (
        json.loads(paths.evaluation_json.read_text()) if paths.evaluation_json.is_file() else {}
    )
    results = evaluation.get("results", {})
    metrics = results.get(candidate.get("split"), {}).get(candidate.get("model"), {})
    lineage = lineage_tags(paths)
    if not decision.get("passed"):
        log.warning(
            "the registry %s has no champion; packaging the gate's candidate %s, which did "
            "NOT pass the gate (%s), so that there is a model to serve",
            registry.name,
            candidate.get("model"),
            "; ".join(decision.get("reasons", [])),
        )
    return {
        "artifact": artifact,
        "info": {
            "source": "gate_candidate",
            "registered_model": registry.name,
            "registry_version": None,
            "git_commit": lineage["git.commit"],
            "data_hash": lineage["data.content_hash"],
            "dvc_lock_sha256": lineage["dvc.lock.sha256"],
            "gate_decision": "passed" if decision.get("passed") else "failed",
            "metrics": {
                k: float(v)
                for k, v in metrics.get("metrics", {}).items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            },
        },
    }


@workspace_io("stage package")
def package(params: Params, paths: Paths, *, missing_ok: bool = False) -> dict[str, Any]:
    """Package the champion as a Bento: model store, ``bentoml build``, export.

    The model is the MLflow registry's ``champion``; a workspace whose registry has
    none (the first run, or ``dvc repro`` before ``recpipe register``) packages the
    candidate of ``reports/gate.json`` instead, labelled ``source: gate_candidate``
    with its gate decision (a warning says when it did not pass). Beside it the
    bundle (:mod:`recpipe.serve.bundle`) holds the ``serve.fallback`` model and each
    known user's items, both from every sessionized event (``data/sessions``)
    encoded with the model's own id maps, the ``serve`` settings and the lineage.
    The bundle is loaded by the predictor and answers one request of each kind before
    it is stored (a broken bundle never becomes a Bento); then
    :func:`recpipe.serve.package.package_bundle` stores it, builds the Bento offline
    and exports it to ``bentos/recpipe.bento``. ``reports/package.json`` records the
    tags, labels, the item index (kind, size, recall@20 against exact float32 search)
    and the archive size.

    Since the champion lives outside the workspace, dvc.yaml marks this stage
    ``always_changed``.

    Parameters
    ----------
    missing_ok : bool, default False
        With nothing to package, return ``{"bento_tag": None, "message": ...}``
        instead of raising (the retraining flow: a failed first gate is a decision).

    Raises
    ------
    StageError
        Nothing to package (no champion and no gate candidate), no sessionized events,
        or BentoML failed.
    """
    import tempfile

    import pandas as pd

    from recpipe.models.base import Recommender
    from recpipe.serve.bundle import encode_for_model, fit_fallback, seen_matrix, write_bundle
    from recpipe.serve.index import index_report
    from recpipe.serve.package import package_bundle
    from recpipe.serve.predictor import Predictor

    events_file = paths.sessions_dir / "events.parquet"
    if not events_file.is_file():
        raise StageError(f"no {paths.rel(events_file)}; run the sessions stage first")
    with tempfile.TemporaryDirectory(prefix="recpipe-package-") as tmp_dir:
        tmp = Path(tmp_dir)
        source = _serving_source(params, paths, tmp)
        if source is None:
            message = (
                f"nothing to package: the registry {params.gate.registered_model!r} has no "
                f"champion and {paths.rel(paths.gate_json)} names no candidate; run the "
                "pipeline (recpipe run) or promote a version (recpipe promote)"
            )
            if missing_ok:
                log.warning(message)
                return {"bento_tag": None, "message": message}
            raise StageError(message)
        artifact, info = Path(source["artifact"]), source["info"]
        model = Recommender.load(artifact)
        events = encode_for_model(model, pd.read_parquet(events_file), params.features.gap_buckets)
        bundle = write_bundle(
            tmp / "bundle",
            artifact,
            fit_fallback(model, events, params.serve.fallback),
            seen=seen_matrix(events, model.meta.n_users, model.meta.n_items),
            info=info,
            serve=params.serve,
            gap_buckets=params.features.gap_buckets,
        )
        predictor = Predictor.from_artifact(bundle)
        smoke = _smoke_test(predictor)
        index = None
        if predictor.index is not None and predictor.policy.unit_vectors is not None:
            index = index_report(predictor.policy.unit_vectors, predictor.index)
        labels = {
            "model": model.name,
            "split": model.meta.split,
            "source": info["source"],
            "registered_model": info["registered_model"],
            "registry_version": info["registry_version"],
            "gate_decision": info["gate_decision"],
            "git_commit": info["git_commit"],
            "data_hash": info["data_hash"],
            "dvc_lock_sha256": info["dvc_lock_sha256"],
            **{f"metric.{k}": f"{v:.6g}" for k, v in info["metrics"].items()},
        }
        packaged = package_bundle(
            bundle,
            paths.bento_archive,
            labels=labels,
            metadata={
                "metrics": info["metrics"],
                "index": index,
                "serve": params.serve.model_dump(mode="json"),
            },
        )
    report = {
        **packaged,
        "archive": paths.rel(paths.bento_archive),
        "labels": labels,
        "metrics": info["metrics"],
        "index": index,
        "smoke_test": smoke,
        "serve": f"recpipe serve --port {params.serve.port}",
    }
    _write_json(paths.package_json, report)
    log.info(
        "packaged %s (%s v%s) as Bento %s -> %s",
        model.name,
        info["source"],
        info["registry_version"] or "-",
        packaged["bento_tag"],
        paths.rel(paths.bento_archive),
    )
    return report


@workspace_io("stage lineage")
def lineage(params: Params, paths: Paths, *, packaged: bool = True) -> dict[str, Any]:
    """Record a finished run's lineage: ``dvc commit`` and ``dvc push``, then MLflow tags.

    In a DVC repository, commits the stages the run ran (``package`` only when
    ``packaged``: it built a Bento) so that dvc.lock records this run's data, params
    and outputs, and pushes them to the default remote; then tags the active MLflow
    run and the model versions it registered with the git commit and the dvc.lock
    sha256, and attaches ``lineage/dvc.lock`` and ``lineage/params.yaml`` to the run
    (:func:`recpipe.lineage.record`). Outside a DVC repository, or without a remote,
    those steps are skipped with the reason; a failed commit or push is a warning in
    the summary, not an error (the models are registered already).

    Like ``register``, this writes outside dvc.yaml's outputs, so it is not a dvc.yaml
    stage: the retraining flow runs it last.
    """
    from recpipe import lineage as lineage_
    from recpipe import tracking

    run_id = None
    if tracking.run_active():
        import mlflow

        run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    return lineage_.record(params, paths, run_id=run_id, packaged=packaged)


def _smoke_test(predictor: Any) -> dict[str, str]:
    """One request of each kind through a freshly loaded predictor; the strategies used."""
    from recpipe.features.idmap import N_RESERVED

    items = predictor.item_map.ids[:2].tolist()
    users = predictor.user_map.ids[:1].tolist()
    k = min(10, predictor.settings.max_k)
    answers = {
        "recommend_known_user": predictor.recommend(users[0], k=k) if users else None,
        "recommend_unknown_user": predictor.recommend("__recpipe_unknown_user__", k=k),
        "session": predictor.recommend_session(items, k=k),
        "empty_session": predictor.recommend_session([], k=k),
        "similar": predictor.similar(items[0], k=k) if len(items) else None,
    }
    if predictor.item_map.n_ids + N_RESERVED < 3:
        log.warning("the served catalogue holds fewer than one real item")
    return {name: answer.strategy for name, answer in answers.items() if answer is not None}


@dataclass(frozen=True)
class StageSpec:
    """What one stage reads and writes, as declared in dvc.yaml."""

    name: str
    func: StageFn
    params: tuple[str, ...]
    code: tuple[str, ...]
    deps: Callable[[Paths], list[Path]] = field(default=lambda p: [])
    outs: Callable[[Paths], list[Path]] = field(default=lambda p: [])
    metrics: Callable[[Paths], list[Path]] = field(default=lambda p: [])
    plain_outs: Callable[[Paths], list[Path]] = field(default=lambda p: [])
    """Outputs kept in the workspace only (``cache: false``), e.g. human reports."""
    foreach: str | None = None
    """A dvc.yaml ``foreach`` list (one stage per item, ``cmd: recpipe stage NAME --model
    ${item}``); ``outs`` then take the item as second argument."""

    def items(self, params: Params) -> list[str]:
        """The ``foreach`` items these params give (``[]`` for a plain stage)."""
        if self.foreach is None:
            return []
        value: Any = params.dump()
        for key in self.foreach.removeprefix("${").removesuffix("}").split("."):
            value = value[key]
        return [str(v) for v in value]

    def all_outs(self, paths: Paths, params: Params) -> list[Path]:
        """Cached outputs, one set per ``foreach`` item for a foreach stage."""
        if self.foreach is None:
            return self.outs(paths)
        return [o for item in self.items(params) for o in self.outs(paths, item)]  # type: ignore[call-arg]


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec(
            name="ingest",
            func=ingest,
            params=("data", "synth", "prep"),
            code=("recpipe/stages.py", "recpipe/data"),
            outs=lambda p: [p.interim_dir],
        ),
        StageSpec(
            name="validate",
            func=validate,
            params=("validate", "prep"),
            code=("recpipe/stages.py", "recpipe/validation", "recpipe/data"),
            deps=lambda p: [p.interim_dir],
            outs=lambda p: [p.validated_dir, p.quarantine_dir],
            metrics=lambda p: [p.validation_json],
            plain_outs=lambda p: [p.validation_md],
        ),
        StageSpec(
            name="sessions",
            func=sessions,
            params=("sessions", "prep"),
            code=("recpipe/stages.py", "recpipe/sessions", "recpipe/data"),
            deps=lambda p: [p.validated_dir],
            outs=lambda p: [p.sessions_dir, p.splits_dir],
            metrics=lambda p: [p.splits_json],
        ),
        StageSpec(
            name="features",
            func=features,
            params=("features",),
            code=("recpipe/stages.py", "recpipe/features"),
            deps=lambda p: [p.validated_dir, p.splits_dir],
            outs=lambda p: [p.features_dir],
            metrics=lambda p: [p.features_json],
        ),
        StageSpec(
            name="train",
            func=train,
            params=("train",),
            code=("recpipe/stages.py", "recpipe/train", "recpipe/models"),
            deps=lambda p: [p.features_dir],
            outs=lambda p, item="${item}": [p.model_dir(item)],
            foreach="${train.candidates}",
        ),
        StageSpec(
            name="evaluate",
            func=evaluate,
            params=("evaluate", "train.candidates"),
            code=("recpipe/stages.py", "recpipe/evaluate", "recpipe/models", "recpipe/baselines"),
            deps=lambda p: [p.features_dir, p.models_dir],
            metrics=lambda p: [p.metrics_json, p.evaluation_json],
            plain_outs=lambda p: [p.leaderboard_md, p.plots_dir],
        ),
        StageSpec(
            name="gate",
            func=gate,
            params=(
                "gate",
                "evaluate.primary_metric",
                "evaluate.ks",
                "evaluate.cold_users_given",
                "tracking",
            ),
            code=("recpipe/stages.py", "recpipe/gates"),
            deps=lambda p: [
                p.evaluation_json,
                p.validation_json,
                p.features_dir,
                p.models_dir,
            ],
            metrics=lambda p: [p.gate_json],
            plain_outs=lambda p: [p.gate_md],
        ),
        StageSpec(
            name="package",
            func=package,
            params=("serve", "features.gap_buckets", "gate.registered_model", "tracking"),
            code=("recpipe/stages.py", "recpipe/serve", "bentofile.yaml"),
            deps=lambda p: [p.sessions_dir, p.gate_json, p.models_dir],
            outs=lambda p: [p.bento_archive],
            metrics=lambda p: [p.package_json],
        ),
    )
}


def get_stage(name: str) -> StageSpec:
    """The stage called ``name``; a clear error for an unknown one."""
    try:
        return STAGES[name]
    except KeyError:
        raise StageError(f"unknown stage {name!r}; known: {sorted(STAGES)}") from None


def run_stage(name: str, params: Params, paths: Paths, **options: Any) -> dict[str, Any]:
    """Run one stage by name (the entry point of ``recpipe stage NAME``).

    ``options`` go to stages that take them (``train``: ``model``, ``progress``).
    """
    spec = get_stage(name)
    given = {k: v for k, v in options.items() if v is not None}
    if given and spec.foreach is None:
        raise StageError(f"stage {name!r} takes no options, got {sorted(given)}")
    return spec.func(params, paths, **given)
