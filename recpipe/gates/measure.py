"""The figures behind the gate rules: latency, artifact size, the champion's metric.

These functions measure; :mod:`recpipe.gates.rules` judges.

Latency
    One request is what a served model answers: a single query (one user, or one
    session prefix of up to 50 events from the split's test part) scored against the
    whole catalogue, then the top-K (``numpy.argpartition`` plus a sort of the K).
    After 20 warm-up requests, ``n`` requests drawn with a fixed seed are timed one by
    one with ``time.perf_counter`` in this process; the p50 and p99 are reported in
    milliseconds. It excludes HTTP and id translation, which every model shares.

Artifact size
    The bytes of every file under the artifact directory, in MiB (2**20 bytes).

Champion re-evaluation
    The champion's artifact is evaluated with the split's protocol
    (:func:`recpipe.evaluate.protocols.evaluate_model`) on the current test part, like
    the candidates. When it was trained on other id maps (another data drop) it is
    scored through :class:`RemappedModel`: query ids are translated to its indices by
    the raw ids its own maps hold, and its scores are moved back to the split's item
    indices; items it never saw score ``-inf`` (ranked last, conservatively), users it
    never saw are its unknown slot. An artifact without id maps, one that cannot be
    loaded, or one whose query kinds the split's protocol cannot use raises, and the
    gate's champion rule fails with that message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from recpipe.errors import ArtifactError
from recpipe.features.idmap import N_RESERVED, PAD, UNK, IdMap
from recpipe.models.base import Recommender
from recpipe.models.data import DataMeta, Interactions, Queries

log = logging.getLogger(__name__)

#: Untimed requests before the timed ones (lazy initialisation, caches, allocator).
WARMUP_REQUESTS = 20
#: Longest session prefix in a timed request (the next-item protocol's default).
MAX_PREFIX = 50


def artifact_size_mb(path: Path | str) -> float:
    """Size of an artifact directory (every file under it) in MiB.

    Raises
    ------
    ArtifactError
        ``path`` is not a directory.
    """
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"artifact {str(path)!r} does not exist; expected a directory")
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return total / 2**20


def single_requests(
    model: Recommender, test: Interactions, n: int, *, seed: int = 0
) -> list[Queries]:
    """``n`` one-query requests a served ``model`` would get, drawn from a test part.

    Session models get session prefixes (up to :data:`MAX_PREFIX` events, with
    context); user models get known test users; item-only models the test items.

    Parameters
    ----------
    model : Recommender
        The model to time (its query kinds choose the request kind).
    test : Interactions
        The split's test part.
    n : int
        Number of requests (drawn with replacement).
    seed : int, default 0
        Seed of the draw.

    Returns
    -------
    list of Queries
        ``n`` batches of one query each.

    Raises
    ------
    ValueError
        The test part holds nothing the model can be asked about.
    """
    from recpipe.sessions.batching import prefixes

    rng = np.random.default_rng(seed)
    if "session" in model.query_kinds:
        ends, _ = prefixes(test.offsets)
        if len(ends) == 0:
            raise ValueError("the test part holds no session prefix to time requests on")
        chosen = rng.choice(ends, size=n)
        return [Queries.session_prefixes(test, chosen[i : i + 1], MAX_PREFIX) for i in range(n)]
    if "user" in model.query_kinds:
        users = np.unique(test.user_idx)
        users = users[(users >= N_RESERVED) & (users < model.meta.n_users)]
        if len(users) == 0:
            raise ValueError("the test part holds no known user to time requests on")
        return [Queries.for_users(rng.choice(users, size=1)) for _ in range(n)]
    items = np.unique(test.item_idx)
    items = items[(items >= N_RESERVED) & (items < model.meta.n_items)]
    if len(items) == 0:
        raise ValueError("the test part holds no known item to time requests on")
    return [Queries.for_items(rng.choice(items, size=1)) for _ in range(n)]


def _top_k(model: Recommender, query: Queries, k: int) -> np.ndarray:
    scores = model.score(query)[0]  # (n_items,)
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top], kind="stable")]


def request_latency(
    model: Recommender, requests: Sequence[Queries], k: int = 20
) -> dict[str, float]:
    """Time each request (score the catalogue, then top-``k``) after a warm-up.

    Parameters
    ----------
    model : Recommender
        A fitted model.
    requests : sequence of Queries
        One-query batches (:func:`single_requests`); the first
        :data:`WARMUP_REQUESTS` (cycled) also warm up.
    k : int, default 20
        Length of the returned list (clamped below the catalogue size).

    Returns
    -------
    dict
        ``p50_ms``, ``p99_ms``, ``max_ms``, ``mean_ms`` and ``n`` (timed requests).
    """
    if not requests:
        raise ValueError("no requests to time")
    k = max(1, min(int(k), model.meta.n_items - 1))
    for i in range(WARMUP_REQUESTS):
        _top_k(model, requests[i % len(requests)], k)
    times = np.empty(len(requests), dtype=np.float64)
    for i, query in enumerate(requests):
        start = time.perf_counter()
        _top_k(model, query, k)
        times[i] = (time.perf_counter() - start) * 1000.0
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "max_ms": float(times.max()),
        "mean_ms": float(times.mean()),
        "n": len(requests),
    }


class RemappedModel:
    """A model trained on other id maps, scored in the index space of a new split.

    A model trained with other ``gap_buckets`` than the split's sees its session
    queries' ``gap_bucket`` context re-bucketed its own way (:func:`rebucket_gaps`).

    Duck-types the parts of :class:`~recpipe.models.base.Recommender` the evaluation
    protocols use (``name``, ``query_kinds``, ``meta``, ``score``). Query users and
    items are translated to the model's indices through the raw ids (unknown ids
    become its ``UNK`` slot; ``PAD`` stays ``PAD``); each score row is gathered back
    to the new item indices, so an item the model never saw scores ``-inf``.

    Parameters
    ----------
    model : Recommender
        The fitted model; its ``meta`` must carry ``item_map`` and ``user_map``.
    meta : DataMeta
        The new split's meta, with its id maps.

    Raises
    ------
    ArtifactError
        The model or the split lacks id maps.
    """

    def __init__(self, model: Recommender, meta: DataMeta) -> None:
        old, new = model.meta, meta
        if old.item_map is None or old.user_map is None:
            raise ArtifactError(
                f"the {model.name} artifact carries no id maps, so its indices cannot be "
                f"matched to the {meta.split or 'new'} split's; expected item_map.parquet and "
                "user_map.parquet in the artifact"
            )
        if new.item_map is None or new.user_map is None:
            raise ArtifactError("the split's meta carries no id maps; re-run the features stage")
        self.inner = model
        self.name = model.name
        self.query_kinds = model.query_kinds
        self.meta = meta
        self._items = _translation(new.item_map, old.item_map)  # new index -> old index
        self._users = _translation(new.user_map, old.user_map)
        self.known_items = int((self._items[N_RESERVED:] >= N_RESERVED).sum())
        # the gap buckets the model was trained with, when the split's differ
        differ = old.gap_buckets is not None and old.gap_buckets != new.gap_buckets
        self.gap_buckets = old.gap_buckets if differ else None

    def score(self, queries: Queries, candidates: np.ndarray | None = None) -> np.ndarray:
        """Scores in the new split's item indices (see the class docstring)."""
        mapped: dict[str, Any] = {}
        if queries.users is not None:
            mapped["users"] = self._users[queries.users]
        if queries.items is not None:
            mapped["items"] = self._items[queries.items]
        if self.gap_buckets is not None and queries.gap_bucket is not None:
            mapped["gap_bucket"] = rebucket_gaps(queries, self.gap_buckets)
        scores = self.inner.score(replace(queries, **mapped))  # (B, n_old)
        out = scores[:, self._items]  # (B, n_new); unknown items gather UNK's -inf
        out[:, :N_RESERVED] = -np.inf
        if candidates is None:
            return out
        cand = np.asarray(candidates, dtype=np.int64)
        if cand.ndim == 1:
            cand = np.broadcast_to(cand, (len(queries), cand.shape[0]))
        return np.take_along_axis(out, cand, axis=1)


def rebucket_gaps(queries: Queries, gap_buckets: int) -> np.ndarray:
    """The (B, T) ``gap_bucket`` context of session ``queries`` under ``gap_buckets``.

    From the queries' timestamps when they carry them (exact: the seconds since the
    previous event of the session, as the features stage computes them); else from the
    buckets themselves, capped at ``gap_buckets - 1`` (exact unless the queries'
    bucketing was the coarser one and capped the gap).
    """
    from recpipe.features.context import gap_bucket_of

    old = np.asarray(queries.gap_bucket)
    if queries.timestamps is None or queries.items is None:
        return np.minimum(old, gap_buckets - 1)
    ns = np.asarray(queries.timestamps, dtype=np.int64)
    real = np.asarray(queries.items) != PAD  # left-padded, most recent event last
    seconds = np.full(ns.shape, np.nan)
    follows = real[:, 1:] & real[:, :-1]
    seconds[:, 1:] = np.where(follows, (ns[:, 1:] - ns[:, :-1]) / 1e9, np.nan)
    return np.where(real, gap_bucket_of(seconds, gap_buckets), 0).astype(old.dtype)


def _translation(new: IdMap, old: IdMap) -> np.ndarray:
    """(len(new),) int64: each new index's index in ``old`` (UNK when absent)."""
    out = np.empty(len(new), dtype=np.int64)
    out[PAD] = PAD
    out[UNK] = UNK
    if len(new) > N_RESERVED:
        ids = new.decode(np.arange(N_RESERVED, len(new)))
        out[N_RESERVED:] = old.encode(ids)
    return out


def fit_to_split(model: Recommender, meta: DataMeta) -> tuple[Any, bool]:
    """``model`` itself when it was trained on ``meta``'s id maps, else a :class:`RemappedModel`.

    Returns
    -------
    tuple
        The model to evaluate and whether it was remapped.
    """
    same = (
        model.meta.item_map is not None
        and model.meta.user_map is not None
        and model.meta.item_map == meta.item_map
        and model.meta.user_map == meta.user_map
        and (model.meta.gap_buckets is None or model.meta.gap_buckets == meta.gap_buckets)
    )
    if same:
        return model, False
    remapped = RemappedModel(model, meta)
    log.info(
        "%s was trained on other id maps: evaluating through its own maps (%d of %d items known)",
        model.name,
        remapped.known_items,
        meta.n_real_items,
    )
    return remapped, True


def split_metrics(
    model: Recommender,
    split_kind: str,
    data: Mapping[str, Interactions],
    meta: DataMeta,
    ks: Sequence[int],
    metric: str,
    *,
    test_user_keys: np.ndarray | None = None,
    given: int = 5,
) -> tuple[dict[str, float], bool]:
    """The metrics of ``model`` on a split by its protocol, as the evaluate stage gives
    them (``metric`` must be among them).

    Returns
    -------
    tuple
        ``{metric: mean}`` and whether the model was scored through its own id maps.

    Raises
    ------
    ArtifactError
        The model's ids cannot be matched to the split's.
    ValueError
        The split's protocol cannot evaluate the model, or does not give ``metric``.
    """
    from recpipe.evaluate.protocols import evaluate_model

    scorer, remapped = fit_to_split(model, meta)
    result = evaluate_model(
        scorer, split_kind, data, meta, ks, test_user_keys=test_user_keys, given=given
    )
    if metric not in result.metrics:
        raise ValueError(
            f"the {split_kind} protocol gave no {metric!r} for {model.name}; it gave "
            f"{sorted(result.metrics)}"
        )
    return {name: float(v) for name, v in result.metrics.items()}, remapped
