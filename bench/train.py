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
thread). A learning-rate sweep (validation part only) first picks the rate of mf_bpr
with ``optimizer: adagrad``, whose update is row-sparse (only the looked-up rows move:
:mod:`recpipe.train.sparse`). Then, in interleaved rounds (mf_bpr with ``gradient:
autograd``, the step before issue 22; mf_bpr with its closed-form gradient and Adam,
the default; mf_bpr with Adagrad; implicit): throughput of (user, positive, negative)
triples per second and the ratio of each to implicit's, the load average beside each;
per epoch, Recall@20 (validation and test parts) of each, and that both of the Adam
variants' gradients follow the same curve; and the training time at which each mf_bpr
variant first reaches implicit's best validation Recall@20, and its own best.

Run::

    .venv/bin/python bench/train.py                              # CPU, every model
    .venv/bin/python bench/train.py --models mf_bpr deepfm --device cuda
    .venv/bin/python bench/train.py --models --bpr-epochs 30    # the BPR comparison only

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


def _seen_before_test(train: Any, valid: Any) -> Any:
    """Train and valid events as one Interactions: what a test query has seen already."""
    from recpipe.models.data import Interactions

    names = ("user_idx", "item_idx", "timestamp", "value", "event_type_idx", "gap_bucket")
    arrays = {
        n: np.concatenate([getattr(train, n), getattr(valid, n)]) for n in (*names, "hour", "dow")
    }
    offsets = np.concatenate([train.offsets, valid.offsets[1:] + len(train)])
    return Interactions(**arrays, offsets=offsets)


def _implicit_scores(model: Any) -> Any:
    """score_users(module, users) of a fitted implicit model, in recpipe's item indices
    (its rows and columns are recpipe's minus the reserved slots)."""
    import torch

    from recpipe.features.idmap import N_RESERVED

    def score_users(_: Any, users: Any) -> Any:
        u = torch.from_numpy(np.asarray(model.user_factors))
        q = torch.from_numpy(np.asarray(model.item_factors))
        rows = (users - N_RESERVED).clamp(min=0)
        scores = u[rows] @ q.T
        return torch.cat([scores.new_zeros(scores.shape[0], N_RESERVED), scores], dim=1)

    return score_users


#: The mf_bpr variants of the BPR comparison, by label: config overrides. "rows" is
#: filled in by the learning-rate sweep (optimizer adagrad: the row-sparse update).
BASE_VARIANTS: dict[str, dict[str, Any]] = {
    "autograd": {"gradient": "autograd"},  # the step before issue 22
    "closed": {},  # the default: closed-form gradient, dense fused Adam
}


def bpr_comparison(
    folder: Path,
    device: str,
    epochs: int,
    negatives: int,
    rounds: int,
    sweep: list[float],
    sparse_batches: list[int],
) -> dict[str, Any]:
    """mf_bpr (autograd, closed form with Adam, row-sparse Adagrad) and implicit's BPR.

    First a learning-rate sweep of mf_bpr with ``optimizer: adagrad`` (the row-sparse
    update), for each batch size of ``sparse_batches``, picks the rate with the best
    validation Recall@20 (the validation part only). Then each round fits, one after
    the other, mf_bpr with ``gradient: autograd`` (the step before issue 22), mf_bpr
    with its default closed-form gradient and Adam, mf_bpr with Adagrad at each picked
    rate and batch size, and
    implicit's BPR (64 factors, one sampled negative per positive, one thread), all for
    ``epochs`` epochs without early stopping, and evaluates each after every epoch
    with the same Recall@20 (validation part: users' new items, train items excluded;
    test part: train and validation items excluded). Seconds are training time only
    (the evaluation between epochs is left out of both).
    """
    import threadpoolctl
    import torch
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    from recpipe.models.data import DataMeta, Interactions
    from recpipe.models.registry import build_model
    from recpipe.models.sparse import drop_reserved
    from recpipe.models.torch_base import UserRecallValidator

    meta = DataMeta.from_features(folder)
    parts = {
        p: Interactions.from_parquet(folder / f"{p}.parquet") for p in ("train", "valid", "test")
    }
    train = parts["train"]

    def validators(score_users: Any) -> dict[str, UserRecallValidator]:
        shared = {"n_users": meta.n_users, "n_items": meta.n_items, "max_queries": 10**9}
        seen_test = _seen_before_test(train, parts["valid"])
        return {
            "valid": UserRecallValidator(score_users, train, parts["valid"], **shared),
            "test": UserRecallValidator(score_users, seen_test, parts["test"], **shared),
        }

    def ours(overrides: dict[str, Any]) -> dict[str, Any]:
        config = {"negatives": negatives, "epochs": epochs, "patience": None, "device": device}
        model = build_model("mf_bpr", {**config, **overrides}, meta)
        # every epoch's module is evaluated by the shared validators, in the validation
        # hook (outside the timed steps); early stopping is off
        evaluate = validators(lambda module, users: module.score_all(users))
        curve: list[dict[str, float]] = []
        eval_cpu = [0.0]

        def validator(_train: Any, _valid: Any) -> Any:
            def run(module: Any, dev: Any) -> dict[str, float]:
                c0 = time.process_time()
                out = {f"{k}_recall": v(module, dev)["recall@20"] for k, v in evaluate.items()}
                eval_cpu[0] += time.process_time() - c0
                return {"recall@20": out["valid_recall"], **out}

            return run

        # (the bench swaps in its own validation: the model's validator is the hook the
        # loop calls with each epoch's module)
        model._validator = validator  # type: ignore[method-assign]
        c0 = time.process_time()
        model.fit(train, parts["valid"])
        cpu = time.process_time() - c0 - eval_cpu[0]
        seconds = 0.0
        for record in model.training.history:
            seconds += record["seconds"]
            curve.append({"loss": record["loss"], "seconds": seconds, **record["metrics"]})
        examples = sum(r["examples"] for r in model.training.history)
        return {
            "curve": curve,
            "rate": examples / seconds,
            "cpu_rate": examples / cpu,
            "gradient": model.training.extra["gradient"],
            "update": model.training.extra["update"],
        }

    matrix = drop_reserved(train.user_item_matrix(meta.n_users, meta.n_items), rows=True, cols=True)
    matrix = matrix.astype(np.float32)

    def theirs() -> dict[str, Any]:
        bpr = BayesianPersonalizedRanking(
            factors=64, iterations=epochs, num_threads=1, random_state=0
        )
        evaluate = validators(_implicit_scores(bpr))
        curve: list[dict[str, float]] = []
        clock = {"eval": 0.0, "eval_cpu": 0.0}

        def after_epoch(*_: Any) -> None:
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.no_grad():
                out = {
                    f"{k}_recall": v(None, torch.device("cpu"))["recall@20"]
                    for k, v in evaluate.items()
                }
            curve.append({"seconds": t0 - clock["start"] - clock["eval"], **out})
            clock["eval"] += time.perf_counter() - t0
            clock["eval_cpu"] += time.process_time() - c0

        with threadpoolctl.threadpool_limits(1):
            clock["start"], c0 = time.perf_counter(), time.process_time()
            bpr.fit(matrix, show_progress=False, callback=after_epoch)
            cpu = time.process_time() - c0 - clock["eval_cpu"]
        triples = matrix.nnz * len(curve)
        return {"curve": curve, "rate": triples / curve[-1]["seconds"], "cpu_rate": triples / cpu}

    # warm-up: the first fit of a process pays one-off imports and allocations
    for overrides in (*BASE_VARIANTS.values(), {"optimizer": "adagrad"}):
        build_model("mf_bpr", {"epochs": 1, "device": device, **overrides}, meta).fit(train)
    # the learning rate of each row-sparse variant, by the best validation Recall@20
    variants = dict(BASE_VARIANTS)
    swept: dict[str, list[dict[str, Any]]] = {}
    for batch in sparse_batches:
        label = f"rows@{batch}"
        swept[label] = []
        for lr in sweep:
            run = ours({"optimizer": "adagrad", "batch_size": batch, "learning_rate": lr})
            curve = run["curve"]
            best = max(range(len(curve)), key=lambda e: curve[e]["valid_recall"])
            swept[label].append(
                {"lr": lr, "best_valid": curve[best]["valid_recall"], "epoch": best + 1}
            )
        picked = max(swept[label], key=lambda r: r["best_valid"])["lr"]
        variants[label] = {"optimizer": "adagrad", "batch_size": batch, "learning_rate": picked}
    runs: dict[str, Any] = {k: [] for k in (*variants, "implicit")}
    for _ in range(rounds):
        for label, overrides in variants.items():
            runs[label].append({**ours(overrides), "load": os.getloadavg()[0]})
        runs["implicit"].append({**theirs(), "load": os.getloadavg()[0]})
    return {"runs": runs, "sweep": swept, "variants": variants}


def _first_reaching(curve: list[dict[str, float]], target: float) -> str:
    for epoch, point in enumerate(curve, start=1):
        if point["valid_recall"] >= target:
            return f"epoch {epoch}, {point['seconds']:.2f} s"
    return "not reached"


def _name(label: str) -> str:
    """How a variant is named in the output."""
    if label.startswith("rows@"):
        return f"row-sparse (adagrad, batch {label.removeprefix('rows@')})"
    return {"autograd": "autograd (adam)", "closed": "closed form (adam, default)"}.get(
        label, label
    )


def print_bpr(console: Console, result: dict[str, Any], epochs: int, negatives: int) -> None:
    """The BPR comparison: the sweep, rates and ratios per round, curves, time to
    implicit's best validation Recall@20 and each variant's own best."""
    runs, variants = result["runs"], result["variants"]
    for label, rows in result["sweep"].items():
        console.print(
            f"learning-rate sweep of mf_bpr {_name(label)}, {epochs} epochs (best validation "
            "R@20, validation part only): "
            + "; ".join(f"lr {r['lr']:g}: {r['best_valid']:.4f} (epoch {r['epoch']})" for r in rows)
            + f" -> lr {variants[label]['learning_rate']:g}"
        )
    console.print(
        f"BPR triples/s ({epochs} epochs, 64 factors, {negatives} negative(s) per positive, "
        "one thread; rounds interleaved "
        + ", ".join(_name(k) for k in variants)
        + ", implicit; wall: training seconds; CPU: the process's CPU seconds of the fit "
        "less the evaluation; ratio: to implicit's in the same round):"
    )
    for r in range(len(runs["implicit"])):
        imp = runs["implicit"][r]
        for kind, key in (("wall", "rate"), ("CPU", "cpu_rate")):
            shown = ", ".join(
                f"{_name(k)} {runs[k][r][key]:,.0f} (ratio {runs[k][r][key] / imp[key]:.3f}, "
                f"load {runs[k][r]['load']:.2f})"
                for k in variants
            )
            console.print(
                f"  round {r + 1}, {kind}: {shown}; implicit {imp[key]:,.0f} "
                f"(load {imp['load']:.2f})"
            )
    last = {k: runs[k][-1] for k in runs}
    table = Table(
        title="per epoch, last round: validation R@20 @ training seconds so far (test R@20 "
        "of each best epoch below)"
    )
    table.add_column("epoch", justify="right")
    for k in runs:
        table.add_column(_name(k), justify="right")
    for e in range(epochs):
        cells = [str(e + 1)]
        for k in runs:
            curve = last[k]["curve"]
            p = curve[e] if e < len(curve) else None
            cells.append(f"{p['valid_recall']:.4f} @{p['seconds']:.2f}" if p else "")
        table.add_row(*cells)
    console.print(table)
    auto, closed = last["autograd"]["curve"], last["closed"]["curve"]
    d_loss = max(abs(a["loss"] - c["loss"]) for a, c in zip(auto, closed, strict=True))
    d_recall = max(
        abs(a[k] - c[k])
        for a, c in zip(auto, closed, strict=True)
        for k in ("valid_recall", "test_recall")
    )
    console.print(
        f"autograd and closed form follow the same curve: max |loss difference| {d_loss:.2e}, "
        f"max |R@20 difference| {d_recall:.2e} (valid and test, every epoch)"
    )
    imp = last["implicit"]["curve"]
    best_epoch = max(range(len(imp)), key=lambda e: imp[e]["valid_recall"])
    best = imp[best_epoch]
    console.print(
        f"implicit's best valid R@20 {best['valid_recall']:.4f} (test {best['test_recall']:.4f}) "
        f"at epoch {best_epoch + 1}, {best['seconds']:.2f} s"
    )
    for k in variants:
        curve = last[k]["curve"]
        own = max(range(len(curve)), key=lambda e: curve[e]["valid_recall"])
        console.print(
            f"  {_name(k)} (update: {last[k]['update']}): first reaches it at "
            f"{_first_reaching(curve, best['valid_recall'])}; its own best valid R@20 "
            f"{curve[own]['valid_recall']:.4f} (test {curve[own]['test_recall']:.4f}) at epoch "
            f"{own + 1}, {curve[own]['seconds']:.2f} s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", nargs="*", default=DEFAULT_MODELS, help="none: BPR only")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--epochs", type=int, default=None, help="override every model's epochs")
    parser.add_argument("--bpr-epochs", type=int, default=30, help="epochs of the BPR comparison")
    parser.add_argument(
        "--bpr-negatives", type=int, default=1, help="mf_bpr's negatives per positive (BPR)"
    )
    parser.add_argument("--bpr-rounds", type=int, default=2, help="interleaved BPR rounds")
    parser.add_argument(
        "--bpr-sweep",
        type=float,
        nargs="+",
        default=[0.03, 0.1, 0.3, 1.0],
        help="learning rates tried for mf_bpr with adagrad (the row-sparse update)",
    )
    parser.add_argument(
        "--bpr-sparse-batches",
        type=int,
        nargs="+",
        default=[1024, 4096, 8192],
        help="batch sizes of the adagrad variants (the default config's is 1024)",
    )
    parser.add_argument("--data", type=Path, default=None, help="MovieLens 100K folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    root = Path(os.environ.get("RECPIPE_DATA_DIR", REPO.parent / "shared" / "data"))
    data_dir = args.data or root / "ml-100k"
    console = Console(width=max(Console().width, 150))
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
        if rows:
            console.print(table)
        result = bpr_comparison(
            folder,
            args.device,
            args.bpr_epochs,
            args.bpr_negatives,
            args.bpr_rounds,
            args.bpr_sweep,
            args.bpr_sparse_batches,
        )
        print_bpr(console, result, args.bpr_epochs, args.bpr_negatives)
    return 0


if __name__ == "__main__":
    sys.exit(main())
