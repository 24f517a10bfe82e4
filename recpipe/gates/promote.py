"""Registering candidates, applying the gate's decision, and choosing what to serve.

- :func:`register_and_promote`: every trained candidate artifact becomes a version of the
  registered model with lineage and metric tags; when the gate passed, its candidate's
  version becomes the ``champion`` (the old one ``previous``).
- :func:`serving_source`: the model the package stage serves: the registry's champion,
  else the gate's candidate (the first run, or a workspace used without the registry).

The ``register`` and ``package`` stages (:mod:`recpipe.stages`) read the reports and
call these; the registry itself is :class:`recpipe.gates.registry.Registry`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recpipe.config import Params
from recpipe.paths import Paths

if TYPE_CHECKING:
    from recpipe.gates.registry import PyfuncCode

log = logging.getLogger(__name__)


def register_and_promote(
    params: Params,
    paths: Paths,
    decision: dict[str, Any],
    evaluation: dict[str, Any],
    run_id: str,
    code_for: Callable[[Path, dict[str, Any]], PyfuncCode] | None = None,
) -> dict[str, Any]:
    """Register every trained candidate; promote the gate's candidate when it passed.

    Each ``models/<name>/<split>/`` artifact of ``train.candidates`` (on ``train.splits``
    or its ``train.model_splits`` entry) becomes a new version of
    ``gate.registered_model``. Its tags are few (:func:`version_tags`: model, split, the
    gate's outcome for it, its gate metric); everything else (every metric on that
    split, the lineage, the pipeline run ``run_id``, the gate's reasons) is its record
    ``artifacts/recpipe.json`` (:func:`version_record`). When ``decision`` passed, the
    gate's candidate version becomes the ``champion``, provided the champion is still
    the one the gate compared against; otherwise no alias moves.

    Parameters
    ----------
    decision : dict
        ``reports/gate.json``.
    evaluation : dict
        ``reports/evaluation.json`` (``{}`` when there is none).
    run_id : str
        The MLflow run the versions are logged in.
    code_for : callable, optional
        ``(artifact, record) -> PyfuncCode``: what each version runs (the register stage
        passes :func:`recpipe.serve.pyfunc.bundle_code` of a serving bundle built for
        it); default the bare model.

    Returns
    -------
    dict
        ``registered_model``, ``versions`` (``{"name/split": version}``),
        ``candidate_version``, ``promoted``, ``champion``, ``previous`` and ``message``.
    """
    from recpipe.gates.registry import CHAMPION, PREVIOUS, Registry, lineage_tags

    results = evaluation.get("results", {})
    chosen = decision.get("candidate") or {}
    chosen_key = f"{chosen.get('model')}/{chosen.get('split')}" if chosen else None
    registry = Registry.for_workspace(params, paths)
    lineage = lineage_tags(paths)
    versions: dict[str, str] = {}
    for name in params.train.candidates:
        for split in params.train.model_splits.get(name, params.train.splits):
            artifact = paths.model_dir(name) / split
            if not (artifact / "meta.json").is_file():
                continue
            key = f"{name}/{split}"
            metrics = results.get(split, {}).get(name, {}).get("metrics", {})
            judged = key == chosen_key
            record = version_record(name, split, metrics, decision, judged, lineage, run_id)
            versions[key] = registry.register(
                artifact,
                version_tags(record),
                version_description(name, split, metrics, decision, judged),
                code=None if code_for is None else code_for(artifact, record),
                details=record,
            )
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
    return {
        "registered_model": registry.name,
        "versions": versions,
        "candidate_version": version,
        "promoted": promoted,
        "champion": aliases.get(CHAMPION),
        "previous": aliases.get(PREVIOUS),
        "message": message,
    }


def _outcome(decision: dict[str, Any], judged: bool) -> str:
    return ("passed" if decision["passed"] else "failed") if judged else "not_judged"


def version_record(
    name: str,
    split: str,
    metrics: dict[str, Any],
    decision: dict[str, Any],
    judged: bool,
    lineage: dict[str, str],
    run_id: str,
) -> dict[str, Any]:
    """A version's record (``artifacts/recpipe.json``): ``model``, ``split``, ``gate``
    (``decision``: ``passed``, ``failed`` or ``not_judged`` for a candidate the gate did
    not pick; ``metric``; ``reasons`` when judged), every numeric ``metrics`` entry on
    its split, the ``lineage`` (:func:`recpipe.gates.registry.lineage_tags`) and the
    ``pipeline_run_id``."""
    gate: dict[str, Any] = {
        "decision": _outcome(decision, judged),
        "metric": decision.get("metric") or None,
    }
    if judged:
        gate["reasons"] = list(decision.get("reasons", []))
    return {
        "model": name,
        "split": split,
        "gate": gate,
        "metrics": {
            str(k): float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        },
        "lineage": dict(lineage),
        "pipeline_run_id": run_id,
    }


def version_tags(record: dict[str, Any]) -> dict[str, str]:
    """The few tags of a version: ``recpipe.model``, ``recpipe.split``,
    ``gate.decision`` and its gate metric (``metric.recall_at_20``) when it has one; the
    rest of :func:`version_record` is in the version's ``recpipe.json``."""
    from recpipe.gates.registry import metric_tags

    tags = {
        "recpipe.model": record["model"],
        "recpipe.split": record["split"],
        "gate.decision": record["gate"]["decision"],
    }
    metric = record["gate"].get("metric")
    if metric and metric in record["metrics"]:
        tags.update(metric_tags({metric: record["metrics"][metric]}))
    return tags


def metrics_from_tags(tags: dict[str, str]) -> dict[str, float]:
    """``{"recall@20": 0.5}`` from a registry version's ``metric.recall_at_20`` tags."""
    out: dict[str, float] = {}
    for key, value in tags.items():
        if key.startswith("metric."):
            try:
                out[key.removeprefix("metric.").replace("_at_", "@")] = float(value)
            except ValueError:
                continue
    return out


def serving_source(
    params: Params,
    paths: Paths,
    tmp: Path,
    decision: dict[str, Any] | None,
    evaluation: dict[str, Any],
) -> dict[str, Any] | None:
    """The model the package stage serves: ``{"artifact", "info"}``, or None if none.

    The registry's ``champion`` (downloaded into ``tmp``) when there is one; else the
    candidate of the gate's ``decision`` (``source: gate_candidate``, unregistered: the
    first run, or a workspace used without the registry), whether or not it passed.

    Parameters
    ----------
    decision : dict or None
        ``reports/gate.json`` (None: there is none).
    evaluation : dict
        ``reports/evaluation.json`` (``{}`` when there is none).
    """
    from recpipe.gates.registry import Registry, lineage_tags

    registry = Registry.for_workspace(params, paths)
    version = registry.champion()
    if version is not None:
        artifact = registry.download(version.version, tmp / "champion")
        return {"artifact": artifact, "info": version_info(registry, version)}
    if decision is None:
        return None
    candidate = decision.get("candidate") or {}
    if not candidate.get("artifact"):
        return None
    artifact = paths.root / candidate["artifact"]
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


def version_info(registry: Any, version: Any) -> dict[str, Any]:
    """What a bundle of a registered version records (``source: champion``): its lineage
    and metrics from its record (:func:`version_record`), else from its tags (versions
    registered before the record existed; the lineage step's tags win)."""
    from recpipe.gates.registry import CHAMPION

    tags = dict(version.tags or {})
    record = registry.details(version.version)
    lineage = {**(record.get("lineage") or {}), **tags}
    return {
        "source": CHAMPION,
        "registered_model": registry.name,
        "registry_version": str(version.version),
        "git_commit": lineage.get("git.commit", "unknown"),
        "data_hash": lineage.get("data.content_hash", "unknown"),
        "dvc_lock_sha256": lineage.get("dvc.lock.sha256", "none"),
        "gate_decision": tags.get("gate.decision", "unknown"),
        "metrics": record.get("metrics") or metrics_from_tags(tags),
    }


def version_description(
    name: str, split: str, metrics: dict[str, Any], decision: dict[str, Any], judged: bool
) -> str:
    """One line for the registry's version list: the model, its split, the gate's outcome
    for it and its gate metric, e.g. ``mf_bpr on user_temporal: gate passed, recall@20
    0.2413``."""
    metric = decision.get("metric") or ""
    outcome = ("passed" if decision.get("passed") else "not passed") if judged else "not judged"
    value = metrics.get(metric)
    figure = f", {metric} {float(value):.4f}" if isinstance(value, int | float) else ""
    return f"{name} on {split}: gate {outcome}{figure}"
