"""The gate's reports: ``reports/gate.json`` for machines, ``reports/gate.md`` for people.

``gate.json`` holds ``passed``, ``reasons`` (the failed rules' reasons, or every
rule's when it passed), ``candidate`` (``model``, ``split``, ``artifact``, the gate
metric's ``value``, ``size_mb``, ``latency``), ``champion`` (``version``, ``model``,
``split``, ``value`` re-evaluated on the gate split, ``error``, ``remapped``; null
when there is none), ``split``, ``metric``, ``baseline`` (best baseline and its
value), ``bootstrap`` (the paired interval of candidate minus baseline), ``rules``
(each rule's ``name``, ``passed``, ``reason`` and ``figures``), ``params`` (the gate
section), ``health`` (the candidate's health warnings from the evaluate stage,
:mod:`recpipe.evaluate.health`) and ``created_at``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recpipe.gates.rules import GateResult


def gate_json(result: GateResult, context: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-able report of a decision; ``context`` adds the figures around it.

    Parameters
    ----------
    result : GateResult
        The decision.
    context : mapping
        ``candidate`` (dict or None), ``split``, ``metric``, ``baseline``,
        ``bootstrap``, ``params``, ``created_at``.
    """
    return {
        "passed": result.passed,
        "reasons": list(result.reasons),
        "candidate": context.get("candidate"),
        "champion": None if result.champion is None else result.champion.to_dict(),
        "split": context.get("split"),
        "metric": context.get("metric"),
        "baseline": context.get("baseline"),
        "bootstrap": context.get("bootstrap"),
        "rules": [r.to_dict() for r in result.rules],
        "params": context.get("params"),
        "tuning": context.get("tuning"),
        "health": context.get("health") or [],
        "created_at": context.get("created_at"),
    }


#: The figures of each model in ``reports/metrics.json`` (at the gate metric's cut-off).
HEADLINE_METRICS = ("recall", "ndcg", "mrr", "coverage")


def headline_metrics(report: Mapping[str, Any], evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """``reports/metrics.json``, what ``dvc metrics show`` / ``dvc metrics diff`` print: on
    the gate's split, the decision (``passed``, ``candidate``, ``best_baseline`` and
    their ``metric`` values ``candidate_value``, ``best_baseline_value``), the
    registry's champion re-evaluated there (``champion``: ``version``, ``model`` and its
    figures; null without one) and, under ``models``, the recall, NDCG, MRR and
    coverage at the gate metric's cut-off of the two models the decision compares (the
    candidate and the best baseline): about 20 columns in all. Every other model and
    figure stays in ``reports/evaluation.json``, ``reports/leaderboard.md`` and
    ``reports/gate.json``.

    Parameters
    ----------
    report : mapping
        ``reports/gate.json`` (:func:`gate_json`).
    evaluation : mapping
        ``reports/evaluation.json``.
    """
    split, metric = report.get("split"), str(report.get("metric") or "")
    k = metric.split("@")[1] if "@" in metric else ""
    names = [f"{m}@{k}" for m in HEADLINE_METRICS] if k else [metric]
    results = (evaluation.get("results") or {}).get(split) or {}
    compared = [(report.get(role) or {}).get("model") for role in ("candidate", "baseline")]
    models = {
        name: {m: results[name]["metrics"][m] for m in names if m in results[name]["metrics"]}
        for name in compared
        if name and "metrics" in (results.get(name) or {})
    }
    champion = report.get("champion")
    if champion is not None:
        figures = champion.get("metrics") or {}
        champion = {
            "version": champion.get("version"),
            "model": champion.get("model"),
            **{m: figures[m] for m in names if m in figures},
            **({"error": champion["error"]} if champion.get("error") else {}),
        }
    return {
        "split": split,
        "metric": metric,
        "passed": bool(report.get("passed")),
        "candidate": (report.get("candidate") or {}).get("model"),
        "best_baseline": (report.get("baseline") or {}).get("model"),
        # the two figures the decision compares, as columns of their own (dvc exp show)
        "candidate_value": (report.get("candidate") or {}).get("value"),
        "best_baseline_value": (report.get("baseline") or {}).get("value"),
        "champion": champion,
        "models": models,
    }


def gate_markdown(report: Mapping[str, Any]) -> str:
    """A short human report of ``gate.json``: decision, reasons, every rule."""
    passed = bool(report["passed"])
    candidate = report.get("candidate") or {}
    champion = report.get("champion")
    metric, split = report.get("metric"), report.get("split")
    lines = [f"# Gate: {'PASSED' if passed else 'NOT PASSED'}", ""]
    if candidate:
        lines.append(
            f"Candidate **{candidate['model']}** on the `{split}` split "
            f"({metric} {candidate['value']:.4f}), judged against the best baseline"
            + (" and the champion." if champion else "; there is no champion yet.")
        )
    else:
        lines.append(f"No candidate was evaluated on the `{split}` split.")
    lines.append("")
    if passed:
        lines.append(
            "Decision: the register step makes this candidate's registry version the "
            "`champion` (the current one becomes `previous`)."
        )
    else:
        lines += ["Decision: **not promoted**; no registry alias moves. Why:", ""]
        lines += [f"- {reason}" for reason in report.get("reasons", [])]
    lines += ["", "| rule | result | reason |", "|---|---|---|"]
    for rule in report.get("rules", []):
        reason = str(rule["reason"]).replace("|", "\\|")
        lines.append(f"| {rule['name']} | {'pass' if rule['passed'] else 'FAIL'} | {reason} |")
    lines.append("")
    if champion:
        value = champion.get("value")
        shown = f"{metric} {value:.4f} re-evaluated on `{split}`" if value is not None else ""
        if champion.get("error"):
            shown = f"could not be evaluated: {champion['error']}"
        note = " (scored through its own id maps)" if champion.get("remapped") else ""
        lines.append(
            f"Champion: registry version {champion['version']} "
            f"({champion.get('model') or '?'} on {champion.get('split') or '?'}), "
            f"{shown}{note}."
        )
    else:
        lines.append("Champion: none yet.")
    lines += _tuning_lines(report.get("tuning"))
    for warning in report.get("health") or []:  # flagged by the evaluate stage
        lines.append(f"Health warning for {candidate.get('model', '?')}: {warning}.")
    if candidate:
        latency = candidate.get("latency") or {}
        if latency:
            lines.append(
                f"Latency of one request (top-{latency.get('k')}): p50 "
                f"{latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms over "
                f"{latency['n']} requests; artifact {candidate['size_mb']:.2f} MiB "
                f"(`{candidate['artifact']}`)."
            )
    lines.append("")
    return "\n".join(lines)


def _tuning_lines(tuning: Mapping[str, Any] | None) -> list[str]:
    """One line per compared model: the config it ran with (tuned: budget and values)."""
    if not tuning:
        return []
    if not tuning.get("use"):
        return ["Configs: every model ran with its configured options (tune.use is false)."]
    lines = []
    for model, entry in (tuning.get("models") or {}).items():
        if not entry.get("tuned"):
            lines.append(f"Config of {model}: not tuned on this split (its configured options).")
            continue
        budget = entry.get("budget") or {}
        default = entry.get("default_value")
        lines.append(
            f"Config of {model}: tuned (`{entry.get('file')}`), budget {budget.get('trials')} "
            f"trials / {budget.get('timeout')} s, {budget.get('used_trials')} used; validation "
            f"{entry.get('metric')} {entry.get('best_value'):.4f}"
            + (f" (defaults {default:.4f})." if default is not None else ".")
        )
    return lines
