"""The service's OpenAPI document: BentoML's, completed (no BentoML import).

BentoML generates the document from the service's pydantic request models, with its own
title and version (the service name and the Bento's hash), a generic 400 answer and no
request examples. :func:`describe` completes it with what a client needs:

- a title, and a version and description naming the served model (registry version,
  data hash) and where it is served from;
- the limits of *this* service: ``k`` up to ``serve.max_k`` and sessions up to
  ``serve.max_session_length`` in the request schemas (the models carry only the hard
  caps), ids up to :data:`~recpipe.serve.schemas.MAX_ID_LENGTH` characters, the time
  range, the body size limit;
- every client error of the POST endpoints: 400 (invalid JSON, a field out of its
  limits; ``detail`` names each field), 413 (a body over ``serve.max_request_bytes``),
  415 (a media type other than JSON);
- request examples with ids of the served catalogue (:func:`request_examples`), so that
  Swagger's "Try it out" answers from the model, not from a cold-start fallback;
- the endpoints grouped: ``Recommendations`` (the POST endpoints), ``Model``
  (``GET /model``), BentoML's ``Infrastructure``.

The service answers ``GET /docs.json`` (what BentoML's Swagger UI at ``/`` reads) with
this document (:class:`~recpipe.serve.fastpath.FastRoutes`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from recpipe.serve.schemas import EARLIEST_TIME, LATEST_TIME, MAX_ID_LENGTH

__all__ = ["API_TAG", "MODEL_TAG", "TITLE", "Limits", "describe", "request_examples"]

#: Title of the document (Swagger's heading).
TITLE = "recpipe recommendations"
#: Tag of the recommendation endpoints.
API_TAG = "Recommendations"
#: Tag of ``GET /model``.
MODEL_TAG = "Model"

_BENTOML_API_TAG = "Service APIs"
_REF = "#/components/schemas/{}"


@dataclass(frozen=True)
class Limits:
    """The limits a request must keep (the served bundle's ``serve`` settings)."""

    max_k: int
    max_session_length: int
    max_request_bytes: int


_VALIDATION_FAILURE = {
    "type": "object",
    "title": "ValidationFailure",
    "description": "HTTP 400: the request is not valid JSON or breaks a field's type or limit",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "example": "1 validation error for RecommendRequest"},
        "detail": {
            "type": "array",
            "description": "one entry per invalid field",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {
                        "type": "array",
                        "description": 'the field\'s path, e.g. ["context", "items"]',
                        "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                    },
                    "msg": {"type": "string", "example": "may be at most 100, got 500"},
                    "type": {"type": "string", "example": "request_limit"},
                },
            },
        },
    },
}
_CLIENT_ERROR = {
    "type": "object",
    "title": "ClientError",
    "description": "HTTP 413 or 415: why the request was refused unread",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}


def _answer(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(schema)}}},
    }


def _client_errors(limits: Limits) -> dict[str, Any]:
    return {
        "400": _answer(
            "Invalid request: not JSON, an unknown or missing field, a wrong type, or a "
            f"value out of its limits (k from 1 to {limits.max_k}, at most "
            f"{limits.max_session_length} items, ids of 1 to {MAX_ID_LENGTH} characters); "
            "`detail` names each field",
            "ValidationFailure",
        ),
        "413": _answer(
            f"Request body over {limits.max_request_bytes} bytes (serve.max_request_bytes)",
            "ClientError",
        ),
        "415": _answer("Media type other than application/json", "ClientError"),
    }


def _cap(node: dict[str, Any], kind: str, key: str, value: int) -> None:
    """Lower ``key`` (``maximum``, ``maxItems``) of a property schema of type ``kind``
    (or of its ``anyOf`` variants of that type) to ``value``."""
    for variant in node.get("anyOf", [node]):
        if isinstance(variant, dict) and variant.get("type") == kind:
            variant[key] = min(int(variant.get(key, value)), value)


def _tighten(schema: Any, limits: Limits) -> None:
    """The served limits in a request schema: ``k`` and the per-item lists."""
    if not isinstance(schema, dict):
        return
    properties = schema.get("properties") or {}
    if isinstance(properties.get("k"), dict):
        _cap(properties["k"], "integer", "maximum", limits.max_k)
    for name in ("items", "event_types", "timestamps"):
        if isinstance(properties.get(name), dict):
            _cap(properties[name], "array", "maxItems", limits.max_session_length)


def _description(limits: Limits, model: Mapping[str, Any], served_from: str) -> str:
    version = model.get("registry_version") or "unregistered"
    return (
        f"Recommendations of the **{model.get('name', '?')}** model (registry version "
        f"{version}, data {model.get('data_hash', '?')}), with cold-start fallbacks: "
        "unknown user or item ids are not errors, a fallback answers and says which "
        f"(`strategy`, `reason`). Served from {served_from}.\n\n"
        f"**Limits.** `k` from 1 to {limits.max_k}; a session or a request context "
        f"holds at most {limits.max_session_length} items (and as many event types and "
        f"timestamps); ids have 1 to {MAX_ID_LENGTH} characters; times lie from "
        f"{EARLIEST_TIME.date()} to before {LATEST_TIME.date()} (UTC); a request body "
        f"has at most {limits.max_request_bytes} bytes.\n\n"
        "**Client errors** (bad input is never a server error): 400 invalid JSON or a "
        "field out of its limits, with each field and its reason in `detail`; 413 a "
        "body over the size limit; 415 a media type other than `application/json`."
    )


def request_examples(users: Sequence[str], items: Sequence[str], k: int) -> dict[str, Any]:
    """Swagger request examples by route, with ids of the served catalogue.

    Parameters
    ----------
    users, items : sequence of str
        A few known user and item ids (empty: placeholders, answered by fallbacks).
    k : int
        The ``k`` of the examples (at most the service's ``max_k``).
    """
    user = users[0] if users else "u1"
    some = list(items[:3]) or ["i1", "i2", "i3"]
    kinds = ["view", "view", "cart"][: len(some)]

    def example(summary: str, value: dict[str, Any]) -> dict[str, Any]:
        return {"summary": summary, "value": value}

    return {
        "/recommend": {
            "known_user": example("a known user's top k", {"user_id": user, "k": k}),
            "new_user": example(
                "a user the model has not seen, with what is known of the moment",
                {
                    "user_id": "new-user",
                    "k": k,
                    "context": {
                        "timestamp": "2026-01-20T18:30:00Z",
                        "event_type": "view",
                        "items": some[:2],
                    },
                },
            ),
        },
        "/recommend/session": {
            "session": example(
                "a live session, oldest item first",
                {"items": some, "event_types": kinds, "k": k},
            ),
            "timed": example(
                "a session with the time of each event",
                {
                    "items": some[:2],
                    "timestamps": ["2026-01-20T18:30:00Z", "2026-01-20T18:31:10Z"][: len(some[:2])],
                    "k": k,
                },
            ),
            "empty": example("an empty session: popular items", {"items": [], "k": k}),
        },
        "/similar": {
            "known_item": example("items similar to a known item", {"item_id": some[0], "k": k}),
            "new_item": example(
                "items similar to a new item, from its metadata",
                {"metadata": {"title": "a new item", "categories": ["books"]}, "k": k},
            ),
        },
    }


def describe(
    spec: Mapping[str, Any],
    *,
    limits: Limits,
    model: Mapping[str, Any],
    served_from: str,
    examples: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """BentoML's OpenAPI document (``spec``, as a dict) completed for the served model.

    Parameters
    ----------
    spec : mapping
        BentoML's document (``Service.openapi_spec.asdict()``); not changed.
    limits : Limits
        The served limits.
    model : mapping
        What ``GET /model`` answers (name, registry version, data hash).
    served_from : str
        Where the model and code come from (the Bento, or a bundle directory).
    examples : mapping, optional
        ``{route: {name: {"summary", "value"}}}`` (:func:`request_examples`).

    Returns
    -------
    dict
        A new document.
    """
    doc = copy.deepcopy(dict(spec))
    version = model.get("registry_version") or "unregistered"
    doc["info"] = {
        "title": TITLE,
        "version": f"{model.get('name', '?')}, registry version {version}",
        "description": _description(limits, model, served_from),
    }
    doc["tags"] = [
        {"name": API_TAG, "description": "Top-k items for a user, a session, an item"},
        {"name": MODEL_TAG, "description": "What is served: model, lineage, metrics, limits"},
        *[t for t in doc.get("tags", []) if t.get("name") != _BENTOML_API_TAG],
    ]
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["ValidationFailure"] = copy.deepcopy(_VALIDATION_FAILURE)
    schemas["ClientError"] = copy.deepcopy(_CLIENT_ERROR)
    _tighten(schemas.get("RequestContext"), limits)
    for route, item in doc.get("paths", {}).items():
        post = item.get("post")
        if isinstance(post, dict) and _BENTOML_API_TAG in post.get("tags", []):
            post["tags"] = [API_TAG]
            # BentoML keys the answers by int; JSON keys are strings
            responses = {str(code): answer for code, answer in post.get("responses", {}).items()}
            responses.pop("404", None)  # these routes answer no 404
            responses.update(_client_errors(limits))
            post["responses"] = dict(sorted(responses.items()))
            media = post.get("requestBody", {}).get("content", {}).get("application/json", {})
            _tighten(media.get("schema"), limits)
            if examples and route in examples:
                media["examples"] = copy.deepcopy(dict(examples[route]))
        get = item.get("get")
        if route == "/model" and isinstance(get, dict):
            get["tags"] = [MODEL_TAG]
    return doc
