"""The gate's rule assembly: gather the figures the rules of :mod:`recpipe.gates.rules`
need for the best candidate on the gate split, and decide.

:func:`judge` takes the evaluate stage's report and the validation verdict, reads the
gate split's features and the candidate's artifact, re-evaluates the registry's
champion on the same split (:func:`champion_figures`), measures the candidate's latency
and size, and returns the :class:`~recpipe.gates.rules.GateResult` with the context
``reports/gate.json`` records. The ``gate`` stage (:func:`recpipe.stages.gate`) only
reads the reports and writes the decision.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recpipe.config import Params
from recpipe.errors import RecpipeError, StageError
from recpipe.gates import measure, rules
from recpipe.paths import Paths

log = logging.getLogger(__name__)


def champion_figures(params: Params, paths: Paths, split: str, data: Any, metric: str) -> Any:
    """The registry's champion re-evaluated on the gate split, or None when there is none.

    ``data`` is the split's :class:`~recpipe.models.dataset.SplitData`. A champion that
    cannot be read, downloaded, loaded or evaluated is returned with the error instead
    of a value (its rule then fails).

    Returns
    -------
    ChampionFigures or None
    """
    from recpipe.gates.registry import Registry
    from recpipe.models.registry import load_model

    registry = Registry.for_workspace(params, paths)
    try:
        version = registry.champion()
    except RecpipeError as exc:
        return rules.ChampionFigures(version="unknown", error=f"the registry cannot be read: {exc}")
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
            model = load_model(artifact)
            metrics, remapped = measure.split_metrics(
                model,
                split,
                data.parts,
                data.meta,
                params.evaluate.ks,
                metric,
                test_user_keys=data.test_user_keys,
                given=params.evaluate.cold_users_given,
            )
        except (RecpipeError, ValueError, OSError) as exc:
            log.warning("champion v%s cannot be evaluated: %s", version.version, exc)
            return rules.ChampionFigures(**found, error=f"{type(exc).__name__}: {exc}")
    return rules.ChampionFigures(**found, value=metrics[metric], remapped=remapped, metrics=metrics)


def _candidate_checks(
    params: Params,
    paths: Paths,
    name: str,
    value: float,
    split: str,
    data: Any,
    metric: str,
    baseline: tuple[str | None, float | None, Any],
    champion: Any,
) -> tuple[list[rules.RuleResult], dict[str, Any]]:
    """The candidate's rule results (baseline, champion, latency, size) and its report entry."""
    from recpipe.models.registry import load_model

    gp = params.gate
    base_name, base_value, interval = baseline
    artifact = paths.model_dir(name) / split
    model = load_model(artifact)
    size = measure.artifact_size_mb(artifact)
    checks = [
        rules.beats_baseline(metric, name, value, base_name, base_value, interval, gp.min_lift),
        rules.not_worse_than_champion(metric, name, value, champion, gp.champion_tolerance),
    ]
    latency: dict[str, Any] | None
    try:
        requests = measure.single_requests(model, data.parts["test"], gp.latency_requests)
        latency = measure.request_latency(model, requests, gp.latency_k)
        latency["k"] = gp.latency_k
        checks.append(
            rules.latency_budget(latency["p99_ms"], gp.latency_p99_ms, gp.latency_k, latency["n"])
        )
    except ValueError as exc:
        latency = None
        checks.append(
            rules.RuleResult("latency", False, f"request latency cannot be measured: {exc}", {})
        )
    checks.append(rules.artifact_size_budget(size, gp.max_artifact_mb))
    entry = {
        "model": name,
        "split": split,
        "artifact": paths.rel(artifact),
        "metric": metric,
        "value": value,
        "size_mb": size,
        "latency": latency,
    }
    return checks, entry


def _tuning(params: Params, paths: Paths, split: str, models: list[str]) -> dict[str, Any]:
    """Which configs the compared models ran with: ``{"use": tune.use, "models": {model:
    tuned summary}}`` (:func:`recpipe.tuning.configs.tuned_summary`)."""
    from recpipe.tuning.configs import tuned_summary

    if not params.tune.use:
        return {"use": False, "models": {m: {"tuned": False} for m in models}}
    summaries = {m: tuned_summary(paths.tuned_dir, split, m) for m in models}
    for entry in summaries.values():
        if entry.get("file"):
            entry["file"] = paths.rel(Path(entry["file"]))
    return {"use": True, "models": summaries}


def judge(
    params: Params, paths: Paths, evaluation: dict[str, Any], validation: bool | None
) -> tuple[rules.GateResult, dict[str, Any]]:
    """Judge the best candidate of ``evaluation`` on the gate split.

    The split is ``gate.split`` (default: the evaluate stage's primary split) and the
    metric ``gate.metric`` (default ``evaluate.primary_metric``, the metric the evaluate
    stage bootstraps). The candidate is the deep model with the best metric on that
    split; the rules compare it with the best baseline (lift and paired bootstrap), with
    the registry's ``champion`` (re-evaluated on the same split by the same protocol),
    with the latency and size budgets (measured on its artifact) and with the validation
    verdict. A gate split that was not evaluated fails the gate with that reason.

    Parameters
    ----------
    evaluation : dict
        ``reports/evaluation.json``.
    validation : bool or None
        ``passed`` of ``reports/validation.json`` (None: no report).

    Returns
    -------
    (GateResult, dict)
        The decision and the context ``reports/gate.json`` records beside it.

    Raises
    ------
    StageError
        ``gate.metric`` has no paired bootstrap in the evaluation report.
    """
    from recpipe.models.dataset import load_split

    gp = params.gate
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
        return rules.decide(None, None, [missing]), context
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

    data = load_split(paths.features_dir / split)
    champion = champion_figures(params, paths, split, data, metric)
    checks: list[rules.RuleResult] = []
    candidate: dict[str, Any] | None = None
    interval = None
    if name is not None:
        interval = rules.bootstrap_vs_baseline(significance, name, baseline) if baseline else None
        value = float(models[name]["metrics"][metric])
        found, candidate = _candidate_checks(
            params,
            paths,
            name,
            value,
            split,
            data,
            metric,
            (baseline, baseline_value, interval),
            champion,
        )
        checks += found
    checks.append(rules.data_validated(validation, gp.require_validation))
    context["tuning"] = _tuning(params, paths, split, [m for m in (name, baseline) if m])
    context["health"] = list(models[name].get("health", [])) if name else []
    context["candidate"] = candidate
    context["baseline"] = None if baseline is None else {"model": baseline, "value": baseline_value}
    context["bootstrap"] = interval
    return rules.decide(name, champion, checks), context
