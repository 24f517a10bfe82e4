"""SASRec benchmarks: the paper check, the losses on the full catalogue, training speed.

``validate``
    Amazon Video Games as the SASRec authors published it (``amazon-games-sasrec``),
    leave-last-out (last action = test, the one before = validation), the paper's
    settings (2 blocks, d 50, max_len 50, dropout 0.5, Adam lr 0.001, batch 128, BCE
    with one negative per position). As in the paper, a test user is scored from their
    history including the validation action, and the target is ranked among 100 items
    they never touched (**sampled metrics: only to check against the paper**; they
    mis-rank models and the gate never uses them). The paper reports Hit@10 0.7410,
    NDCG@10 0.5360.
``losses``
    The same split, full-catalogue ranking (Recall@10 / NDCG@10 of the test action,
    the user's seen items excluded, paired-bootstrap intervals against cross-entropy)
    for every loss: cross_entropy, sampled_softmax, bce, gbce.
``speed``
    Training events/s and seconds per epoch of sasrec against gru4rec on the
    YOOCHOOSE sample (session split), on this machine's CPU (or ``--device cuda``).

Run::

    .venv/bin/python bench/sasrec.py validate --epochs 200
    .venv/bin/python bench/sasrec.py losses --epochs 50
    .venv/bin/python bench/sasrec.py speed --epochs 3

The data come from $RECPIPE_DATA_DIR (default ../shared/data). Prints Markdown tables
with the load average.
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

REPO = Path(__file__).resolve().parents[1]
PAPER = {"hit@10": 0.7410, "ndcg@10": 0.5360}
PAPER_CONFIG: dict[str, Any] = {
    "blocks": 2,
    "hidden": 50,
    "heads": 1,
    "max_len": 50,
    "dropout": 0.5,
    "learning_rate": 0.001,
    "batch_size": 128,
    "loss": "bce",
    "sequence": "user",
}
AMAZON = [
    "data.source=user-sequences",
    "sessions.min_item_support=1",  # the published file is already filtered
]


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def amazon_split(data_root: Path, workspace: Path) -> Any:
    from recpipe.models.dataset import load_split

    folder = build_features(
        [*AMAZON, f"data.path={data_root / 'amazon-games-sasrec'}"], "leave_last_out", workspace
    )
    data = load_split(folder)
    object.__setattr__(data, "folder", folder)  # for train_and_valid
    return data


def fit(name: str, config: dict[str, Any], data: Any, log: logging.Logger) -> tuple[Any, float]:
    from recpipe.models.registry import build_model

    t0 = time.perf_counter()
    model = build_model(name, config, data.meta)
    # no patience: every epoch, the last weights (no validation to pick an epoch by)
    valid = data.parts["valid"] if config.get("patience") else None
    model.fit(data.parts["train"], valid, progress=False)
    seconds = time.perf_counter() - t0
    history = model.training.history if model.training else []
    log.info(
        "%s %s: %d epochs in %.0f s (best epoch %s)",
        name,
        config.get("loss", ""),
        len(history),
        seconds,
        model.training.best_epoch if model.training else None,
    )
    return model, seconds


def train_and_valid(data: Any) -> Any:
    import pandas as pd

    from recpipe.models.data import Interactions

    frames = [pd.read_parquet(data.folder / f"{p}.parquet") for p in ("train", "valid")]
    both = pd.concat(frames, ignore_index=True)
    return Interactions.from_frame(both.sort_values(["session_id", "timestamp"], kind="stable"))


def validate(args: argparse.Namespace, data: Any, log: logging.Logger) -> str:
    from recpipe.evaluate.sampled import LABEL, sampled_user_topk

    config = {**PAPER_CONFIG, "epochs": args.epochs, "patience": args.patience or None}
    config["device"] = args.device
    model, seconds = fit("sasrec", config, data, log)
    model.set_histories(train_and_valid(data))  # the paper's test input holds the valid item
    result = sampled_user_topk(
        model,
        data.parts["test"],
        data.meta,
        touched=[data.parts["train"], data.parts["valid"]],
        n_negatives=100,
        ks=[10],
    )
    got = {m: result.metrics[f"sampled100/{m}"] for m in PAPER}
    lines = [
        f"amazon-games-sasrec, leave-last-out, {result.n_queries} test users, 100 sampled "
        f"negatives ({LABEL}); {len(model.training.history)} epochs, {seconds:.0f} s; "
        f"load {load()}",
        "",
        "| metric | paper | recpipe | relative |",
        "|---|---|---|---|",
    ]
    for m, paper in PAPER.items():
        lines.append(f"| {m} | {paper:.4f} | {got[m]:.4f} | {got[m] / paper - 1:+.1%} |")
    return "\n".join(lines)


def losses(args: argparse.Namespace, data: Any, log: logging.Logger) -> str:
    from recpipe.evaluate.protocols import user_topk
    from recpipe.evaluate.significance import paired_bootstrap

    seen = train_and_valid(data)
    rows: dict[str, Any] = {}
    per_query: dict[str, dict[str, np.ndarray]] = {}
    for loss in ("cross_entropy", "sampled_softmax", "bce", "gbce"):
        config = {**PAPER_CONFIG, "loss": loss, "epochs": args.epochs}
        config["patience"] = args.patience or None
        config["device"] = args.device
        model, seconds = fit("sasrec", config, data, log)
        model.set_histories(seen)
        result = user_topk(model, seen, data.parts["test"], data.meta, ks=[10])
        rows[loss] = {"metrics": result.metrics, "seconds": seconds, "n": result.n_queries}
        rows[loss]["epochs"] = len(model.training.history)
        per_query[loss] = result.per_query
    lines = [
        f"amazon-games-sasrec, leave-last-out, full ranking, {rows['bce']['n']} test users; "
        f"paired bootstrap of recall@10 against cross_entropy; load {load()}",
        "",
        "| loss | recall@10 | ndcg@10 | vs cross_entropy [95% CI] | epochs | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for loss, r in rows.items():
        ci = "-"
        if loss != "cross_entropy":
            b = paired_bootstrap(
                per_query[loss]["recall@10"], per_query["cross_entropy"]["recall@10"]
            )
            ci = f"{b.mean_diff:+.4f} [{b.low:+.4f}, {b.high:+.4f}]"
        m = r["metrics"]
        lines.append(
            f"| {loss} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} | {ci} | {r['epochs']} "
            f"| {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def speed(args: argparse.Namespace, data_root: Path, ws: Path, log: logging.Logger) -> str:
    from recpipe.models.dataset import load_split

    folder = build_features(
        [
            "data.source=session-tsv",
            "validate.on_failure=quarantine",
            f"data.path={data_root / 'yoochoose-rsc15-100k'}",
        ],
        "session",
        ws,
    )
    data = load_split(folder)
    models = {
        "sasrec": {"epochs": args.epochs, "patience": None},
        "gru4rec": {"epochs": args.epochs, "patience": None},
    }
    lines = [
        f"YOOCHOOSE sample, session split, {len(data.parts['train'])} train events, device "
        f"{args.device}, {args.epochs} epochs each, interleaved A B A B; torch threads "
        f"{__import__('torch').get_num_threads()}",
        "",
        "| model | round | events/s | s per epoch | load |",
        "|---|---|---|---|---|",
    ]
    for round_ in (1, 2):
        for name, config in models.items():
            model, _ = fit(name, {**config, "device": args.device}, data, log)
            hist = model.training.history
            rate = sum(r["examples"] for r in hist) / sum(r["seconds"] for r in hist)
            per_epoch = sum(r["seconds"] for r in hist) / len(hist)
            lines.append(f"| {name} | {round_} | {rate:,.0f} | {per_epoch:.1f} | {load()} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("mode", choices=["validate", "losses", "speed"])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument(
        "--patience", type=int, default=10, help="early-stopping patience (0: none, all epochs)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("recpipe.data", "recpipe.validation", "recpipe.sessions", "recpipe.features"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger("bench.sasrec")
    data_root = Path(os.environ.get("RECPIPE_DATA_DIR", REPO.parent / "shared" / "data"))
    with tempfile.TemporaryDirectory(prefix="bench-sasrec-") as tmp:
        if args.mode == "speed":
            text = speed(args, data_root, Path(tmp), log)
        else:
            data = amazon_split(data_root, Path(tmp))
            text = validate(args, data, log) if args.mode == "validate" else losses(args, data, log)
    sys.stdout.write(text + "\n")
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
