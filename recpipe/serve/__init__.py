"""Serving: the champion packaged as a Bento and answered over HTTP.

- :mod:`recpipe.serve.bundle`: the serving bundle (model, fallback, seen items, info).
- :mod:`recpipe.serve.index`: top-K over item vectors, exact or approximate (faiss).
- :mod:`recpipe.serve.batching`: adaptive micro-batching of concurrent requests.
- :mod:`recpipe.serve.schemas`: the request and response models (pydantic).
- :mod:`recpipe.serve.predictor`: bundle in, recommendations with strategies out.
- :mod:`recpipe.serve.fastpath`: the service's ASGI layer: request checks (415, 413), the
  lean path of its JSON endpoints, its documents.
- :mod:`recpipe.serve.openapi`: the OpenAPI document, completed (limits, errors, examples).
- :mod:`recpipe.serve.reuseport`: one ``SO_REUSEPORT`` listening socket per worker.
- :mod:`recpipe.serve.service`: the BentoML service (imports bentoml).
- :mod:`recpipe.serve.package`: model store, ``bentoml build`` and export, ``recpipe
  serve`` (imports bentoml).

Only ``service`` and ``package`` import BentoML; import them only where needed.
"""
