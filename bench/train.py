"""Training benchmark: throughput and time to early stopping of the deep candidates.

On MovieLens 100K (per-user temporal split, as the pipeline builds it) each model is
trained with its defaults and early stopping on validation Recall@20 (RMSE for
``mf_explicit``); the table gives, per model: epochs run, the best epoch, training
throughput (examples per second of training steps: positives for the sampled models,
ratings for ``mf_explicit``, users for ``mf_wals``, CTR rows' positives for the CTR
models), the wall time to the early stop (fit() from start to end, validation
included) and test Recall@20 / NDCG@20 of the user top-K protocol.

It then sets ``mf_bpr`` with one negative per positive beside the ``implicit``
library's BPR on the same user-item matrix (one sampled negative per positive, one
thread): throughput of (user, positive, negative) triples per second, as a ratio.

Run::

    .venv/bin/python bench/train.py                              # CPU, every model
    .venv/bin/python bench/train.py --models mf_bpr deepfm --device cuda

The data come from $RECPIPE_DATA_DIR/ml-100k (default ../shared/data/ml-100k).
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

import numpy as np
from _common import build_features
from rich.console import Console
from rich.table import Table

log = logging.getLogger("bench.train")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ["mf_explicit", "mf_bce", "mf_bpr", "mf_wals", "wide_deep", "deepfm"]


def bench_model(name: str, folder: Path, device: str, epochs: int | None) -> dict[str, Any]:
    """Fit one model with early stopping; its throughput, times and test metrics."""
    from recpipe.evaluate.protocols import user_topk
    from recpipe.models.data import DataMeta, Interactions
    from recpipe.models.registry import build_model

    meta = DataMeta.from_features(folder)
    data = {
        p: Interactions.from_parquet(folder / f"{p}.parquet") for p in ("train", "valid", "test")
    }
    config: dict[str, Any] = {"device": device}
    if epochs is not None:
        config["epochs"] = epochs
    model = build_model(name, config, meta)
    t0 = time.perf_counter()
    model.fit(data["train"], data["valid"])
    fit_s = time.perf_counter() - t0
    result = user_topk(model, data["train"], data["test"], meta, ks=(20,))
    history = model.training.history
    examples = sum(r["examples"] for r in history)
    step_s = sum(r["seconds"] for r in history)
    return {
        "model": name,
        "epochs": len(history),
        "best_epoch": (model.training.best_epoch or 0) + 1,
        "examples_per_s": examples / step_s if step_s else float("nan"),
        "fit_s": fit_s,
        "recall@20": result.metrics["recall@20"],
        "ndcg@20": result.metrics["ndcg@20"],
        "device": model.training.device,
    }


def bpr_ratio(folder: Path, device: str, epochs: int) -> dict[str, float]:
    """Triples/s of mf_bpr (one negative) and of implicit's BPR on the same matrix."""
    import threadpoolctl
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    from recpipe.models.data import DataMeta, Interactions
    from recpipe.models.registry import build_model
    from recpipe.models.sparse import drop_reserved

    meta = DataMeta.from_features(folder)
    train = Interactions.from_parquet(folder / "train.parquet")
    ours = build_model(
        "mf_bpr",
        {"negatives": 1, "epochs": epochs, "patience": None, "device": device},
        meta,
    ).fit(train)
    history = ours.training.history
    ours_rate = sum(r["examples"] for r in history) / sum(r["seconds"] for r in history)

    matrix = drop_reserved(train.user_item_matrix(meta.n_users, meta.n_items), rows=True, cols=True)
    theirs = BayesianPersonalizedRanking(
        factors=64, iterations=epochs, num_threads=1, random_state=0
    )
    with threadpoolctl.threadpool_limits(1):
        t0 = time.perf_counter()
        theirs.fit(matrix.astype(np.float32), show_progress=False)
        seconds = time.perf_counter() - t0
    theirs_rate = matrix.nnz * epochs / seconds
    return {"ours": ours_rate, "implicit": theirs_rate, "ratio": ours_rate / theirs_rate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--epochs", type=int, default=None, help="override every model's epochs")
    parser.add_argument("--bpr-epochs", type=int, default=10, help="epochs of the BPR comparison")
    parser.add_argument("--data", type=Path, default=None, help="MovieLens 100K folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    root = Path(os.environ.get("RECPIPE_DATA_DIR", REPO.parent / "shared" / "data"))
    data_dir = args.data or root / "ml-100k"
    console = Console()
    if not data_dir.is_dir():
        console.print(f"MovieLens 100K not found at {data_dir} (set RECPIPE_DATA_DIR or --data)")
        return 2
    import torch

    console.print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {args.device}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_features(
            ["data.source=movielens-100k", f"data.path={data_dir}"], "user_temporal", Path(tmp)
        )
        rows = [bench_model(m, folder, args.device, args.epochs) for m in args.models]
        table = Table(title=f"MovieLens 100K, user_temporal split, device {args.device}")
        for col in ("model", "epochs", "best epoch", "examples/s", "fit s", "R@20", "NDCG@20"):
            table.add_column(col, justify="right")
        for r in rows:
            table.add_row(
                r["model"],
                str(r["epochs"]),
                str(r["best_epoch"]),
                f"{r['examples_per_s']:,.0f}",
                f"{r['fit_s']:.1f}",
                f"{r['recall@20']:.4f}",
                f"{r['ndcg@20']:.4f}",
            )
        console.print(table)
        bpr = bpr_ratio(folder, args.device, args.bpr_epochs)
        console.print(
            f"BPR triples/s ({args.bpr_epochs} epochs, 64 factors, one negative): "
            f"mf_bpr {bpr['ours']:,.0f} vs implicit {bpr['implicit']:,.0f} "
            f"= ratio {bpr['ratio']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
