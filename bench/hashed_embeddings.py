"""Accuracy cost of hashed id embeddings: full tables against hashed buckets.

Each model is trained once with one row per id (``id_embedding.kind: table``) and
once per (bucket fraction, number of hashes) with hashed ids
(:class:`recpipe.models.hashed.HashedEmbedding`: k = 1 is the hashing trick, k = 2
Bloom embeddings, Serrà & Karatzoglou 2017; rows marked ``+w`` add the per-id importance
weights of hash embeddings, Svenstrup et al. 2017), everything else equal (seed,
epochs, early stopping):

- ``mf_bpr`` on MovieLens 100K (per-user temporal split, as the pipeline builds it),
  user *and* item tables hashed, user top-K protocol (full ranking, train items
  excluded);
- ``gru4rec`` on the YOOCHOOSE 100k-click sample (``session`` split), its item tables
  (output table and bias; the input is the output table by default) hashed,
  next-item protocol over every prefix of every test session;
- ``deepfm`` (opt-in: ``--models deepfm``) on MovieLens 100K as ``mf_bpr``, its user
  *and* item fields (embeddings and first-order weights; the genre field stays a
  table) hashed, user top-K protocol.

The table gives the trainable parameters of the id tables and of the whole model, test
Recall@20 / NDCG@20 / MRR@20, and the relative loss of Recall@20 and NDCG@20 against
the full tables.
Bucket fractions are of each table's real ids (reserved PAD / UNK slots excluded).

Run (about 7 minutes on one otherwise idle thread)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/hashed_embeddings.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/hashed_embeddings.py --models mf_bpr \\
        --fractions 0.5 0.25 --hashes 2 --mf-epochs 20
    OMP_NUM_THREADS=1 .venv/bin/python bench/hashed_embeddings.py --models deepfm \\
        --fractions 0.5 --hashes 2 --weighted --ctr-epochs 8

The data come from $RECPIPE_DATA_DIR (default ../shared/data): ``ml-100k/`` and
``yoochoose-rsc15-100k/``.
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

from _common import build_features
from rich.console import Console
from rich.table import Table

log = logging.getLogger("bench.hashed_embeddings")
REPO = Path(__file__).resolve().parents[1]
METRICS = ("recall@20", "ndcg@20", "mrr@20")
#: Parameter names of the id tables (MF: user / item factors and biases; GRU4Rec: item
#: output table and bias, input table or gate table; DeepFM: the fused or hashed user and
#: item fields of its embeddings and first-order weights, not the genre bags).
ID_TABLES = (
    "user.",
    "user_bias.",
    "item.",
    "item_bias",
    "item_out.",
    "item_in.",
    "item_gates.",
    "embed.table.",
    "embed.hashed.",
    "linear.table.",
    "linear.hashed.",
)
#: Models run when --models is not given (deepfm is opt-in).
DEFAULT_MODELS = ["mf_bpr", "gru4rec"]

#: model -> (data folder, source overrides, split, protocol)
SETUPS: dict[str, tuple[str, list[str], str, str]] = {
    "mf_bpr": ("ml-100k", ["data.source=movielens-100k"], "user_temporal", "user"),
    "gru4rec": (
        "yoochoose-rsc15-100k",
        ["data.source=session-tsv", "validate.on_failure=quarantine"],
        "session",
        "session",
    ),
    "deepfm": ("ml-100k", ["data.source=movielens-100k"], "user_temporal", "user"),
}


def variants(
    fractions: list[float], hashes: list[int], weighted: list[int]
) -> list[dict[str, Any]]:
    """The ``id_embedding`` blocks to compare: the full table first; then per fraction
    each k of ``hashes``, and each k of ``weighted`` with importance weights."""
    out: list[dict[str, Any]] = [{"kind": "table"}]
    for fraction in fractions:
        for k in hashes:
            out.append({"kind": "hashed", "buckets": fraction, "hashes": k})
        for k in weighted:
            out.append({"kind": "hashed", "buckets": fraction, "hashes": k, "weights": True})
    return out


def label(spec: dict[str, Any]) -> str:
    """A row label: ``table`` or ``hashed 25% k=2``."""
    if spec["kind"] == "table":
        return "table"
    weights = " +w" if spec.get("weights") else ""
    return f"hashed {spec['buckets']:.0%} k={spec['hashes']}{weights}"


def run_one(
    name: str, folder: Path, protocol: str, config: dict[str, Any], data: dict[str, Any]
) -> dict[str, Any]:
    """Fit one configuration (early stopping on valid) and evaluate it on test."""
    from recpipe.evaluate.protocols import next_item, user_topk
    from recpipe.models.registry import build_model

    meta = data["meta"]
    model = build_model(name, config, meta)
    t0 = time.perf_counter()
    model.fit(data["train"], data["valid"])
    fit_s = time.perf_counter() - t0
    if protocol == "user":
        result = user_topk(model, data["train"], data["test"], meta, ks=(20,))
    else:
        result = next_item(model, data["test"], meta, ks=(20,))
    params = dict(model.module.named_parameters())
    return {
        "params": sum(p.numel() for p in params.values()),
        "id_params": sum(p.numel() for k, p in params.items() if k.startswith(ID_TABLES)),
        "epochs": len(model.training.history),
        "best": (model.training.best_epoch or 0) + 1,
        "fit_s": fit_s,
        **{m: float(result.metrics[m]) for m in METRICS},
    }


def bench_model(
    name: str, root: Path, workspace: Path, specs: list[dict[str, Any]], base: dict[str, Any]
) -> tuple[list[dict[str, Any]], str]:
    """Every variant of one model on its data set; the rows and a caption."""
    from recpipe.models.data import DataMeta, Interactions

    data_name, overrides, split, protocol = SETUPS[name]
    data_dir = root / data_name
    if not data_dir.is_dir():
        raise SystemExit(f"{data_name} not found at {data_dir} (set RECPIPE_DATA_DIR)")
    t0 = time.perf_counter()
    folder = build_features([*overrides, f"data.path={data_dir}"], split, workspace / name)
    meta = DataMeta.from_features(folder)
    data: dict[str, Any] = {
        p: Interactions.from_parquet(folder / f"{p}.parquet") for p in ("train", "valid", "test")
    }
    data["meta"] = meta
    users = f"{meta.n_users - 2:,} users, " if meta.n_users > 2 else ""
    caption = (
        f"{name} on {data_name} ({split} split; {meta.n_real_items:,} items, {users}"
        f"{len(data['train']):,} train events; features {time.perf_counter() - t0:.1f} s)"
    )
    rows = []
    for spec in specs:
        row = run_one(name, folder, protocol, {**base, "id_embedding": spec}, data)
        row["variant"] = label(spec)
        log.warning("%s %s: %s", name, row["variant"], row)
        rows.append(row)
    return rows, caption


def render(console: Console, name: str, caption: str, rows: list[dict[str, Any]]) -> None:
    """A rich table of one model's rows, relative losses against the first (table) row."""
    ref = rows[0]
    table = Table(title=caption)
    for col in (
        "ids",
        "id-table params",
        "all params",
        "% of table",
        "epochs (best)",
        "fit s",
        "R@20",
        "NDCG@20",
        "MRR@20",
        "ΔR@20",
        "ΔNDCG@20",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["variant"],
            f"{r['id_params']:,}",
            f"{r['params']:,}",
            f"{r['params'] / ref['params']:.1%}",
            f"{r['epochs']} ({r['best']})",
            f"{r['fit_s']:.0f}",
            f"{r['recall@20']:.4f}",
            f"{r['ndcg@20']:.4f}",
            f"{r['mrr@20']:.4f}",
            f"{r['recall@20'] / ref['recall@20'] - 1:+.1%}",
            f"{r['ndcg@20'] / ref['ndcg@20'] - 1:+.1%}",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=list(SETUPS))
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.5, 0.25, 0.1])
    parser.add_argument("--hashes", nargs="+", type=int, default=[1, 2])
    parser.add_argument(
        "--weighted",
        nargs="*",
        type=int,
        default=[2],
        help="k of the extra rows with per-id importance weights (hash embeddings)",
    )
    parser.add_argument("--mf-epochs", type=int, default=15, help="most epochs of mf_bpr")
    parser.add_argument("--gru-epochs", type=int, default=4, help="most epochs of gru4rec")
    parser.add_argument("--ctr-epochs", type=int, default=10, help="most epochs of deepfm")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    root = Path(os.environ.get("RECPIPE_DATA_DIR", REPO.parent / "shared" / "data"))
    console = Console(width=150)
    import torch

    console.print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device "
        f"{args.device}, seed {args.seed}; every row of a model has the same epochs and "
        "early stopping (patience: the model's default)"
    )
    specs = variants(args.fractions, args.hashes, args.weighted)
    epochs = {"mf_bpr": args.mf_epochs, "gru4rec": args.gru_epochs, "deepfm": args.ctr_epochs}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            base = {"device": args.device, "seed": args.seed, "epochs": epochs[name]}
            rows, caption = bench_model(name, root, Path(tmp), specs, base)
            render(console, name, caption, rows)
    console.print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
