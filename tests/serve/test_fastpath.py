"""The service's ASGI layer: what it answers and what it leaves to BentoML, its 400, 413,
415 and 500 bodies, and (through the real service app) the same answers as BentoML's
endpoints."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sys

import pytest
from pydantic import BaseModel, ValidationError

from recpipe.serve.fastpath import (
    SERVER_ERROR,
    ClientErrorsAtInfo,
    FastRoutes,
    Routes,
    json_bytes,
    validation_error_body,
)
from tests.serve.helpers import item_id, make_bundle, service_client, user_id


def call(app, method: str, path: str, body: bytes = b"", headers=None, chunks=None):
    """One request through an ASGI app; (status, headers, body) of the answer."""
    parts = chunks or [body]
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(parts) - 1}
        for i, c in enumerate(parts)
    ]
    sent = []

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": headers if headers is not None else [(b"content-type", b"application/json")],
    }
    asyncio.run(app(scope, receive, send))
    if not sent:
        return None, {}, b""
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


class Passed:
    """The app behind the middleware: records what reached it (path and body)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        self.paths.append(scope["path"])
        if scope["method"] == "POST":
            message = await receive()
            self.bodies.append(message.get("body", b""))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"bentoml"})


def echo_routes(max_body_bytes: int = 64) -> Routes:
    async def echo(body: bytes) -> tuple[int, bytes]:
        return 200, json_bytes({"got": body.decode()})

    async def broken(body: bytes) -> tuple[int, bytes]:
        raise RuntimeError("secret internals")

    async def refuse(body: bytes) -> tuple[int, bytes]:
        return 400, json_bytes({"error": "1 validation error for X", "detail": []})

    return Routes(
        {"/echo": echo, "/broken": broken, "/refuse": refuse, "/behind": None},
        max_body_bytes=max_body_bytes,
        documents={"/doc.json": b'{"doc":1}'},
    )


def test_known_json_posts_are_answered_and_everything_else_passes_on() -> None:
    behind = Passed()
    app = FastRoutes(behind, routes=echo_routes, headers={"Server": "BentoML Service/recpipe"})
    status, headers, body = call(app, "POST", "/echo", b'{"a": 1}')
    assert status == 200 and json.loads(body) == {"got": '{"a": 1}'}
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(body)).encode()
    assert headers[b"server"] == b"BentoML Service/recpipe"
    # no content type is JSON (as for BentoML); a charset is fine
    assert call(app, "POST", "/echo", b"{}", headers=[])[0] == 200
    ctype = [(b"content-type", b"Application/JSON; charset=utf-8")]
    assert call(app, "POST", "/echo", b"{}", headers=ctype)[0] == 200
    assert behind.paths == []
    # other paths and methods go to BentoML untouched
    assert call(app, "POST", "/other", b"{}")[0] == 299
    assert call(app, "GET", "/echo")[0] == 299
    assert behind.paths == ["/other", "/echo"]
    # documents are answered to GET
    status, _, body = call(app, "GET", "/doc.json")
    assert status == 200 and json.loads(body) == {"doc": 1}


def test_a_path_without_handler_is_checked_then_handed_on_with_its_body() -> None:
    behind = Passed()
    app = FastRoutes(behind, routes=echo_routes)
    status, _, body = call(app, "POST", "/behind", chunks=[b'{"a"', b": 1}"])
    assert (status, body) == (299, b"bentoml")
    assert behind.bodies == [b'{"a": 1}']
    # ... and refused like the others
    assert call(app, "POST", "/behind", b"x" * 65)[0] == 413
    assert call(app, "POST", "/behind", b"{}", headers=[(b"content-type", b"text/plain")])[0] == 415
    assert behind.paths == ["/behind"]


@pytest.mark.parametrize(
    "ctype",
    [b"multipart/form-data", b"multipart/form-data; boundary=x", b"text/plain", b"", b"\xff"],
)
def test_other_media_types_get_415_with_a_reason(ctype) -> None:
    behind = Passed()
    app = FastRoutes(behind, routes=echo_routes)
    for path in ("/echo", "/behind"):
        status, _, body = call(app, "POST", path, b"--x--", headers=[(b"content-type", ctype)])
        assert status == 415, body
        assert "application/json" in json.loads(body)["error"]
    assert behind.paths == []


def test_an_oversized_body_gets_413_before_it_is_read_whole() -> None:
    app = FastRoutes(Passed(), routes=echo_routes)
    # by its declared length: nothing of it is read
    declared = [(b"content-type", b"application/json"), (b"content-length", b"100000")]
    status, _, body = call(app, "POST", "/echo", chunks=[b"never read"] * 2, headers=declared)
    assert status == 413
    reason = json.loads(body)["error"]
    assert "100000 bytes" in reason and "64 bytes" in reason and "max_request_bytes" in reason
    # streamed without a length: refused as soon as it passes the limit
    chunks = [b"x" * 40] * 1000
    read = []

    async def receive():
        read.append(1)
        return {"type": "http.request", "body": chunks[len(read) - 1], "more_body": True}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/echo", "headers": []}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413 and len(read) == 2  # 80 bytes read of 40000
    # at the limit is fine
    assert call(app, "POST", "/echo", b"x" * 64)[0] == 200


def test_no_routes_yet_means_bentoml_answers() -> None:
    behind = Passed()
    assert call(FastRoutes(behind, routes=lambda: None), "POST", "/echo", b"{}")[0] == 299
    assert call(FastRoutes(behind, routes=lambda: Routes({})), "POST", "/echo", b"{}")[0] == 299
    assert behind.paths == ["/echo", "/echo"]


def test_a_body_in_chunks_is_joined_and_a_gone_client_gets_nothing() -> None:
    app = FastRoutes(Passed(), routes=echo_routes)
    status, _, body = call(app, "POST", "/echo", chunks=[b'{"a"', b": ", b"1}"])
    assert status == 200 and json.loads(body) == {"got": '{"a": 1}'}

    sent = []

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/echo", "headers": []}
    asyncio.run(app(scope, receive, send))
    assert sent == []


def test_a_bug_is_a_500_without_a_traceback(caplog) -> None:
    status, _, body = call(FastRoutes(Passed(), routes=echo_routes), "POST", "/broken", b"{}")
    assert status == 500 and body == SERVER_ERROR
    assert b"secret" not in body and b"Traceback" not in body
    assert "secret internals" in caplog.text  # the details are in the server log


def test_client_errors_are_logged_at_info_in_one_line(caplog) -> None:
    app = FastRoutes(Passed(), routes=echo_routes)
    with caplog.at_level(logging.INFO, logger="recpipe.serve.fastpath"):
        call(app, "POST", "/refuse", b"{}")
        call(app, "POST", "/echo", b"x" * 65)
        call(app, "POST", "/echo", b"{}", headers=[(b"content-type", b"text/plain")])
    records = [r for r in caplog.records if r.name == "recpipe.serve.fastpath"]
    assert [r.levelno for r in records] == [logging.INFO] * 3
    assert [r.getMessage().split(":")[0] for r in records] == [
        "client error 400 on POST /refuse",
        "client error 413 on POST /echo",
        "client error 415 on POST /echo",
    ]
    assert all(r.exc_info is None for r in records)


def test_bentomls_records_of_refused_requests_become_info_lines() -> None:
    class Model(BaseModel):
        k: int

    try:
        Model.model_validate_json(b'{"k": "x"}')
    except ValidationError:
        invalid = sys.exc_info()
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        bug = sys.exc_info()

    def record(exc_info) -> logging.LogRecord:
        return logging.LogRecord(
            "bentoml._internal.server.http_app", logging.ERROR, __file__, 1,
            "Exception on %s [%s]", ("/recommend", "POST"), exc_info,
        )  # fmt: skip

    quiet = ClientErrorsAtInfo()
    client = record(invalid)
    assert quiet.filter(client)
    assert client.levelno == logging.INFO and client.exc_info is None
    assert client.getMessage().startswith("client error 400 on POST /recommend: ")
    assert "k: Input should be a valid integer" in client.getMessage()
    server = record(bug)
    assert quiet.filter(server)
    assert server.levelno == logging.ERROR and server.exc_info is bug


def test_validation_errors_read_like_bentomls() -> None:
    class Model(BaseModel):
        k: int

    with pytest.raises(ValidationError) as info:
        Model.model_validate_json(b'{"k": "x", "extra": 1}')
    body = json.loads(validation_error_body(info.value))
    assert body["error"] == "1 validation error for Model"
    assert body["detail"][0]["loc"] == ["k"] and body["detail"][0]["msg"]
    assert "input" not in body["detail"][0] and "ctx" not in body["detail"][0]


# ------------------------------------------------------------------ through the service
GOOD = [
    ("/recommend", {"user_id": user_id(3), "k": 5}),
    ("/recommend", {"user_id": "ghost", "context": {"items": [item_id(8)], "event_type": "view"}}),
    ("/recommend", {"user_id": "new", "context": {"timestamp": 1.7e9, "event_type": "cart"}}),
    ("/recommend/session", {"items": [item_id(12)], "k": 3}),
    ("/recommend/session", {"items": [item_id(4), "ghost"], "event_types": ["view", "cart"]}),
    ("/recommend/session", {"items": [item_id(4)], "timestamps": ["2026-01-20T18:30:00Z"]}),
    ("/recommend/session", {"items": []}),
    ("/similar", {"item_id": item_id(4), "k": 3}),
    ("/similar", {"item_id": "ghost"}),
]
BAD = [
    ("/recommend", "{not json"),
    ("/recommend", ""),
    ("/recommend", b"\xff\xfe"),
    ("/recommend", {"user_id": 42}),
    ("/recommend", {"user_id": "u3", "k": 11}),
    ("/recommend", {"user_id": "u3", "colour": "red"}),
    ("/recommend", {"user_id": "u3", "context": {"items": ["i4"] * 9}}),
    ("/recommend/session", "{not json"),
    ("/recommend/session", ""),
    ("/recommend/session", [1, 2]),
    ("/recommend/session", {"items": "i4"}),
    ("/recommend/session", {"items": ["i4"] * 9}),
    ("/recommend/session", {"items": ["i4"], "k": 0}),
    ("/recommend/session", {"items": ["i4"], "k": 11}),
    ("/recommend/session", {"items": ["i4"], "event_types": ["view", "view"]}),
    ("/recommend/session", {"items": ["i4"], "timestamps": ["yesterday"]}),
    ("/similar", {"k": 3}),
    ("/similar", {"metadata": {"title": 5}}),
    # times out of the int64-nanosecond range (were HTTP 500), epoch and ISO
    ("/recommend/session", {"items": ["i4"], "timestamps": [-1e13]}),
    ("/recommend/session", {"items": ["i4"], "timestamps": ["1677-06-01T00:00:00"]}),
    ("/recommend/session", {"items": ["i4"], "timestamps": ["2262-06-01T00:00:00+00:00"]}),
    ("/recommend", {"user_id": "u3", "context": {"timestamp": "9999-12-31T23:59:59"}}),
]
#: (path, body, headers, status) refused before validation, on both paths
REFUSED = [
    ("/recommend", b"{}", {"content-type": "multipart/form-data"}, 415),
    ("/recommend/session", b"--x--", {"content-type": "multipart/form-data; boundary=x"}, 415),
    ("/similar", b"{}", {"content-type": "text/plain"}, 415),
    ("/recommend", b" " * 2_000_000, {"content-type": "application/json"}, 413),
]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    pytest.importorskip("bentoml")
    return make_bundle(tmp_path_factory.mktemp("fastpath") / "bundle")


@pytest.fixture(scope="module")
def client(bundle):
    """The service's ASGI app over the bundle."""
    with service_client(bundle) as c:
        yield c


def _answers(client) -> list:
    out = []
    for path, body in GOOD + BAD:
        if isinstance(body, str | bytes):
            r = client.post(path, content=body, headers={"content-type": "application/json"})
        else:
            r = client.post(path, json=body)
        out.append((path, r.status_code, r.headers["content-type"], r.json()))
    for path, body, headers, _ in REFUSED:
        r = client.post(path, content=body, headers=headers)
        out.append((path, r.status_code, r.headers["content-type"], r.json()))
    return out


def bentoml_answers_all(service, monkeypatch) -> None:
    """The lean path off: every request checked, then answered by BentoML's endpoints."""
    handlers = dict.fromkeys(service.routes.handlers)
    monkeypatch.setattr(service, "routes", dataclasses.replace(service.routes, handlers=handlers))


def test_the_lean_path_answers_exactly_like_bentomls_endpoints(client, monkeypatch) -> None:
    import bentoml

    from recpipe.serve import fastpath

    taken = []
    answer = fastpath.FastRoutes._answer

    async def counted(self, *args):
        taken.append(1)
        await answer(self, *args)

    monkeypatch.setattr(fastpath.FastRoutes, "_answer", counted)
    lean_answers = _answers(client)
    assert len(taken) == len(GOOD) + len(BAD)  # the lean path answered them all
    bentoml_answers_all(bentoml.get_current_service(), monkeypatch)
    bentoml_answers = _answers(client)
    assert len(taken) == len(GOOD) + len(BAD)  # ... and now BentoML did
    for (path, status, ctype, body), want in zip(lean_answers, bentoml_answers, strict=True):
        assert (path, status, ctype, body) == want
    refused = lean_answers[len(GOOD) + len(BAD) :]
    assert [status for _, status, _, _ in refused] == [want for *_, want in REFUSED]
    lean_answers = lean_answers[: len(GOOD) + len(BAD)]
    statuses = [status for _, status, _, _ in lean_answers]
    assert statuses == [200] * len(GOOD) + [400] * len(BAD)
    for _, _, _, body in lean_answers[len(GOOD) :]:
        assert body["error"] and "Traceback" not in json.dumps(body)
    limits = {tuple(d["loc"]) for _, _, _, b in lean_answers for d in b.get("detail", [])}
    assert {("k",), ("items",), ("context", "items")} <= limits  # the bundle's own limits


def test_the_lean_path_is_on_by_default_and_can_be_turned_off(bundle, monkeypatch) -> None:
    from recpipe.serve.service import BUNDLE_ENV, FAST_PATH_ENV, RecpipeService

    monkeypatch.setenv(BUNDLE_ENV, str(bundle))
    service = RecpipeService.inner()
    assert set(service.fast_routes) == {"/recommend", "/recommend/session", "/similar"}
    assert {api.route for api in RecpipeService.apis.values()} == set(service.fast_routes)
    service.batcher.close()
    monkeypatch.setenv(FAST_PATH_ENV, "0")
    service = RecpipeService.inner()
    assert service.fast_routes == {}
    # still checked by the ASGI layer, answered by BentoML
    assert service.routes.handlers == dict.fromkeys(
        ["/recommend", "/recommend/session", "/similar"]
    )
    service.batcher.close()


def test_the_service_needs_no_model_store_with_a_bundle_directory(bundle, tmp_path) -> None:
    """RECPIPE_BUNDLE set at import: no store model declared, served from the directory
    (a fresh process with an empty BentoML home)."""
    import subprocess
    import sys

    script = (
        "from starlette.testclient import TestClient\n"
        "from recpipe.serve.service import RecpipeService\n"
        "assert not RecpipeService.models, RecpipeService.models\n"
        "with TestClient(RecpipeService.to_asgi()) as c:\n"
        "    r = c.post('/recommend/session', json={'items': ['i12'], 'k': 3})\n"
        "    assert r.status_code == 200 and r.json()['strategy'] == 'item_aggregate', r.text\n"
        "print('ok')\n"
    )
    env = {**os.environ, "RECPIPE_BUNDLE": str(bundle), "BENTOML_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
