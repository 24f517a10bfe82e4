"""A real server: the bundle packaged as a Bento, `recpipe serve` on a free loopback port,
hit over HTTP with good and bad requests and 50 concurrent clients."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.serve.helpers import INFO, item_id, make_bundle, user_id

pytestmark = pytest.mark.slow

pytest.importorskip("bentoml")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"server not ready after {timeout} s:\n{log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # recpipe serve forwards it to bentoml serve
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # our own session: the server's workers
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`recpipe serve` of a Bento packaged from a planted bundle, in a workspace that the
    package step left as the package stage does (reports/package.json, bentos/)."""
    from recpipe.paths import Paths
    from recpipe.serve.package import package_bundle

    root = tmp_path_factory.mktemp("workspace")
    paths = Paths.at(root)
    bundle = make_bundle(tmp_path_factory.mktemp("bundle") / "bundle")
    report = package_bundle(bundle, paths.bento_archive, labels={"registry_version": "7"})
    paths.reports_dir.mkdir()
    paths.package_json.write_text(json.dumps(report))
    port = free_port()
    log = root / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "recpipe.cli", "serve", "--port", str(port), "--root", root],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
        yield url, report, log
    finally:
        stop(process)


def post(url: str, path: str, body, client: httpx.Client | None = None) -> httpx.Response:
    send = client or httpx
    if isinstance(body, str | bytes):
        return send.post(
            url + path, content=body, headers={"content-type": "application/json"}, timeout=30
        )
    return send.post(url + path, json=body, timeout=30)


def test_every_endpoint_answers(server) -> None:
    url, report, _ = server
    r = httpx.get(f"{url}/model", timeout=30)
    assert r.status_code == 200
    info = r.json()
    assert info["name"] == "mf_bpr" and info["registry_version"] == INFO["registry_version"]
    assert info["data_hash"] == INFO["data_hash"] and info["metrics"] == INFO["metrics"]
    answer = post(url, "/recommend", {"user_id": user_id(3), "k": 5}).json()
    assert answer["strategy"] == "model" and len(answer["items"]) == 5
    answer = post(url, "/recommend/session", {"items": [item_id(12)], "k": 3}).json()
    assert answer["strategy"] == "item_aggregate" and answer["items"][0] == item_id(13)
    answer = post(url, "/similar", {"item_id": item_id(4), "k": 3}).json()
    assert answer["strategy"] == "item_similarity"
    assert report["bento_tag"].startswith("recpipe:")


@pytest.mark.parametrize(
    ("path", "body", "strategy"),
    [
        ("/recommend", {"user_id": "nobody-knows-me"}, "popularity"),
        ("/recommend", {"user_id": "nobody", "context": {"event_type": "cart"}}, None),
        ("/recommend/session", {"items": ["ghost-1", "ghost-2"], "k": 4}, "popularity"),
        ("/recommend/session", {"items": []}, "popularity"),
        ("/similar", {"item_id": "ghost"}, "popularity"),
    ],
)
def test_unknown_ids_and_empty_sessions_get_a_fallback(server, path, body, strategy) -> None:
    r = post(server[0], path, body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["items"] and len(answer["items"]) == len(answer["scores"])
    assert answer["strategy"] == (strategy or "context_popularity")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/recommend", "{malformed"),
        ("/recommend", b"\xff\xfe"),
        ("/recommend", {"user_id": ["u3"]}),
        ("/recommend", {"user_id": "u3", "k": "20"}),
        ("/recommend", {"user_id": "u3", "k": 0}),
        ("/recommend", {"user_id": "u3", "k": 100000}),
        ("/recommend", {"user_id": "u3", "k": 11}),
        ("/recommend", {"user_id": "u3", "exclude_seen": "yes"}),
        ("/recommend/session", {"items": [1, 2]}),
        ("/recommend/session", {"items": ["i4"] * 9}),
        ("/recommend/session", {"items": ["i4"], "event_types": ["fly"]}),
        ("/recommend/session", {}),
        ("/similar", {"item_id": ""}),
        ("/similar", {"metadata": {"attributes": {"price": "cheap"}}}),
    ],
)
def test_bad_requests_get_400_never_500(server, path, body) -> None:
    r = post(server[0], path, body)
    assert r.status_code == 400, r.text
    assert "error" in r.text


def test_fifty_concurrent_clients_get_no_error(server) -> None:
    url = server[0]
    bodies = [
        ("/recommend/session", {"items": [item_id(12)], "k": 5}),
        ("/recommend/session", {"items": [item_id(4), "ghost"], "event_types": ["view", "cart"]}),
        ("/recommend", {"user_id": user_id(5), "k": 3}),
        ("/recommend", {"user_id": "ghost", "context": {"items": [item_id(8)]}}),
        ("/similar", {"item_id": item_id(9)}),
    ]

    def client(n: int) -> list[int]:
        with httpx.Client(timeout=30) as c:
            return [
                post(url, *bodies[(n + i) % len(bodies)], client=c).status_code for i in range(6)
            ]

    with ThreadPoolExecutor(max_workers=50) as pool:
        codes = [code for codes in pool.map(client, range(50)) for code in codes]
    assert len(codes) == 300
    assert set(codes) == {200}


def test_requests_that_were_500s_are_client_errors_over_http(server) -> None:
    url = server[0]
    r = post(url, "/recommend/session", {"items": [item_id(4)], "timestamps": [-1e13]})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["timestamps", 0]
    for path in ("/recommend", "/recommend/session", "/similar"):
        r = httpx.post(url + path, content=b"x", headers={"content-type": "multipart/form-data"})
        assert r.status_code == 415, r.text
    r = httpx.post(url + "/recommend", content=b" " * 2_000_000, timeout=30)
    assert r.status_code == 413 and "max_request_bytes" in r.json()["error"]


def test_swagger_reads_a_titled_document_with_the_limits(server) -> None:
    doc = httpx.get(server[0] + "/docs.json", timeout=30).json()
    assert doc["info"]["title"] == "recpipe recommendations"
    post_ = doc["paths"]["/recommend"]["post"]
    assert {"400", "413", "415"} <= set(post_["responses"])
    assert post_["requestBody"]["content"]["application/json"]["examples"]


def test_the_bentos_own_code_serves_and_client_errors_log_no_traceback(server) -> None:
    """Last in the module: reads the log of every request before it."""
    from recpipe.serve.package import bentoml_home

    url, report, log = server
    post(url, "/recommend", {"user_id": "u3", "k": 0})
    time.sleep(0.5)
    text = log.read_text()
    bento = Path(bentoml_home(), "bentos", *report["bento_tag"].split(":"))
    code = bento.resolve() / "src" / "recpipe"
    # the CLI says which Bento and model; each worker says which code it runs
    assert f"serving Bento {report['bento_tag']}" in text and report["model_tag"] in text
    assert f"with the code in {code}" in text, text[-3000:]
    assert "client error 400 on POST /recommend" in text
    assert "Traceback" not in text and "[ERROR]" not in text, text[-3000:]
