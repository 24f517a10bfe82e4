"""One function per pipeline stage: ``(params, paths) -> summary`` that writes its outputs.

These functions are the single code path behind ``recpipe stage NAME`` (what dvc.yaml
calls), the Prefect tasks in ``flows/`` and the Python API. Each stage is declared in
:data:`STAGES` with exactly the params sections, dependencies and outputs it reads and
writes; a test keeps dvc.yaml in step with these declarations.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recpipe.config import Params, load_params
from recpipe.errors import ConfigError, StageError
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


def _reset_dir(path: Path) -> None:
    """Empty ``path`` (an output this stage owns) so no stale file survives a re-run."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def ingest(params: Params, paths: Paths) -> dict[str, Any]:
    """Read the configured source into canonical Parquet tables under ``data/interim``.

    ``data.source: synthetic`` generates the built-in click-stream from ``synth``;
    any other source kind is imported from ``data.path``. Returns the manifest.
    """
    from recpipe.data.schema import write_tables

    source = params.data.source
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


def validate(params: Params, paths: Paths, source_dir: Path | None = None) -> dict[str, Any]:
    """Validate canonical tables with Great Expectations.

    Always writes ``reports/validation.json`` and ``reports/validation.md`` and the
    quarantine folder. When the data passes (or quarantine keeps the bad share within
    tolerance) the clean tables go to ``data/validated``; otherwise that folder is left
    empty and :class:`~recpipe.errors.DataValidationError` is raised with the summary.
    The input tables are never modified.
    """
    from recpipe.data.schema import read_tables, write_tables
    from recpipe.validation import raise_if_failed, validate_tables, write_quarantine, write_report

    in_dir = Path(source_dir) if source_dir is not None else paths.interim_dir
    tables = read_tables(in_dir)
    outcome = validate_tables(tables, params.validate_)
    paths.reports_dir.mkdir(parents=True, exist_ok=True)
    write_report(outcome, paths.validation_json, paths.validation_md)
    _reset_dir(paths.quarantine_dir)
    write_quarantine(outcome, paths.quarantine_dir)
    _reset_dir(paths.validated_dir)
    raise_if_failed(outcome)
    if outcome.success:
        # nothing removed: copy the files byte for byte rather than re-encode them
        for src in in_dir.iterdir():
            if src.is_file():
                shutil.copy2(src, paths.validated_dir / src.name)
    else:
        write_tables(outcome.clean, paths.validated_dir)
    return outcome.report


SPLIT_PARTS: tuple[str, ...] = ("train", "valid", "test")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def sessions(params: Params, paths: Paths) -> dict[str, Any]:
    """Sessionize validated events, filter rare items and short sessions, build the splits.

    Writes ``data/sessions/events.parquet``, one folder per split under ``data/splits/``
    (``train``/``valid``/``test`` Parquet) and ``reports/splits.json`` with each split's
    statistics, dropped counts with reasons and the leakage checks. A split that does
    not apply to the data is reported as skipped, with the reason.
    """
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


def features(params: Params, paths: Paths) -> dict[str, Any]:
    """Fit id maps on each split's training part; encode every part; encode item content.

    For each split folder under ``data/splits`` writes ``data/features/<split>/`` with
    ``item_map.parquet``, ``user_map.parquet``, encoded ``train``/``valid``/``test`` and
    ``meta.json``; the content encoders and the encoded item and user content go to
    ``data/features/content/``; ``reports/features.json`` summarises it all.
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
        out = paths.features_dir / kind
        out.mkdir(parents=True)
        items.save(out / "item_map.parquet")
        users.save(out / "user_map.parquet")
        stats = {}
        for part, frame in parts.items():
            encoded = encode_events(frame, items, users, fp.gap_buckets)
            encoded.to_parquet(out / f"{part}.parquet", index=False)
            stats[part] = encoding_stats(encoded)
        meta = {
            "split": kind,
            "n_items": len(items),
            "n_users": len(users),
            "reserved": {"pad": PAD, "unk": UNK, "n_reserved": N_RESERVED},
            "gap_buckets": fp.gap_buckets,
            "parts": stats,
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
    from recpipe.models.torch_base import TorchRecommender

    config = dict(params.train.model_configs.get(name, {}))
    if issubclass(cls, TorchRecommender):
        config.setdefault("device", params.train.device)
        cap = params.train.max_epochs
        if cap is not None:
            config["epochs"] = min(int(config.get("epochs", cls.Config().epochs)), cap)
    return config


def train(
    params: Params,
    paths: Paths,
    model: str | None = None,
    *,
    progress: bool = False,
    on_epoch: Callable[[str, str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train deep candidates on each split of ``train.splits`` their queries suit.

    ``model`` names one candidate (what each dvc.yaml ``train@<name>`` stage runs);
    None trains every one of ``train.candidates``. Each candidate gets
    ``models/<name>/<split>/`` (a model artifact) and ``models/<name>/training.json``
    (per-epoch history, best epoch, device, time). Checkpoints go to
    ``checkpoints/<name>/<split>/`` during training, so a killed run resumes. With an
    active MLflow run (the retraining flow) each candidate and split is logged as a
    nested run: config, per-epoch metrics, the artifact.
    """
    from recpipe import tracking
    from recpipe.evaluate.leaderboard import needed_query_kind
    from recpipe.models import MODELS, build_model, get_model
    from recpipe.models.base import DataMeta, Interactions
    from recpipe.models.torch_base import TorchRecommender

    tp = params.train
    names = [model] if model is not None else list(tp.candidates)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise StageError(
            f"unknown candidate model(s) {unknown} (train.candidates or --model); "
            f"known: {sorted(MODELS)}"
        )
    summary: dict[str, Any] = {}
    for name in names:
        cls = get_model(name)
        config = _candidate_config(params, name, cls)
        out = paths.model_dir(name)
        _reset_dir(out)
        report: dict[str, Any] = {"model": name, "config": config, "splits": {}}
        for kind in tp.splits:
            folder = paths.features_dir / kind
            needed = needed_query_kind(kind)
            if not folder.is_dir():
                report["splits"][kind] = {"skipped": "the sessions stage did not build this split"}
                continue
            if needed not in cls.query_kinds:
                report["splits"][kind] = {
                    "skipped": f"scores {sorted(cls.query_kinds)} queries; {kind} needs {needed}"
                }
                continue
            meta = DataMeta.from_features(folder)
            data = {
                p: Interactions.from_parquet(folder / f"{p}.parquet") for p in ("train", "valid")
            }
            candidate = build_model(name, config, meta)
            log.info("training %s on the %s split", name, kind)
            with tracking.candidate_run(
                name, kind, candidate.config.model_dump(mode="json")
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
                    _remove_empty(checkpoints, paths.root)
                else:
                    candidate.fit(data["train"], data["valid"])
                    entry = {}
                artifact = candidate.save(out / kind)
                if run is not None:
                    run.finish(artifact, entry)
            report["splits"][kind] = entry | {"artifact": paths.rel(artifact)}
        _write_json(out / "training.json", report)
        summary[name] = report
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


def evaluate(params: Params, paths: Paths) -> dict[str, Any]:
    """Fit the configured baselines on each split and evaluate them, with the deep
    candidates the train stage left in ``models/`` (``train.candidates``), by full ranking.

    Writes ``reports/evaluation.json`` (every split), ``reports/metrics.json``
    (``{model: metrics}`` on the first evaluated split), ``reports/leaderboard.md`` and
    metric@K plots under ``reports/plots/``.
    """
    from recpipe.evaluate.leaderboard import (
        compare_to_best,
        evaluate_models,
        leaderboard_markdown,
        plot_metric_curves,
    )
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
        results[kind], per_query = evaluate_models(
            kind, data, meta, ep.models, ep.model_configs, ep.ks, fitted=candidates
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
    columns += [f"coverage@{max(ep.ks)}", f"popularity_bias@{max(ep.ks)}", "rmse", "mae"]
    columns += ["auc", "logloss"]  # CTR models (wide_deep, deepfm) on user splits
    paths.leaderboard_md.write_text(
        leaderboard_markdown(results, ep.primary_metric, columns, significance)
    )
    return report


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
            params=("data", "synth"),
            code=("recpipe/stages.py", "recpipe/data"),
            outs=lambda p: [p.interim_dir],
        ),
        StageSpec(
            name="validate",
            func=validate,
            params=("validate",),
            code=("recpipe/stages.py", "recpipe/validation"),
            deps=lambda p: [p.interim_dir],
            outs=lambda p: [p.validated_dir, p.quarantine_dir],
            metrics=lambda p: [p.validation_json],
            plain_outs=lambda p: [p.validation_md],
        ),
        StageSpec(
            name="sessions",
            func=sessions,
            params=("sessions",),
            code=("recpipe/stages.py", "recpipe/sessions"),
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
