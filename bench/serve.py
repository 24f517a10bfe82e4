"""Serving benchmark: latency and throughput of ``POST /recommend/session`` on a real server.

For catalogues of 10k, 100k and 1M items it builds a synthetic matrix-factorization
model (clustered item embeddings, like trained factors: items scattered around 1024
centres in 64 dimensions, as far from their centre as the centres are from the origin,
so clusters overlap), writes a serving bundle, starts the real BentoML service
(``bentoml serve recpipe.serve.service:RecpipeService`` on 127.0.0.1, the bundle named
by ``RECPIPE_BUNDLE``) and drives it with 1 and 16 concurrent keep-alive clients. Each
request is a session of 1-6 items of one cluster; the model has no session scoring, so
it is answered by the recency-weighted mean of the items' vectors searched in the item
index (``item_aggregate``): exact top-K by a matrix product, or the faiss IVF index.

Printed per catalogue, index and client count: p50 / p99 latency and requests/s seen
by the clients, beside the in-process time of the same requests (one at a time, and in
batches of 64) and, for the ANN index, recall@20 against exact search. The load
generator is a minimal asyncio HTTP/1.1 client so that it takes little of the CPU the
server needs; on a shared 2-core machine the figures are contended by whatever else
runs. Run::

    .venv/bin/python bench/serve.py                       # 10k, 100k exact; 1M exact and ANN
    .venv/bin/python bench/serve.py --sizes 100000 --seconds 5
    .venv/bin/python bench/serve.py --sizes 1000000 --ann-only --json /tmp/serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DIM = 64
CENTRES = 1024
#: Spread of the items around their centre (per dimension; the centres have std 1): wide,
#: overlapping clusters, so that ANN search is not trivially exact.
NOISE = 1.0
K = 20
log = logging.getLogger("bench.serve")


# ---------------------------------------------------------------------- the model
def synthetic_bundle(n_items: int, out: Path, serve: Any, seed: int = 0) -> tuple[Path, Any]:
    """A bundle of an MF model whose item factors are clustered synthetic vectors."""
    import torch

    from recpipe.features.idmap import N_RESERVED, IdMap
    from recpipe.models.data import DataMeta, Interactions
    from recpipe.models.registry import build_model
    from recpipe.serve.bundle import write_bundle

    rng = np.random.default_rng(seed)
    n_users = 1000
    centres = rng.normal(size=(CENTRES, DIM)).astype(np.float32)
    cluster = rng.integers(CENTRES, size=n_items + N_RESERVED)
    items = centres[cluster] + NOISE * rng.normal(size=(n_items + N_RESERVED, DIM)).astype(
        np.float32
    )
    counts = np.zeros(n_items + N_RESERVED, dtype=np.int64)
    n_events = 200_000
    popular = N_RESERVED + np.minimum(rng.zipf(1.3, size=n_events) - 1, n_items - 1)
    np.add.at(counts, popular, 1)
    item_map = IdMap(
        ids=np.array([f"i{i}" for i in range(n_items)], dtype=object),
        id_counts=counts[N_RESERVED:],
    )
    user_map = IdMap(
        ids=np.array([f"u{u}" for u in range(n_users)], dtype=object),
        id_counts=np.zeros(n_users, dtype=np.int64),
    )
    meta = DataMeta(
        n_items=n_items + N_RESERVED,
        n_users=n_users + N_RESERVED,
        item_counts=counts,
        split="synthetic",
        item_map=item_map,
        user_map=user_map,
    )
    model = build_model("mf_bpr", {"factors": DIM, "device": "cpu"}, meta)
    module = model._build_module()
    with torch.no_grad():
        module.item.weight.copy_(torch.from_numpy(items))
    model.module = module.eval()
    model._fitted = True  # synthetic factors stand in for training
    users = rng.integers(N_RESERVED, n_users + N_RESERVED, size=n_events)
    order = np.argsort(users, kind="stable")
    events = Interactions(
        user_idx=users[order],
        item_idx=popular[order],
        timestamp=np.arange(n_events, dtype=np.int64),
        value=np.ones(n_events, np.float32),
        event_type_idx=np.ones(n_events, np.int16),
        gap_bucket=np.zeros(n_events, np.int16),
        hour=np.zeros(n_events, np.int16),
        dow=np.zeros(n_events, np.int16),
        offsets=np.arange(n_events + 1, dtype=np.int64),
    )
    fallback = build_model("pop", {}, meta).fit(events)
    info = {"source": "synthetic", "registry_version": None, "metrics": {}}
    bundle = write_bundle(out, model, fallback, seen=None, info=info, serve=serve)
    return bundle, cluster


def session_bodies(cluster: np.ndarray, n: int, seed: int = 1) -> list[dict[str, Any]]:
    """``n`` session requests: 1-6 items of one cluster each (known items, ids ``i<n>``)."""
    from recpipe.features.idmap import N_RESERVED

    rng = np.random.default_rng(seed)
    real = cluster[N_RESERVED:]
    members: dict[int, np.ndarray] = {}
    bodies = []
    for _ in range(n):
        c = int(real[rng.integers(len(real))])
        if c not in members:
            members[c] = np.flatnonzero(real == c)
        chosen = rng.choice(members[c], size=min(len(members[c]), int(rng.integers(1, 7))))
        bodies.append({"items": [f"i{i}" for i in chosen], "k": K})
    return bodies


# ---------------------------------------------------------------------- in process
def in_process(bundle: Path, bodies: list[dict[str, Any]]) -> tuple[Any, dict[str, float]]:
    """The predictor of the bundle, and ms per request one at a time and in batches of 64."""
    from recpipe.serve.predictor import Predictor
    from recpipe.serve.schemas import SessionRequest

    predictor = Predictor.from_artifact(bundle)
    requests = [SessionRequest(**b) for b in bodies]
    for r in requests[:20]:
        predictor.recommend_sessions([r])
    start = time.perf_counter()
    singles = requests[:200]
    for r in singles:
        predictor.recommend_sessions([r])
    single_ms = 1000 * (time.perf_counter() - start) / len(singles)
    start = time.perf_counter()
    batched = requests[:640]
    for i in range(0, len(batched), 64):
        predictor.recommend_sessions(batched[i : i + 64])
    batch_ms = 1000 * (time.perf_counter() - start) / len(batched)
    return predictor, {"single_ms": single_ms, "batched_ms": batch_ms}


def ann_recall(exact: Any, ann: Any, bodies: list[dict[str, Any]]) -> float:
    """recall@K of the ANN predictor's answers against the exact predictor's."""
    from recpipe.serve.index import recall_at_k
    from recpipe.serve.schemas import SessionRequest

    requests = [SessionRequest(**b) for b in bodies[:500]]
    want = exact.recommend_sessions(requests)
    got = ann.recommend_sessions(requests)
    ids = {v: i for i, v in enumerate({x for a in want + got for x in a.items})}

    def matrix(answers: list[Any]) -> np.ndarray:
        out = np.full((len(answers), K), -1)
        for row, a in enumerate(answers):
            out[row, : len(a.items)] = [ids[x] for x in a.items]
        return out

    return recall_at_k(matrix(got), matrix(want))


# ---------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(bundle: Path, port: int, log_file: Path, workers: int = 0) -> subprocess.Popen:
    """``bentoml serve`` of the service over ``bundle``, as ``recpipe serve`` starts it."""
    from recpipe.serve.package import serve_env

    env = {**serve_env(workers), "RECPIPE_BUNDLE": str(bundle)}
    cmd = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "recpipe.serve.service:RecpipeService",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with open(log_file, "wb") as out:
        process = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log_file.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(process)
    raise RuntimeError("server not ready after 300 s")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


async def _client(
    port: int, payloads: list[bytes], deadline: float, latencies: list[float], errors: list[str]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    try:
        while time.perf_counter() < deadline:
            payload = payloads[i % len(payloads)]
            i += 1
            start = time.perf_counter()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = None
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                elif name.strip().lower() == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
            if chunked:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            else:
                await reader.readexactly(length or 0)
            latencies.append(time.perf_counter() - start)
            if status != 200:
                errors.append(str(status))
    finally:
        writer.close()


def load(port: int, bodies: list[dict[str, Any]], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` keep-alive connections sending session requests for ``seconds``."""
    payloads = []
    for body in bodies:
        data = json.dumps(body).encode()
        payloads.append(
            b"POST /recommend/session HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(data)).encode()
            + b"\r\n\r\n"
            + data
        )
    latencies: list[float] = []
    errors: list[str] = []

    async def main() -> float:
        deadline = time.perf_counter() + seconds
        start = time.perf_counter()
        step = max(1, len(payloads) // clients)
        shards = [payloads[i * step :] + payloads[: i * step] for i in range(clients)]
        await asyncio.gather(*(_client(port, s, deadline, latencies, errors) for s in shards))
        return time.perf_counter() - start

    elapsed = asyncio.run(main())
    lat = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": len(errors),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "rps": len(lat) / elapsed,
    }


# ---------------------------------------------------------------------- main
def run_case(
    n_items: int, ann: bool, args: argparse.Namespace, work: Path, bodies_cache: dict
) -> dict[str, Any]:
    from recpipe.config import ServeParams

    serve = ServeParams(
        ann_min_items=1 if ann else n_items + 1,
        ann_index="ivf",
        ann_nprobe=args.nprobe,
        quantize=args.quantize,
        max_k=100,
    )
    name = f"{n_items}-{'ann' if ann else 'exact'}"
    bundle, cluster = synthetic_bundle(n_items, work / name, serve)
    bodies = session_bodies(cluster, 2000)
    bodies_cache[n_items] = bodies
    predictor, timing = in_process(bundle, bodies)
    result: dict[str, Any] = {
        "items": n_items,
        "index": predictor.index.describe() if predictor.index is not None else None,
        **timing,
    }
    if ann:
        exact_serve = serve.model_copy(update={"ann_min_items": n_items + 1, "quantize": "none"})
        exact_bundle, _ = synthetic_bundle(n_items, work / f"{name}-ref", exact_serve)
        reference, ref_timing = in_process(exact_bundle, bodies)
        result["recall@20"] = ann_recall(reference, predictor, bodies)
        result["exact_single_ms"] = ref_timing["single_ms"]
        del reference
        shutil.rmtree(exact_bundle, ignore_errors=True)
    del predictor
    port = free_port()
    process = start_server(bundle, port, work / f"{name}.log", args.workers)
    try:
        load(port, bodies, 4, 2.0)  # warm-up
        result["runs"] = [load(port, bodies, c, args.seconds) for c in args.clients]
    finally:
        stop_server(process)
    shutil.rmtree(bundle, ignore_errors=True)
    return result


def report(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="POST /recommend/session (top-20), real server on 127.0.0.1")
    for col in (
        "items",
        "index",
        "clients",
        "p50 ms",
        "p99 ms",
        "req/s",
        "errors",
        "in-process ms/query (single | batch 64)",
        "recall@20 vs exact",
    ):
        table.add_column(col, justify="right")
    for r in results:
        index = r["index"] or {}
        kind = f"{index.get('kind', '-')}" + (
            f" {index['quantize']}" if index.get("quantize") not in (None, "none") else ""
        )
        recall = f"{r['recall@20']:.3f}" if "recall@20" in r else "-"
        for run in r["runs"]:
            table.add_row(
                f"{r['items']:,}",
                kind,
                str(run["clients"]),
                f"{run['p50_ms']:.2f}",
                f"{run['p99_ms']:.2f}",
                f"{run['rps']:.0f}",
                str(run["errors"]),
                f"{r['single_ms']:.3f} | {r['batched_ms']:.3f}",
                recall,
            )
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=8.0, help="load per client count")
    parser.add_argument("--nprobe", type=int, default=32, help="IVF cells searched")
    parser.add_argument("--quantize", choices=["none", "int8"], default="none")
    parser.add_argument(
        "--ann-min-items", type=int, default=1_000_000, help="sizes from here get an ANN run too"
    )
    parser.add_argument("--ann-only", action="store_true", help="skip exact runs of ANN sizes")
    parser.add_argument(
        "--workers", type=int, default=0, help="service processes (0: one per CPU core)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for key, value in {
        "BENTOML_DO_NOT_TRACK": "true",
        "DO_NOT_TRACK": "true",
    }.items():
        os.environ.setdefault(key, value)
    results = []
    cache: dict[int, Any] = {}
    with tempfile.TemporaryDirectory(prefix="recpipe-bench-serve-") as tmp:
        for n in args.sizes:
            cases = (
                [False] if n < args.ann_min_items else ([True] if args.ann_only else [False, True])
            )
            for ann in cases:
                print(f"... {n:,} items, {'ANN' if ann else 'exact'}", flush=True)
                results.append(run_case(n, ann, args, Path(tmp), cache))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
