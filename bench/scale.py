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

``device``: single-device training throughput of GRU4Rec, SASRec and DeepFM on ~1M synthetic
events (``--device cuda`` by default; says so and exits when there is no CUDA device;
``--device cpu`` for a reference)::

    .venv/bin/python bench/scale.py device --device cuda --events 1000000

``prep``: data preparation with ``prep.engine`` pandas and arrow (``--engine``; ``dask``
runs on a local cluster of each ``--workers`` count, beside the arrow engine, with each
worker's peak RSS). For each size it writes
a raw Parquet log of synthetic sessions (chunked, 0.1% bad event types), then runs the
``ingest`` (``data.source: parquet``), ``validate`` (quarantine) and ``sessions`` (all
splits) stages, each in a fresh subprocess, and reports seconds, events per second and
the stage process's peak RSS. The pandas engine is skipped above ``--pandas-max``::

    OMP_NUM_THREADS=1 .venv/bin/python bench/scale.py prep --sizes 10000000 100000000 \
        --partitions 32 --tmp /path/with/disk/space
    OMP_NUM_THREADS=1 .venv/bin/python bench/scale.py prep --engine dask --workers 1 2 \
        --sizes 10000000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench.scale")

TRAIN_MODELS = ["mf_bpr", "gru4rec"]


def train_worker(
    folder: Path, model: str, epochs: int, out: Path, extra: dict[str, Any] | None = None
) -> None:
    """One rank of a training run: fit ``model`` on ``folder`` (``extra``: more config
    options); rank 0 writes ``out``."""
    from recpipe.models.data import DataMeta, Interactions
    from recpipe.models.registry import build_model
    from recpipe.train import distributed as ddp

    with ddp.session("cpu"):
        meta = DataMeta.from_features(folder)
        data = {p: Interactions.from_parquet(folder / f"{p}.parquet") for p in ("train", "valid")}
        config = {"device": "cpu", "epochs": epochs, "patience": None, **(extra or {})}
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
    models: list[str],
    nprocs: list[int],
    epochs: int,
    overrides: list[str],
    model_config: dict[str, Any] | None = None,
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
                    "--config", json.dumps(model_config or {}),
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
PREP_STAGES = ("ingest", "validate", "sessions")
PREP_ENGINES = ("pandas", "arrow", "dask")
CHUNK_EVENTS = 5_000_000


def prep_events(n: int, path: Path, seed: int = 0, bad_fraction: float = 0.001) -> None:
    """``n`` raw events as one Parquet file, written in chunks of 5M (memory ~ a chunk).

    Sessions of a geometric length (mean 5) by users drawn from ``n/20``, events 10 s to
    3 min apart, items Zipf(1.2) over 50k, 30 days, epoch-second timestamps, no source
    session ids; ``bad_fraction`` of the rows get an unknown event type, so validation
    quarantines them.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_users = max(n // 20, 1)
    start = int(np.datetime64("2026-01-01T00:00:00", "s").astype(np.int64))
    writer = None
    try:
        done = 0
        while done < n:
            m = min(CHUNK_EVENTS, n - done)
            lengths = rng.geometric(0.2, m // 4 + 1)
            lengths = lengths[: np.searchsorted(np.cumsum(lengths), m) + 1]
            lengths[-1] -= lengths.sum() - m
            session = np.repeat(np.arange(len(lengths)), lengths)
            first = np.r_[0, np.cumsum(lengths)[:-1]]
            gaps = rng.integers(10, 180, m)
            gaps[first] = 0
            offset = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first], lengths)
            begin = rng.integers(0, 30 * 86400 - 3600, len(lengths))
            event_type = np.where(rng.random(m) < bad_fraction, "unknown", "click")
            table = pa.table(
                {
                    "user_id": rng.integers(0, n_users, len(lengths))[session].astype(str),
                    "item_id": rng.zipf(1.2, m).clip(max=50_000).astype(str),
                    "timestamp": start + begin[session] + offset,
                    "event_type": event_type,
                }
            )
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=1_000_000)
            done += m
    finally:
        if writer is not None:
            writer.close()


def prep_stage(
    engine: str,
    stage: str,
    workspace: Path,
    source: Path,
    partitions: int,
    workers: int = 1,
    work_url: str | None = None,
) -> dict:
    """Run one prep stage with one engine in this process; seconds and peak RSS.

    ``dask``: on a local cluster of ``workers`` single-threaded processes started here
    first (not timed); ``worker_peak_mib`` is the largest worker's peak RSS.
    ``work_url``: ``prep.work_url`` (the workers inherit this process's environment,
    an object store's endpoint and credentials included).
    """
    sys.path.insert(0, str(REPO / "bench"))
    from _common import peak_rss_mib

    from recpipe.config import load_params
    from recpipe.paths import Paths
    from recpipe.pipeline import run_stage

    overrides = [
        "data.source=parquet",
        f"data.path={source}",
        "data.timestamp_unit=s",
        f"prep.engine={engine}",
        f"prep.partitions={partitions}",
        "validate.on_failure=quarantine",
    ]
    if work_url is not None:
        overrides.append(f"prep.work_url={work_url}")
    if engine != "dask":
        params = load_params(None, overrides)
        t0 = time.perf_counter()
        run_stage(stage, params, Paths.at(workspace))
        return {"seconds": time.perf_counter() - t0, "peak_mib": peak_rss_mib()}
    from distributed import Client, LocalCluster

    def worker_peak() -> float:  # pickled by value: the workers do not import bench/
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
        return float("nan")

    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        params = load_params(
            None, [*overrides, f"orchestration.dask_address={cluster.scheduler_address}"]
        )
        t0 = time.perf_counter()
        run_stage(stage, params, Paths.at(workspace))
        seconds = time.perf_counter() - t0
        peaks = client.run(worker_peak)
    return {
        "seconds": seconds,
        "peak_mib": peak_rss_mib(),
        "worker_peak_mib": max(peaks.values()),
        "workers": workers,
    }


def bench_prep(
    sizes: list[int],
    partitions: int,
    pandas_max: int,
    keep: Path | None,
    stages: tuple[str, ...] = PREP_STAGES,
    engines: tuple[str, ...] = ("pandas", "arrow"),
    workers: tuple[int, ...] = (2,),
    work_stores: tuple[str, ...] = ("data",),
    rounds: int = 1,
) -> list:
    """For each size: write raw events, then run ingest, validate and sessions (all splits)
    with each engine (dask: once per worker count and work store, ``rounds`` times,
    interleaved), every stage in a fresh subprocess (peak RSS: its VmHWM; dask: also each
    worker's); the load average beside each.

    Work stores (``prep.work_url`` of the dask runs): ``data`` (unset: under ``data/``),
    ``local`` (a folder beside the workspace), ``s3`` (a bucket on a loopback S3 server,
    moto, started here: a Python server sharing these cores, not a real store's speed)."""
    rows: list[dict[str, Any]] = []
    runs = [
        (e, w, store)
        for _ in range(rounds if "dask" in engines else 1)
        for e in engines
        for w in (workers if e == "dask" else (1,))
        for store in (work_stores if e == "dask" else ("data",))
    ]
    runs = list(dict.fromkeys(r for r in runs if r[0] != "dask")) + [
        r for r in runs if r[0] == "dask"
    ]  # the other engines once, first; the dask runs in rounds
    with (
        tempfile.TemporaryDirectory(prefix="recpipe-bench-prep-", dir=keep) as tmp,
        _loopback_s3(enabled="s3" in work_stores) as bucket,
    ):
        for n in sizes:
            source = Path(tmp) / f"raw-{n}.parquet"
            t0 = time.perf_counter()
            prep_events(n, source)
            log.warning("wrote %d raw events in %.1f s", n, time.perf_counter() - t0)
            for engine, w, store in runs:
                label = f"dask x{w}" if engine == "dask" else engine
                work_url = {"data": None, "local": f"{tmp}/work", "s3": f"{bucket}/work"}[store]
                if len(work_stores) > 1 and engine == "dask":
                    label += f" {store}"
                if engine == "pandas" and n > pandas_max:
                    rows.append({"events": n, "engine": label, "stage": "-", "skipped": True})
                    continue
                workspace = Path(tmp) / f"ws-{engine}-{w}-{n}"
                for stage in stages:
                    load = os.getloadavg()[0]
                    result = subprocess.run(
                        [
                            *(sys.executable, __file__, "prep-stage", engine, stage),
                            *(str(workspace), str(source), "--partitions", str(partitions)),
                            *("--workers", str(w)),
                            *(("--work-url", work_url) if work_url else ()),
                        ],
                        check=True,
                        capture_output=True,
                        text=True,
                        cwd=REPO,
                    )
                    entry = json.loads(result.stdout.strip().splitlines()[-1])
                    entry |= {"events": n, "engine": label, "stage": stage, "load": load}
                    entry["events_per_s"] = n / entry["seconds"]
                    rows.append(entry)
                    print(json.dumps(entry), flush=True)
                shutil.rmtree(workspace, ignore_errors=True)
            source.unlink()
    return rows


@contextlib.contextmanager
def _loopback_s3(enabled: bool) -> Iterator[str | None]:
    """A bucket's URL on a moto S3 server on loopback, its endpoint and credentials set
    in this process's environment (which the stage subprocesses inherit); None when not
    ``enabled``."""
    if not enabled:
        yield None
        return
    import fsspec
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    fsspec.filesystem("s3").mkdir("recpipe-bench")
    try:
        yield "s3://recpipe-bench"
    finally:
        server.stop()


def print_prep(rows: list[dict[str, Any]], partitions: int) -> None:
    """The data-preparation table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"data preparation by engine ({partitions} partitions)")
    cols = ("events", "engine", "stage", "seconds", "events/s", "peak RSS MiB")
    for col in (*cols, "worker peak MiB", "load 1 min"):
        table.add_column(col, justify="right")
    for r in rows:
        if r.get("skipped"):
            table.add_row(f"{r['events']:,}", r["engine"], "not run (--pandas-max)", *[""] * 5)
            continue
        worker = r.get("worker_peak_mib")
        table.add_row(
            f"{r['events']:,}",
            r["engine"],
            r["stage"],
            f"{r['seconds']:.1f}",
            f"{r['events_per_s']:,.0f}",
            f"{r['peak_mib']:,.0f}",
            "" if worker is None else f"{worker:,.0f}",
            f"{r['load']:.1f}",
        )
    Console().print(table)


# --------------------------------------------------------------------------- device
DEVICE_MODELS = {"gru4rec": "session", "sasrec": "session", "deepfm": "user_temporal"}


def bench_device(models: list[str], device: str, events: int, epochs: int) -> list[dict]:
    """Single-device training throughput of each model on ~``events`` synthetic events.

    Builds the model's split of the built-in click-stream scaled to ``events`` (see
    ``bench/_common.synth_params_for``), fits ``epochs`` epochs on ``device`` and
    reports training examples per second of the training steps (validation excluded).
    """
    sys.path.insert(0, str(REPO / "bench"))
    from _common import build_features, synth_params_for

    from recpipe.models.data import DataMeta, Interactions
    from recpipe.models.registry import build_model

    synth = synth_params_for(events, 0)
    overrides = [
        f"synth.{k}={getattr(synth, k)}"
        for k in ("n_sessions", "n_items", "n_users", "n_categories")
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="recpipe-bench-device-") as tmp:
        for model in models:
            split = DEVICE_MODELS.get(model, "user_temporal")
            folder = build_features(overrides, split, Path(tmp) / f"ws-{split}")
            meta = DataMeta.from_features(folder)
            data = {
                p: Interactions.from_parquet(folder / f"{p}.parquet") for p in ("train", "valid")
            }
            config = {"device": device, "epochs": epochs, "patience": None}
            candidate = build_model(model, config, meta)
            t0 = time.perf_counter()
            candidate.fit(data["train"], data["valid"])
            wall = time.perf_counter() - t0
            history = candidate.training.history
            examples = sum(r["examples"] for r in history)
            step_s = sum(r["seconds"] for r in history)
            row = {
                "model": model,
                "device": str(candidate.training.device),
                "train_events": len(data["train"].item_idx),
                "examples": examples,
                "events_per_s": examples / step_s if step_s else float("nan"),
                "fit_s": wall,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
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
    train.add_argument(
        "--config",
        dest="model_config",
        action="append",
        default=[],
        help="a model option for every model, KEY=VALUE (e.g. batch_size=4096)",
    )
    worker = sub.add_parser("train-worker", help="(internal) one torchrun rank")
    worker.add_argument("folder", type=Path)
    worker.add_argument("model")
    worker.add_argument("epochs", type=int)
    worker.add_argument("out", type=Path)
    worker.add_argument("--config", default="{}", help="(JSON) extra model options")
    prep = sub.add_parser("prep", help="ingest, validate, sessions: by prep.engine")
    prep.add_argument("--sizes", nargs="+", type=int, default=PREP_SIZES)
    prep.add_argument("--partitions", type=int, default=16)
    prep.add_argument(
        "--pandas-max", type=int, default=20_000_000, help="skip the pandas engine above this"
    )
    prep.add_argument("--tmp", type=Path, default=None, help="folder for the raw and work data")
    prep.add_argument(
        "--stages", nargs="+", choices=PREP_STAGES, default=list(PREP_STAGES), help="a prefix"
    )
    prep.add_argument(
        "--engine", nargs="+", choices=PREP_ENGINES, default=["pandas", "arrow"], dest="engines"
    )
    prep.add_argument(
        "--workers", nargs="+", type=int, default=[2], help="dask: local worker processes"
    )
    prep.add_argument(
        "--work-store",
        nargs="+",
        choices=["data", "local", "s3"],
        default=["data"],
        dest="work_stores",
        help="dask: prep.work_url unset (data), a local folder, or a loopback S3 bucket (moto)",
    )
    prep.add_argument("--rounds", type=int, default=1, help="dask: runs of each, interleaved")
    prep_w = sub.add_parser("prep-stage", help="(internal) one stage, one engine")
    prep_w.add_argument("engine", choices=PREP_ENGINES)
    prep_w.add_argument("stage", choices=PREP_STAGES)
    prep_w.add_argument("workspace", type=Path)
    prep_w.add_argument("source", type=Path)
    prep_w.add_argument("--partitions", type=int, default=16)
    prep_w.add_argument("--workers", type=int, default=1)
    prep_w.add_argument("--work-url", default=None)
    dev = sub.add_parser(
        "device", help="single-device training throughput (GRU4Rec, SASRec, DeepFM)"
    )
    dev.add_argument("--models", nargs="+", default=list(DEVICE_MODELS))
    dev.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu")
    dev.add_argument("--events", type=int, default=1_000_000)
    dev.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.section == "device":
        import torch

        if args.device.startswith("cuda") and not torch.cuda.is_available():
            print(f"no CUDA device here (torch {torch.__version__}); run this on a GPU machine")
            return 0
        bench_device(args.models, args.device, args.events, args.epochs)
        return 0
    if args.section == "prep-stage":
        result = prep_stage(
            args.engine,
            args.stage,
            args.workspace,
            args.source,
            args.partitions,
            args.workers,
            args.work_url,
        )
        print(json.dumps(result))
        return 0
    if args.section == "prep":
        stages = tuple(args.stages)
        if stages != PREP_STAGES[: len(stages)]:
            parser.error(
                f"--stages must be a prefix of {' '.join(PREP_STAGES)} (each needs the last)"
            )
        engines = tuple(args.engines)
        if "dask" in engines and "arrow" not in engines:
            engines = ("arrow", *engines)  # dask's figures are against the arrow engine's
        rows = bench_prep(
            args.sizes,
            args.partitions,
            args.pandas_max,
            args.tmp,
            stages,
            engines,
            tuple(args.workers),
            tuple(args.work_stores),
            args.rounds,
        )
        print_prep(rows, args.partitions)
        return 0
    if args.section == "train-worker":
        train_worker(args.folder, args.model, args.epochs, args.out, json.loads(args.config))
        return 0
    import yaml

    extra = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.model_config)}
    print_train(bench_train(args.models, args.nproc, args.epochs, args.overrides, extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
