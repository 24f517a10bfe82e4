"""Session-based leaderboard: GRU4Rec and SASRec with each loss, the contextual RNN and the
baselines.

For a real session data set, builds the session split with the pipeline's stages, then
fits every model on **train_full** (the split's train and valid parts together: the
prepared ``train_full`` of the YOOCHOOSE sample; the days before the last week of
DIGINETICA) for a fixed number of epochs (no early stopping: nothing held out), and
evaluates the next-item protocol on the test part (every event of a test session
predicted from its prefix, full ranking, conservative ties), with the purchase and
fresh-item slices. Prints a Markdown table of Recall@20 / MRR@20 (and @10) with the
paired-bootstrap 95% interval of each model's Recall@20 difference to the best, and
fit times. Run::

    .venv/bin/python bench/session_leaderboard.py yoochoose
    .venv/bin/python bench/session_leaderboard.py diginetica --epochs 10
    .venv/bin/python bench/session_leaderboard.py yoochoose --only gru4rec:cross_entropy gru4rec_ctx

The data come from $RECPIPE_DATA_DIR (default ../shared/data).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from _common import build_features

REPO = Path(__file__).resolve().parents[1]
BASELINES = ["pop", "itemknn", "sknn", "stan", "markov", "sr"]
LOSSES = ["top1", "bpr", "top1_max", "bpr_max", "cross_entropy"]
DATASETS: dict[str, tuple[str, list[str]]] = {
    "yoochoose": (
        "yoochoose-rsc15-100k",
        ["data.source=session-tsv", "validate.on_failure=quarantine"],
    ),
    "diginetica": (
        "diginetica",
        [
            "data.source=diginetica",
            "validate.on_failure=quarantine",
            "sessions.event_types=[view]",
            "sessions.test_days=7",
            "sessions.valid_days=7",
        ],
    ),
}


def build(dataset: str, data_root: Path, workspace: Path) -> Path:
    """The session split's features folder of ``dataset``, built in ``workspace``."""
    folder, overrides = DATASETS[dataset]
    return build_features([*overrides, f"data.path={data_root / folder}"], "session", workspace)


def variants(epochs: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """Display name -> (registered model, config) of every session model variant."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for loss in LOSSES:
        config: dict[str, Any] = {"loss": loss, "epochs": epochs, "patience": None}
        if loss in ("top1", "bpr", "top1_max", "bpr_max"):
            config["logq"] = 0.0
        out[f"gru4rec:{loss}"] = ("gru4rec", config)
    out["gru4rec_ctx"] = ("gru4rec_ctx", {"epochs": epochs, "patience": None})
    for loss in ("cross_entropy", "sampled_softmax", "bce", "gbce"):
        out[f"sasrec:{loss}"] = ("sasrec", {"loss": loss, "epochs": epochs, "patience": None})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every RNN")
    parser.add_argument(
        "--only", nargs="*", default=None, help="RNN variants to run (the baselines always run)"
    )
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    log = logging.getLogger("bench.session_leaderboard")
    log.setLevel(logging.INFO)

    from recpipe.evaluate.leaderboard import compare_to_best, evaluate_models
    from recpipe.models.data import DataMeta, Interactions
    from recpipe.models.registry import build_model

    data_root = Path(os.environ.get("RECPIPE_DATA_DIR", REPO.parent / "shared" / "data"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = build(args.dataset, data_root, Path(tmp))
        meta = DataMeta.from_features(folder)
        frames = {p: pd.read_parquet(folder / f"{p}.parquet") for p in ("train", "valid", "test")}
        full = Interactions.from_frame(pd.concat([frames["train"], frames["valid"]]))
        data = {"train": full, "test": Interactions.from_frame(frames["test"])}
        fitted: dict[str, Any] = {}
        seconds: dict[str, float] = {}
        for name, (model, config) in variants(args.epochs).items():
            if args.only is not None and name not in args.only:
                continue
            t0 = time.perf_counter()
            fitted[name] = build_model(model, config | {"device": args.device}, meta).fit(full)
            seconds[name] = time.perf_counter() - t0
            rate = sum(r["examples"] for r in fitted[name].training.history) / sum(
                r["seconds"] for r in fitted[name].training.history
            )
            log.info("%s fitted in %.0f s (%.0f events/s)", name, seconds[name], rate)
        results, per_query = evaluate_models(
            "session", data, meta, BASELINES, {}, [10, 20], fitted=fitted
        )
        versus = compare_to_best(per_query, "recall@20").get("versus", {})
    print(
        f"\n{args.dataset}: train_full {len(full)} events, test {len(data['test'])} events, "
        f"{meta.n_real_items} items; RNNs {args.epochs} epochs on {args.device}\n"
    )
    print(
        "| model | Recall@20 | MRR@20 | Recall@10 | MRR@10 | purchase R@20 | fresh R@20 "
        "| R@20 vs best [95% CI] | fit s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    ranked = sorted(
        ((n, e) for n, e in results.items() if "metrics" in e),
        key=lambda item: -item[1]["metrics"]["recall@20"],
    )
    for name, entry in ranked:
        m = entry["metrics"]
        slices = entry.get("slices", {})

        def sliced(key: str, slices: dict = slices) -> str:
            value = slices.get(key, {}).get("recall@20")
            return f"{value:.4f}" if isinstance(value, float) else ""

        v = versus.get(name)
        diff = f"{v['mean_diff']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}]" if v else "best"
        fit = seconds.get(name, entry["fit_s"])
        print(
            f"| {name} | {m['recall@20']:.4f} | {m['mrr@20']:.4f} | {m['recall@10']:.4f} "
            f"| {m['mrr@10']:.4f} | {sliced('purchase')} | {sliced('cold_items')} | {diff} "
            f"| {fit:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
