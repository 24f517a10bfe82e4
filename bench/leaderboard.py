"""Baseline leaderboards on real and synthetic data, default configs, full ranking.

Builds one split with the pipeline's stages and evaluates the baselines of
``evaluate.models`` (the defaults, or ``--models``) with the evaluate stage's code
(:func:`recpipe.evaluate.suite.evaluate_split`: the split's protocol, health flags,
paired bootstrap against the best model), and prints a Markdown table of Recall@20,
NDCG@20 and MRR@20 with each model's 95% interval of its Recall@20 difference to the
best, its fit seconds and the query count.

- ``movielens``: MovieLens 100K, per-user temporal split (users' top-K);
- ``yoochoose``: the YOOCHOOSE 100k-click sample, session split (next item);
- ``diginetica``: the DIGINETICA sample (views), session split, 7 test days;
- ``synthetic``: the default synthetic click-stream, ``--split`` (default user_temporal).

Run::

    .venv/bin/python bench/leaderboard.py movielens
    .venv/bin/python bench/leaderboard.py yoochoose --models pop sknn stan sr markov

The data come from $RECPIPE_DATA_DIR (default ../shared/data).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from _common import build_features

REPO = Path(__file__).resolve().parents[1]
DATASETS: dict[str, tuple[str | None, str, list[str]]] = {
    "movielens": ("ml-100k", "user_temporal", ["data.source=movielens-100k"]),
    "yoochoose": (
        "yoochoose-rsc15-100k",
        "session",
        ["data.source=session-tsv", "validate.on_failure=quarantine"],
    ),
    "diginetica": (
        "diginetica",
        "session",
        [
            "data.source=diginetica",
            "validate.on_failure=quarantine",
            "sessions.event_types=[view]",
            "sessions.test_days=7",
            "sessions.valid_days=7",
        ],
    ),
    "synthetic": (None, "user_temporal", []),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--split", default=None, help="override the dataset's split")
    parser.add_argument("--models", nargs="*", default=None, help="default: evaluate.models")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from recpipe.config import load_params
    from recpipe.evaluate.suite import evaluate_split
    from recpipe.models.dataset import load_split

    folder_name, split, overrides = DATASETS[args.dataset]
    split = args.split or split
    data_root = Path(os.environ.get("RECPIPE_DATA_DIR", REPO.parent / "shared" / "data"))
    if folder_name is not None:
        overrides = [*overrides, f"data.path={data_root / folder_name}"]
    params = load_params(None, overrides)
    ep = params.evaluate
    if args.models:
        ep = ep.model_copy(update={"models": list(args.models)})
    ep = ep.model_copy(update={"ks": [10, 20]})
    with tempfile.TemporaryDirectory(prefix="bench-leaderboard-") as tmp:
        data = load_split(build_features(overrides, split, Path(tmp)))
        results, significance = evaluate_split(split, data, ep, {}, {})
    versus = significance.get("versus", {})
    ranked = sorted(
        ((n, e) for n, e in results.items() if "metrics" in e),
        key=lambda item: -item[1]["metrics"]["recall@20"],
    )
    n_queries = ranked[0][1]["n_queries"] if ranked else 0
    load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    lines = [
        f"## {args.dataset}: {split} split, default configs, {n_queries} test queries "
        f"(load {load})",
        "",
        "| model | recall@20 | ndcg@20 | mrr@20 | coverage@20 | recall@20 vs best [95% CI] "
        "| fit s | health |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in ranked:
        m = e["metrics"]
        v = versus.get(name)
        ci = f"{v['mean_diff']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}]" if v else "best"
        health = "; ".join(e.get("health", [])) or "-"
        lines.append(
            f"| {name} | {m['recall@20']:.4f} | {m.get('ndcg@20', float('nan')):.4f} "
            f"| {m.get('mrr@20', float('nan')):.4f} | {m.get('coverage@20', float('nan')):.3f} "
            f"| {ci} | {e['fit_s']:.2f} | {health} |"
        )
    skipped = {n: e["skipped"] for n, e in results.items() if "skipped" in e}
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{n} ({why})" for n, why in skipped.items())]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
