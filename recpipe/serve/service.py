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

Per-request overhead: the access log is off and the API routes are left out of
OpenTelemetry tracing by default (no exporter is configured by default, so the spans
were pure cost: together they took as much CPU as scoring a 10k-item catalogue and
halved the throughput on two cores); Prometheus metrics stay on at ``/metrics``. Turn
either back on through BentoML's configuration (``BENTOML_CONFIG``).

The service serves the bundle saved in the BentoML model store as ``recpipe-champion``
(the package stage puts it there and builds the Bento that references it); the
environment variable ``RECPIPE_BUNDLE`` names a bundle directory to serve instead
(tests, debugging).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import bentoml
from fastapi import FastAPI
from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from recpipe.errors import RequestError
from recpipe.serve.batching import MicroBatcher
from recpipe.serve.bundle import BENTO_NAME, MODEL_STORE_NAME
from recpipe.serve.predictor import Predictor
from recpipe.serve.schemas import (
    ModelInfo,
    Recommendation,
    RecommendRequest,
    SessionRequest,
    SimilarRequest,
)

__all__ = ["BUNDLE_ENV", "RecpipeService"]

log = logging.getLogger(__name__)

#: Environment variable naming a bundle directory to serve instead of the model store's.
BUNDLE_ENV = "RECPIPE_BUNDLE"

#: GET routes (BentoML APIs are POST): mounted as a FastAPI app with class views.
info_app = FastAPI(title="recpipe model info", docs_url=None, redoc_url=None, openapi_url=None)


def _bad_request(exc: RequestError, title: str) -> ValidationError:
    """A :class:`RequestError` as the validation error BentoML answers with HTTP 400."""
    error = PydanticCustomError("request_limit", "{reason}", {"reason": exc.reason})
    loc = tuple(exc.field.split("."))
    return ValidationError.from_exception_data(title, [{"type": error, "loc": loc, "input": None}])


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

    bundle = bentoml.models.BentoModel(f"{MODEL_STORE_NAME}:latest")

    def __init__(self) -> None:
        path = os.environ.get(BUNDLE_ENV) or self.bundle.path
        self.predictor = Predictor.from_artifact(path)
        settings = self.predictor.settings
        self.batcher: MicroBatcher[SessionRequest, Recommendation] = MicroBatcher(
            self.predictor.recommend_sessions,
            max_batch_size=settings.batch_max_size,
            max_wait_ms=settings.batch_max_wait_ms,
        )
        log.info("serving %s from %s", self.predictor.model.name, path)

    @bentoml.api(route="/recommend")
    def recommend(self, request: RecommendRequest, /) -> Recommendation:
        """Top-k items for a user; unknown users are answered from the request context."""
        try:
            return self.predictor.recommend(
                request.user_id,
                k=request.k,
                exclude_seen=request.exclude_seen,
                context=request.context,
            )
        except RequestError as exc:
            raise _bad_request(exc, "RecommendRequest") from None

    @bentoml.api(route="/recommend/session")
    async def recommend_session(self, request: SessionRequest, /) -> Recommendation:
        """Next items for a live session (batched with concurrent session requests)."""
        try:
            self.predictor.check_session(request)
        except RequestError as exc:
            raise _bad_request(exc, "SessionRequest") from None
        return await self.batcher.submit(request)

    @bentoml.api(route="/similar")
    def similar(self, request: SimilarRequest, /) -> Recommendation:
        """Items similar to a known item, or to a new item described by its metadata."""
        try:
            return self.predictor.similar(request.item_id, request.metadata, k=request.k)
        except RequestError as exc:
            raise _bad_request(exc, "SimilarRequest") from None

    @info_app.get("/model", response_model=ModelInfo)
    def model_info(self) -> dict[str, Any]:
        """What is served: model, registry version, data hash, metrics, index, limits."""
        return self.predictor.info()
