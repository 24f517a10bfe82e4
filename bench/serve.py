"""Serving benchmark: latency and throughput of ``POST /recommend/session`` on a real server.

For catalogues of 10k, 100k and 1M items it builds a synthetic matrix-factorization
model (clustered item embeddings, like trained factors: items scattered around 1024
centres in 64 dimensions, as far from their centre as the centres are from the origin,
so clusters overlap), writes a serving bundle and starts the real BentoML service on it
(``bentoml serve recpipe.serve.service:RecpipeService`` on 127.0.0.1 with the bundle
named by ``RECPIPE_BUNDLE``, so no BentoML model store is needed: it runs on a fresh
clone). Each request is a session of 1-6 items of one cluster; the model has no session
scoring, so it is answered by the recency-weighted mean of the items' vectors searched
in the item index (``item_aggregate``): exact top-K by a matrix product, or faiss IVF.

Targets, each driven by 1 and 16 concurrent keep-alive clients, in rounds that
interleave them (so that a change in the machine's load hits all of them alike):

- ``recpipe``: the service as ``recpipe serve`` runs it (the lean path, one listening
  socket per worker);
- ``recpipe-bentoml``: the same service with ``RECPIPE_FAST_PATH=0 RECPIPE_REUSEPORT=0``:
  every request through BentoML's endpoint, all workers on BentoML's shared socket
  (the service as it was before the lean path);
- ``recpipe@REV`` (with ``--baseline REV``): the service of the recpipe package of a git
  revision (``git archive``), e.g. ``HEAD``, the committed code before the working
  tree's changes, on the same bundle;
- ``bentoml``, ``fastapi``, ``starlette``: the framework ceilings, bare services that
  answer the same request with a constant 20-item JSON body (the BentoML one with the
  service's settings: access log off, route left out of tracing; all of them with one
  ``SO_REUSEPORT`` socket per worker, like ``recpipe``), with as many workers.

Printed per run: p50 / p99 latency and requests/s seen by the clients, errors (non-200
answers and broken connections), the server's CPU per request (all its processes), how
the connections split over the workers and the 1-minute load average when the run
started; then the medians per target, beside the in-process time of the same requests
(one at a time and in batches of 64, with one BLAS / OpenMP thread) and, for the ANN
index, recall@20 against exact search. The load generator is a minimal asyncio HTTP/1.1
client so that it takes little of the CPU the servers need; on a shared machine the
figures are contended by whatever else runs (hence the load average). Run::

    .venv/bin/python bench/serve.py                       # 10k, 100k exact; 1M exact and ANN
    .venv/bin/python bench/serve.py --sizes 100000 --clients 1 16
    .venv/bin/python bench/serve.py --sizes 100000 --targets recpipe bentoml --rounds 3
    .venv/bin/python bench/serve.py --sizes 100000 --baseline HEAD   # before and after
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
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
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
TARGETS = ("recpipe", "recpipe-bentoml", "bentoml", "fastapi", "starlette")
BARE = ("bentoml", "fastapi", "starlette")
#: The issue's goal at 16 clients (issue 22): p99 and throughput.
GOAL_P99_MS, GOAL_RPS, GOAL_OF_BENTOML = 25.0, 1000.0, 1 / 1.5
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
    """The predictor of the bundle, and ms per request one at a time and in batches of 64,
    with one BLAS and one torch thread (as each server worker on a 2-core machine; more
    threads here would compete with each other and inflate the figures)."""
    import torch
    from threadpoolctl import threadpool_limits

    from recpipe.serve.predictor import Predictor
    from recpipe.serve.schemas import SessionRequest

    predictor = Predictor.from_artifact(bundle)
    requests = [SessionRequest(**b) for b in bodies]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
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
    finally:
        torch.set_num_threads(threads)
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


# ---------------------------------------------------------------------- the servers
#: The bare framework services (written to a temporary module ``bare_apps.py``).
BARE_APPS = '''
"""Bare services answering POST /recommend/session with a constant JSON body."""
import os
import socket
import sys

ANSWER = {
    "items": [f"i{i}" for i in range(20)],
    "scores": [0.5] * 20,
    "strategy": "item_aggregate",
}


def starlette_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def session(request):
        await request.body()
        return JSONResponse(ANSWER)

    async def ready(request):
        return Response("ok")

    return Starlette(
        routes=[
            Route("/recommend/session", session, methods=["POST"]),
            Route("/readyz", ready),
        ]
    )


def fastapi_app():
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/recommend/session")
    async def session(body: dict) -> dict:
        return ANSWER

    @app.get("/readyz")
    async def ready() -> str:
        return "ok"

    return app


if os.environ.get("BARE_KIND") == "bentoml":  # `bentoml serve bare_apps:Bare`
    import bentoml

    from recpipe.serve.reuseport import spread_connections

    spread_connections()

    @bentoml.service(
        name="bare",
        logging={"access": {"enabled": False}},
        tracing={"excluded_urls": ["/recommend/session"]},
    )
    class Bare:
        @bentoml.api(route="/recommend/session")
        async def session(self, items: list[str], k: int = 20) -> dict:
            return ANSWER


if __name__ == "__main__":  # python bare_apps.py starlette|fastapi PORT: one worker
    import uvicorn

    kind, port = sys.argv[1], int(sys.argv[2])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    app = starlette_app() if kind == "starlette" else fastapi_app()
    config = uvicorn.Config(app, log_config=None, access_log=False, server_header=False)
    uvicorn.Server(config).run(sockets=[sock])
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One target: its processes (a ``bentoml serve`` or N uvicorn workers) on a port."""

    name: str
    port: int
    processes: list[subprocess.Popen] = field(default_factory=list)

    def tree(self) -> list[Any]:
        """Every live process of the server (psutil), supervisors included."""
        import psutil

        out = []
        for p in self.processes:
            try:
                root = psutil.Process(p.pid)
                out += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return out

    def cpu_seconds(self) -> float:
        import psutil

        total = 0.0
        for proc in self.tree():
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def workers(self) -> list[Any]:
        """The worker processes: BentoML's service workers, or the bare uvicorn ones."""
        import psutil

        out = []
        for proc in self.tree():
            try:
                line = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if "_bentoml_impl.worker.service" in line or "bare_apps.py" in line:
                out.append(proc)
        return out

    def split(self) -> str:
        """Open client connections per worker process, e.g. ``9/7`` (largest first)."""
        import psutil

        counts = []
        for proc in self.workers():
            try:
                conns = proc.net_connections(kind="tcp")
            except psutil.Error:
                continue
            counts.append(
                sum(
                    1
                    for c in conns
                    if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port
                )
            )
        return "/".join(str(n) for n in sorted(counts, reverse=True)) or "-"

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: its workers
                process.wait()


def _spawn(cmd: list[str], env: dict[str, str], log_file: Path, cwd: Path) -> subprocess.Popen:
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_ready(server: Server, log_file: Path, timeout: float = 300.0) -> Server:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in server.processes):
            server.stop()
            raise RuntimeError(f"{server.name} exited:\n{log_file.read_text()[-3000:]}")
        try:
            url = f"http://127.0.0.1:{server.port}/readyz"
            if httpx.get(url, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f} s")


def server_env(workers: int, base: dict[str, str]) -> dict[str, str]:
    """The environment ``recpipe serve`` gives ``bentoml serve`` (workers, threads)."""
    from recpipe.serve.package import serve_env

    env = serve_env(workers, base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), base.get("PYTHONPATH")]))
    return env


def extract_revision(rev: str, work: Path) -> Path:
    """The ``recpipe`` package of git revision ``rev`` (``git archive``), in a directory
    of ``work`` to put first on ``PYTHONPATH``."""
    import io
    import tarfile

    out = work / "baseline"
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, "recpipe"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(out, filter="data")
    return out


def start_recpipe(
    name: str,
    bundle: Path,
    work: Path,
    workers: int,
    base: dict[str, str],
    baseline: Path | None = None,
) -> Server:
    """``bentoml serve`` of the recpipe service over ``bundle``, as ``recpipe serve`` starts it;
    ``recpipe-bentoml`` without the lean path and with the shared socket; ``recpipe@REV``
    the package extracted to ``baseline``."""
    env = {**server_env(workers, base), "RECPIPE_BUNDLE": str(bundle)}
    cwd = REPO
    if name == "recpipe-bentoml":
        env.update({"RECPIPE_FAST_PATH": "0", "RECPIPE_REUSEPORT": "0"})
    elif "@" in name and baseline is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(baseline), base.get("PYTHONPATH")]))
        cwd = baseline
        # older services load the bundle's store model even with RECPIPE_BUNDLE set: give
        # them a store of their own that holds it
        env["BENTOML_HOME"] = str(work / "baseline-bentoml-home")
        store = (
            "import shutil, sys, bentoml\n"
            "with bentoml.models.create('recpipe-champion') as m:\n"
            "    shutil.copytree(sys.argv[1], m.path, dirs_exist_ok=True)\n"
        )
        subprocess.run([sys.executable, "-c", store, str(bundle)], env=env, cwd=cwd, check=True)
    port = free_port()
    cmd = [sys.executable, "-m", "bentoml", "serve", "recpipe.serve.service:RecpipeService"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    log_file = work / f"{name.replace('@', '-at-').replace('/', '_')}.log"
    server = Server(name, port, [_spawn(cmd, env, log_file, cwd)])
    return _wait_ready(server, log_file)


def start_bare(kind: str, work: Path, workers: int, base: dict[str, str]) -> Server:
    """A bare ``kind`` service with ``workers`` worker processes."""
    from recpipe.serve.package import serve_workers

    (work / "bare_apps.py").write_text(BARE_APPS)
    env = server_env(workers, base)
    port = free_port()
    log_file = work / f"bare-{kind}.log"
    if kind == "bentoml":
        env["BARE_KIND"] = "bentoml"
        env["BENTOML_CONFIG_OPTIONS"] = f"services.bare.workers={serve_workers(workers)}"
        cmd = [sys.executable, "-m", "bentoml", "serve", "bare_apps:Bare", "--working-dir"]
        cmd += [str(work), "--host", "127.0.0.1", "--port", str(port)]
        processes = [_spawn(cmd, env, log_file, work)]
    else:
        cmd = [sys.executable, str(work / "bare_apps.py"), kind, str(port)]
        processes = [_spawn(cmd, env, log_file, work) for _ in range(serve_workers(workers))]
    return _wait_ready(Server(kind, port, processes), log_file)


# ---------------------------------------------------------------------- the load
async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> int:
    """Send one request, read its whole answer; the HTTP status."""
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
    return status


async def _client(
    port: int,
    payloads: list[bytes],
    deadline: float,
    latencies: list[float],
    errors: list[str],
    done: asyncio.Event,
    finished: list[int],
) -> None:
    """One keep-alive connection sending requests until ``deadline`` (reconnecting after a
    broken connection, counted as an error); it stays open until ``done``."""
    reader = writer = None
    i = 0
    try:
        while time.perf_counter() < deadline:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            payload = payloads[i % len(payloads)]
            i += 1
            start = time.perf_counter()
            try:
                status = await _exchange(reader, writer, payload)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors.append(type(exc).__name__)
                writer.close()
                reader = writer = None
                continue
            latencies.append(time.perf_counter() - start)
            if status != 200:
                errors.append(str(status))
        finished.append(1)
        await done.wait()
    finally:
        if writer is not None:
            writer.close()


def load(
    server: Server, bodies: list[dict[str, Any]], clients: int, seconds: float
) -> dict[str, Any]:
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
    load1 = os.getloadavg()[0]
    cpu0 = server.cpu_seconds()
    split = "-"

    async def main() -> float:
        nonlocal split
        done = asyncio.Event()
        finished: list[int] = []
        deadline = time.perf_counter() + seconds
        start = time.perf_counter()
        step = max(1, len(payloads) // clients)
        shards = [payloads[i * step :] + payloads[: i * step] for i in range(clients)]
        tasks = [
            asyncio.ensure_future(
                _client(server.port, s, deadline, latencies, errors, done, finished)
            )
            for s in shards
        ]
        while len(finished) < clients and not all(t.done() for t in tasks):
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        split = server.split()  # the connections are still open
        done.set()
        await asyncio.gather(*tasks)
        return elapsed

    try:
        import uvloop

        elapsed = uvloop.run(main())
    except ImportError:
        elapsed = asyncio.run(main())
    cpu = server.cpu_seconds() - cpu0
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "target": server.name,
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "rps": len(latencies) / elapsed,
        "server_cpu_ms": 1000 * cpu / max(len(latencies), 1),
        "split": split,
        "load1": load1,
    }


# ---------------------------------------------------------------------- main
def run_case(
    n_items: int,
    ann: bool,
    args: argparse.Namespace,
    work: Path,
    bare: dict[str, Server],
    base_env: dict[str, str],
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
    servers = dict(bare)
    own: list[Server] = []
    try:
        for target in args.targets:
            if target.startswith("recpipe"):
                print(f"    starting {target}", flush=True)
                server = start_recpipe(
                    target, bundle, work, args.workers, base_env, args.baseline_dir
                )
                own.append(server)
                servers[target] = server
        for target in args.targets:
            load(servers[target], bodies, 4, 1.5)  # warm-up
        runs = []
        for r in range(args.rounds):
            shift = r % len(args.targets)  # each round starts with another target
            order = args.targets[shift:] + args.targets[:shift]
            for clients in args.clients:
                for target in order:
                    run = load(servers[target], bodies, clients, args.seconds)
                    run["round"] = r + 1
                    runs.append(run)
                    print(
                        f"    round {r + 1} {target:>15} {clients:>3} clients: "
                        f"p50 {run['p50_ms']:6.2f} ms  p99 {run['p99_ms']:6.2f} ms  "
                        f"{run['rps']:6.0f} req/s  errors {run['errors']}  "
                        f"server {run['server_cpu_ms']:.2f} ms CPU/req  split {run['split']}  "
                        f"load {run['load1']:.2f}",
                        flush=True,
                    )
        result["runs"] = runs
    finally:
        for server in own:
            server.stop()
    shutil.rmtree(bundle, ignore_errors=True)
    return result


def _summary(runs: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["target"], run["clients"]), []).append(run)
    return {
        key: {
            "p50_ms": statistics.median(r["p50_ms"] for r in rs),
            "p99_ms": statistics.median(r["p99_ms"] for r in rs),
            "rps": statistics.median(r["rps"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "server_cpu_ms": statistics.median(r["server_cpu_ms"] for r in rs),
            "splits": " ".join(r["split"] for r in rs),
            "load1": " ".join(f"{r['load1']:.1f}" for r in rs),
            "n": len(rs),
        }
        for key, rs in groups.items()
    }


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(130, shutil.get_terminal_size().columns))
    for r in results:
        index = r["index"] or {}
        kind = f"{index.get('kind', '-')}" + (
            f" {index['quantize']}" if index.get("quantize") not in (None, "none") else ""
        )
        recall = f", recall@20 vs exact {r['recall@20']:.3f}" if "recall@20" in r else ""
        table = Table(
            title=f"POST /recommend/session (top-20), {r['items']:,} items, {kind} index: "
            f"medians of {args.rounds} round(s) of {args.seconds:g} s on 127.0.0.1"
        )
        cols = ("target", "clients", "p50 ms", "p99 ms", "req/s", "errors")
        cols += ("server CPU ms/req", "connections per worker", "load avg (1 min)")
        for col in cols:
            table.add_column(col, justify="right")
        summary = _summary(r["runs"])
        for target in args.targets:
            for clients in args.clients:
                s = summary.get((target, clients))
                if s is None:
                    continue
                table.add_row(
                    target,
                    str(clients),
                    f"{s['p50_ms']:.2f}",
                    f"{s['p99_ms']:.2f}",
                    f"{s['rps']:.0f}",
                    str(s["errors"]),
                    f"{s['server_cpu_ms']:.2f}",
                    s["splits"],
                    s["load1"],
                )
        console.print(table)
        console.print(
            f"in process, ms/query (one BLAS thread): {r['single_ms']:.3f} single, "
            f"{r['batched_ms']:.3f} in batches of 64{recall}"
        )
        top = max(args.clients)
        ceiling = summary.get(("bentoml", top))
        for target in args.targets:
            ours = summary.get((target, top))
            if ours is None or not target.startswith("recpipe"):
                continue
            verdict = (
                f"{target} at {top} clients: p99 {ours['p99_ms']:.1f} ms (goal <= "
                f"{GOAL_P99_MS:g}), {ours['rps']:.0f} req/s (goal >= {GOAL_RPS:g}"
            )
            if ceiling is not None:
                verdict += (
                    f", or >= {GOAL_OF_BENTOML:.2f} x bare BentoML's {ceiling['rps']:.0f}: "
                    f"{ours['rps'] / ceiling['rps']:.2f} x"
                )
            console.print(verdict + f"), {ours['errors']} errors")


def main() -> None:
    base_env = dict(os.environ)  # the servers' environment, before this process's settings
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument(
        "--targets", nargs="+", choices=TARGETS, default=list(TARGETS), help="what to load"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs per target and client count (medians)"
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="load per run")
    parser.add_argument("--nprobe", type=int, default=32, help="IVF cells searched")
    parser.add_argument("--quantize", choices=["none", "int8"], default="none")
    parser.add_argument(
        "--ann-min-items", type=int, default=1_000_000, help="sizes from here get an ANN run too"
    )
    parser.add_argument("--ann-only", action="store_true", help="skip exact runs of ANN sizes")
    parser.add_argument(
        "--workers", type=int, default=0, help="service processes (0: one per CPU core)"
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also serve the recpipe package of this git revision as target recpipe@REV "
        "(e.g. HEAD: the committed code, before the working tree's changes)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    args.targets = list(dict.fromkeys(args.targets))
    args.baseline_dir = None
    if args.baseline:
        args.targets.insert(1, f"recpipe@{args.baseline}")
    logging.basicConfig(level=logging.WARNING)
    for key, value in {"BENTOML_DO_NOT_TRACK": "true", "DO_NOT_TRACK": "true"}.items():
        os.environ.setdefault(key, value)
        base_env.setdefault(key, value)
    print(
        f"{os.cpu_count()} CPUs, load average {'{:.2f} {:.2f} {:.2f}'.format(*os.getloadavg())}",
        flush=True,
    )
    results = []
    bare: dict[str, Server] = {}
    with tempfile.TemporaryDirectory(prefix="recpipe-bench-serve-") as tmp:
        work = Path(tmp)
        if args.baseline:
            args.baseline_dir = extract_revision(args.baseline, work)
        try:
            for kind in BARE:
                if kind in args.targets:
                    print(f"... starting bare {kind}", flush=True)
                    bare[kind] = start_bare(kind, work, args.workers, base_env)
            for n in args.sizes:
                if n < args.ann_min_items:
                    cases = [False]
                else:
                    cases = [True] if args.ann_only else [False, True]
                for ann in cases:
                    print(f"... {n:,} items, {'ANN' if ann else 'exact'}", flush=True)
                    results.append(run_case(n, ann, args, work, bare, base_env))
        finally:
            for server in bare.values():
                server.stop()
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
