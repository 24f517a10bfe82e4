"""``reports/tuning.md``: default against tuned per model, the budget each used, and
Optuna's matplotlib plots of every study (optimisation history, parameter importances).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recpipe.workspace import write_json

log = logging.getLogger(__name__)


def plot_study(storage: str, study: str, split: str, model: str, out_dir: Path) -> list[Path]:
    """PNG plots of the study named ``study`` (``model`` on ``split``): its optimisation
    history and, with enough finished trials, its parameter importances. Returns the
    files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ov

    try:
        found = optuna.load_study(study_name=study, storage=storage)
    except KeyError:  # e.g. a reused config whose study lives in another storage
        log.info("no study %s in %s: no plots for %s", study, storage, model)
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    plots = {"history": ov.plot_optimization_history, "importances": ov.plot_param_importances}
    for kind, plot in plots.items():
        try:
            with warnings.catch_warnings():  # "experimental" and equal-importance notices
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)
                ax = plot(found)
        except (ValueError, RuntimeError) as exc:  # e.g. too few trials for importances
            log.info("no %s plot for %s on %s: %s", kind, model, split, exc)
            continue
        path = out_dir / f"{split}_{model}_{kind}.png"
        ax.figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(ax.figure)
        written.append(path)
    return written


def tuning_markdown(report: Mapping[str, Any], plots: Mapping[str, list[str]]) -> str:
    """The human report of ``reports/tuning.json`` with links to the ``plots``
    (``{model: [relative paths]}``)."""
    budget = report.get("budget", {})
    lines = [
        f"# Tuning on the `{report.get('split')}` split (validation part)",
        "",
        f"Every model had the same budget: {budget.get('trials')} finished trials, "
        f"{budget.get('timeout')} s. Trial 0 is the model's own config (default).",
        "",
        "| model | metric | default | tuned | trials used | states | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, entry in report.get("models", {}).items():
        if "skipped" in entry:
            lines.append(f"| {model} | - | - | - | - | skipped: {entry['skipped']} | - |")
            continue
        default = entry.get("default_value")
        states = ", ".join(f"{k} {v}" for k, v in entry.get("trials", {}).items())
        lines.append(
            f"| {model}{' (reused)' if entry.get('reused') else ''} | {entry['metric']} | "
            + ("-" if default is None else f"{default:.4f}")
            + f" | {entry['best_value']:.4f} | {entry['budget'].get('used_trials')} | {states} "
            f"| {entry['seconds']:.1f} |"
        )
    for model, files in plots.items():
        if files:
            lines += ["", f"## {model}", ""] + [f"![{Path(f).stem}]({f})" for f in files]
    lines.append("")
    return "\n".join(lines)


def write_tuning_outputs(
    report: Mapping[str, Any], storage: str, tuned_dir: Path, reports_dir: Path
) -> None:
    """Write what a tune run leaves: ``tuned/<split>/<model>.yaml`` per tuned model,
    ``reports/tuning.json``, the plots under ``reports/tuning/`` and ``reports/tuning.md``."""
    from recpipe.tuning.configs import write_tuned
    from recpipe.tuning.study import TuneResult

    split = str(report["split"])
    plots: dict[str, list[str]] = {}
    for name, entry in report["models"].items():
        if "skipped" in entry:
            continue
        if not entry.get("reused"):  # a reused config's file is already there
            write_tuned(tuned_dir, TuneResult(**entry))
        if not entry.get("study"):  # tuned by an older recpipe: no study name recorded
            continue
        files = plot_study(storage, entry["study"], split, name, reports_dir / "tuning")
        plots[name] = [p.relative_to(reports_dir).as_posix() for p in files]
    write_json(reports_dir / "tuning.json", dict(report))
    (reports_dir / "tuning.md").write_text(tuning_markdown(report, plots))
