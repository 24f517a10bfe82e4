"""One thin function per pipeline stage: ``(params, paths) -> summary``.

Each stage reads its inputs, calls one library function and writes its outputs; the
work lives in the library (gate rules in :mod:`recpipe.gates.decide`, registering and
the choice of what to serve in :mod:`recpipe.gates.promote`, feature building in
:mod:`recpipe.features.build`, packaging in :mod:`recpipe.serve.packaging`, fitting a
candidate in :mod:`recpipe.models.fitting`, ...). These functions are the single code
path behind ``recpipe stage NAME`` (what dvc.yaml calls), the Prefect tasks in
``flows/`` and the Python API; :data:`recpipe.pipeline.STAGES` declares what each reads
and writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from recpipe.config import DEFAULT_ITEM_SUPPORT, Params
from recpipe.data import workfs
from recpipe.errors import MissingContentError, StageError
from recpipe.paths import Paths
from recpipe.workspace import (
    read_json,
    replacing_dir,
    scratch_dir,
    staging_path,
    swap_in,
    workspace_io,
    write_json,
)

log = logging.getLogger(__name__)


@workspace_io("stage ingest")
def ingest(params: Params, paths: Paths) -> dict[str, Any]:
    """Read the configured source into canonical Parquet tables under ``data/interim``.

    ``data.source: synthetic`` generates the built-in click-stream from ``synth``;
    any other source kind is imported from ``data.path``
    (:func:`recpipe.data.sources.read_source`). Returns the manifest.

    ``prep.engine: arrow`` streams a ``csv`` or ``parquet`` source in batches of
    ``prep.batch_rows`` rows into the same files (:func:`recpipe.data.chunked.import_chunked`),
    written beside ``data/interim`` and swapped in when the import succeeded; the other
    kinds are bounded data sets and are imported in memory by both engines.
    ``prep.engine: dask`` reads and canonicalizes the pieces of a ``csv`` or ``parquet``
    source as Dask tasks (:func:`recpipe.data.distributed.import_dask`): the same files.
    ``data.path`` may be a URL (:mod:`recpipe.data.storage`); see ``prep.work_url``.
    """
    from recpipe.data.chunked import CHUNKED_KINDS, import_chunked
    from recpipe.data.schema import write_tables
    from recpipe.data.sources import configured_path, read_source

    data, batch_rows = params.data, params.prep.batch_rows
    if params.prep.engine in ("arrow", "dask") and data.source in CHUNKED_KINDS:
        path = configured_path(data, "events.csv")
        log.info("importing %s data from %s in batches of %d rows", data.source, path, batch_rows)
        # streamed into a staging folder: a failed import loses nothing
        with replacing_dir(paths.interim_dir) as staging:
            if params.prep.engine == "dask":  # read and canonicalized as Dask tasks
                from recpipe.data.distributed import import_dask

                address, workers = params.orchestration.dask_address, params.prep.workers
                return import_dask(
                    data.source,
                    path,
                    data,
                    staging,
                    batch_rows=batch_rows,
                    address=address,
                    workers=workers,
                    work_dir=workfs.staging(
                        workfs.work_root(params.prep.work_url, staging), "pieces"
                    ),
                )
            return import_chunked(data.source, path, data, staging, batch_rows=batch_rows)
    if params.prep.engine != "pandas":
        engine = params.prep.engine
        log.info(
            "prep.engine=%s: %s is a bounded data set; imported in memory", engine, data.source
        )
    tables = read_source(data, params.synth)
    # imported fully, written beside the previous output and swapped in: a failed
    # import or write loses nothing
    with replacing_dir(paths.interim_dir) as staging:
        manifest = write_tables(tables, staging)
    return manifest


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
    work folder under ``data/`` or ``prep.work_url``, removed afterwards) and streams the
    quarantine and the clean tables: the same reports, quarantine and validated tables.
    ``prep.engine: dask`` checks the partitions as Dask tasks
    (:func:`recpipe.validation.distributed.validate_dask`), with the same outputs.
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
    if params.prep.engine in ("arrow", "dask"):
        check: Callable[..., Any] = validate_partitioned
        if params.prep.engine == "dask":  # the partitions checked as Dask tasks
            from recpipe.validation.distributed import validate_dask

            address, workers = params.orchestration.dask_address, params.prep.workers
            copy = params.prep.work_url is not None  # the workers read a copy in the store
            check = partial(validate_dask, address=address, workers=workers, copy_input=copy)
        outcome: Any = check(
            in_dir,
            params.validate_,
            workfs.staging(
                workfs.work_root(params.prep.work_url, paths.data_dir), "validate-partitions"
            ),
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
    with replacing_dir(paths.quarantine_dir) as staging:
        write_quarantined(staging)
    raise_if_failed(outcome)  # before touching data/validated: a failed drop changes nothing
    with replacing_dir(paths.validated_dir) as staging:
        if outcome.success:
            # nothing removed: copy the files byte for byte rather than re-encode them
            for src in in_dir.iterdir():
                if src.is_file():
                    shutil.copy2(src, staging / src.name)
        else:
            write_clean(staging)
    return outcome.report


def _require(path: Path, paths: Paths, stage: str) -> dict[str, Any]:
    """A report an earlier stage wrote; a clear error when it is missing."""
    found = read_json(path)
    if found is None:
        raise StageError(f"no {paths.rel(path)}; run the {stage} stage first")
    return found


@workspace_io("stage sessions")
def sessions(params: Params, paths: Paths) -> dict[str, Any]:
    """Sessionize validated events, filter rare items and short sessions, build the splits.

    Writes ``data/sessions/events.parquet``, one folder per split under ``data/splits/``
    (``train``/``valid``/``test`` Parquet, and the ``cold_start`` split's
    ``cold_items``/``cold_users`` tables) and ``reports/splits.json`` with each split's
    statistics, dropped counts with reasons and the leakage checks. A split that does
    not apply to the data is reported as skipped, with the reason.

    Both engines write into staging folders beside the outputs
    (:func:`~recpipe.workspace.replacing_dir`, removed also on error) and swap them in
    only once every split is done, so a drop too small for the splits leaves the
    previous outputs (and ``reports/splits.json``) in place. The pandas engine runs
    :func:`recpipe.sessions.prepare.prepare_sessions`; ``prep.engine: arrow`` runs
    :func:`recpipe.sessions.scaled.prepare_sessions_arrow` (user-hash partitions, one
    at a time), whose tables hold the same rows, grouped by partition; ``prep.engine:
    dask`` runs its per-partition steps as Dask tasks
    (:func:`recpipe.sessions.distributed.prepare_sessions_dask`), with the same outputs.
    """
    sp = params.sessions
    prepared = params.data.source == "session-tsv"  # evaluated as given: official counts
    if sp.min_item_support is None:
        sp = sp.model_copy(update={"min_item_support": 1 if prepared else DEFAULT_ITEM_SUPPORT})
    if sp.test_items_seen_in is None:
        sp = sp.model_copy(update={"test_items_seen_in": "train_valid" if prepared else "train"})
    # both outputs are written beside their folders and swapped in (renames) only once
    # every split is done: a failure (or SIGTERM) leaves the previous ones whole
    with (
        replacing_dir(paths.sessions_dir) as events_dir,
        replacing_dir(paths.splits_dir) as splits_dir,
    ):
        if params.prep.engine in ("arrow", "dask"):
            from recpipe.data.schema import events_file
            from recpipe.sessions.distributed import prepare_sessions_dask
            from recpipe.sessions.scaled import prepare_sessions_arrow

            prepare: Callable[..., dict[str, Any]] = prepare_sessions_arrow
            if params.prep.engine == "dask":  # the same steps, as tasks on a Dask cluster
                address, workers = params.orchestration.dask_address, params.prep.workers
                copy = params.prep.work_url is not None  # the workers read a copy in the store
                prepare = partial(
                    prepare_sessions_dask, address=address, workers=workers, copy_source=copy
                )
            # data/, or this host's folder of the shared store (a mount or an object store)
            root = workfs.work_root(params.prep.work_url, paths.data_dir)
            with (
                workfs.scratch(root, "sessions-scratch") as work,
                scratch_dir(paths.data_dir, "sessions-local") as local,
            ):
                report = prepare(
                    events_file(paths.validated_dir),  # a Parquet file or a folder of parts
                    events_dir / "events.parquet",
                    splits_dir,
                    work,
                    sp,
                    n_partitions=params.prep.partitions,
                    batch_rows=params.prep.batch_rows,
                    local_dir=local,  # this process's own scratch files (work may be a store)
                )
        else:
            from recpipe.sessions.prepare import prepare_sessions

            report = prepare_sessions(
                paths.validated_dir, events_dir / "events.parquet", splits_dir, sp
            )
    write_json(paths.splits_json, report)
    return report


@workspace_io("stage features")
def features(params: Params, paths: Paths) -> dict[str, Any]:
    """Fit id maps on each split's training part; encode every part; encode item content.

    For each split folder under ``data/splits`` writes ``data/features/<split>/`` with
    ``item_map.parquet``, ``user_map.parquet``, encoded ``train``/``valid``/``test`` and
    ``meta.json`` (sizes, encoding stats and the ``gap_buckets`` used, which every model
    trained on the split records in its artifact); the content encoders and the encoded
    item content go to ``data/features/content/``; ``reports/features.json`` summarises
    it all. The work is :func:`recpipe.features.build.stream_split_features` (each part
    read and encoded in batches: the memory is the id maps and one batch; the results of
    :func:`~recpipe.features.build.split_features`, which see for the ``cold_start``
    split) and :func:`~recpipe.features.build.content_features`.
    """
    from recpipe.data.schema import read_tables

    if not paths.splits_dir.is_dir():
        raise StageError(f"no splits at {paths.splits_dir}; run the sessions stage first")
    tables = read_tables(paths.validated_dir, events=False)  # items, users: not the log
    # written beside data/features and swapped in once complete: a failure leaves the
    # previous features whole
    with replacing_dir(paths.features_dir) as staging:
        report = _features_into(staging, params, paths, tables)
    write_json(paths.features_json, report)
    return report


def _features_into(staging: Path, params: Params, paths: Paths, tables: Any) -> dict[str, Any]:
    """The features stage's outputs written under ``staging``; its report."""
    from recpipe.features.build import content_features, read_cold, stream_split_features
    from recpipe.sessions.parts import PART_NAMES

    report: dict[str, Any] = {"splits": {}}
    for split_dir in sorted(d for d in paths.splits_dir.iterdir() if d.is_dir()):
        kind = split_dir.name
        cold = read_cold(split_dir)
        out = staging / kind
        out.mkdir(parents=True)
        # a large split batch by batch (memory: the id maps and one batch), a small whole
        built = stream_split_features(
            kind, split_dir, out, params.features, PART_NAMES, items=tables.items, cold=cold
        )
        built.item_map.save(out / "item_map.parquet")
        built.user_map.save(out / "user_map.parquet")
        write_json(out / "meta.json", built.meta)
        report["splits"][kind] = built.meta
        log.info(
            "features %s: %d items, %d users (with reserved slots)",
            kind,
            len(built.item_map),
            len(built.user_map),
        )
    content_dir = staging / "content"
    item_encoder, item_content, user_encoder = content_features(
        tables.items, tables.users, params.features
    )
    item_encoder.save(content_dir / "item_encoder")
    item_content.save(content_dir / "items")
    user_encoder.save(content_dir / "user_encoder")
    report["content"] = {"items": item_encoder.summary(), "users": user_encoder.summary()}
    return report


def _remove_empty(folder: Path | None, root: Path) -> None:
    """Remove ``folder`` and its empty parents up to ``root`` (after a completed run)."""
    while folder is not None and folder != root and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


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
    None trains every one of ``train.candidates``, split by split, so each split is read
    once (:func:`recpipe.models.dataset.load_split`). Each candidate gets
    ``models/<name>/<split>/`` (a model artifact) and ``models/<name>/training.json``
    (per-epoch history, best epoch, device, time). Checkpoints go to
    ``checkpoints/<name>/<split>/`` during training, so a killed run resumes. With an
    active MLflow run (the retraining flow) each candidate and split is logged as a
    nested run: config, per-epoch metrics, the artifact.

    With ``train.nproc`` N > 1, outside torchrun, this function launches the same stage
    as a ``torchrun`` job of N processes (:func:`recpipe.train.launch.launch_torchrun`)
    and returns the summary the job wrote; ``on_epoch`` is not called then. Inside
    torchrun each torch candidate trains with DistributedDataParallel
    (:mod:`recpipe.train.distributed`); rank 0 alone writes the artifacts,
    ``training.json``, checkpoints and MLflow runs.
    """
    from recpipe import tracking
    from recpipe.models.names import NAMES
    from recpipe.train import distributed as ddp
    from recpipe.train.launch import PARENT_RUN_ENV, launch_torchrun

    tp = params.train
    names = [model] if model is not None else list(tp.candidates)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise StageError(
            f"unknown candidate model(s) {unknown} (train.candidates or --model); "
            f"known: {sorted(NAMES)}"
        )
    if tp.nproc > 1 and not ddp.in_torchrun():
        parent = None
        if tracking.run_active():
            import mlflow

            parent = mlflow.active_run().info.run_id  # type: ignore[union-attr]
        cli = ["stage", "train", "--root", str(paths.root)]
        launch_torchrun(
            tp.nproc,
            params.model_dump(mode="json"),
            [*cli, "--model", model] if model is not None else cli,
            parent_run_id=parent,
        )
        return {n: read_json(paths.model_dir(n) / "training.json") or {} for n in names}
    with ddp.session(tp.device), tracking.under_run(params, paths, os.environ.get(PARENT_RUN_ENV)):
        return _train_candidates(params, paths, names, progress=progress, on_epoch=on_epoch)


def _train_candidates(
    params: Params,
    paths: Paths,
    names: list[str],
    *,
    progress: bool,
    on_epoch: Callable[[str, str, dict[str, Any]], None] | None,
) -> dict[str, Any]:
    """The train stage's loop over splits and candidates (in this process; as one rank
    of a torchrun job when a process group is up: rank 0 writes, every rank trains)."""
    from recpipe.evaluate.leaderboard import split_query_kinds
    from recpipe.models.fitting import candidate_options, skip_reason
    from recpipe.models.registry import get_model
    from recpipe.models.torch_base import TorchRecommender
    from recpipe.train import distributed as ddp

    tp, main = params.train, ddp.is_main()
    splits_of = {name: list(tp.model_splits.get(name, tp.splits)) for name in names}
    order = list(dict.fromkeys(k for n in names for k in splits_of[n]))  # a split at a time
    last = {n: max(splits_of[n], key=order.index) for n in names if splits_of[n]}
    reports: dict[str, dict[str, Any]] = {}
    for name in names:
        options = candidate_options(name, tp.model_configs.get(name, {}), tp.device, tp.max_epochs)
        reports[name] = {"model": name, "config": options, "splits": {}}
    # rank 0 writes each candidate into a staging folder beside models/<name>/ and swaps
    # it in once the candidate has every split: a kill or failure leaves the previous
    # artifact whole (a killed run resumes from checkpoints/, which live elsewhere)
    staged: dict[str, Path] = {}

    def finish(name: str) -> None:
        folder = staged.pop(name) if name in staged else _fresh(paths.model_dir(name))
        write_json(folder / "training.json", reports[name])
        swap_in(folder, paths.model_dir(name))

    try:
        for kind in order:
            folder = paths.features_dir / kind
            for name in (n for n in names if kind in splits_of[n]):
                if not main and not issubclass(get_model(name), TorchRecommender):
                    continue  # a baseline trains on rank 0 only
                if main and name not in staged:
                    staged[name] = _fresh(paths.model_dir(name))
                done = reports[name]["splits"]
                skip = skip_reason(name, kind, split_query_kinds(kind))
                if not folder.is_dir():
                    skip = "the sessions stage did not build this split"
                if skip:
                    done[kind] = {"skipped": skip}
                else:
                    entry = _train_split(
                        params, paths, name, kind, reports[name]["config"], staged.get(name),
                        progress=progress, on_epoch=on_epoch,
                    )  # fmt: skip
                    if entry is not None:
                        done[kind] = entry
                if main and kind == last[name]:
                    finish(name)  # its last split: complete
        if main:
            for name in names:
                if name not in last:  # no split at all
                    finish(name)
    finally:
        for unfinished in staged.values():  # an error or a signal: the previous stays
            shutil.rmtree(unfinished, ignore_errors=True)
    ddp.barrier()  # the other ranks leave once rank 0 has written everything
    return reports


def _fresh(model_dir: Path) -> Path:
    """An empty staging folder for ``models/<name>/`` (:func:`~recpipe.workspace.staging_path`)."""
    folder = staging_path(model_dir)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _train_split(
    params: Params,
    paths: Paths,
    name: str,
    kind: str,
    options: dict[str, Any],
    staging: Path | None,
    *,
    progress: bool,
    on_epoch: Callable[[str, str, dict[str, Any]], None] | None,
) -> dict[str, Any] | None:
    """Train candidate ``name`` on split ``kind``; its artifact goes to ``staging/<kind>``
    (None: a rank that writes nothing). Returns its ``training.json`` entry (None on such
    a rank)."""
    from recpipe import tracking
    from recpipe.models.dataset import FIT_PARTS, load_split
    from recpipe.models.fitting import candidate_options, fit_and_save
    from recpipe.models.registry import build_model
    from recpipe.tuning.configs import read_tuned

    tp = params.train
    data = load_split(paths.features_dir / kind, FIT_PARTS)  # never the test part
    tuned = read_tuned(paths.tuned_dir, kind, name) if params.tune.use else None
    if tuned is not None:  # tune.use: the tuned config of this split
        options = candidate_options(name, tuned, tp.device, tp.max_epochs)
    try:
        candidate = build_model(name, options, data.meta)
    except MissingContentError as exc:  # e.g. content models on click logs only
        log.warning("%s: not trained on the %s split: %s", name, kind, exc)
        return {"skipped": str(exc)}
    log.info("training %s on the %s split", name, kind)
    checkpoints = paths.checkpoint_dir(name, kind) if tp.checkpoints else None
    config = candidate.config.model_dump(mode="json")
    main = staging is not None
    with tracking.candidate_run(name, kind, config) if main else contextlib.nullcontext() as run:
        entry, artifact = fit_and_save(
            candidate,
            data,
            staging / kind if staging is not None else None,
            checkpoint_dir=checkpoints,
            run=run,
            progress=progress,
            on_epoch=None if on_epoch is None else partial(on_epoch, name, kind),
        )
    if artifact is None:
        return None
    _remove_empty(checkpoints, paths.root)
    return entry | {"artifact": paths.rel(paths.model_dir(name) / kind)}


@workspace_io("stage tune")
def tune(
    params: Params,
    paths: Paths,
    models: list[str] | None = None,
    split: str | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    *,
    only_due: bool = False,
) -> dict[str, Any]:
    """Tune models on one split's validation part, every model with the same budget.

    ``models`` (default ``tune.models``; empty: every candidate and baseline that
    declares a search space), ``split`` (default ``tune.split``, else ``gate.split``),
    ``trials`` and ``timeout`` (defaults from ``tune``) override the params. The metric
    is the gate's. Studies go to the ``tune.storage`` RDB (default ``tuning/optuna.db``;
    a killed tune resumes; a study on other data starts afresh), ``tune.workers`` trials
    at a time; the best configs to ``tuned/<split>/<model>.yaml``
    (:func:`recpipe.tuning.study.tune_split`), the summary to ``reports/tuning.json`` and
    ``reports/tuning.md`` with Optuna's plots under ``reports/tuning/``. Each study is an
    MLflow run nested in the active run (else in a new ``tune`` run), with a nested run
    per trial.

    With ``only_due`` (the dvc ``tune`` stage and the retraining flow) only the models
    whose tuned config is out of date are tuned
    (:func:`recpipe.tuning.policy.retune_reasons`); the others are reused. The returned
    report's ``tuned`` lists the models tuned now.
    """
    from recpipe import tracking
    from recpipe.evaluate.leaderboard import split_query_kinds
    from recpipe.models.dataset import FIT_PARTS, load_split
    from recpipe.models.registry import get_model
    from recpipe.tuning.configs import read_tuned_file
    from recpipe.tuning.policy import retune_reasons, split_fingerprint
    from recpipe.tuning.report import write_tuning_outputs
    from recpipe.tuning.study import Budget, plan, study_key, tune_split

    tp = params.tune
    names, split, base = plan(params, models, split)
    budget = Budget(trials if trials is not None else tp.trials, timeout or tp.timeout)
    folder = paths.features_dir / split
    if not folder.is_dir():
        raise StageError(f"no features for the {split} split at {paths.rel(folder)}")
    _tuned_dir(paths)
    paths.tuning_dir.mkdir(parents=True, exist_ok=True)
    storage = tp.storage or f"sqlite:///{paths.tuning_dir / 'optuna.db'}"
    metric = params.gate.metric or params.evaluate.primary_metric
    budget_dict = {"trials": budget.trials, "timeout": budget.timeout, "workers": tp.workers}
    data_info = split_fingerprint(folder)
    due = names
    reasons: dict[str, str] = {}
    if only_due:
        keys = {n: study_key(get_model(n).search_space, base[n], metric) for n in names}
        reasons = retune_reasons(paths.tuned_dir, split, keys, data_info, tp.retune_growth)
        due = [n for n in names if n in reasons]
        for name in due:
            log.info("tuning %s on %s: %s", name, split, reasons[name])
        if not due:
            log.info("tune: every tuned config on %s is current; nothing to tune", split)
    results: dict[str, Any] = {}
    if due:
        with tracking.stage_run(params, paths, "tune"):
            results = tune_split(
                due,
                split,
                load_split(folder, FIT_PARTS),  # trials score the valid part only
                base_options=base,
                needed=split_query_kinds(split),
                metric=metric,
                ks=list(params.evaluate.ks),
                budget=budget,
                storage=storage,
                seed=tp.seed,
                prune=tp.prune,
                study_log=lambda name: tracking.study_run(name, split, metric, budget_dict),
                folder=folder,
                data_info=data_info,
                workers=tp.workers,
                parallel=tp.parallel,
                dask_address=params.orchestration.dask_address,
            )
    for name in names:  # reused: the current tuned config of a model not tuned now
        found = None if name in results else read_tuned_file(paths.tuned_dir, split, name)
        if found is not None:
            results[name] = {**found, "reused": True}
    report = {
        "split": split,
        "budget": budget_dict,
        "tuned": due,
        "reasons": reasons,
        "models": {n: results[n] for n in names if n in results},
    }
    if due or not paths.reports_dir.joinpath("tuning.json").is_file():
        write_tuning_outputs(report, storage, paths.tuned_dir, paths.reports_dir)
    return report


@workspace_io("stage tune")
def tune_stage(params: Params, paths: Paths, force: bool = False) -> dict[str, Any]:
    """The dvc ``tune`` stage (and the retraining flow's tune step): with ``tune.use``,
    :func:`tune` the models whose tuned config is out of date (not tuned yet, their
    search changed, or the split's train part grew by ``tune.retune_growth``) and keep
    the others; without it, tune nothing and leave ``tuned/`` as it is (the train and
    evaluate stages then ignore it). ``force`` (the flow's ``tune.every`` turn) tunes
    every model."""
    if force:
        return tune(params, paths)
    if not params.tune.use:
        log.info("tune: tune.use is false; nothing tuned (tuned/ left as it is)")
        _tuned_dir(paths)
        _tuning_placeholder(paths, "tune.use is false: nothing was tuned")
        return {"tuned": [], "reason": "tune.use is false"}
    return tune(params, paths, only_due=True)


def _tuned_dir(paths: Paths) -> None:
    """``tuned/`` with its README: never an empty folder (dvc cannot check one out)."""
    paths.tuned_dir.mkdir(parents=True, exist_ok=True)
    readme = paths.tuned_dir / "README.md"
    if not readme.is_file():
        readme.write_text(
            "# Tuned configs\n\n`<split>/<model>.yaml`: the best config of each tuned model "
            "(`recpipe tune`, or the dvc `tune` stage with `tune.use: true`), used by train "
            "and evaluate when `tune.use` is true.\n"
        )


def _tuning_placeholder(paths: Paths, reason: str) -> None:
    """The tuning reports' first version, before any study: what dvc expects to find."""
    if paths.reports_dir.joinpath("tuning.json").is_file():
        return
    write_json(paths.reports_dir / "tuning.json", {"tuned": [], "reason": reason, "models": {}})
    (paths.reports_dir / "tuning").mkdir(parents=True, exist_ok=True)
    (paths.reports_dir / "tuning.md").write_text(f"# Tuning\n\n{reason}.\n")


@workspace_io("stage evaluate")
def evaluate(params: Params, paths: Paths) -> dict[str, Any]:
    """Fit the configured baselines on each split and evaluate them, with the deep
    candidates the train stage left in ``models/`` (``train.candidates``), by full ranking.

    Writes ``reports/evaluation.json`` (every split), ``reports/leaderboard.md`` and,
    under ``reports/plots/``, the metric@K plots and the candidates' training curves
    (from their ``models/<name>/training.json``), as PNG and as the CSV data that
    dvc.yaml's ``plots:`` draw (:func:`recpipe.evaluate.plots.write_plots`); the gate
    stage then writes the headline, ``reports/metrics.json``. A candidate of
    ``train.candidates`` with no artifact for a split (never trained, an empty folder,
    skipped by the train stage) is listed in both reports as skipped, with why. The work is
    :func:`recpipe.evaluate.suite.evaluate_folder` (a large user top-K test part is
    ranked by blocks of users; on the ``cold_start`` split also the
    cold items and cold users protocols, metrics prefixed ``cold_items/`` and
    ``cold_users/``).
    """
    from recpipe.evaluate.leaderboard import leaderboard_markdown
    from recpipe.evaluate.plots import write_plots
    from recpipe.evaluate.suite import evaluate_folder, leaderboard_columns
    from recpipe.tuning.configs import read_tuned

    ep = params.evaluate
    results: dict[str, dict[str, Any]] = {}
    significance: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    built = read_json(paths.splits_json).get("splits", {}) if paths.splits_json.is_file() else {}
    for kind in ep.splits:
        folder = paths.features_dir / kind
        if not folder.is_dir():
            why = (built.get(kind) or {}).get("skipped")
            skipped[kind] = (
                f"skipped by the sessions stage: {why}"
                if why
                else ("the sessions stage did not build this split")
            )
            log.info("evaluate: no %s split (%s)", kind, skipped[kind])
            continue
        configs = dict(ep.model_configs)
        if params.tune.use:  # the baselines' tuned configs of this split, where tuned
            for name in ep.models:
                configs[name] = read_tuned(paths.tuned_dir, kind, name) or configs.get(name, {})
        results[kind], significance[kind] = evaluate_folder(
            folder, ep, params.train.candidates, paths.models_dir, configs
        )
    if not results:
        raise StageError(
            f"none of evaluate.splits={ep.splits} was built ({skipped}); "
            "set evaluate.splits to splits the data supports"
        )
    training = {
        name: report
        for name in params.train.candidates
        if (report := read_json(paths.model_dir(name) / "training.json"))
    }
    with replacing_dir(paths.plots_dir) as staging:
        write_plots(results, ep.ks, training, staging)
    first = next(iter(results))
    report = {
        "primary_split": first,
        "results": results,
        "significance": significance,
        "skipped_splits": skipped,
    }
    write_json(paths.evaluation_json, report)
    paths.leaderboard_md.write_text(
        leaderboard_markdown(
            results, ep.primary_metric, leaderboard_columns(ep.ks), significance, skipped
        )
    )
    return report


@workspace_io("stage gate")
def gate(params: Params, paths: Paths) -> dict[str, Any]:
    """Judge the best candidate on the gate split; write ``reports/gate.json``, ``gate.md``
    and the headline ``reports/metrics.json`` (:func:`recpipe.gates.report.headline_metrics`).

    The rules and the figures they need are :func:`recpipe.gates.decide.judge`: the
    candidate against the best baseline (lift and paired bootstrap), the registry's
    ``champion`` re-evaluated on the same split, the latency and size budgets and the
    validation report. A failed gate is a decision, not an error: the reports say why
    and the function returns normally. The registry is only read; ``register`` applies
    the decision. Since the champion lives outside the workspace, dvc.yaml marks this
    stage ``always_changed``.

    Raises
    ------
    StageError
        No evaluation report, or ``gate.metric`` has no paired bootstrap in it.
    """
    from recpipe.gates.decide import judge
    from recpipe.gates.report import gate_json, gate_markdown, headline_metrics

    evaluation = _require(paths.evaluation_json, paths, "evaluate")
    validation = (read_json(paths.validation_json) or {}).get("passed")
    result, context = judge(params, paths, evaluation, validation)
    report = gate_json(result, context)
    write_json(paths.gate_json, report)
    write_json(paths.metrics_json, headline_metrics(report, evaluation))
    paths.gate_md.write_text(gate_markdown(report))
    if result.passed:
        log.info("gate passed: %s (%s)", result.candidate, "; ".join(result.reasons))
    else:
        log.warning("gate not passed (%s): %s", result.candidate, "; ".join(result.reasons))
    return report


@workspace_io("stage register")
def register(params: Params, paths: Paths) -> dict[str, Any]:
    """Register every trained candidate in the MLflow registry; apply the gate's decision.

    See :func:`recpipe.gates.promote.register_and_promote`. With an active MLflow run
    (the retraining flow) the models are logged in it, else in a new ``register`` run.
    Each version carries the serving bundle the package stage would build for it
    (:func:`recpipe.serve.packaging.build_bundle`, from ``data/sessions/events.parquet``),
    so that its pyfunc answers as the service does (:mod:`recpipe.serve.pyfunc`).
    This step writes to the registry only, so it is not a dvc.yaml stage: the flow runs
    it after ``gate``, and ``recpipe register`` after ``dvc repro``.

    Raises
    ------
    StageError
        No gate report (run the gate stage first), or no sessionized events.
    """
    import tempfile

    import pandas as pd

    from recpipe import tracking
    from recpipe.gates.promote import register_and_promote
    from recpipe.gates.registry import BUNDLE_KEY
    from recpipe.serve.packaging import build_bundle
    from recpipe.serve.pyfunc import bundle_code

    decision = _require(paths.gate_json, paths, "gate")
    evaluation = read_json(paths.evaluation_json) or {}
    events_file = paths.sessions_dir / "events.parquet"
    if not events_file.is_file():
        raise StageError(f"no {paths.rel(events_file)}; run the sessions stage first")
    events = pd.read_parquet(events_file)

    with tempfile.TemporaryDirectory(prefix="recpipe-register-") as tmp:

        def code_for(artifact: Path, record: dict[str, Any]) -> Any:
            lineage = record["lineage"]
            info = {
                "source": "registry",
                "registered_model": params.gate.registered_model,
                "registry_version": None,
                "gate_decision": record["gate"]["decision"],
                "git_commit": lineage.get("git.commit", "unknown"),
                "data_hash": lineage.get("data.content_hash", "unknown"),
                "dvc_lock_sha256": lineage.get("dvc.lock.sha256", "none"),
                "metrics": record["metrics"],
            }
            out = Path(tmp) / f"{record['model']}-{record['split']}" / BUNDLE_KEY
            bundle = build_bundle(
                out,
                artifact,
                info,
                events,
                params.serve,
                legacy_gap_buckets=params.features.gap_buckets,
            )
            return bundle_code(bundle)

        with tracking.stage_run(params, paths, "register") as run_id:
            summary = register_and_promote(
                params, paths, decision, evaluation, run_id, code_for=code_for
            )
    log.debug("registry: %s", summary["message"])  # the flow and the CLI report it
    return summary


@workspace_io("stage package")
def package(params: Params, paths: Paths, *, missing_ok: bool = False) -> dict[str, Any]:
    """Package the champion as a Bento: model store, ``bentoml build``, export.

    The model is the MLflow registry's ``champion``; a workspace whose registry has
    none (the first run, or ``dvc repro`` before ``recpipe register``) packages the
    candidate of ``reports/gate.json`` instead, labelled ``source: gate_candidate``
    (:func:`recpipe.gates.promote.serving_source`). The bundle is built, smoke-tested,
    stored and exported to ``bentos/recpipe.bento`` by
    :func:`recpipe.serve.packaging.package_model`, with the model's own preprocessing
    (id maps, ``gap_buckets``) from its artifact; ``reports/package.json`` records the
    tags, labels, the item index and the archive size. Since the champion lives
    outside the workspace, dvc.yaml marks this stage ``always_changed``.

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

    from recpipe.gates.promote import serving_source
    from recpipe.serve.packaging import package_model

    events_file = paths.sessions_dir / "events.parquet"
    if not events_file.is_file():
        raise StageError(f"no {paths.rel(events_file)}; run the sessions stage first")
    decision = read_json(paths.gate_json)
    evaluation = read_json(paths.evaluation_json) or {}
    with tempfile.TemporaryDirectory(prefix="recpipe-package-") as tmp_dir:
        tmp = Path(tmp_dir)
        source = serving_source(params, paths, tmp, decision, evaluation)
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
        packaged = package_model(
            Path(source["artifact"]),
            source["info"],
            pd.read_parquet(events_file),
            params.serve,
            paths.bento_archive,
            tmp,
            legacy_gap_buckets=params.features.gap_buckets,
        )
    name, info = packaged.pop("model"), source["info"]
    report = {
        **packaged,
        "archive": paths.rel(paths.bento_archive),
        "serve": f"recpipe serve --port {params.serve.port}",
    }
    write_json(paths.package_json, report)
    log.info(
        "packaged %s (%s v%s) as Bento %s -> %s",
        name,
        info["source"],
        info["registry_version"] or "-",
        packaged["bento_tag"],
        paths.rel(paths.bento_archive),
    )
    return report
