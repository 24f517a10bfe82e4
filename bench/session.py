"""Session-model benchmark: GRU4Rec training throughput and next-item scoring speed.

On the YOOCHOOSE (RecSys Challenge 2015) 100k-click sample, imported with the
``session-tsv`` source and split by the pipeline's ``session`` split (the last day's
sessions are test, the day before validation, the rest train), it

1. trains ``gru4rec`` on the train part for ``--epochs`` epochs (early stopping on
   validation Recall@20 with ``--patience``), and reports the training throughput:
   target events per second of training steps (validation excluded);
2. scores every next-item query of the test part (each prefix of each test session,
   full ranking over the catalogue) and reports queries per second and the
   next-item metrics (Recall@20, MRR@20).

It prints the settings (layers, lanes, loss, sampled negatives, input mode, torch
threads, device) beside the figures. Run::

    .venv/bin/python bench/session.py                          # CPU, defaults
    .venv/bin/python bench/session.py --loss bpr_max --epochs 5
    .venv/bin/python bench/session.py --device cuda
    OMP_NUM_THREADS=1 .venv/bin/python bench/session.py --set layers=[200] --set logq=1.0

The data come from $RECPIPE_DATA_DIR/yoochoose-rsc15-100k (default
../shared/data/yoochoose-rsc15-100k).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import build_features
from rich.console import Console
from rich.table import Table

log = logging.getLogger("bench.session")
REPO = Path(__file__).resolve().parents[1]


def _parse_sets(items: list[str]) -> dict[str, Any]:
    """``key=value`` overrides (values parsed as JSON where possible)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes key=value, got {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def run(folder: Path, config: dict[str, Any], max_queries: int | None) -> dict[str, Any]:
    """Fit on train (valid for early stopping), time it, and score the test prefixes."""

    from recpipe.evaluate.protocols import next_item
    from recpipe.models.data import DataMeta, Interactions, Queries
    from recpipe.models.registry import build_model
    from recpipe.sessions.batching import prefixes

    meta = DataMeta.from_features(folder)
    data = {
        p: Interactions.from_parquet(folder / f"{p}.parquet") for p in ("train", "valid", "test")
    }
    name = config.pop("model", "gru4rec")
    model = build_model(name, config, meta)
    t0 = time.perf_counter()
    model.fit(data["train"], data["valid"])
    fit_s = time.perf_counter() - t0
    history = model.training.history
    events = sum(r["examples"] for r in history)
    step_s = sum(r["seconds"] for r in history)

    test = data["test"]
    ends, _targets = prefixes(test.offsets)
    n_queries = ends.shape[0] if max_queries is None else min(max_queries, ends.shape[0])
    queries = Queries.session_prefixes(test, ends[:n_queries], 50)
    model.score(queries.take(slice(0, 64)))  # warm-up
    t0 = time.perf_counter()
    for start in range(0, n_queries, model.config.score_batch_size):
        model.score(queries.take(slice(start, start + model.config.score_batch_size)))
    score_s = time.perf_counter() - t0
    result = next_item(model, test, meta, ks=(5, 10, 20))
    return {
        "model": model,
        "meta": meta,
        "sizes": {p: (len(d), d.n_sessions) for p, d in data.items()},
        "epochs": len(history),
        "best_epoch": (model.training.best_epoch or 0) + 1,
        "valid": [round(r.get("metrics", {}).get("recall@20", float("nan")), 4) for r in history],
        "train_events": events,
        "events_per_s": events / step_s if step_s else float("nan"),
        "fit_s": fit_s,
        "queries_per_s": n_queries / score_s if score_s else float("nan"),
        "n_queries": n_queries,
        "metrics": result.metrics,
        "device": model.training.device,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--loss", default=None, help="GRU4Rec loss (default: the model's)")
    parser.add_argument("--epochs", type=int, default=None, help="most epochs (default: model's)")
    parser.add_argument("--patience", type=int, default=None, help="early-stopping patience")
    parser.add_argument("--model", default="gru4rec", help="gru4rec | gru4rec_ctx")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="other config options"
    )
    parser.add_argument(
        "--max-queries", type=int, default=None, help="score at most this many test queries"
    )
    parser.add_argument("--data", type=Path, default=None, help="the prepared sample's folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every epoch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    root = Path(os.environ.get("RECPIPE_DATA_DIR", REPO.parent / "shared" / "data"))
    data_dir = args.data or root / "yoochoose-rsc15-100k"
    console = Console(width=140)
    if not data_dir.is_dir():
        console.print(f"YOOCHOOSE sample not found at {data_dir} (set RECPIPE_DATA_DIR or --data)")
        return 2
    import torch

    config: dict[str, Any] = {"device": args.device, **_parse_sets(args.set)}
    for key in ("loss", "epochs", "patience"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        folder = build_features(
            ["data.source=session-tsv", f"data.path={data_dir}", "validate.on_failure=quarantine"],
            "session",
            Path(tmp),
        )
        prep_s = time.perf_counter() - t0
        r = run(folder, {"model": args.model, **config}, args.max_queries)
    cfg = r["model"].config
    settings = (
        f"{r['model'].name}: layers {list(cfg.layers)}, batch_size {cfg.batch_size}, "
        f"loss {cfg.loss}"
        + (f" (logq {cfg.logq})" if cfg.loss == "cross_entropy" else "")
        + (f" (bpreg {cfg.bpreg})" if cfg.loss == "bpr_max" else "")
        + f", n_sample {cfg.n_sample} (alpha {cfg.sample_alpha}), embedding {cfg.embedding}, "
        f"dropout {cfg.dropout_input}/{cfg.dropout_hidden}, {cfg.optimizer} lr {cfg.learning_rate}"
        f", torch {torch.__version__}, {torch.get_num_threads()} threads, device {r['device']}"
    )
    console.print(settings)
    sizes = ", ".join(f"{p} {n:,} events / {s:,} sessions" for p, (n, s) in r["sizes"].items())
    console.print(
        f"YOOCHOOSE 100k sample, session split ({sizes}; {r['meta'].n_real_items:,} items); "
        f"features built in {prep_s:.1f} s"
    )
    table = Table(title="GRU4Rec on YOOCHOOSE (session split)")
    for col in (
        "epochs",
        "best",
        "train events/s",
        "fit s",
        "queries/s",
        "R@20",
        "MRR@20",
        "R@10",
        "MRR@10",
    ):
        table.add_column(col, justify="right")
    m = r["metrics"]
    table.add_row(
        str(r["epochs"]),
        str(r["best_epoch"]),
        f"{r['events_per_s']:,.0f}",
        f"{r['fit_s']:.1f}",
        f"{r['queries_per_s']:,.0f}",
        f"{m['recall@20']:.4f}",
        f"{m['mrr@20']:.4f}",
        f"{m['recall@10']:.4f}",
        f"{m['mrr@10']:.4f}",
    )
    console.print(table)
    console.print(f"validation Recall@20 by epoch: {r['valid']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
