"""The body of the ``package`` stage: a model artifact and the sessionized events in, a
tested serving bundle stored and built as a Bento out.

:func:`package_model` encodes the events with the model's **own** preprocessing (its id
maps and the ``gap_buckets`` its features were built with, from the artifact, never
from the current params), fits the ``serve.fallback`` model and each known user's seen
items on them, writes the bundle (:mod:`recpipe.serve.bundle`), loads it in a
:class:`~recpipe.serve.predictor.Predictor` and answers one request of each kind (a
broken bundle never becomes a Bento), then stores and builds it
(:func:`recpipe.serve.package.package_bundle`). The stage function
(:func:`recpipe.stages.package`) chooses the model and writes the report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from recpipe.config import ServeParams

log = logging.getLogger(__name__)


def smoke_test(predictor: Any) -> dict[str, str]:
    """One request of each kind through a freshly loaded predictor; the strategies used."""
    from recpipe.features.idmap import N_RESERVED

    items = predictor.item_map.ids[:2].tolist()
    users = predictor.user_map.ids[:1].tolist()
    k = min(10, predictor.settings.max_k)
    answers = {
        "recommend_known_user": predictor.recommend(users[0], k=k) if users else None,
        "recommend_unknown_user": predictor.recommend("__recpipe_unknown_user__", k=k),
        "session": predictor.recommend_session(items, k=k),
        "empty_session": predictor.recommend_session([], k=k),
        "similar": predictor.similar(items[0], k=k) if len(items) else None,
    }
    if predictor.item_map.n_ids + N_RESERVED < 3:
        log.warning("the served catalogue holds fewer than one real item")
    return {name: answer.strategy for name, answer in answers.items() if answer is not None}


def model_gap_buckets(model: Any, legacy: int) -> int:
    """The ``gap_buckets`` the model's features were built with, from its artifact.

    An artifact written before recpipe stored the value has none: ``legacy`` (the
    current ``features.gap_buckets``) is used then, with a warning, since it cannot be
    checked; retrain the model to record it.
    """
    found = model.meta.gap_buckets
    if found is not None:
        return int(found)
    log.warning(
        "the %s artifact does not record the gap_buckets it was trained with (written by an "
        "older recpipe); serving with features.gap_buckets=%d. Retrain it to record the value",
        model.name,
        legacy,
    )
    return int(legacy)


def build_bundle(
    out: Path,
    artifact: Path,
    info: dict[str, Any],
    events: pd.DataFrame,
    serve: ServeParams,
    *,
    legacy_gap_buckets: int,
) -> Path:
    """Write the serving bundle of one model artifact to ``out`` (replacing it).

    The events are encoded with the model's own id maps and ``gap_buckets``; the
    ``serve.fallback`` model and each known user's seen items are fitted on them
    (:mod:`recpipe.serve.bundle`). The package stage serves it; the register step logs
    it with every version, so the registry's pyfunc answers as the service does.

    Parameters
    ----------
    out : pathlib.Path
        The bundle directory.
    artifact : pathlib.Path
        The model artifact.
    info : dict
        Lineage and metrics recorded in the bundle's ``info.json``.
    events : pandas.DataFrame
        Every sessionized event (``data/sessions/events.parquet``).
    serve : ServeParams
        The serving settings (fallback kind, index, limits).
    legacy_gap_buckets : int
        Used only for an artifact that predates recording its ``gap_buckets``.
    """
    from recpipe.models.registry import load_model
    from recpipe.serve.bundle import encode_for_model, fit_fallback, seen_matrix, write_bundle

    model = load_model(artifact)
    gap_buckets = model_gap_buckets(model, legacy_gap_buckets)
    encoded = encode_for_model(model, events, gap_buckets)
    return write_bundle(
        out,
        artifact,
        fit_fallback(model, encoded, serve.fallback),
        seen=seen_matrix(encoded, model.meta.n_users, model.meta.n_items),
        info=info,
        serve=serve,
        gap_buckets=gap_buckets,
    )


def package_model(
    artifact: Path,
    info: dict[str, Any],
    events: pd.DataFrame,
    serve: ServeParams,
    archive: Path,
    work: Path,
    *,
    legacy_gap_buckets: int,
) -> dict[str, Any]:
    """Build, test, store and export the serving bundle of one model artifact.

    Parameters
    ----------
    artifact : pathlib.Path
        The model artifact to serve.
    info : dict
        Where it comes from: ``source``, ``registered_model``, ``registry_version``,
        ``gate_decision``, ``git_commit``, ``data_hash``, ``dvc_lock_sha256``, ``metrics``.
    events : pandas.DataFrame
        Every sessionized event (``data/sessions/events.parquet``): the fallback's
        popularity and each known user's items.
    serve : ServeParams
        The serving settings (fallback kind, index, limits).
    archive : pathlib.Path
        Where the exported Bento goes.
    work : pathlib.Path
        A scratch folder (the bundle is written under it).
    legacy_gap_buckets : int
        Used only for an artifact that predates recording its ``gap_buckets``.

    Returns
    -------
    dict
        :func:`~recpipe.serve.package.package_bundle`'s summary plus ``labels``,
        ``metrics``, ``index``, ``smoke_test``, ``model`` and ``gap_buckets``.
    """
    from recpipe.models.registry import load_model
    from recpipe.serve.index import index_report
    from recpipe.serve.package import package_bundle
    from recpipe.serve.predictor import Predictor

    model = load_model(artifact)
    bundle = build_bundle(
        work / "bundle", artifact, info, events, serve, legacy_gap_buckets=legacy_gap_buckets
    )
    predictor = Predictor.from_artifact(bundle)
    gap_buckets = predictor.gap_buckets
    smoke = smoke_test(predictor)
    index = None
    if predictor.index is not None and predictor.policy.unit_vectors is not None:
        index = index_report(predictor.policy.unit_vectors, predictor.index)
    labels = {
        "model": model.name,
        "split": model.meta.split,
        "source": info["source"],
        "registered_model": info["registered_model"],
        "registry_version": info["registry_version"],
        "gate_decision": info["gate_decision"],
        "git_commit": info["git_commit"],
        "data_hash": info["data_hash"],
        "dvc_lock_sha256": info["dvc_lock_sha256"],
        **{f"metric.{k}": f"{v:.6g}" for k, v in info["metrics"].items()},
    }
    packaged = package_bundle(
        bundle,
        archive,
        labels=labels,
        metadata={
            "metrics": info["metrics"],
            "index": index,
            "serve": serve.model_dump(mode="json"),
        },
    )
    return {
        **packaged,
        "labels": labels,
        "metrics": info["metrics"],
        "index": index,
        "smoke_test": smoke,
        "model": model.name,
        "gap_buckets": gap_buckets,
    }
