"""A lean ASGI path for the service's JSON endpoints (no BentoML import).

BentoML answers an API call through its request object, its IO-model and serde layers,
a thread hop and a response object: about 0.8 ms of CPU per request on a 2-core machine,
more than scoring a session over 100k items. :class:`FastRoutes` is an ASGI middleware
that the service installs inside BentoML's own stack (``Service.add_asgi_middleware``:
after Prometheus metrics, tracing and the request timeout, so those still see every
request) and that answers ``POST`` requests with a JSON body (or none) to the paths
it knows with a handler, ``handler(body) -> (status, json_bytes)``. Everything else
(other paths and methods, other media types such as multipart, a service that is not
started) goes on to BentoML unchanged.

The handlers validate with the same pydantic models as the BentoML endpoints and
answer with the same bodies, including BentoML's HTTP 400 body for invalid requests
(:func:`validation_error_body`), so a client cannot tell the paths apart except by
speed; the BentoML endpoints stay declared for the OpenAPI schema and its clients.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import ValidationError

__all__ = [
    "SERVER_ERROR",
    "FastRoutes",
    "Handler",
    "json_bytes",
    "validation_error_body",
]

log = logging.getLogger(__name__)

#: ``handler(body) -> (HTTP status, JSON body)``; it must not raise for bad input.
Handler = Callable[[bytes], Awaitable[tuple[int, bytes]]]

#: BentoML's body for an unexpected error (the details go to the server log only).
SERVER_ERROR = b'{"error":"An unexpected error has occurred, please check the server log."}'

_JSON = b"application/json"


def json_bytes(content: Any) -> bytes:
    """``content`` as Starlette's ``JSONResponse`` renders it (compact UTF-8 JSON)."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def validation_error_body(exc: ValidationError) -> bytes:
    """BentoML's HTTP 400 body for a validation error: the count, the model, each field
    (``loc``) with its reason (``msg``, ``type``), never the input."""
    return json_bytes(
        {
            "error": f"{exc.error_count()} validation error for {exc.title}",
            "detail": exc.errors(include_context=False, include_input=False),
        }
    )


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request's media type is JSON (BentoML's default when none is given)."""
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == _JSON
    return True


class FastRoutes:
    """ASGI middleware answering JSON ``POST`` requests of known paths with handlers.

    Parameters
    ----------
    app : ASGI app
        The rest of the stack (BentoML's routes), for every other request.
    routes : callable
        ``routes() -> {path: handler}`` or None (nothing to answer yet, e.g. before
        the service instance exists); called per request, so it must be cheap.
    headers : mapping, optional
        Extra response headers (e.g. BentoML's ``server``).
    """

    def __init__(
        self,
        app: Any,
        *,
        routes: Callable[[], Mapping[str, Handler] | None],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
        ]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            table = self.routes()
            handler = table.get(scope["path"]) if table else None
            if handler is not None and _is_json(scope["headers"]):
                await self._answer(handler, receive, send)
                return
        await self.app(scope, receive, send)

    async def _answer(self, handler: Handler, receive: Any, send: Any) -> None:
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left: nothing to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        try:
            status, body = await handler(b"".join(chunks))
        except Exception:  # a bug, never a traceback to the client
            log.exception("unexpected error answering a request")
            status, body = 500, SERVER_ERROR
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", _JSON),
                    (b"content-length", str(len(body)).encode("latin-1")),
                    *self.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
