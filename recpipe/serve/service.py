"""The BentoML service: a thin HTTP layer over :class:`~recpipe.serve.predictor.Predictor`.

=========================  ================================  ============================
endpoint                   request                           answer
=========================  ================================  ============================
``POST /recommend``        :class:`RecommendRequest`         :class:`Recommendation`
``POST /recommend/session`` :class:`SessionRequest`          :class:`Recommendation`
``POST /similar``          :class:`SimilarRequest`           :class:`Recommendation`
``GET /model``             (none)                            :class:`ModelInfo`
=========================  ================================  ============================

Requests are pydantic models that forbid unknown fields; malformed JSON, wrong types,
missing fields, k or sessions over the bundle's limits all get HTTP 400 with the field
and the reason (BentoML's validation-error body: ``{"error": ..., "detail": [{"loc",
"msg", "type"}]}``). Unknown user and item ids are not errors: the answer comes from a
cold-start strategy and says which. Session requests that arrive together are scored
together (:class:`~recpipe.serve.batching.MicroBatcher`).

Per-request overhead. The three JSON endpoints are answered by a lean ASGI path
(:class:`~recpipe.serve.fastpath.FastRoutes`, installed with BentoML's
``add_asgi_middleware``, so inside BentoML's metrics, tracing and timeout middleware
but before its routing, IO-model, serde and thread layers): the same validation
models, answers and 400 bodies for about 0.3 ms less CPU per request (0.5 against
0.8 ms through the whole ASGI app on a 2-core machine, small catalogue).
``RECPIPE_FAST_PATH=0`` sends every request through BentoML's endpoints instead, which
stay declared for the OpenAPI schema and BentoML's clients. In a ``bentoml serve``
worker the module also takes an own ``SO_REUSEPORT`` listening socket
(:mod:`recpipe.serve.reuseport`; ``RECPIPE_REUSEPORT=0`` keeps BentoML's shared one),
so that keep-alive clients spread over the workers instead of piling onto one, and
freezes the objects alive after start-up out of the garbage collector's walks. The
access log is off and the API routes are left out of OpenTelemetry tracing by default
(no exporter is configured by default, so the spans were pure cost: together they
took as much CPU as scoring a 10k-item catalogue and halved the throughput on two
cores); Prometheus metrics stay on at ``/metrics``. Turn either back on through
BentoML's configuration (``BENTOML_CONFIG``).

Every ``POST`` to an API path is checked first, on both paths: a media type other than
JSON gets HTTP 415, a body over ``serve.max_request_bytes`` HTTP 413 (refused from its
``Content-Length`` or as soon as the streamed body passes the limit). Client errors are
logged at INFO, one line without a traceback. ``GET /docs.json`` (the Swagger UI at
``/``) is BentoML's OpenAPI document completed with a title, the limits, the 400, 413
and 415 answers and request examples (:mod:`recpipe.serve.openapi`).

The service serves the bundle saved in the BentoML model store as ``recpipe-champion``
(the package stage puts it there and builds the Bento that references it): served from
a Bento, the model version that Bento was built with (not the store's latest, which
may be another workspace's); imported from source, the store's latest. It logs at start
which model it serves, from where, and where its code lies. The environment variable
``RECPIPE_BUNDLE`` names a bundle directory to serve instead (tests, benchmarks,
debugging). Set when this module is imported, it also drops the
service's reference to the model store, so that nothing needs to be in the store (the
package stage refuses to build a Bento from a service imported so:
:func:`~recpipe.serve.package.package_bundle`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import bentoml
from bentoml import get_current_service
from bentoml.exceptions import BentoMLException
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from recpipe.errors import ArtifactError, RequestError
from recpipe.serve.batching import MicroBatcher
from recpipe.serve.bundle import BENTO_NAME, MODEL_STORE_NAME
from recpipe.serve.fastpath import (
    ClientErrorsAtInfo,
    FastRoutes,
    Handler,
    Routes,
    json_bytes,
    validation_error_body,
)
from recpipe.serve.openapi import Limits, describe, request_examples
from recpipe.serve.predictor import Predictor
from recpipe.serve.reuseport import bentoml_worker_fd, spread_connections
from recpipe.serve.schemas import (
    ModelInfo,
    Recommendation,
    RecommendRequest,
    SessionRequest,
    SimilarRequest,
)

__all__ = ["BUNDLE_ENV", "FAST_PATH_ENV", "OPENAPI_PATH", "RecpipeService"]

log = logging.getLogger(__name__)

#: Environment variable naming a bundle directory to serve instead of the model store's.
BUNDLE_ENV = "RECPIPE_BUNDLE"
#: ``0`` / ``false``: answer every request through BentoML's endpoints (no lean path).
FAST_PATH_ENV = "RECPIPE_FAST_PATH"
#: Where BentoML's Swagger UI reads the OpenAPI document (answered by the service).
OPENAPI_PATH = "/docs.json"
#: BentoML's logger of failed requests (its 4xx records become INFO lines).
_BENTOML_HTTP_LOGGER = "bentoml._internal.server.http_app"

# in a `bentoml serve` worker process: listen on an own SO_REUSEPORT socket (before the
# worker's HTTP server starts on the shared one); anywhere else this does nothing
_IN_WORKER = bentoml_worker_fd() is not None
spread_connections()

#: GET routes (BentoML APIs are POST): mounted as a FastAPI app with class views.
info_app = FastAPI(title="recpipe model info", docs_url=None, redoc_url=None, openapi_url=None)


def _bad_request(exc: RequestError, title: str) -> ValidationError:
    """A :class:`RequestError` as the validation error BentoML answers with HTTP 400."""
    error = PydanticCustomError("request_limit", "{reason}", {"reason": exc.reason})
    loc = tuple(exc.field.split("."))
    return ValidationError.from_exception_data(title, [{"type": error, "loc": loc, "input": None}])


def _enabled(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "no", "off")


def _live_routes() -> Routes | None:
    """What the running service instance checks and answers (None before it exists)."""
    try:
        return get_current_service().routes  # type: ignore[no-any-return]
    except (BentoMLException, AttributeError):
        return None


def _quiet_client_errors() -> None:
    """BentoML's records of refused requests as INFO lines (once per process)."""
    logger = logging.getLogger(_BENTOML_HTTP_LOGGER)
    if not any(isinstance(f, ClientErrorsAtInfo) for f in logger.filters):
        logger.addFilter(ClientErrorsAtInfo())


def _worker_logging() -> None:
    """In a ``bentoml serve`` worker, recpipe's INFO lines (what is served, client errors)
    go to BentoML's log as BentoML's own do (BentoML leaves other loggers at WARNING)."""
    ours = logging.getLogger("recpipe")
    if ours.level == logging.NOTSET and logging.getLogger("bentoml").isEnabledFor(logging.INFO):
        ours.setLevel(logging.INFO)


def _api_routes() -> list[str]:
    """The routes of BentoML's API methods of the service."""
    return [api.route for api in RecpipeService.apis.values()]


def _code_location() -> str:
    import recpipe

    return str(os.path.dirname(os.path.abspath(recpipe.__file__)))


@bentoml.asgi_app(info_app, path="/")
@bentoml.service(
    name=BENTO_NAME,
    traffic={"timeout": 30},
    threads=2,
    logging={"access": {"enabled": False}},  # see the module docstring
    tracing={"excluded_urls": ["/recommend/session", "/recommend", "/similar"]},
)
class RecpipeService:
    """Recommendations of the packaged champion, with cold-start fallbacks."""

    if not os.environ.get(BUNDLE_ENV):
        # the packaged champion; with RECPIPE_BUNDLE set when this module is imported, the
        # service needs no model store (tests, benchmarks, debugging a bundle directory)
        bundle = bentoml.models.BentoModel(f"{MODEL_STORE_NAME}:latest")

    def __init__(self) -> None:
        if _IN_WORKER:
            _worker_logging()
        path = os.environ.get(BUNDLE_ENV)
        source = f"the bundle directory {path} ({BUNDLE_ENV})"
        if not path:
            path, source = self._packaged_bundle()
        self.predictor = Predictor.from_artifact(path)
        settings = self.predictor.settings
        self.batcher: MicroBatcher[SessionRequest, Recommendation] = MicroBatcher(
            self.predictor.recommend_sessions,
            max_batch_size=settings.batch_max_size,
            max_wait_ms=settings.batch_max_wait_ms,
        )
        #: The lean path's handlers by route (empty: BentoML answers every request).
        self.fast_routes: dict[str, Handler] = {}
        if _enabled(FAST_PATH_ENV):
            self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="recpipe-api")
            self.fast_routes = self._lean_routes()
        _quiet_client_errors()
        #: What the ASGI layer checks and answers (recpipe.serve.fastpath.FastRoutes).
        self.routes = Routes(
            handlers={r: self.fast_routes.get(r) for r in _api_routes()},
            max_body_bytes=settings.max_request_bytes,
            documents=self._documents(source),
        )
        log.info(
            "serving %s from %s with the code in %s (lean path: %s)",
            self.predictor.model.name,
            source,
            _code_location(),
            "on" if self.fast_routes else "off",
        )
        if _IN_WORKER:
            # the ~300k objects of the imports and the model never die: keep the collector
            # from walking them all (a full collection took 140 ms, a p99 of its own)
            gc.collect()
            gc.freeze()

    def _packaged_bundle(self) -> tuple[str, str]:
        """(path, description) of the model store's bundle to serve: the version pinned by
        the Bento being served, else (service imported from source) the latest."""
        bento = getattr(RecpipeService, "bento", None)
        if bento is not None:
            pinned = [m.tag for m in bento.info.all_models if m.tag.name == MODEL_STORE_NAME]
            if pinned:
                try:
                    stored = bentoml.models.get(pinned[0])
                except BentoMLException as exc:
                    raise ArtifactError(
                        f"the Bento {bento.tag} was built with the model {pinned[0]}, which "
                        f"the BentoML model store cannot give ({exc}); import the Bento's "
                        "archive again (bentoml import bentos/recpipe.bento) or package again"
                    ) from exc
                return (
                    stored.path,
                    f"the model {stored.tag} of the Bento {bento.tag} ({bento.path})",
                )
        stored = getattr(self, "bundle", None)
        if stored is None:
            raise RuntimeError(
                f"{BUNDLE_ENV} was set when recpipe.serve.service was imported but is "
                "not set now: set it again, or import the service without it to serve "
                f"the model store's {MODEL_STORE_NAME}"
            )
        return stored.path, f"the model {stored.tag}, the store's latest {MODEL_STORE_NAME}"

    def _documents(self, served_from: str) -> dict[str, bytes]:
        """``{path: JSON}`` the ASGI layer answers to GET: the completed OpenAPI document
        (BentoML's own one if completing it fails: documentation never stops serving)."""
        try:
            return {OPENAPI_PATH: json_bytes(self._openapi(served_from))}
        except Exception:
            log.warning(
                "could not complete the OpenAPI document; BentoML's is served", exc_info=True
            )
            return {}

    def _openapi(self, served_from: str) -> dict[str, Any]:
        """BentoML's OpenAPI document, completed for this model (recpipe.serve.openapi)."""
        settings = self.predictor.settings
        users = [str(u) for u in self.predictor.user_map.ids[:1]]
        items = [str(i) for i in self.predictor.item_map.ids[:3]]
        return describe(
            RecpipeService.openapi_spec.asdict(),
            limits=Limits(settings.max_k, settings.max_session_length, settings.max_request_bytes),
            model=self.predictor.info(),
            served_from=served_from,
            examples=request_examples(users, items, min(10, settings.max_k)),
        )

    # the work of each endpoint, shared by BentoML's endpoints and the lean path --------
    def _recommend(self, request: RecommendRequest) -> Recommendation:
        try:
            return self.predictor.recommend(
                request.user_id,
                k=request.k,
                exclude_seen=request.exclude_seen,
                context=request.context,
            )
        except RequestError as exc:
            raise _bad_request(exc, "RecommendRequest") from None

    def _check_session(self, request: SessionRequest) -> None:
        try:
            self.predictor.check_session(request)
        except RequestError as exc:
            raise _bad_request(exc, "SessionRequest") from None

    def _similar(self, request: SimilarRequest) -> Recommendation:
        try:
            return self.predictor.similar(request.item_id, request.metadata, k=request.k)
        except RequestError as exc:
            raise _bad_request(exc, "SimilarRequest") from None

    # BentoML's endpoints (OpenAPI, clients, and every request when the lean path is off)
    @bentoml.api(route="/recommend")
    def recommend(self, request: RecommendRequest, /) -> Recommendation:
        """Top-k items for a user; unknown users are answered from the request context."""
        return self._recommend(request)

    @bentoml.api(route="/recommend/session")
    async def recommend_session(self, request: SessionRequest, /) -> Recommendation:
        """Next items for a live session (batched with concurrent session requests)."""
        self._check_session(request)
        return await self.batcher.submit(request)

    @bentoml.api(route="/similar")
    def similar(self, request: SimilarRequest, /) -> Recommendation:
        """Items similar to a known item, or to a new item described by its metadata."""
        return self._similar(request)

    # the lean path (recpipe.serve.fastpath) ----------------------------------------------
    def _lean_routes(self) -> dict[str, Handler]:
        """``{route: handler}`` of the three JSON endpoints, validating with BentoML's own
        input models (so the same requests pass, and fail with the same 400 bodies)."""
        apis = RecpipeService.apis

        def spec(name: str) -> type[BaseModel]:
            return apis[name].input_spec  # type: ignore[no-any-return]

        session_spec = spec("recommend_session")

        async def session(body: bytes) -> tuple[int, bytes]:
            try:
                request = session_spec.model_validate_json(body or b"{}")
                self._check_session(request)  # type: ignore[arg-type]
            except ValidationError as exc:
                return 400, validation_error_body(exc)
            answer = await self.batcher.submit(request)  # type: ignore[arg-type]
            return 200, answer.model_dump_json().encode()

        def in_thread(name: str, work: Callable[[Any], Recommendation]) -> Handler:
            model = spec(name)

            async def handler(body: bytes) -> tuple[int, bytes]:
                try:
                    request = model.model_validate_json(body or b"{}")
                    loop = asyncio.get_running_loop()
                    answer = await loop.run_in_executor(self._threads, work, request)
                except ValidationError as exc:
                    return 400, validation_error_body(exc)
                return 200, answer.model_dump_json().encode()

            return handler

        return {
            apis["recommend_session"].route: session,
            apis["recommend"].route: in_thread("recommend", self._recommend),
            apis["similar"].route: in_thread("similar", self._similar),
        }

    @info_app.get("/model", response_model=ModelInfo)
    def model_info(self) -> dict[str, Any]:
        """What is served: model, registry version, data hash, metrics, index, limits."""
        return self.predictor.info()


RecpipeService.add_asgi_middleware(
    FastRoutes, routes=_live_routes, headers={"server": f"BentoML Service/{BENTO_NAME}"}
)
