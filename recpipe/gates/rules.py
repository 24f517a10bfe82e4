"""The gate rules: pure functions from figures to a :class:`RuleResult` with its reason.

Nothing here reads files, trains, times or talks to MLflow: the ``gate`` stage
(:func:`recpipe.gates.decide.judge`) gathers the figures (the evaluate stage's metrics and
paired bootstrap, the champion re-evaluated on the same split, the candidate's
measured latency and artifact size, the validation report) and :func:`decide` turns
the rule results into one :class:`GateResult`. Each rule is a function
``(figures) -> RuleResult(name, passed, reason, figures)``:

==================  ==========================================================================
rule                passes when
==================  ==========================================================================
``beats_baseline``  ``candidate >= best_baseline * (1 + min_lift)`` (relative lift on the gate
                    metric) **and** the lower bound of the paired-bootstrap 95% interval of
                    ``candidate - best_baseline`` is above zero. No baseline: fails (nothing
                    shows the candidate is worth serving).
``champion``        no champion yet; or ``candidate >= champion * (1 - tolerance)`` with the
                    champion re-evaluated on the same split by the same protocol. A champion
                    that cannot be loaded or evaluated fails the rule with the reason (the gate
                    cannot show the candidate is no worse; promote by hand after checking).
``latency``         p99 of one in-process request (score + top-K) ``<= latency_p99_ms``.
``artifact_size``   the candidate's artifact directory ``<= max_artifact_mb`` (MiB).
``validation``      the run's data validation passed (``gate.require_validation``).
==================  ==========================================================================

A gate with no candidate on its split fails with that reason (and with a ``split``
rule result when the evaluate stage did not evaluate the gate split). Relative comparisons
use the baseline's (champion's) value as the base; a base of zero reduces the lift
rule to ``candidate > 0`` and the champion rule to ``candidate >= 0``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "ChampionFigures",
    "GateResult",
    "RuleResult",
    "artifact_size_budget",
    "beats_baseline",
    "best_baseline",
    "bootstrap_vs_baseline",
    "data_validated",
    "decide",
    "latency_budget",
    "not_worse_than_champion",
    "select_candidate",
]


@dataclass(frozen=True)
class RuleResult:
    """The outcome of one gate rule.

    Attributes
    ----------
    name : str
        ``beats_baseline``, ``champion``, ``latency``, ``artifact_size`` or ``validation``.
    passed : bool
        Whether the rule holds.
    reason : str
        One readable sentence with the figures behind the decision.
    figures : dict
        The numbers the rule compared (JSON-able), for ``reports/gate.json``.
    """

    name: str
    passed: bool
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``name``, ``passed``, ``reason``, ``figures``)."""
        return asdict(self)


@dataclass(frozen=True)
class ChampionFigures:
    """What the gate knows of the current champion.

    Attributes
    ----------
    version : str
        Registry version number holding the ``champion`` alias.
    model, split : str
        The recpipe model name and the split it was trained on (version tags; "" unknown).
    value : float or None
        Its gate metric re-evaluated on the gate split; None when it could not be.
    error : str or None
        Why it could not be loaded or evaluated (None when ``value`` is set).
    remapped : bool
        Whether it was evaluated through its own id maps (trained on other data).
    metrics : dict
        Every metric of that re-evaluation (empty when it could not be made).
    """

    version: str
    model: str = ""
    split: str = ""
    value: float | None = None
    error: str | None = None
    remapped: bool = False
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateResult:
    """The gate's decision.

    Attributes
    ----------
    passed : bool
        Every rule passed (and there was a candidate).
    reasons : list of str
        The failed rules' reasons when the gate failed, else every rule's reason.
    candidate : str or None
        The candidate model the gate judged (best on the gate metric), None if none.
    champion : ChampionFigures or None
        The champion it was compared with, None when there is none yet.
    rules : list of RuleResult
        Every rule's outcome, in a fixed order.
    """

    passed: bool
    reasons: list[str]
    candidate: str | None
    champion: ChampionFigures | None
    rules: list[RuleResult]

    def failed_rules(self) -> list[str]:
        """Names of the rules that failed."""
        return [r.name for r in self.rules if not r.passed]


# ---------------------------------------------------------------------- selection
def _metric(entry: Mapping[str, Any], metric: str) -> float | None:
    value = entry.get("metrics", {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _best(models: Mapping[str, Mapping[str, Any]], metric: str, role: str) -> str | None:
    scored = {
        name: value
        for name, entry in models.items()
        if entry.get("role") == role and (value := _metric(entry, metric)) is not None
    }
    if not scored:
        return None
    # highest value; ties by name, so the choice does not depend on dict order
    return min(scored, key=lambda n: (-scored[n], n))


def select_candidate(models: Mapping[str, Mapping[str, Any]], metric: str) -> str | None:
    """The candidate (``role: candidate``) with the highest ``metric``, None if none.

    Parameters
    ----------
    models : mapping
        ``evaluation.json``'s ``results[split]``: ``{model: {"role", "metrics", ...}}``.
    metric : str
        The gate metric, e.g. ``recall@20``.

    Examples
    --------
    >>> select_candidate({"a": {"role": "candidate", "metrics": {"recall@20": 0.2}},
    ...                   "b": {"role": "candidate", "metrics": {"recall@20": 0.3}},
    ...                   "pop": {"role": "baseline", "metrics": {"recall@20": 0.9}}},
    ...                  "recall@20")
    'b'
    """
    return _best(models, metric, "candidate")


def best_baseline(models: Mapping[str, Mapping[str, Any]], metric: str) -> str | None:
    """The baseline (``role: baseline``) with the highest ``metric``, None if none."""
    return _best(models, metric, "baseline")


def bootstrap_vs_baseline(
    significance: Mapping[str, Any], candidate: str, baseline: str
) -> dict[str, float] | None:
    """The paired-bootstrap interval of ``candidate - baseline`` from the evaluate stage.

    The evaluate stage bootstraps every model against the best one
    (:func:`~recpipe.evaluate.leaderboard.compare_to_best`: ``versus[m]`` is the
    interval of ``m - best``). When the candidate is the best, the interval of
    ``baseline - candidate`` is negated; when the baseline is the best, the
    candidate's own entry is the answer.

    Parameters
    ----------
    significance : mapping
        ``evaluation.json``'s ``significance[split]``: ``{"best", "metric", "versus"}``.
    candidate, baseline : str
        Model names.

    Returns
    -------
    dict or None
        ``{"mean_diff", "low", "high", "p_value"}`` of candidate minus baseline, or
        None when neither model is the best the evaluate stage compared against.

    Examples
    --------
    >>> sig = {"best": "gru", "versus": {"pop": {"mean_diff": -0.2, "low": -0.3,
    ...                                          "high": -0.1, "p_value": 0.002}}}
    >>> bootstrap_vs_baseline(sig, "gru", "pop")
    {'mean_diff': 0.2, 'low': 0.1, 'high': 0.3, 'p_value': 0.002}
    """
    best = significance.get("best")
    versus = significance.get("versus", {})
    if best == baseline and candidate in versus:
        v = versus[candidate]
        return {k: float(v[k]) for k in ("mean_diff", "low", "high", "p_value")}
    if best == candidate and baseline in versus:
        v = versus[baseline]
        return {
            "mean_diff": -float(v["mean_diff"]),
            "low": -float(v["high"]),
            "high": -float(v["low"]),
            "p_value": float(v["p_value"]),
        }
    return None


# ---------------------------------------------------------------------- rules
def _fmt(x: float) -> str:
    return f"{x:.4f}"


def beats_baseline(
    metric: str,
    candidate: str,
    candidate_value: float,
    baseline: str | None,
    baseline_value: float | None,
    interval: Mapping[str, float] | None,
    min_lift: float,
) -> RuleResult:
    """The candidate beats the best baseline by ``min_lift`` (relative) and significantly.

    Parameters
    ----------
    metric : str
        Gate metric name (for the reason).
    candidate : str
        Candidate name.
    candidate_value : float
        Its mean metric on the gate split.
    baseline : str or None
        The best baseline on the gate split (None: no baseline was evaluated).
    baseline_value : float or None
        Its mean metric.
    interval : mapping or None
        ``{"low", "high", "mean_diff"}`` of the paired bootstrap of candidate minus
        baseline (:func:`bootstrap_vs_baseline`); None if unavailable.
    min_lift : float
        Required relative lift, e.g. 0.01 for 1%.

    Returns
    -------
    RuleResult
        Named ``beats_baseline``.
    """
    name = "beats_baseline"
    if baseline is None or baseline_value is None:
        return RuleResult(
            name,
            False,
            f"no baseline was evaluated on the gate split, so nothing shows {candidate} is "
            "worth serving; list baselines in evaluate.models",
            {"metric": metric, "candidate_value": candidate_value, "min_lift": min_lift},
        )
    lift = (
        (candidate_value - baseline_value) / baseline_value
        if baseline_value > 0
        else (math.inf if candidate_value > 0 else 0.0)
    )
    figures: dict[str, Any] = {
        "metric": metric,
        "candidate_value": candidate_value,
        "baseline": baseline,
        "baseline_value": baseline_value,
        "lift": lift if math.isfinite(lift) else None,
        "min_lift": min_lift,
        "ci_low": None if interval is None else interval["low"],
        "ci_high": None if interval is None else interval["high"],
    }
    lifted = candidate_value > baseline_value and lift >= min_lift
    lift_text = f"{lift:+.1%}" if math.isfinite(lift) else "unbounded"
    head = (
        f"{candidate} {metric} {_fmt(candidate_value)} vs best baseline {baseline} "
        f"{_fmt(baseline_value)} (lift {lift_text}, needed >= {min_lift:+.1%}"
    )
    if interval is None:
        return RuleResult(
            name,
            False,
            head + "); no paired bootstrap of the two is available, so the difference is "
            "not shown to be significant",
            figures,
        )
    ci = f"95% CI of the difference [{interval['low']:+.4f}, {interval['high']:+.4f}]"
    significant = interval["low"] > 0.0
    if lifted and significant:
        return RuleResult(name, True, f"{head}; {ci} above zero)", figures)
    why = []
    if candidate_value <= baseline_value:
        why.append("not better than the best baseline")
    elif not lifted:
        why.append("lift below the minimum")
    if not significant:
        why.append("the interval's lower bound is not above zero")
    return RuleResult(name, False, f"{head}; {ci}): " + " and ".join(why), figures)


def not_worse_than_champion(
    metric: str,
    candidate: str,
    candidate_value: float,
    champion: ChampionFigures | None,
    tolerance: float,
) -> RuleResult:
    """The candidate is not worse than the champion (same split) beyond ``tolerance``.

    Parameters
    ----------
    metric : str
        Gate metric name.
    candidate : str
        Candidate name.
    candidate_value : float
        Its mean metric on the gate split.
    champion : ChampionFigures or None
        The champion re-evaluated on the gate split (None: no champion yet).
    tolerance : float
        Allowed relative shortfall, e.g. 0.01.

    Returns
    -------
    RuleResult
        Named ``champion``.
    """
    name = "champion"
    if champion is None:
        return RuleResult(
            name,
            True,
            "no champion yet: the first candidate that passes becomes the champion",
            {"metric": metric, "candidate_value": candidate_value, "tolerance": tolerance},
        )
    who = f"champion v{champion.version}" + (f" ({champion.model})" if champion.model else "")
    figures: dict[str, Any] = {
        "metric": metric,
        "candidate_value": candidate_value,
        "champion_version": champion.version,
        "champion_value": champion.value,
        "tolerance": tolerance,
    }
    if champion.value is None:
        return RuleResult(
            name,
            False,
            f"{who} could not be evaluated on the gate split, so the candidate is not shown "
            f"to be no worse: {champion.error or 'unknown error'}",
            figures | {"error": champion.error},
        )
    threshold = champion.value * (1.0 - tolerance)
    figures["threshold"] = threshold
    text = (
        f"{candidate} {metric} {_fmt(candidate_value)} vs {who} {_fmt(champion.value)} "
        f"re-evaluated on the same split (needed >= {_fmt(threshold)}, "
        f"tolerance {tolerance:.1%})"
    )
    if candidate_value >= threshold:
        return RuleResult(name, True, text, figures)
    return RuleResult(name, False, text + ": worse than the champion", figures)


def latency_budget(p99_ms: float, budget_ms: float, k: int, n_requests: int) -> RuleResult:
    """p99 of one in-process request (score + top-K) is within the budget."""
    figures = {"p99_ms": p99_ms, "budget_ms": budget_ms, "k": k, "requests": n_requests}
    text = (
        f"p99 latency {p99_ms:.2f} ms of one request (top-{k}, {n_requests} timed, "
        f"in-process) vs budget {budget_ms:g} ms"
    )
    if p99_ms <= budget_ms:
        return RuleResult("latency", True, text, figures)
    return RuleResult("latency", False, text + ": over budget", figures)


def artifact_size_budget(size_mb: float, max_mb: float) -> RuleResult:
    """The candidate's artifact is within the size budget (MiB)."""
    figures = {"size_mb": size_mb, "max_mb": max_mb}
    text = f"artifact size {size_mb:.2f} MiB vs budget {max_mb:g} MiB"
    if size_mb <= max_mb:
        return RuleResult("artifact_size", True, text, figures)
    return RuleResult("artifact_size", False, text + ": over budget", figures)


def data_validated(passed: bool | None, required: bool) -> RuleResult:
    """The run's data validation passed (``passed`` None: no validation report)."""
    figures = {"validation_passed": passed, "required": required}
    if not required:
        return RuleResult("validation", True, "data validation not required (gate)", figures)
    if passed is None:
        return RuleResult(
            "validation",
            False,
            "no data validation report (reports/validation.json); run the validate stage",
            figures,
        )
    if passed:
        return RuleResult("validation", True, "data validation passed", figures)
    return RuleResult(
        "validation", False, "data validation failed (see reports/validation.md)", figures
    )


def decide(
    candidate: str | None, champion: ChampionFigures | None, rules: list[RuleResult]
) -> GateResult:
    """Combine rule results: the gate passes when there is a candidate and every rule passes.

    Examples
    --------
    >>> ok = RuleResult("latency", True, "fast")
    >>> decide("gru4rec", None, [ok]).passed
    True
    >>> decide(None, None, []).reasons
    ['no candidate was evaluated on the gate split']
    """
    if candidate is None:
        reasons = ["no candidate was evaluated on the gate split"]
        reasons += [r.reason for r in rules if not r.passed]
        return GateResult(False, reasons, None, champion, list(rules))
    failed = [r.reason for r in rules if not r.passed]
    if failed:
        return GateResult(False, failed, candidate, champion, list(rules))
    return GateResult(True, [r.reason for r in rules], candidate, champion, list(rules))
