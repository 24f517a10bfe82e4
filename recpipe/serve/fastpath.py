"""The service's own ASGI layer: request checks, a lean path for the JSON endpoints, its
OpenAPI document (no BentoML import).

BentoML answers an API call through its request object, its IO-model and serde layers,
a thread hop and a response object: about 0.8 ms of CPU per request on a 2-core machine,
more than scoring a session over 100k items. :class:`FastRoutes` is an ASGI middleware
that the service installs inside BentoML's own stack (``Service.add_asgi_middleware``:
after Prometheus metrics, tracing and the request timeout, so those still see every
request). For a ``POST`` to one of the service's API paths it

1. refuses a media type other than JSON with HTTP 415 (BentoML would try to parse a
   form, and a ``multipart/form-data`` type without a boundary was an HTTP 500);
2. refuses a body over the service's limit with HTTP 413: from its ``Content-Length``
   before reading any of it, or as soon as a streamed body passes the limit, so that an
   oversized request never sits in memory whole;
3. answers the request with the path's lean handler, ``handler(body) -> (status,
   json_bytes)``, or, without one (the lean path turned off), hands the body on to
   BentoML's endpoint.

It also answers ``GET`` for the documents it is given (the service's OpenAPI
document, :mod:`recpipe.serve.openapi`). Everything else (other paths and methods, a
service that is not started yet) goes on to BentoML unchanged.

The handlers validate with the same pydantic models as the BentoML endpoints and
answer with the same bodies, including BentoML's HTTP 400 body for invalid requests
(:func:`validation_error_body`), so a client cannot tell the paths apart except by
speed. Client errors (4xx) are logged at INFO, one line without a traceback, on both
paths (:class:`ClientErrorsAtInfo` turns BentoML's ERROR record of an invalid request
into such a line).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "SERVER_ERROR",
    "ClientErrorsAtInfo",
    "FastRoutes",
    "Handler",
    "Routes",
    "json_bytes",
    "validation_error_body",
]

log = logging.getLogger(__name__)

#: ``handler(body) -> (HTTP status, JSON body)``; it must not raise for bad input.
Handler = Callable[[bytes], Awaitable[tuple[int, bytes]]]

#: BentoML's body for an unexpected error (the details go to the server log only).
SERVER_ERROR = b'{"error":"An unexpected error has occurred, please check the server log."}'

_JSON = b"application/json"

#: Body limit when none is given (``serve.max_request_bytes``'s default).
DEFAULT_MAX_BODY_BYTES = 1_048_576


@dataclass(frozen=True)
class Routes:
    """What :class:`FastRoutes` answers, as the running service sets it up.

    Attributes
    ----------
    handlers : mapping
        ``{path: handler}`` of the API paths whose ``POST`` requests are checked here
        (media type, size); a handler answers them, None hands them on to the app behind.
    max_body_bytes : int
        Largest request body read (larger: HTTP 413).
    documents : mapping
        ``{path: JSON bytes}`` answered to ``GET`` (e.g. the OpenAPI document).
    """

    handlers: Mapping[str, Handler | None]
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    documents: Mapping[str, bytes] = field(default_factory=dict)


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


def _media_type(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """A request's media type, lower case without parameters; None when it gives none."""
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower()
    return None


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses such a request before us
    return None


def _error(message: str) -> bytes:
    return json_bytes({"error": message})


class ClientErrorsAtInfo(logging.Filter):
    """Turns BentoML's record of a refused request (``Exception on PATH [POST]`` at ERROR,
    with the traceback of a validation error) into one INFO line with the reason.

    Install it on BentoML's HTTP app logger (``bentoml._internal.server.http_app``).
    Records of other exceptions (server errors) pass unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or record.levelno < logging.ERROR:
            return True
        status = _client_status(exc)
        if status is None:
            return True
        where = " ".join(str(a) for a in reversed(record.args or ()))  # (path, method)
        record.msg = "client error %d on %s: %s"
        record.args = (status, where or "a request", _reason(exc))
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info = record.exc_text = None
        return True


def _client_status(exc: BaseException) -> int | None:
    """The 4xx status BentoML answers ``exc`` with, or None for a server error."""
    if isinstance(exc, ValidationError):
        return 400
    code = getattr(getattr(exc, "error_code", None), "value", None)
    if isinstance(code, int) and 400 <= code < 500:
        return code
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        return f"{exc.error_count()} validation error(s) for {exc.title}; {where}: {first['msg']}"
    return str(exc)[:300]


class FastRoutes:
    """ASGI middleware: checks and answers ``POST`` requests to the service's API paths.

    Parameters
    ----------
    app : ASGI app
        The rest of the stack (BentoML's routes), for every other request.
    routes : callable
        ``routes() -> Routes`` or None (nothing to check or answer yet, e.g. before the
        service instance exists); called per request, so it must be cheap.
    headers : mapping, optional
        Extra response headers (e.g. BentoML's ``server``).
    """

    def __init__(
        self,
        app: Any,
        *,
        routes: Callable[[], Routes | None],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
        ]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            table = self.routes()
            if table is not None:
                path, method = scope["path"], scope["method"]
                if method == "POST" and path in table.handlers:
                    await self._post(table, scope, receive, send)
                    return
                if method == "GET" and path in table.documents:
                    await self._send(send, 200, table.documents[path])
                    return
        await self.app(scope, receive, send)

    async def _post(self, table: Routes, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path, headers = scope["path"], scope["headers"]
        media = _media_type(headers)
        if media is not None and media != _JSON:
            shown = media.decode("latin-1")[:100]
            await self._refuse(
                send,
                415,
                path,
                f"unsupported media type {shown!r}: send the request body as application/json",
            )
            return
        limit = table.max_body_bytes
        declared = _content_length(headers)
        if declared is not None and declared > limit:
            await self._refuse(send, 413, path, _too_large(f" of {declared} bytes", limit))
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(send, 413, path, _too_large("", limit))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        handler = table.handlers[path]
        if handler is None:
            await self.app(scope, _replay(body, receive), send)
        else:
            await self._answer(handler, body, path, send)

    async def _answer(self, handler: Handler, body: bytes, path: str, send: Any) -> None:
        try:
            status, answer = await handler(body)
        except Exception:  # a bug, never a traceback to the client
            log.exception("unexpected error answering a request")
            status, answer = 500, SERVER_ERROR
        if 400 <= status < 500:
            log.info("client error %d on POST %s: %s", status, path, _summary(answer))
        await self._send(send, status, answer)

    async def _refuse(self, send: Any, status: int, path: str, reason: str) -> None:
        log.info("client error %d on POST %s: %s", status, path, reason)
        await self._send(send, status, _error(reason))

    async def _send(self, send: Any, status: int, body: bytes) -> None:
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


def _too_large(size: str, limit: int) -> str:
    return (
        f"request body{size} is over the limit of {limit} bytes (serve.max_request_bytes); "
        "send a smaller request"
    )


def _summary(body: bytes) -> str:
    """The reason in an error body, for the log (the error and the first field's message)."""
    try:
        content = json.loads(body)
        first = (content.get("detail") or [{}])[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "body"
        return f"{content['error']}; {where}: {first.get('msg', '')}".rstrip(": ")
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        return body[:300].decode("utf-8", "replace")


def _replay(body: bytes, receive: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A ``receive`` that gives the body already read, then the client's later messages."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # type: ignore[no-any-return]

    return replay
