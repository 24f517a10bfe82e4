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
from pathlib import Path
from typing import Any

from recpipe.config import Params
from recpipe.paths import Paths

log = logging.getLogger(__name__)


def register_and_promote(
    params: Params,
    paths: Paths,
    decision: dict[str, Any],
    evaluation: dict[str, Any],
    run_id: str,
) -> dict[str, Any]:
    """Register every trained candidate; promote the gate's candidate when it passed.

    Each ``models/<name>/<split>/`` artifact of ``train.candidates`` (on ``train.splits``
    or its ``train.model_splits`` entry) becomes a new version of
    ``gate.registered_model``, tagged with the lineage, its metrics on that split, the
    pipeline run ``run_id`` and the gate's decision. When ``decision`` passed, the gate's
    candidate version becomes the ``champion``, provided the champion is still the one
    the gate compared against; otherwise no alias moves.

    Parameters
    ----------
    decision : dict
        ``reports/gate.json``.
    evaluation : dict
        ``reports/evaluation.json`` (``{}`` when there is none).
    run_id : str
        The MLflow run the versions are logged in.

    Returns
    -------
    dict
        ``registered_model``, ``versions`` (``{"name/split": version}``),
        ``candidate_version``, ``promoted``, ``champion``, ``previous`` and ``message``.
    """
    from recpipe.gates.registry import CHAMPION, PREVIOUS, Registry, lineage_tags, metric_tags

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
            versions[key] = registry.register(
                artifact, tags, version_description(name, split, metrics, decision, judged)
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
                "metrics": metrics_from_tags(tags),
            },
        }
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
