"""A real `bentoml serve` with two workers over a bundle directory (no model store): each
worker listens on its own socket, keep-alive clients reach both, the lean path answers
and Prometheus still counts its requests; and packaging refuses a store-less service."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.serve.helpers import item_id, make_bundle
from tests.serve.test_server import free_port, stop, wait_ready

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux SO_REUSEPORT"),
]

psutil = pytest.importorskip("psutil")
pytest.importorskip("bentoml")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`bentoml serve` of the service with 2 workers, RECPIPE_BUNDLE set, an empty store."""
    from recpipe.serve.package import serve_env

    root = tmp_path_factory.mktemp("workers")
    bundle = make_bundle(root / "bundle")
    env = {
        **serve_env(2),
        "RECPIPE_BUNDLE": str(bundle),
        "BENTOML_HOME": str(root / "empty-home"),
        "BENTOML_CONFIG_OPTIONS": "services.recpipe.workers=2",
    }
    port = free_port()
    log = root / "serve.log"
    cmd = [sys.executable, "-m", "bentoml", "serve", "recpipe.serve.service:RecpipeService"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
        yield url, port, process
    finally:
        stop(process)


def workers(process: subprocess.Popen) -> list:
    """The service's worker processes (they hold the app's listening sockets)."""
    out = []
    for child in psutil.Process(process.pid).children(recursive=True):
        try:
            if "_bentoml_impl.worker.service" in " ".join(child.cmdline()):
                out.append(child)
        except psutil.NoSuchProcess:
            pass
    return out


def connections(proc, port: int, status: str) -> list:
    return [
        c
        for c in proc.net_connections(kind="tcp")
        if c.status == status and c.laddr and c.laddr.port == port
    ]


def test_each_worker_listens_on_its_own_socket(served) -> None:
    _, port, process = served
    found = workers(process)
    assert len(found) == 2
    inodes = set()
    for proc in found:
        listening = connections(proc, port, psutil.CONN_LISTEN)
        assert len(listening) == 1, listening  # its own socket, not the shared one
        inodes.add(os.readlink(f"/proc/{proc.pid}/fd/{listening[0].fd}"))
    assert len(inodes) == 2  # two sockets, one per worker
    # the supervisor's shared socket does not listen any more
    supervisor = connections(psutil.Process(process.pid), port, psutil.CONN_LISTEN)
    assert supervisor == []


def test_keep_alive_clients_reach_both_workers_and_metrics_count_them(served) -> None:
    url, port, process = served

    async def main() -> list[int]:
        limits = httpx.Limits(max_connections=1)
        clients = [httpx.AsyncClient(base_url=url, limits=limits) for _ in range(16)]
        body = {"items": [item_id(12)], "k": 3}
        try:
            answers = await asyncio.gather(
                *(c.post("/recommend/session", json=body) for c in clients)
            )
            per_worker = [
                len(connections(p, port, psutil.CONN_ESTABLISHED)) for p in workers(process)
            ]
            assert all(a.status_code == 200 for a in answers)
            assert {a.json()["strategy"] for a in answers} == {"item_aggregate"}
            return per_worker
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))

    per_worker = asyncio.run(main())
    assert sum(per_worker) == 16
    assert min(per_worker) >= 1  # all 16 on one worker: probability 2 / 2**16
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("bentoml_service_request_total")
        and 'endpoint="/recommend/session"' in line
        and 'http_response_code="200"' in line
    ]
    assert counted and sum(float(line.rsplit(" ", 1)[1]) for line in counted) >= 16


def test_packaging_refuses_a_service_imported_with_a_bundle_directory(tmp_path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    script = (
        "import sys\n"
        "from recpipe.errors import StageError\n"
        "import recpipe.serve.service\n"
        "from recpipe.serve.package import package_bundle\n"
        "try:\n"
        "    package_bundle(sys.argv[1], sys.argv[2], labels={'registry_version': '7'})\n"
        "except StageError as exc:\n"
        "    print('refused:', exc)\n"
    )
    env = {**os.environ, "RECPIPE_BUNDLE": str(bundle), "BENTOML_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(bundle), str(tmp_path / "recpipe.bento")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "refused:" in done.stdout and "RECPIPE_BUNDLE" in done.stdout, done.stdout
    assert not (tmp_path / "recpipe.bento").exists()
