"""Fit and evaluate a list of registered models on one split; render the leaderboard.

The ``evaluate`` stage calls :func:`evaluate_models` per split and writes what
:func:`leaderboard_markdown` and :func:`plot_metric_curves` render. A model whose
query kinds do not cover a split's protocol is skipped with the reason, not an error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recpipe.evaluate.protocols import NEXT_ITEM_SPLITS, evaluate_model
from recpipe.models import build_model, get_model
from recpipe.models.base import DataMeta, Interactions

log = logging.getLogger(__name__)


def needed_query_kind(split_kind: str) -> str:
    """The query kind a split's protocol scores: ``session`` or ``user``."""
    return "session" if split_kind in NEXT_ITEM_SPLITS else "user"


def evaluate_models(
    split_kind: str,
    data: Mapping[str, Interactions],
    meta: DataMeta,
    models: Sequence[str],
    configs: Mapping[str, Mapping[str, Any]],
    ks: Sequence[int],
) -> dict[str, dict[str, Any]]:
    """Fit each model on ``data["train"]`` and evaluate it with the split's protocol.

    Returns ``{model: {"metrics", "slices", "n_queries", "fit_s", "eval_s"}}`` or
    ``{model: {"skipped": reason}}`` for a model that cannot serve the protocol.
    """
    needed = needed_query_kind(split_kind)
    out: dict[str, dict[str, Any]] = {}
    for name in models:
        kinds = get_model(name).query_kinds
        if needed not in kinds:
            out[name] = {"skipped": f"scores {sorted(kinds)} queries; {split_kind} needs {needed}"}
            continue
        t0 = time.perf_counter()
        model = build_model(name, configs.get(name, {}), meta)
        try:
            model.fit(data["train"], data.get("valid"))
        except ValueError as exc:  # e.g. user factors on session-only data
            out[name] = {"skipped": str(exc)}
            continue
        t1 = time.perf_counter()
        result = evaluate_model(model, split_kind, data, meta, ks)
        t2 = time.perf_counter()
        out[name] = {
            "protocol": result.protocol,
            "metrics": result.metrics,
            "slices": result.slices,
            "n_queries": result.n_queries,
            "fit_s": round(t1 - t0, 3),
            "eval_s": round(t2 - t1, 3),
        }
        log.info(
            "%s on %s: %s in %.1f s fit + %.1f s eval",
            name,
            split_kind,
            ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items() if k.endswith("@20")),
            t1 - t0,
            t2 - t1,
        )
    return out


def leaderboard_markdown(
    results: Mapping[str, Mapping[str, Mapping[str, Any]]], primary: str, columns: Sequence[str]
) -> str:
    """A Markdown leaderboard per split, best ``primary`` metric first."""
    lines = ["# Leaderboard", ""]
    for split, models in results.items():
        lines += [f"## {split}", ""]
        ranked = sorted(
            ((n, e) for n, e in models.items() if "metrics" in e),
            key=lambda item: -item[1]["metrics"].get(primary, float("-inf")),
        )
        shown = [c for c in columns if any(c in e["metrics"] for _, e in ranked)]
        lines.append("| model | " + " | ".join(shown) + " | queries | fit s | eval s |")
        lines.append("|---" * (len(shown) + 4) + "|")
        for name, entry in ranked:
            values = " | ".join(
                f"{entry['metrics'][c]:.4f}" if c in entry["metrics"] else "" for c in shown
            )
            lines.append(
                f"| {name} | {values} | {entry['n_queries']} | {entry['fit_s']} | "
                f"{entry['eval_s']} |"
            )
        skipped = {n: e["skipped"] for n, e in models.items() if "skipped" in e}
        if skipped:
            lines += ["", "Skipped: " + "; ".join(f"{n} ({why})" for n, why in skipped.items())]
        lines.append("")
    return "\n".join(lines)


def plot_metric_curves(
    models: Mapping[str, Mapping[str, Any]], metric: str, ks: Sequence[int], path: Path, title: str
) -> Path | None:
    """Plot ``metric@K`` against K for every evaluated model; None when nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {
        name: [entry["metrics"].get(f"{metric}@{k}") for k in ks]
        for name, entry in models.items()
        if "metrics" in entry
    }
    curves = {n: v for n, v in curves.items() if all(x is not None for x in v)}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in sorted(curves.items(), key=lambda kv: -kv[1][-1]):
        ax.plot(list(ks), values, marker="o", label=name)
    ax.set_xlabel("K")
    ax.set_ylabel(f"{metric}@K")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
