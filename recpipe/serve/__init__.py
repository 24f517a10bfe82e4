"""Serving: the champion packaged as a Bento and answered over HTTP.

- :mod:`recpipe.serve.bundle`: the serving bundle (model, fallback, seen items, info).
- :mod:`recpipe.serve.index`: top-K over item vectors, exact or approximate (faiss).
- :mod:`recpipe.serve.batching`: adaptive micro-batching of concurrent requests.
- :mod:`recpipe.serve.schemas`: the request and response models (pydantic).
- :mod:`recpipe.serve.predictor`: bundle in, recommendations with strategies out.
- :mod:`recpipe.serve.fastpath`: the lean ASGI path of the service's JSON endpoints.
- :mod:`recpipe.serve.reuseport`: one ``SO_REUSEPORT`` listening socket per worker.
- :mod:`recpipe.serve.service`: the BentoML service (imports bentoml).
- :mod:`recpipe.serve.package`: model store, ``bentoml build`` and export, ``recpipe
  serve`` (imports bentoml).

Only ``service`` and ``package`` import BentoML; import them only where needed.
"""
