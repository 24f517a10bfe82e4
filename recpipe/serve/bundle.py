"""The serving bundle: everything a served model needs, in one directory.

The package stage writes it and puts it into the BentoML model store; the predictor
reads it. Layout (``info.json`` is written last, so its presence marks a complete
bundle)::

    model/       the champion's model artifact (Recommender.save layout, id maps included)
    fallback/    the cold-start fallback (``context_pop`` or ``pop``, ``serve.fallback``)
                 fitted on the events known at packaging time, encoded with the
                 champion's id maps, so both score the same item table
    seen.npz     (n_users, n_items) CSR of the items each known user has had an event on
                 (``exclude_seen``), from the same events
    index_vectors.npy
                 (optional) the model's unit-norm item vectors transposed, (D, N) float32:
                 the exact item index, ready to be memory-mapped, written when serving
                 will use one (float32, fewer than ``serve.ann_min_items`` items). Every
                 worker process of the service maps the same file, so the workers share
                 one copy in memory and in the CPU caches: with two workers scoring at
                 once, each product over 100k items took 2.2 ms instead of 3.2 ms with
                 a private copy each, and the service answered 1.5x the requests per
                 second. Bundles without it work as before (a private copy per worker).
    info.json    format, model name and split, registry name / version / source, git
                 commit, data hash, dvc.lock hash, metrics, the serving settings
                 (``serve``), the features' ``gap_buckets``, created_at

The fallback and the seen items come from every sessionized event
(``data/sessions/events.parquet``: train, validation and test periods), not only the
champion's training part: at serving time the freshest popularity is the best fallback,
and an item a user had after the training cut-off is still one they have seen.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recpipe import __version__
from recpipe.config import ServeParams
from recpipe.errors import ArtifactError
from recpipe.features.idmap import N_RESERVED
from recpipe.models.artifact import (
    csr_from_arrays,
    csr_keys,
    csr_to_arrays,
    load_arrays,
    save_arrays,
)
from recpipe.models.base import Recommender
from recpipe.models.data import DataMeta, Interactions
from recpipe.models.registry import build_model, load_model

__all__ = [
    "BENTO_NAME",
    "BUNDLE_FORMAT",
    "FALLBACK_DIR",
    "INDEX_FILE",
    "INFO_FILE",
    "MODEL_DIR",
    "MODEL_STORE_NAME",
    "SEEN_FILE",
    "fit_fallback",
    "index_vectors",
    "read_index_vectors",
    "read_info",
    "read_seen",
    "seen_matrix",
    "write_bundle",
]

log = logging.getLogger(__name__)

#: Name of the bundle in the BentoML model store, and of the Bento that serves it.
MODEL_STORE_NAME = "recpipe-champion"
BENTO_NAME = "recpipe"

BUNDLE_FORMAT = "recpipe.bundle"
BUNDLE_FORMAT_VERSION = 1
INFO_FILE = "info.json"
MODEL_DIR = "model"
FALLBACK_DIR = "fallback"
SEEN_FILE = "seen.npz"
INDEX_FILE = "index_vectors.npy"


def encode_for_model(model: Recommender, events: pd.DataFrame, gap_buckets: int) -> Interactions:
    """Canonical events encoded with the model's own id maps (unknown ids -> UNK).

    Parameters
    ----------
    model : Recommender
        A loaded model whose meta carries its id maps.
    events : pandas.DataFrame
        Canonical (sessionized) events: ``session_id``, ``user_id``, ``item_id``,
        ``timestamp``, ``event_type``, ``value``.
    gap_buckets : int
        ``features.gap_buckets`` of the run (context features).

    Raises
    ------
    ArtifactError
        The model carries no id maps.
    """
    from recpipe.features.encode import encode_events

    meta = model.meta
    if meta.item_map is None or meta.user_map is None:
        raise ArtifactError(f"the {model.name} artifact carries no id maps; it cannot be served")
    ordered = events.sort_values(["session_id", "timestamp"], kind="stable").reset_index(drop=True)
    return Interactions.from_frame(
        encode_events(ordered, meta.item_map, meta.user_map, gap_buckets)
    )


def fit_fallback(
    model: Recommender, events: Interactions, kind: str = "context_pop"
) -> Recommender:
    """The cold-start fallback over the model's item table, fitted on ``events``.

    Parameters
    ----------
    model : Recommender
        The served model (its sizes, id maps and item categories are reused).
    events : Interactions
        Events encoded with the model's id maps (:func:`encode_for_model`).
    kind : {"context_pop", "pop"}
        The fallback model.
    """
    meta = model.meta
    counts = np.bincount(events.item_idx, minlength=meta.n_items).astype(np.int64)
    counts[:N_RESERVED] = 0
    fallback_meta = DataMeta(
        n_items=meta.n_items,
        n_users=meta.n_users,
        item_counts=counts,
        split=meta.split,
        item_map=meta.item_map,
        user_map=meta.user_map,
        item_categories=meta.item_categories,
        gap_buckets=meta.gap_buckets,
    )
    return build_model(kind, {}, fallback_meta).fit(events)


def seen_matrix(events: Interactions, n_users: int, n_items: int) -> sp.csr_matrix:
    """(n_users, n_items) 0/1 uint8 CSR of each known user's items (unknown users and
    items left out), sorted indices."""
    users, items = events.user_idx, events.item_idx
    keep = (users >= N_RESERVED) & (items >= N_RESERVED)
    m = sp.csr_matrix(
        (np.ones(int(keep.sum()), np.uint8), (users[keep], items[keep])), shape=(n_users, n_items)
    )
    m.sum_duplicates()
    m.data[:] = 1
    m.sort_indices()
    return m


def write_bundle(
    out: Path | str,
    model: Path | str | Recommender,
    fallback: Recommender,
    *,
    seen: sp.csr_matrix | None,
    info: Mapping[str, Any],
    serve: ServeParams | None = None,
    gap_buckets: int = 16,
) -> Path:
    """Write a bundle directory (see the module docstring), replacing ``out``.

    Parameters
    ----------
    out : pathlib.Path or str
        The bundle directory.
    model : pathlib.Path, str or Recommender
        The model artifact directory (copied as it is) or a fitted model (saved).
    fallback : Recommender
        The fitted fallback (same item table as the model).
    seen : scipy.sparse.csr_matrix or None
        (n_users, n_items) items of each user, or None (exclude_seen then only leaves
        out the request's own items).
    info : mapping
        Lineage and metrics (``registry_version``, ``data_hash``, ``metrics``, ...).
    serve : ServeParams, optional
        Serving settings recorded for the predictor (default: the defaults).
    gap_buckets : int, default 16
        ``features.gap_buckets`` the model was trained with (session context).

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:12]}.tmp"
    tmp.mkdir()
    try:
        if isinstance(model, Recommender):
            model.save(tmp / MODEL_DIR)
            loaded = model
        else:
            shutil.copytree(Path(model), tmp / MODEL_DIR)
            loaded = load_model(tmp / MODEL_DIR)
        name, meta = loaded.name, loaded.meta
        if fallback.meta.n_items != meta.n_items:
            raise ArtifactError(
                f"the fallback has {fallback.meta.n_items} item slots, the model {meta.n_items}"
            )
        fallback.save(tmp / FALLBACK_DIR)
        if seen is not None:
            if seen.shape != (meta.n_users, meta.n_items):
                raise ArtifactError(
                    f"seen items have shape {seen.shape}, expected {(meta.n_users, meta.n_items)}"
                )
            save_arrays(tmp / SEEN_FILE, **csr_to_arrays("seen", seen))
        vectors_t = index_vectors(loaded, fallback, serve or ServeParams())
        if vectors_t is not None:
            np.save(tmp / INDEX_FILE, vectors_t)
        payload = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "recpipe_version": __version__,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": name,
            "split": meta.split,
            "fallback": fallback.name,
            "gap_buckets": int(gap_buckets),
            "serve": (serve or ServeParams()).model_dump(mode="json"),
            **{k: v for k, v in info.items() if k not in ("format", "model", "serve")},
        }
        (tmp / INFO_FILE).write_text(json.dumps(payload, indent=2, default=str) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote serving bundle of %s to %s", name, out)
    return out


def read_info(bundle: Path | str) -> dict[str, Any]:
    """The ``info.json`` of a bundle.

    Raises
    ------
    ArtifactError
        Not a (complete) bundle, or one of another format version.
    """
    path = Path(bundle) / INFO_FILE
    if not path.is_file():
        raise ArtifactError(
            f"{str(bundle)!r} is not a serving bundle (no {INFO_FILE}); build one with "
            "`recpipe stage package`"
        )
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(info, dict) or info.get("format") != BUNDLE_FORMAT:
        raise ArtifactError(f"{str(path)!r} is not a recpipe bundle's info (format mismatch)")
    if info.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise ArtifactError(
            f"bundle {str(bundle)!r} has format version {info.get('format_version')!r}; this "
            f"recpipe reads version {BUNDLE_FORMAT_VERSION}"
        )
    return info


def index_vectors(
    model: Recommender, fallback: Recommender, serve: ServeParams
) -> np.ndarray | None:
    """The (D, N) float32 transposed unit item vectors of the exact index that serving
    builds for ``model`` (:attr:`ColdStartPolicy.unit_vectors
    <recpipe.models.coldstart.ColdStartPolicy.unit_vectors>`), or None when serving will
    not build one (no item vectors, int8 codes, or a catalogue for the ANN index)."""
    from recpipe.models.coldstart import ColdStartPolicy

    if serve.quantize != "none":
        return None
    try:
        vectors = ColdStartPolicy(model, fallback).unit_vectors
    except ValueError as exc:  # a pair the predictor will refuse with the reason
        log.debug("no index vectors: %s", exc)
        return None
    if vectors is None or vectors.shape[0] - N_RESERVED >= serve.ann_min_items:
        return None
    return np.ascontiguousarray(vectors.T, dtype=np.float32)


def read_index_vectors(bundle: Path | str) -> np.ndarray | None:
    """The bundle's :data:`INDEX_FILE` memory-mapped (copy-on-write: never written, so
    every process that maps it shares its pages), or None when it has none."""
    path = Path(bundle) / INDEX_FILE
    if not path.is_file():
        return None
    try:
        return np.load(path, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError) as exc:
        log.warning("ignoring the bundle's %s: %s", INDEX_FILE, exc)
        return None


def read_seen(bundle: Path | str, n_users: int, n_items: int) -> sp.csr_matrix | None:
    """The bundle's seen items, or None when it has none."""
    path = Path(bundle) / SEEN_FILE
    if not path.is_file():
        return None
    return csr_from_arrays(load_arrays(path, csr_keys("seen")), "seen", (n_users, n_items))
