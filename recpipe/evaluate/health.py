"""Model health: a personalised model that silently degenerates is flagged, not ranked.

Two symptoms, read from one split's evaluation results (no model is scored again):

- **collapse towards popularity**: the model's top-K lists cover hardly more of the
  catalogue than plain popularity (``coverage@K`` at most :data:`COVERAGE_RATIO` times
  ``pop``'s, or :data:`MIN_COVERAGE` without ``pop``), recommend mostly the most popular
  items (``popularity_bias@K`` at least :data:`POPULARITY_BIAS`) and, when ``pop`` was
  evaluated, are hardly more accurate (``recall@K`` at most :data:`RECALL_RATIO` times
  ``pop``'s: on popularity-heavy data a good model may recommend popular items too);
- **the same results as another model**: every metric equal to another model's (e.g.
  a content model that falls back to its CF model's factors on warm items).

Models that are popularity by design (:data:`NON_PERSONALISED`) are not flagged.
:func:`health_flags` gives ``{model: [reasons]}``; the evaluate stage stores them under
each entry's ``health`` and the leaderboard and the gate report print them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Baselines that rank by popularity on purpose.
NON_PERSONALISED = frozenset({"pop", "recent_pop", "category_pop", "context_pop", "bias"})
#: Collapse: coverage@K at most this many times popularity's ...
COVERAGE_RATIO = 3.0
#: ... (or this share of the catalogue when ``pop`` was not evaluated) ...
MIN_COVERAGE = 0.1
#: ... a mean popularity percentile of the recommended items at least this ...
POPULARITY_BIAS = 0.9
#: ... and a recall@K at most this many times popularity's.
RECALL_RATIO = 1.05


def _k(metrics: Mapping[str, float]) -> int | None:
    ks = [int(m.split("@")[1]) for m in metrics if m.startswith("coverage@")]
    return max(ks) if ks else None


def health_flags(results: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Health warnings of each evaluated model of one split (see the module docstring).

    Parameters
    ----------
    results : mapping
        ``{model: entry}`` as the evaluate stage writes (entries with ``metrics``).
    """
    evaluated = {n: e["metrics"] for n, e in results.items() if "metrics" in e}
    pop = evaluated.get("pop")
    flags: dict[str, list[str]] = {}
    for name, metrics in evaluated.items():
        if name in NON_PERSONALISED:
            continue
        found: list[str] = []
        k = _k(metrics)
        if k is not None and f"popularity_bias@{k}" in metrics:
            cov, bias = metrics[f"coverage@{k}"], metrics[f"popularity_bias@{k}"]
            pop_cov = None if pop is None else pop.get(f"coverage@{k}")
            limit = MIN_COVERAGE if pop_cov is None else COVERAGE_RATIO * pop_cov
            recall, pop_recall = metrics.get(f"recall@{k}"), (pop or {}).get(f"recall@{k}")
            no_better = recall is None or pop_recall is None or recall <= RECALL_RATIO * pop_recall
            if cov <= limit and bias >= POPULARITY_BIAS and no_better:
                than = "" if pop_cov is None else f" (pop: {pop_cov:.3f})"
                found.append(
                    f"top-{k} collapses towards popularity: coverage@{k} {cov:.3f}{than}, "
                    f"popularity_bias@{k} {bias:.3f}"
                )
        twins = [
            other
            for other, theirs in evaluated.items()
            if other != name and theirs and theirs == metrics
        ]
        if twins:
            found.append(f"every metric equals {', '.join(sorted(twins))}'s (the same rankings)")
        if found:
            flags[name] = found
    return flags


def health_markdown(flags: Mapping[str, list[str]]) -> list[str]:
    """Leaderboard lines for the flags (nothing when every model is healthy)."""
    if not flags:
        return []
    lines = ["", "Health warnings:", ""]
    for name, reasons in flags.items():
        lines += [f"- **{name}**: {reason}" for reason in reasons]
    return lines
