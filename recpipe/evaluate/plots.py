"""The evaluate stage's plots and their data: metric@K curves and training curves.

Under ``reports/plots/`` the stage writes, for people, PNG figures (``<split>_recall.png``,
``<split>_ndcg.png``: one panel per query set the split was evaluated on, e.g. all test
users, cold items and cold users on the ``cold_start`` split; ``training_<split>.png``:
the deep candidates' loss and validation metric per epoch), and, for ``dvc plots show``
(the ``plots:`` of dvc.yaml), the same figures as data: ``metric_at_k.csv`` (one row per
split, query set, model and K) and ``training_curves.csv`` (one row per split, candidate
and epoch), long tables drawn by model with the template ``.dvc/plots/by_model.json``.

Models whose figures are identical on every metric (``pop`` and ``context_pop`` when the
context never changes the ranking) would hide each other's line: :func:`twins` finds
them; their lines are dashed and labelled ``(= other)``, and the leaderboard footnotes
them.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The query sets a split's metrics can hold (a metric's prefix) and how plots name them.
QUERY_SETS: dict[str, str] = {
    "": "all test queries",
    "cold_items/": "cold items",
    "cold_users/": "cold users",
}
#: The metrics whose @K curves the data file holds.
CURVE_METRICS: tuple[str, ...] = ("recall", "ndcg", "mrr", "hitrate")


def twins(models: Mapping[str, Mapping[str, Any]], order: Sequence[str]) -> dict[str, str]:
    """``{model: earlier model}`` for every model whose metrics are all identical to
    those of a model before it in ``order`` (both with metrics, the same keys, the same
    values); models without a twin are absent."""
    seen: dict[tuple[tuple[str, float], ...], str] = {}
    found: dict[str, str] = {}
    for name in order:
        metrics = (models.get(name) or {}).get("metrics")
        if not metrics:
            continue
        key = tuple(sorted((k, float(v)) for k, v in metrics.items()))
        if key in seen:
            found[name] = seen[key]
        else:
            seen[key] = name
    return found


def _curves(
    models: Mapping[str, Mapping[str, Any]], metric: str, ks: Sequence[int]
) -> dict[str, list[float]]:
    curves = {
        name: [entry["metrics"].get(f"{metric}@{k}") for k in ks]
        for name, entry in models.items()
        if "metrics" in entry
    }
    return {n: v for n, v in curves.items() if all(x is not None for x in v)}


def plot_metric_curves(
    models: Mapping[str, Mapping[str, Any]], metric: str, ks: Sequence[int], path: Path, title: str
) -> Path | None:
    """Plot ``metric@K`` against K for every evaluated model; None when nothing to plot.

    One panel per query set with figures (:data:`QUERY_SETS`: on the ``cold_start`` split
    all test queries, cold items and cold users), sharing one legend. Every line has its
    own colour (then style, past 20 lines) and marker, deep candidates are drawn thicker
    and named so, a model identical to another (:func:`twins`) is dashed and named
    ``(= other)``, the legend sits outside the axes, best model first, and the x ticks
    are the evaluated K values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {
        prefix: curves
        for prefix in QUERY_SETS
        if (curves := _curves(models, f"{prefix}{metric}", ks))
    }
    if not panels:
        return None
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels) + 3.8, 4.5), squeeze=False, sharey=True
    )
    tab20 = plt.get_cmap("tab20").colors  # 20 distinct colours (the 10 dark ones first,
    colours = tab20[0::2] + tab20[1::2]  # then their light twins), then new line styles
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    # one colour per model across panels, best first (on the first panel)
    first = next(iter(panels.values()))
    order = sorted(first, key=lambda n: -first[n][-1])
    order += sorted({n for c in panels.values() for n in c} - set(order))
    same = twins(models, order)
    for ax, (prefix, curves) in zip(axes[0], panels.items(), strict=True):
        for i, name in enumerate(order):
            if name not in curves:
                continue
            candidate = models[name].get("role") == "candidate"
            label = f"{name} (candidate)" if candidate else name
            style = styles[(i // len(colours)) % len(styles)] if not candidate else "-"
            if name in same:
                label, style = f"{label} (= {same[name]})", "--"
            ax.plot(
                list(ks),
                curves[name],
                color=colours[i % len(colours)],
                linestyle=style,
                marker=markers[i % len(markers)],
                linewidth=2.6 if candidate else 1.2,
                zorder=3 if candidate else 2,
                label=label,
            )
        ax.set_xticks(list(ks))  # the K values evaluated, no others
        ax.set_xlabel("K")
        ax.set_title(QUERY_SETS[prefix] if len(panels) > 1 else title)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric}@K")
    if len(panels) > 1:
        fig.suptitle(title)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:  # models only in a later panel
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    axes[0][-1].legend(
        handles,
        labels,
        fontsize="small",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def metric_rows(
    results: Mapping[str, Mapping[str, Mapping[str, Any]]], ks: Sequence[int]
) -> list[dict[str, Any]]:
    """The long table of ``metric_at_k.csv``: one row per split, query set, model and K
    (``panel``, ``split``, ``queries``, ``model``, ``role``, ``k`` and the
    :data:`CURVE_METRICS` found), for the models with figures at every K."""
    rows: list[dict[str, Any]] = []
    for split, models in results.items():
        for prefix, label in QUERY_SETS.items():
            for name, entry in models.items():
                metrics = entry.get("metrics") or {}
                found = [m for m in CURVE_METRICS if _has_all(metrics, f"{prefix}{m}", ks)]
                if not found:
                    continue
                for k in ks:
                    row: dict[str, Any] = {
                        "panel": f"{split}: {label}",
                        "split": split,
                        "queries": label,
                        "model": name,
                        "role": entry.get("role", "baseline"),
                        "k": k,
                    }
                    row.update({m: metrics[f"{prefix}{m}@{k}"] for m in found})
                    rows.append(row)
    return rows


def _has_all(metrics: Mapping[str, Any], metric: str, ks: Sequence[int]) -> bool:
    return all(f"{metric}@{k}" in metrics for k in ks)


def training_rows(reports: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The long table of ``training_curves.csv`` from the candidates' ``training.json``
    (``{model: report}``): one row per split, candidate and epoch (1-based): ``panel``
    (the split), ``model``, ``epoch``, ``loss``, ``valid_metric`` (the monitored
    validation metric, empty when the epoch had none) and ``monitor`` (its name)."""
    rows: list[dict[str, Any]] = []
    for model, report in reports.items():
        for split, entry in (report.get("splits") or {}).items():
            monitor = entry.get("monitor")
            for record in entry.get("history") or []:
                value = (record.get("metrics") or {}).get(monitor) if monitor else None
                rows.append(
                    {
                        "panel": split,
                        "model": model,
                        "epoch": int(record["epoch"]) + 1,
                        "loss": record.get("loss"),
                        "valid_metric": value,
                        "monitor": monitor or "",
                    }
                )
    return rows


def write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write ``rows`` as CSV (columns in first-seen order; missing cells empty)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns) or ["model"], restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_training_curves(rows: list[dict[str, Any]], split: str, path: Path) -> Path | None:
    """Plot the candidates' loss (log scale: the models' losses differ by orders of
    magnitude) and validation metric per epoch on ``split`` (rows of
    :func:`training_rows`); None when no candidate trained there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [r for r in rows if r["panel"] == split]
    if not mine:
        return None
    models = list(dict.fromkeys(r["model"] for r in mine))
    monitors = sorted({r["monitor"] for r in mine if r["monitor"]})
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = plt.get_cmap("tab10").colors
    for i, model in enumerate(models):
        points = [r for r in mine if r["model"] == model]
        epochs = [r["epoch"] for r in points]
        colour = colours[i % len(colours)]
        losses = [r["loss"] for r in points]
        if all(_positive(x) for x in losses):
            loss_ax.plot(epochs, losses, marker="o", color=colour, label=model)
        valid = [(r["epoch"], r["valid_metric"]) for r in points if r["valid_metric"] is not None]
        if valid:
            metric_ax.plot(*zip(*valid, strict=True), marker="o", color=colour, label=model)
    loss_ax.set_yscale("log")
    loss_ax.set_title("training loss")
    metric_ax.set_title(f"validation {' / '.join(monitors) or 'metric'}")
    for ax in (loss_ax, metric_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    metric_ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(f"deep candidates on the {split} split")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _positive(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def write_plots(
    results: Mapping[str, Mapping[str, Mapping[str, Any]]],
    ks: Sequence[int],
    training: Mapping[str, Mapping[str, Any]],
    folder: Path,
) -> list[Path]:
    """Every plot and plot data file of the evaluate stage into ``folder`` (see the
    module docstring); ``training`` is ``{candidate: training.json}``. Returns the
    files written."""
    written: list[Path] = []
    for split, models in results.items():
        for metric in ("recall", "ndcg"):
            out = plot_metric_curves(
                models, metric, ks, folder / f"{split}_{metric}.png", f"{split} split"
            )
            written += [out] if out else []
    written.append(write_rows(metric_rows(results, ks), folder / "metric_at_k.csv"))
    rows = training_rows(training)
    written.append(write_rows(rows, folder / "training_curves.csv"))
    for split in dict.fromkeys(r["panel"] for r in rows):
        out = plot_training_curves(rows, split, folder / f"training_{split}.png")
        written += [out] if out else []
    return written
