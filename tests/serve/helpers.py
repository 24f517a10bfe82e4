"""Small serving bundles built in the test itself from the planted data set."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from recpipe.config import ServeParams
from recpipe.features.idmap import N_RESERVED, IdMap
from recpipe.models.base import Recommender
from recpipe.models.data import DataMeta
from recpipe.models.registry import build_model
from recpipe.serve.bundle import fit_fallback, seen_matrix, write_bundle
from tests.contract.planted import N_ITEMS, N_USERS, planted

#: Raw ids of the planted indices: item index i is "i<i>", user index u is "u<u>".
INFO: dict[str, Any] = {
    "registered_model": "recpipe",
    "registry_version": "7",
    "source": "champion",
    "data_hash": "abc123",
    "git_commit": "deadbeef",
    "metrics": {"recall@20": 0.5, "ndcg@10": 0.25},
}


def item_id(index: int) -> str:
    return f"i{index}"


def user_id(index: int) -> str:
    return f"u{index}"


def with_maps(meta: DataMeta) -> DataMeta:
    """The planted meta with id maps ``i<index>`` / ``u<index>``."""
    items = IdMap(
        ids=np.array([item_id(i) for i in range(N_RESERVED, N_ITEMS)], dtype=object),
        id_counts=meta.item_counts[N_RESERVED:],
    )
    users = IdMap(
        ids=np.array([user_id(u) for u in range(N_RESERVED, N_USERS)], dtype=object),
        id_counts=np.zeros(N_USERS - N_RESERVED, dtype=np.int64),
    )
    return replace(meta, item_map=items, user_map=users)


def fitted(name: str, config: dict[str, Any] | None = None) -> tuple[Recommender, Any, DataMeta]:
    """(model fitted on the planted train part, the train part, the meta with maps)."""
    train, valid, meta = planted()
    meta = with_maps(meta)
    model = build_model(name, config or {}, meta).fit(train, valid)
    return model, train, meta


def make_bundle(
    out: Path,
    name: str = "mf_bpr",
    config: dict[str, Any] | None = None,
    *,
    fallback: str = "context_pop",
    serve: ServeParams | None = None,
) -> Path:
    """A serving bundle of a planted model (fallback and seen items from its train part)."""
    if config is None and name.startswith("mf_"):
        config = {"factors": 8, "epochs": 30, "learning_rate": 0.05, "seed": 0}
    model, train, meta = fitted(name, config)
    return write_bundle(
        out,
        model,
        fit_fallback(model, train, fallback),
        seen=seen_matrix(train, meta.n_users, meta.n_items),
        info=INFO,
        serve=serve or ServeParams(max_k=10, max_session_length=8),
        gap_buckets=16,
    )


@contextlib.contextmanager
def service_client(bundle: Path) -> Iterator[Any]:
    """A Starlette test client of the service's ASGI app over ``bundle`` (``RECPIPE_BUNDLE``
    set while it runs, restored after). BentoML registers its Prometheus metrics in the
    process's default registry when an app starts; they are unregistered afterwards so
    that the next app of this test process can register them again."""
    from prometheus_client import REGISTRY
    from starlette.testclient import TestClient

    from recpipe.serve.service import BUNDLE_ENV, RecpipeService

    before_collectors = set(REGISTRY._collector_to_names)
    before = os.environ.get(BUNDLE_ENV)
    os.environ[BUNDLE_ENV] = str(bundle)
    try:
        with TestClient(RecpipeService.to_asgi(), raise_server_exceptions=False) as client:
            yield client
    finally:
        if before is None:
            os.environ.pop(BUNDLE_ENV, None)
        else:
            os.environ[BUNDLE_ENV] = before
        for collector in set(REGISTRY._collector_to_names) - before_collectors:
            REGISTRY.unregister(collector)
