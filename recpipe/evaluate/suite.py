"""The body of the ``evaluate`` stage: the trained candidates and the baselines of one split,
evaluated by the split's protocols.

:func:`load_candidates` loads the candidates the train stage left for a split (and
refuses one trained on other features); :func:`evaluate_split` fits the configured
baselines, evaluates every model (:func:`~recpipe.evaluate.leaderboard.evaluate_models`)
and bootstraps the primary metric against the best model
(:func:`~recpipe.evaluate.leaderboard.compare_to_best`); :func:`leaderboard_columns`
lists the leaderboard's columns; :func:`open_split` reads a split for them, its test part
by blocks of users when it is large. The stage function (:func:`recpipe.stages.evaluate`)
writes the reports and plots.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from recpipe.config import EvaluateParams
from recpipe.errors import StageError
from recpipe.models.artifact import META_FILE
from recpipe.models.data import DataMeta
from recpipe.models.dataset import BlockedPart, SplitData, whole

log = logging.getLogger(__name__)


def evaluate_folder(
    folder: Path,
    ep: EvaluateParams,
    candidates: Sequence[str],
    models_dir: Path,
    configs: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The evaluate stage's work on the split in ``folder``: read it (:func:`open_split`),
    load the trained ``candidates`` (:func:`load_candidates`), fit and evaluate
    (:func:`evaluate_split`, the baselines with ``configs``), and list each candidate
    without an artifact as skipped, with why.

    Returns
    -------
    (dict, dict)
        As :func:`evaluate_split`.
    """
    kind = folder.name
    data = open_split(folder, ep)
    fitted, trained_s, missing = load_candidates(candidates, models_dir, kind, data.meta)
    results, significance = evaluate_split(kind, data, ep, fitted, trained_s, configs=configs)
    for name, why in missing.items():  # listed with why, not left off silently
        results[name] = {"role": "candidate", "skipped": why}
    return results, significance


def open_split(folder: Path, ep: EvaluateParams) -> SplitData:
    """The split in ``folder`` as the evaluate stage reads it.

    A user top-K split (:data:`~recpipe.evaluate.protocols.USER_TOPK_SPLITS`) whose test
    part holds ``ep.stream_min_rows`` rows or more (counted from the Parquet footer) gets
    its test part as a :class:`~recpipe.models.dataset.BlockedPart` of
    ``ep.stream_block_rows`` events a block, and only the train and valid parts are read:
    the user top-K protocol then ranks it a block of users at a time, with the same
    figures. Every other split is read whole (:func:`~recpipe.models.dataset.load_split`),
    as is a test part already in memory (read by an earlier stage of this process).
    """
    import pyarrow.parquet as pq

    from recpipe.evaluate.protocols import USER_TOPK_SPLITS
    from recpipe.models.dataset import FIT_PARTS, load_split

    kind = folder.name
    if kind not in USER_TOPK_SPLITS:
        return load_split(folder)
    path = folder / "test.parquet"
    n_rows = pq.ParquetFile(path).metadata.num_rows if path.is_file() else 0
    if n_rows < ep.stream_min_rows:
        log.info(
            "evaluate %s: %d test rows, read whole (evaluate.stream_min_rows %d)",
            kind,
            n_rows,
            ep.stream_min_rows,
        )
        return load_split(folder)
    data = load_split(folder, FIT_PARTS)
    if "test" in data.parts:
        log.info("evaluate %s: %d test rows, already in memory", kind, n_rows)
        return data
    test = BlockedPart(path, data.meta.n_users, ep.stream_block_rows)
    log.info(
        "evaluate %s: %d test rows, ranked by blocks of about %d (evaluate.stream_min_rows %d)",
        kind,
        n_rows,
        ep.stream_block_rows,
        ep.stream_min_rows,
    )
    return SplitData(meta=data.meta, parts={**data.parts, "test": test})


def load_candidates(
    names: Sequence[str], models_dir: Path, kind: str, meta: DataMeta
) -> tuple[dict[str, Any], dict[str, float], dict[str, str]]:
    """The trained candidates of one split (``<models_dir>/<name>/<kind>/``), their
    training seconds (from ``training.json``) and, for each candidate not loaded, why
    (no folder, an empty one, not trained on this split and the train stage's reason),
    so that the leaderboard says which candidates are missing instead of leaving
    them off silently.

    Raises
    ------
    StageError
        A candidate was trained on other features (other sizes or gap buckets).
    """
    from recpipe.models.registry import load_model

    loaded: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    missing: dict[str, str] = {}
    for name in names:
        artifact = models_dir / name / kind
        report = models_dir / name / "training.json"
        entry = json.loads(report.read_text()).get("splits", {}).get(kind, {}) if (
            report.is_file()
        ) else {}  # fmt: skip
        if not (artifact / META_FILE).is_file():
            missing[name] = _missing_reason(models_dir / name, kind, entry)
            log.warning("evaluate: candidate %s left out of %s: %s", name, kind, missing[name])
            continue
        model = load_model(artifact)
        trained_gaps = model.meta.gap_buckets
        if model.meta.sizes() != meta.sizes() or trained_gaps not in (None, meta.gap_buckets):
            raise StageError(
                f"candidate {name!r} at {artifact} was trained on other features "
                f"({model.meta.sizes()}, gap_buckets {trained_gaps}; now {meta.sizes()}, "
                f"gap_buckets {meta.gap_buckets}); re-run the train stage"
            )
        loaded[name] = model
        if isinstance(entry.get("seconds"), int | float):
            seconds[name] = round(float(entry["seconds"]), 3)
    return loaded, seconds, missing


def _missing_reason(folder: Path, kind: str, entry: Mapping[str, Any]) -> str:
    """Why candidate folder ``folder`` has no artifact for split ``kind``."""
    if entry.get("skipped"):
        return f"not trained on this split: {entry['skipped']}"
    if not folder.is_dir():
        return f"no trained model: {folder} does not exist (run the train stage)"
    if not any(folder.iterdir()):
        return f"{folder} is empty: its training did not complete (re-run the train stage)"
    artifact = folder / kind
    if not artifact.is_dir():
        return f"no {artifact}: the train stage did not train it on this split"
    return f"{artifact} holds no {META_FILE}: an incomplete artifact (re-run the train stage)"


def evaluate_split(
    kind: str,
    data: SplitData,
    ep: EvaluateParams,
    candidates: dict[str, Any],
    trained_s: dict[str, float],
    *,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the baselines ``ep.models`` on the split and evaluate them with ``candidates``.

    ``configs`` are the baselines' options (default ``ep.model_configs``; the tuned
    configs when ``tune.use``).

    Returns
    -------
    (dict, dict)
        ``{model: entry}`` (metrics, fit and evaluation seconds, role) with the
        candidates' ``fit_s`` taken from their training, and the paired bootstrap of
        ``ep.primary_metric`` against the best model.
    """
    from recpipe.evaluate.health import health_flags
    from recpipe.evaluate.leaderboard import compare_to_best, evaluate_models

    extra = None
    if kind == "leave_last_out" and ep.sampled_negatives > 0:
        extra = _sampled_metrics(data, ep.sampled_negatives, list(ep.ks))
    results, per_query = evaluate_models(
        kind,
        data.parts,
        data.meta,
        ep.models,
        ep.model_configs if configs is None else configs,
        ep.ks,
        fitted=candidates,
        test_user_keys=data.test_user_keys,
        cold_given=ep.cold_users_given,
        extra_metrics=extra,
        keep_per_query=[ep.primary_metric],  # what compare_to_best bootstraps
    )
    for name, seconds in trained_s.items():
        if "fit_s" in results.get(name, {}):
            results[name]["fit_s"] = seconds
    for name, reasons in health_flags(results).items():
        results[name]["health"] = reasons
        log.warning("%s on the %s split: %s", name, kind, "; ".join(reasons))
    return results, compare_to_best(per_query, ep.primary_metric)


def _sampled_metrics(data: SplitData, n: int, ks: list[int]) -> Callable[[Any], dict[str, float]]:
    """The labelled sampled-negatives ranking (:mod:`recpipe.evaluate.sampled`) of a
    model that scores users; nothing for one that does not."""
    from recpipe.evaluate.sampled import sampled_user_topk

    def metrics(model: Any) -> dict[str, float]:
        if "user" not in model.query_kinds:
            return {}
        touched = [data.parts["train"], data.parts["valid"]]
        test = whole(data.parts["test"])  # a BlockedPart is read whole here
        result = sampled_user_topk(model, test, data.meta, touched=touched, n_negatives=n, ks=ks)
        return result.metrics

    return metrics


def leaderboard_columns(ks: Sequence[int]) -> list[str]:
    """The metric columns of ``reports/leaderboard.md``."""
    from recpipe.evaluate.protocols import COLD_PROTOCOLS

    top = max(ks)
    columns = [f"{m}@{k}" for m in ("recall", "mrr", "ndcg") for k in ks]
    columns += [f"{p}/{m}@{top}" for p in COLD_PROTOCOLS for m in ("recall", "ndcg")]
    columns += [f"coverage@{top}", f"popularity_bias@{top}", "rmse", "mae"]
    columns += ["auc", "logloss"]  # CTR models (wide_deep, deepfm) on user splits
    return columns
