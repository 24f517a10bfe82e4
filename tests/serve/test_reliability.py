"""Reliability of the served API: each input that was a server error, and a bounded
property-based fuzz of every POST endpoint from the service's own OpenAPI document.

Everything runs in-process through the service's ASGI app (no socket), on both request
paths: the lean one and BentoML's endpoints (the lean path off). The property: no input
is answered with a 5xx; every refusal is a JSON body with a reason; a request valid by
the document's schema (with the served limits) is answered 200 or, for the few rules
a schema cannot express (e.g. one event type per item), 400.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest

pytest.importorskip("bentoml")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serve.helpers import item_id, make_bundle, service_client, user_id

ROUTES = ("/recommend", "/recommend/session", "/similar")
CLIENT_ERRORS = {400, 413, 415}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(client, service, OpenAPI document) of the service over a planted bundle."""
    import bentoml

    bundle = make_bundle(tmp_path_factory.mktemp("reliability") / "bundle")
    with service_client(bundle) as client:
        doc = client.get("/docs.json").json()
        yield client, bentoml.get_current_service(), doc


@pytest.fixture(params=["lean", "bentoml"])
def client(request, served, monkeypatch):
    """The client, with the lean path on, or off (BentoML's endpoints answer)."""
    client, service, _ = served
    if request.param == "bentoml":
        handlers = dict.fromkeys(service.routes.handlers)
        monkeypatch.setattr(
            service, "routes", dataclasses.replace(service.routes, handlers=handlers)
        )
    return client


def check_answer(status: int, body: bytes, ctype: str) -> None:
    """No server error; every answer JSON; every refusal with a reason and no traceback."""
    assert status < 500, (status, body[:500])
    assert ctype.startswith("application/json"), ctype
    content = json.loads(body)
    if status >= 400:
        assert status in CLIENT_ERRORS, (status, body[:500])
        assert isinstance(content["error"], str) and content["error"]
        assert b"Traceback" not in body


# --------------------------------------------------------------- the regression cases
TIMES = [-1e13, 1e19, "1677-09-21T00:00:00", "1500-01-01T00:00:00Z", "2262-04-12T00:00:00Z"]
TIMES += ["9999-12-31T23:59:59", "0001-01-01T00:00:00", "2261-12-31T23:59:59-05:00"]


@pytest.mark.parametrize("moment", TIMES)
def test_a_time_out_of_range_is_a_400_naming_the_field(client, moment) -> None:
    r = client.post("/recommend/session", json={"items": [item_id(4)], "timestamps": [moment]})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["timestamps", 0]
    r = client.post("/recommend", json={"user_id": "new", "context": {"timestamp": moment}})
    assert r.status_code == 400, r.text
    assert r.json()["detail"][0]["loc"] == ["context", "timestamp"]


def test_times_at_the_edges_of_the_range_are_answered(client) -> None:
    for moment in ("1678-01-01T00:00:00Z", "2261-12-31T23:59:59Z", 0, 1.7e9, 1.7e12):
        body = {"items": [item_id(4)], "timestamps": [moment], "k": 3}
        r = client.post("/recommend/session", json=body)
        assert r.status_code == 200, (moment, r.text)


@pytest.mark.parametrize(
    "ctype",
    ["multipart/form-data", "multipart/form-data; boundary=", "text/plain", "application/xml"],
)
@pytest.mark.parametrize("path", ROUTES)
def test_a_body_that_is_not_json_is_a_415_with_a_reason(client, path, ctype) -> None:
    r = client.post(path, content=b"--x--", headers={"content-type": ctype})
    assert r.status_code == 415, r.text
    assert "application/json" in r.json()["error"]


@pytest.mark.parametrize("path", ROUTES)
def test_a_body_over_the_limit_is_a_413_read_or_not(client, served, path) -> None:
    limit = served[1].routes.max_body_bytes
    big = b'{"items": ["' + b"x" * limit + b'"]}'
    r = client.post(path, content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and str(limit) in r.json()["error"], r.text

    def streamed():  # no Content-Length: refused once past the limit
        for _ in range(limit // 65_536 + 2):
            yield b" " * 65_536

    r = client.post(path, content=streamed(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text


def test_the_limit_is_the_bundles_serve_setting(tmp_path, monkeypatch) -> None:
    from recpipe.config import ServeParams
    from recpipe.serve.service import BUNDLE_ENV, RecpipeService

    serve = ServeParams(max_k=10, max_session_length=8, max_request_bytes=2048)
    monkeypatch.setenv(BUNDLE_ENV, str(make_bundle(tmp_path / "bundle", serve=serve)))
    service = RecpipeService.inner()
    try:
        assert service.routes.max_body_bytes == 2048
        assert set(service.routes.handlers) == set(ROUTES)
    finally:
        service.batcher.close()


def test_a_document_that_cannot_be_completed_leaves_bentomls(tmp_path, monkeypatch, caplog):
    from recpipe.serve import service as module

    def broken(*args, **kwargs):
        raise KeyError("paths")

    monkeypatch.setattr(module, "describe", broken)
    monkeypatch.setenv(module.BUNDLE_ENV, str(make_bundle(tmp_path / "bundle")))
    service = module.RecpipeService.inner()
    try:
        assert service.routes.documents == {}  # BentoML answers /docs.json
        assert set(service.routes.handlers) == set(ROUTES)  # and serving goes on
        assert "could not complete the OpenAPI document" in caplog.text
    finally:
        service.batcher.close()


def test_client_errors_are_info_lines_without_a_traceback(client, caplog) -> None:
    import logging

    with caplog.at_level(logging.INFO):
        client.post("/recommend", json={"user_id": "u3", "k": 0})
        client.post("/recommend", content=b"{bad", headers={"content-type": "application/json"})
        client.post("/similar", content=b"x", headers={"content-type": "multipart/form-data"})
    errors = [r for r in caplog.records if "client error" in r.getMessage()]
    assert len(errors) == 3, [r.getMessage() for r in caplog.records]
    assert all(r.levelno == logging.INFO and not r.exc_info for r in errors)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "k" in errors[0].getMessage() and "415" in errors[2].getMessage()


# ---------------------------------------------------------------- the OpenAPI document
def test_the_document_has_a_title_limits_client_errors_and_examples(served) -> None:
    client, service, doc = served
    assert doc["info"]["title"] == "recpipe recommendations"
    assert "mf_bpr" in doc["info"]["version"]
    assert "1678-01-01" in doc["info"]["description"]
    tags = {t["name"] for t in doc["tags"]}
    assert {"Recommendations", "Model"} <= tags
    assert doc["paths"]["/model"]["get"]["tags"] == ["Model"]
    settings_ = service.predictor.settings
    for route in ROUTES:
        post = doc["paths"][route]["post"]
        assert post["tags"] == ["Recommendations"]
        assert {"200", "400", "413", "415"} <= set(post["responses"])
        assert str(settings_.max_request_bytes) in post["responses"]["413"]["description"]
        media = post["requestBody"]["content"]["application/json"]
        assert media["schema"]["properties"]["k"]["maximum"] == settings_.max_k
        # every example is answered 200 by the service
        assert media["examples"]
        for name, example in media["examples"].items():
            r = client.post(route, json=example["value"])
            assert r.status_code == 200, (route, name, r.text)
    session = doc["paths"]["/recommend/session"]["post"]["requestBody"]["content"]
    items = session["application/json"]["schema"]["properties"]["items"]
    assert items["maxItems"] == settings_.max_session_length
    assert items["items"]["maxLength"] == 256
    context = doc["components"]["schemas"]["RequestContext"]["properties"]["items"]
    assert context["maxItems"] == settings_.max_session_length
    # the answer of a known user's example comes from the model, not a fallback
    known = session["application/json"]["examples"]["session"]["value"]
    assert client.post("/recommend/session", json=known).json()["strategy"] != "popularity"


def test_the_document_is_served_with_the_lean_path_off_too(client) -> None:
    assert client.get("/docs.json").json()["info"]["title"] == "recpipe recommendations"


# -------------------------------------------------------------- the property-based fuzz
EXTREME_TIMES = [
    "1677-09-21T00:12:43Z",
    "2262-04-11T23:47:17Z",
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59+14:00",
    "2026-01-20T18:30:00Z",
    "not a time",
]
EXTREME_NUMBERS = [0, -1, 1, 2**31, 2**63, -(2**63), 10**30, 1e300, -1e13, 1.5, -0.0]


def from_schema(schema: dict[str, Any], doc: dict[str, Any], depth: int = 0) -> st.SearchStrategy:
    """Values for a JSON schema of the document: mostly valid ones (at the limits too),
    some just past a limit, and a few of any JSON type."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return from_schema(doc["components"]["schemas"][name], doc, depth)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, doc, depth) for s in schema["anyOf"]])
    kind = schema.get("type")
    if "enum" in schema:
        valid = st.sampled_from(schema["enum"])
    elif kind == "integer":
        low, high = schema.get("minimum", -(2**40)), schema.get("maximum", 2**40)
        valid = st.one_of(st.integers(low, high), st.sampled_from([low, high, low - 1, high + 1]))
    elif kind == "number":
        valid = st.one_of(st.floats(allow_nan=False), st.sampled_from(EXTREME_NUMBERS))
    elif kind == "boolean":
        valid = st.booleans()
    elif kind == "string" and schema.get("format") == "date-time":
        valid = st.one_of(
            st.sampled_from(EXTREME_TIMES),
            st.datetimes().map(lambda d: d.isoformat()),
            st.sampled_from(EXTREME_NUMBERS),
        )
    elif kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength", 64)
        valid = st.one_of(
            st.text(min_size=low, max_size=min(high, 24)),
            st.sampled_from(
                [item_id(4), item_id(12), user_id(3), "", "x" * high, "x" * (high + 1)]
            ),
        )
    elif kind == "array":
        high = schema.get("maxItems", 8)
        inner = from_schema(schema.get("items", {}), doc, depth + 1)
        valid = st.one_of(
            st.lists(inner, max_size=min(high, 6)),
            st.lists(inner, min_size=high, max_size=high + 1) if high <= 12 else st.just([]),
        )
    elif kind == "object" and depth < 3:
        props = schema.get("properties", {})
        fields = {name: from_schema(p, doc, depth + 1) for name, p in props.items()}
        extra = st.dictionaries(st.text(max_size=8), st.integers(), max_size=1)
        valid = st.fixed_dictionaries(
            {n: fields[n] for n in schema.get("required", [])},
            optional={n: s for n, s in fields.items() if n not in schema.get("required", [])},
        )
        valid = st.one_of(valid, st.tuples(valid, extra).map(lambda t: {**t[1], **t[0]}))
    else:
        valid = st.none()
    return st.one_of(valid, valid, valid, ANY_JSON)


ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=16),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def request_bodies(doc: dict[str, Any]) -> st.SearchStrategy:
    """(route, body bytes, content type): from each route's request schema, plus raw
    bytes, broken JSON and other media types."""

    def for_route(route: str) -> st.SearchStrategy:
        schema = doc["paths"][route]["post"]["requestBody"]["content"]["application/json"]
        values = from_schema(schema["schema"], doc)
        as_json = values.map(lambda v: json.dumps(v).encode())
        raw = st.one_of(
            st.binary(max_size=64),
            as_json.map(lambda b: b[: max(0, len(b) // 2)]),  # cut short
            st.just(b'{"items": [NaN], "k": Infinity}'),
        )
        ctype = st.sampled_from(
            ["application/json"] * 6 + ["application/json; charset=utf-8", "multipart/form-data",
                                        "text/plain", "application/x-www-form-urlencoded"]
        )  # fmt: skip
        return st.tuples(st.just(route), st.one_of(as_json, as_json, as_json, raw), ctype)

    json_ctype = st.just("application/json")
    sessions = coherent_sessions().map(lambda v: json.dumps(v).encode())
    return st.one_of(
        *[for_route(route) for route in ROUTES],
        st.tuples(st.just("/recommend/session"), sessions, json_ctype),
    )


TIME_VALUES = st.one_of(
    st.sampled_from(EXTREME_TIMES + EXTREME_NUMBERS),
    st.datetimes().map(lambda d: d.isoformat()),
    st.floats(-1e20, 1e20),
)


@st.composite
def coherent_sessions(draw: st.DrawFn) -> dict[str, Any]:
    """Sessions whose lists agree in length (so that they reach the model), with times
    and event types drawn from their whole range and beyond."""
    n = draw(st.integers(0, 8))
    ids = st.sampled_from([item_id(i) for i in range(2, 18)] + ["ghost"])
    body: dict[str, Any] = {"items": draw(st.lists(ids, min_size=n, max_size=n))}
    if draw(st.booleans()):
        body["timestamps"] = draw(st.lists(TIME_VALUES, min_size=n, max_size=n))
    if draw(st.booleans()):
        kinds = st.sampled_from(["view", "click", "cart", "purchase", "rating"])
        body["event_types"] = draw(st.lists(kinds, min_size=n, max_size=n))
    if draw(st.booleans()):
        body["k"] = draw(st.integers(0, 12))
    return body


def test_fuzz_of_every_endpoint_never_answers_a_server_error(client, served) -> None:
    """A few hundred requests per request path, from the document's request schemas."""
    doc = served[2]
    seen: dict[int, int] = {}

    @settings(
        max_examples=250,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(request_bodies(doc))
    def one(case: tuple[str, bytes, str]) -> None:
        route, body, ctype = case
        r = client.post(route, content=body, headers={"content-type": ctype})
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        check_answer(r.status_code, r.content, r.headers["content-type"])
        if r.status_code == 200:
            answer = r.json()
            assert len(answer["items"]) == len(answer["scores"])
            assert all(math.isfinite(s) for s in answer["scores"])

    one()
    # the fuzz reached both the models and the refusals
    assert seen.get(200, 0) >= 20 and seen.get(400, 0) >= 20, seen
    assert seen.get(415, 0) >= 5, seen
