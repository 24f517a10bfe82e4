"""The OpenAPI document's completion (pure: a small document in, the completed one out)."""

from __future__ import annotations

import json

from recpipe.serve.openapi import API_TAG, MODEL_TAG, TITLE, Limits, describe, request_examples

LIMITS = Limits(max_k=50, max_session_length=12, max_request_bytes=4096)
MODEL = {"name": "gru4rec", "registry_version": "3", "data_hash": "feed"}


def bentoml_like() -> dict:
    """The shape of BentoML's document: int response codes, its own tags and title."""
    k = {"type": "integer", "minimum": 1, "maximum": 1000}
    items = {"type": "array", "items": {"type": "string", "maxLength": 256}, "maxItems": 1000}
    body = {"type": "object", "properties": {"items": items, "k": k}}
    return {
        "openapi": "3.0.2",
        "info": {"title": "recpipe", "version": "abc123hash"},
        "tags": [{"name": "Service APIs"}, {"name": "Infrastructure"}],
        "paths": {
            "/recommend/session": {
                "post": {
                    "tags": ["Service APIs"],
                    "responses": {200: {"description": "ok"}, 400: {}, 404: {}, 500: {}},
                    "requestBody": {"content": {"application/json": {"schema": body}}},
                }
            },
            "/model": {"get": {"responses": {"200": {}}}},
            "/metrics": {"get": {"tags": ["Infrastructure"]}},
        },
        "components": {
            "schemas": {
                "RequestContext": {
                    "properties": {"items": {"anyOf": [dict(items), {"type": "null"}]}}
                }
            }
        },
    }


def test_the_title_tags_and_client_errors() -> None:
    spec = bentoml_like()
    doc = describe(spec, limits=LIMITS, model=MODEL, served_from="the Bento recpipe:x")
    assert spec["info"]["title"] == "recpipe"  # the input is not changed
    assert doc["info"]["title"] == TITLE and "gru4rec" in doc["info"]["version"]
    assert "abc123hash" not in json.dumps(doc["info"])
    assert "the Bento recpipe:x" in doc["info"]["description"]
    assert [t["name"] for t in doc["tags"]] == [API_TAG, MODEL_TAG, "Infrastructure"]
    post = doc["paths"]["/recommend/session"]["post"]
    assert post["tags"] == [API_TAG]
    # one key per code, as strings (JSON), the 404 these routes never answer gone
    assert list(post["responses"]) == ["200", "400", "413", "415", "500"]
    assert "4096 bytes" in post["responses"]["413"]["description"]
    assert doc["paths"]["/model"]["get"]["tags"] == [MODEL_TAG]
    assert doc["paths"]["/metrics"]["get"]["tags"] == ["Infrastructure"]
    for name in ("ValidationFailure", "ClientError"):
        assert name in doc["components"]["schemas"]
    json.dumps(doc)  # serialisable


def test_the_served_limits_replace_the_hard_caps() -> None:
    doc = describe(bentoml_like(), limits=LIMITS, model=MODEL, served_from="x")
    body = doc["paths"]["/recommend/session"]["post"]["requestBody"]["content"]
    props = body["application/json"]["schema"]["properties"]
    assert props["k"]["maximum"] == 50 and props["items"]["maxItems"] == 12
    assert props["items"]["items"]["maxLength"] == 256
    context = doc["components"]["schemas"]["RequestContext"]["properties"]["items"]["anyOf"]
    assert context[0]["maxItems"] == 12 and context[1] == {"type": "null"}


def test_examples_use_the_catalogues_ids_and_fit_the_limits() -> None:
    examples = request_examples(["u9"], ["a", "b", "c", "d"], k=5)
    doc = describe(bentoml_like(), limits=LIMITS, model=MODEL, served_from="x", examples=examples)
    media = doc["paths"]["/recommend/session"]["post"]["requestBody"]["content"]
    shown = media["application/json"]["examples"]
    assert shown["session"]["value"] == {
        "items": ["a", "b", "c"], "event_types": ["view", "view", "cart"], "k": 5
    }  # fmt: skip
    assert examples["/recommend"]["known_user"]["value"]["user_id"] == "u9"
    assert examples["/similar"]["known_item"]["value"]["item_id"] == "a"
    # an empty catalogue still gives well-formed examples
    empty = request_examples([], [], k=3)
    timed = empty["/recommend/session"]["timed"]["value"]
    assert len(timed["items"]) == len(timed["timestamps"])
