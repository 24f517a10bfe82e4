"""Fit and evaluate a list of registered models on one split; render the leaderboard.

The ``evaluate`` stage calls :func:`evaluate_models` per split and writes what
:func:`leaderboard_markdown` and :func:`recpipe.evaluate.plots.plot_metric_curves`
render. A model whose
query kinds do not cover a split's protocol is skipped with the reason, not an error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from recpipe.evaluate.health import health_markdown
from recpipe.evaluate.plots import plot_metric_curves, twins
from recpipe.evaluate.protocols import COLD_START_SPLITS, NEXT_ITEM_SPLITS, evaluate_model
from recpipe.evaluate.significance import paired_bootstrap
from recpipe.features.context import EVENT_TYPE_INDEX
from recpipe.models.base import Recommender
from recpipe.models.data import DataMeta, Interactions
from recpipe.models.dataset import BlockedPart, whole
from recpipe.models.registry import build_model, get_model

log = logging.getLogger(__name__)

__all__ = [
    "compare_to_best",
    "evaluate_models",
    "leaderboard_markdown",
    "needed_query_kind",
    "plot_metric_curves",
    "split_query_kinds",
]


def needed_query_kind(split_kind: str) -> str:
    """The query kind a split's main protocol scores: ``session`` or ``user``."""
    return "session" if split_kind in NEXT_ITEM_SPLITS else "user"


def split_query_kinds(split_kind: str) -> frozenset[str]:
    """The query kinds a split's protocols score; a model needs at least one of them.

    ``cold_start``: ``user`` (user_topk, cold_items) and ``session`` (cold_users);
    every other split: ``{needed_query_kind(split_kind)}``.
    """
    if split_kind in COLD_START_SPLITS:
        return frozenset({"user", "session"})
    return frozenset({needed_query_kind(split_kind)})


def evaluate_models(
    split_kind: str,
    data: Mapping[str, Interactions | BlockedPart],
    meta: DataMeta,
    models: Sequence[str],
    configs: Mapping[str, Mapping[str, Any]],
    ks: Sequence[int],
    *,
    fitted: Mapping[str, Recommender] | None = None,
    test_user_keys: np.ndarray | None = None,
    cold_given: int = 5,
    extra_metrics: Callable[[Recommender], dict[str, float]] | None = None,
    keep_per_query: Sequence[str] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """Fit each model on ``data["train"]`` and evaluate it with the split's protocol.

    ``data["test"]`` may be a :class:`~recpipe.models.dataset.BlockedPart`: the user
    top-K protocol then ranks it block by block (the same figures and per-query arrays),
    and the rating and CTR metrics read it whole, once per model that needs them.

    ``fitted`` adds models trained elsewhere (the train stage's candidates, by name),
    evaluated as they are. Returns ``{model: {"metrics", "slices", "n_queries",
    "fit_s", "eval_s", "role"}}`` (``role``: ``baseline`` fitted here, or
    ``candidate``), or ``{model: {"skipped": reason}}`` for a model that cannot serve
    the protocol, and ``{model: per-query metric arrays}``, aligned across models, for
    significance tests.

    ``keep_per_query`` (e.g. the bootstrapped metric), when given, are the only
    per-query arrays kept of each model: every other one is dropped as soon as the
    model is evaluated (a float64 per query and metric, for every model, otherwise).

    ``extra_metrics(model)``, when given, adds metrics to each evaluated model's (e.g.
    the labelled sampled-negatives ranking of :mod:`recpipe.evaluate.sampled`).

    On the ``cold_start`` split a model is evaluated by every protocol of
    :func:`~recpipe.evaluate.protocols.cold_start` whose query kind it scores
    (``test_user_keys`` and ``cold_given`` go to its cold_users protocol); the
    metrics hold ``cold_items/<metric>@K`` and ``cold_users/<metric>@K`` next to
    user_topk's, the entry's ``skipped_protocols`` the reasons of those that could
    not run, and a model none of them can evaluate is skipped with the reasons.
    """
    needed = split_query_kinds(split_kind)
    wanted = " or ".join(sorted(needed))
    out: dict[str, dict[str, Any]] = {}
    per_query: dict[str, dict[str, np.ndarray]] = {}
    entries: list[tuple[str, Recommender | None]] = [(n, None) for n in models]
    entries += list((fitted or {}).items())
    for name, model in entries:
        kinds = get_model(name).query_kinds if model is None else model.query_kinds
        if not needed & kinds:
            out[name] = {"skipped": f"scores {sorted(kinds)} queries; {split_kind} needs {wanted}"}
            continue
        if model is None and getattr(get_model(name), "predicts_ratings", False):
            rated = data["train"].event_type_idx == EVENT_TYPE_INDEX["rating"]
            if not rated.any():  # its ranking would be item biases of click counts
                out[name] = {
                    "skipped": "a rating predictor, and the train part holds no rating event"
                }
                continue
        t0 = time.perf_counter()
        if model is None:
            model = build_model(name, configs.get(name, {}), meta)
            try:
                model.fit(data["train"], data.get("valid"))
            except ValueError as exc:  # e.g. user factors on session-only data
                out[name] = {"skipped": str(exc)}
                continue
            role = "baseline"
        else:
            role = "candidate"
        t1 = time.perf_counter()
        try:
            result = evaluate_model(
                model, split_kind, data, meta, ks, test_user_keys=test_user_keys, given=cold_given
            )
        except ValueError as exc:
            if split_kind not in COLD_START_SPLITS:
                raise
            out[name] = {"skipped": str(exc)}  # no cold-start protocol could run
            continue
        metrics = dict(result.metrics)
        if getattr(model, "predicts_ratings", False):
            metrics.update(_rating_metrics(model, whole(data["test"]), meta, name))
        if "user" in needed & kinds and getattr(model, "predicts_ctr", False):
            test = whole(data["test"])  # read anew from a BlockedPart, dropped after
            metrics.update(_ctr_metrics(model, data["train"], test, meta, name))
            del test
        if extra_metrics is not None:
            metrics.update(extra_metrics(model))
        t2 = time.perf_counter()
        per_query[name] = (
            result.per_query
            if keep_per_query is None
            else {k: v for k, v in result.per_query.items() if k in keep_per_query}
        )
        out[name] = {
            "role": role,
            "protocol": result.protocol,
            "metrics": metrics,
            "slices": result.slices,
            "n_queries": result.n_queries,
            "fit_s": round(t1 - t0, 3),
            "eval_s": round(t2 - t1, 3),
        }
        if result.skipped:
            out[name]["skipped_protocols"] = dict(result.skipped)
        log.info(
            "%s on %s: %s in %.1f s fit + %.1f s eval",
            name,
            split_kind,
            ", ".join(  # the cold-start and sampled figures stay in the reports
                f"{k}={v:.4f}" for k, v in metrics.items() if k.endswith("@20") and "/" not in k
            ),
            t1 - t0,
            t2 - t1,
        )
    return out, per_query


def _rating_metrics(model: Any, test: Interactions, meta: DataMeta, name: str) -> dict[str, float]:
    """RMSE / MAE of a rating predictor on the test ratings; {} when there are none."""
    from recpipe.evaluate.pointwise import rating

    try:
        return dict(rating(model, test, meta).metrics)
    except ValueError as exc:  # no rating events in this split
        log.info("%s: no rating metrics (%s)", name, exc)
        return {}


def _ctr_metrics(
    model: Any, train: Interactions, test: Interactions, meta: DataMeta, name: str
) -> dict[str, float]:
    """AUC / log loss of a click-probability model on the test pairs; {} when there are none."""
    from recpipe.evaluate.pointwise import ctr

    try:
        return dict(ctr(model, train, test, meta).metrics)
    except ValueError as exc:  # no known test pair in this split
        log.info("%s: no ctr metrics (%s)", name, exc)
        return {}


def compare_to_best(
    per_query: Mapping[str, Mapping[str, np.ndarray]],
    metric: str,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap of every model against the best one on ``metric``.

    Returns ``{"best": name, "metric": metric, "versus": {model: {mean_diff, low, high,
    p_value}}}`` where ``mean_diff`` is model minus best (so negative: worse); empty
    ``versus`` when fewer than two models report the metric.
    """
    scored = {m: q[metric] for m, q in per_query.items() if metric in q}
    if not scored:
        return {"best": None, "metric": metric, "versus": {}}
    best = max(scored, key=lambda m: float(np.mean(scored[m])))
    versus = {}
    for name, values in scored.items():
        if name == best:
            continue
        res = paired_bootstrap(values, scored[best], n_resamples=n_resamples, seed=seed)
        versus[name] = {
            "mean_diff": res.mean_diff,
            "low": res.low,
            "high": res.high,
            "p_value": res.p_value,
        }
    return {"best": best, "metric": metric, "versus": versus}


def leaderboard_markdown(
    results: Mapping[str, Mapping[str, Mapping[str, Any]]],
    primary: str,
    columns: Sequence[str],
    significance: Mapping[str, Mapping[str, Any]] | None = None,
    skipped_splits: Mapping[str, str] | None = None,
) -> str:
    """A Markdown leaderboard per split, best ``primary`` metric first.

    With ``significance`` (from :func:`compare_to_best` per split), a column gives each
    model's 95% paired-bootstrap interval of its difference to the best model;
    ``skipped_splits`` (``{split: reason}``) are listed first, with why.
    """
    lines = ["# Leaderboard", ""]
    for split, why in (skipped_splits or {}).items():
        lines += [f"Split `{split}` not evaluated: {why}.", ""]
    for split, models in results.items():
        lines += [f"## {split}", ""]
        ranked = sorted(
            ((n, e) for n, e in models.items() if "metrics" in e),
            key=lambda item: -item[1]["metrics"].get(primary, float("-inf")),
        )
        shown = [c for c in columns if any(c in e["metrics"] for _, e in ranked)]
        versus = (significance or {}).get(split, {}).get("versus", {})
        lines += _headline(ranked, primary, versus)
        diff_col = f"{primary} vs best (95% CI)"
        lines.append(
            "| model | " + " | ".join(shown) + f" | {diff_col} | queries | fit s | eval s |"
        )
        lines.append("|---" * (len(shown) + 5) + "|")
        marks, notes = _same_figures(ranked, primary)
        for name, entry in ranked:
            values = " | ".join(
                f"{entry['metrics'][c]:.4f}" if c in entry["metrics"] else "" for c in shown
            )
            v = versus.get(name)
            if v:
                diff = f"{v['mean_diff']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}]"
            else:  # the best model, or one without the primary metric (cold_start)
                diff = "best" if primary in entry["metrics"] else ""
            shown_name = f"{name} \\*" if entry.get("role") == "candidate" else name
            shown_name += marks.get(name, "")
            lines.append(
                f"| {shown_name} | {values} | {diff} | {entry['n_queries']} | {entry['fit_s']} | "
                f"{entry['eval_s']} |"
            )
        if any(e.get("role") == "candidate" for _, e in ranked):
            lines += ["", "\\* deep candidate from the train stage (fit s: its training time)"]
        lines += [line for note in notes for line in ("", note)]
        skipped = {n: e["skipped"] for n, e in models.items() if "skipped" in e}
        if skipped:
            lines += ["", "Skipped: " + "; ".join(f"{n} ({why})" for n, why in skipped.items())]
        partial = [
            f"{n} {protocol} ({why})"
            for n, e in ranked
            for protocol, why in e.get("skipped_protocols", {}).items()
        ]
        if partial:
            lines += ["", "Protocols not run: " + "; ".join(partial)]
        lines += _sampled_table(ranked)
        lines += health_markdown({n: e["health"] for n, e in ranked if e.get("health")})
        lines.append("")
    lines += GLOSSARY
    return "\n".join(lines)


def _same_figures(
    ranked: Sequence[tuple[str, Mapping[str, Any]]], primary: str
) -> tuple[dict[str, str], list[str]]:
    """Marks after model names and their footnotes: ``†`` for models whose figures are
    identical on every metric (:func:`recpipe.evaluate.plots.twins`), ``‡`` for models
    tied on ``primary`` at the four decimals shown while their other figures differ."""
    models = dict(ranked)
    same = twins(models, [n for n, _ in ranked])
    groups: dict[str, list[str]] = {}
    for name, leader in same.items():
        groups.setdefault(leader, [leader]).append(name)
    ties: dict[str, list[str]] = {}
    for name, entry in ranked:
        if name in same or primary not in entry["metrics"]:
            continue
        ties.setdefault(f"{entry['metrics'][primary]:.4f}", []).append(name)
    tied = [names for names in ties.values() if len(names) > 1]
    marks = {n: " †" for names in groups.values() for n in names}
    marks.update({n: marks.get(n, "") + " ‡" for names in tied for n in names})
    notes = [
        f"† {' = '.join(names)}: identical figures on every metric (most likely the same "
        "recommendations for this split's queries)"
        for names in groups.values()
    ]
    notes += [
        f"‡ {', '.join(names)}: tied on {primary} at the four decimals shown (other figures differ)"
        for names in tied
    ]
    return marks, notes


#: The leaderboard's last section: what its columns mean.
GLOSSARY = [
    "## Glossary",
    "",
    "- recall@K: the share of a query's held-out items found in its top K (next-item "
    "splits: 1 when the next item is in the top K, i.e. hit rate)",
    "- ndcg@K: recall weighted by rank (1 at rank 1, 1/log2(r+1) at rank r), normalised",
    "- mrr@K: 1/rank of the first held-out item in the top K, else 0",
    "- coverage@K: the share of the catalogue that appears in any query's top K",
    "- popularity_bias@K: the mean training-popularity percentile of the recommended items "
    "(0.5: as random picks; 1.0: only the most popular item)",
    "- cold_items/, cold_users/: the same metrics on the cold-start protocols (items or "
    "users unseen in training)",
    "- vs best (95% CI): the mean difference to the best model's primary metric over the "
    "same queries, with its paired-bootstrap interval; an interval holding 0 is a tie",
    "- queries: test queries evaluated; fit s / eval s: seconds to fit (a candidate's: its "
    "training) and to evaluate",
    "",
]


def _headline(
    ranked: Sequence[tuple[str, Mapping[str, Any]]], primary: str, versus: Mapping[str, Any]
) -> list[str]:
    """One line under a split's heading: the best candidate against the best baseline on
    the primary metric, with the relative lift and, for the one behind, its interval
    against the leader."""
    best: dict[str, tuple[str, float]] = {}
    for name, entry in ranked:  # best first
        role = "candidate" if entry.get("role") == "candidate" else "baseline"
        if role not in best and primary in entry["metrics"]:
            best[role] = (name, float(entry["metrics"][primary]))
    if "baseline" not in best:
        return []
    base_name, base = best["baseline"]
    if "candidate" not in best:
        return [f"Best baseline **{base_name}**, {primary} {base:.4f} (no deep candidate).", ""]
    cand_name, cand = best["candidate"]
    lift = f"{(cand / base - 1):+.1%}" if base > 0 else "n/a"
    behind = base_name if cand >= base else cand_name
    v = versus.get(behind)
    ci = f"; {behind} vs {cand_name if behind == base_name else base_name}: "
    ci = ci + f"{v['mean_diff']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}]" if v else ""
    return [
        f"Best candidate **{cand_name}** {primary} {cand:.4f} against the best baseline "
        f"**{base_name}** {base:.4f}: lift {lift}{ci}.",
        "",
    ]


def _sampled_table(ranked: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """The labelled sampled-negatives metrics (``sampled<N>/...``), apart from the rest."""
    from recpipe.evaluate.sampled import LABEL

    keys = sorted({k for _, e in ranked for k in e["metrics"] if k.startswith("sampled")})
    if not keys:
        return []
    lines = ["", f"Sampled-negatives ranking ({LABEL}):", ""]
    lines += ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, entry in ranked:
        if any(k in entry["metrics"] for k in keys):
            cells = [f"{entry['metrics'][k]:.4f}" if k in entry["metrics"] else "" for k in keys]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines
