"""Scaling benchmarks. Each section is its own function and subcommand.

``train``: training throughput of torch candidates with 1 and more processes
(DistributedDataParallel under ``torchrun``, gloo on CPU). It builds the ``session``
split of the built-in synthetic click-stream once (or of ``--set`` overrides), then for
each process count launches ``torchrun --standalone --nproc_per_node N bench/scale.py
train-worker ...`` per model. Throughput is training events per second of the training
steps over all ranks (examples of every epoch / seconds in training steps; validation
on rank 0 and process start are not counted); the table also gives the wall time of
fit() and the speed-up over one process. Every rank builds the same global minibatch
and keeps its rows (see recpipe.train.distributed), so the per-epoch work that is not
split is the numpy batch building.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python bench/scale.py train
    .venv/bin/python bench/scale.py train --models mf_bpr --nproc 1 2 4 --epochs 3

Each process uses OMP_NUM_THREADS threads (1 by default here): N processes want N cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench.scale")

TRAIN_MODELS = ["mf_bpr", "gru4rec"]


def train_worker(folder: Path, model: str, epochs: int, out: Path) -> None:
    """One rank of a training run: fit ``model`` on ``folder``; rank 0 writes ``out``."""
    from recpipe.models import build_model
    from recpipe.models.base import DataMeta, Interactions
    from recpipe.train import distributed as ddp

    with ddp.session("cpu"):
        meta = DataMeta.from_features(folder)
        data = {p: Interactions.from_parquet(folder / f"{p}.parquet") for p in ("train", "valid")}
        config = {"device": "cpu", "epochs": epochs, "patience": None}
        candidate = build_model(model, config, meta)
        t0 = time.perf_counter()
        candidate.fit(data["train"], data["valid"])
        wall = time.perf_counter() - t0
        if ddp.is_main():
            history = candidate.training.history
            examples = sum(r["examples"] for r in history)
            step_s = sum(r["seconds"] for r in history)
            out.write_text(
                json.dumps(
                    {
                        "model": model,
                        "processes": ddp.world_size(),
                        "examples": examples,
                        "step_s": step_s,
                        "events_per_s": examples / step_s if step_s else float("nan"),
                        "fit_s": wall,
                    }
                )
            )


def bench_train(
    models: list[str], nprocs: list[int], epochs: int, overrides: list[str]
) -> list[dict[str, Any]]:
    """Throughput of each model with each process count (rows of the table)."""
    sys.path.insert(0, str(REPO / "bench"))
    from _common import build_features

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="recpipe-bench-scale-") as tmp:
        folder = build_features(overrides, "session", Path(tmp) / "ws")
        for model in models:
            base = None
            for n in nprocs:
                out = Path(tmp) / f"{model}-{n}.json"
                cmd = [
                    sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", str(n), str(Path(__file__).resolve()), "train-worker",
                    str(folder), model, str(epochs), str(out),
                ]  # fmt: skip
                env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
                t0 = time.perf_counter()
                subprocess.run(cmd, env=env, check=True, cwd=REPO)
                row = json.loads(out.read_text()) | {"job_s": time.perf_counter() - t0}
                base = base or row["events_per_s"]
                row["speedup"] = row["events_per_s"] / base
                rows.append(row)
                log.info("%s", row)
    return rows


def print_train(rows: list[dict[str, Any]]) -> None:
    """The training table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="training throughput, DDP on CPU (gloo)")
    for col in ("model", "processes", "events/s", "speed-up", "fit s", "job s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["model"],
            str(r["processes"]),
            f"{r['events_per_s']:,.0f}",
            f"{r['speedup']:.2f}x",
            f"{r['fit_s']:.1f}",
            f"{r['job_s']:.1f}",
        )
    Console().print(table)
    print(f"examples per epoch x epochs: { {r['model']: r['examples'] for r in rows} }")
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}, cores={os.cpu_count()}")


# --------------------------------------------------------------------------- prep
PREP_SIZES = [1_000_000, 10_000_000]


def prep_events(n: int, path: Path, seed: int = 0) -> None:
    """``n`` canonical events (n/20 users, 50k items, 30 days, no session ids) as Parquet."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    start = np.datetime64("2026-01-01T00:00:00", "ns").astype(np.int64)
    ts = start + rng.integers(0, 30 * 86400, n, dtype=np.int64) * 1_000_000_000
    frame = pd.DataFrame(
        {
            "user_id": pd.array(rng.integers(0, max(n // 20, 1), n).astype(str), "string"),
            "item_id": pd.array(rng.zipf(1.2, n).clip(max=50_000).astype(str), "string"),
            "timestamp": pd.to_datetime(ts, utc=True),
            "event_type": pd.array(np.full(n, "click"), "string"),
            "value": np.ones(n),
            "session_id": pd.array([None] * n, "string"),
        }
    )
    frame.to_parquet(path, index=False, row_group_size=1_000_000)


def prep_worker(engine: str, source: Path, out: Path, partitions: int) -> dict[str, Any]:
    """Sessionize ``source`` with one engine in this process; seconds and peak RSS."""
    import resource

    import pandas as pd

    from recpipe.config import SessionsParams
    from recpipe.sessions.partitioned import sessionize_partitioned
    from recpipe.sessions.sessionize import sessionize

    params = SessionsParams()
    t0 = time.perf_counter()
    if engine == "pandas":
        events = sessionize(pd.read_parquet(source), params)
        events.to_parquet(out / "events.parquet", index=False)
        rows = len(events)
    else:
        rows = sessionize_partitioned(source, out / "parts", params, partitions)["rows"]
    seconds = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": rows, "seconds": seconds, "peak_mib": peak_mib}


def bench_prep(sizes: list[int], partitions: int) -> list[dict[str, Any]]:
    """For each size: write synthetic events, then sessionize them with the pandas path
    and the partitioned path, each in a fresh subprocess (peak RSS = ru_maxrss)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            source = Path(tmp) / f"events-{n}.parquet"
            prep_events(n, source)
            for engine in ("pandas", "partitioned"):
                out = Path(tmp) / f"out-{engine}-{n}"
                out.mkdir()
                result = subprocess.run(
                    [
                        *(sys.executable, __file__, "prep-worker", engine, str(source)),
                        *(str(out), "--partitions", str(partitions)),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                entry = json.loads(result.stdout.strip().splitlines()[-1])
                entry |= {"events": n, "engine": engine}
                entry["events_per_s"] = n / entry["seconds"]
                rows.append(entry)
                print(json.dumps(entry), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Parse the subcommand and run it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="section", required=True)
    train = sub.add_parser("train", help="training throughput with 1..N DDP processes")
    train.add_argument("--models", nargs="+", default=TRAIN_MODELS)
    train.add_argument("--nproc", nargs="+", type=int, default=[1, 2])
    train.add_argument("--epochs", type=int, default=2)
    train.add_argument("--set", dest="overrides", action="append", default=[])
    worker = sub.add_parser("train-worker", help="(internal) one torchrun rank")
    worker.add_argument("folder", type=Path)
    worker.add_argument("model")
    worker.add_argument("epochs", type=int)
    worker.add_argument("out", type=Path)
    prep = sub.add_parser("prep", help="sessionize N events: pandas vs partitioned path")
    prep.add_argument("--sizes", nargs="+", type=int, default=PREP_SIZES)
    prep.add_argument("--partitions", type=int, default=16)
    prep_w = sub.add_parser("prep-worker", help="(internal) one engine in a subprocess")
    prep_w.add_argument("engine", choices=["pandas", "partitioned"])
    prep_w.add_argument("source", type=Path)
    prep_w.add_argument("out", type=Path)
    prep_w.add_argument("--partitions", type=int, default=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.section == "prep-worker":
        print(json.dumps(prep_worker(args.engine, args.source, args.out, args.partitions)))
        return 0
    if args.section == "prep":
        bench_prep(args.sizes, args.partitions)
        return 0
    if args.section == "train-worker":
        train_worker(args.folder, args.model, args.epochs, args.out)
        return 0
    print_train(bench_train(args.models, args.nproc, args.epochs, args.overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
