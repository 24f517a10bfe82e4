"""The predictor: a serving bundle in, recommendations of raw item ids out (no BentoML).

:class:`Predictor` wraps the champion and its fallback in a
:class:`~recpipe.models.coldstart.ColdStartPolicy` and answers the service's requests
with raw string ids in and out (through the artifact's id maps). Every answer names the
strategy that produced it (``model``, ``item_aggregate``, ``item_similarity``,
``content``, ``context_popularity``, ``popularity``); unknown ids are routed to the
cold-start strategies, never raised on. Only limits (k, session length) and
inconsistent requests raise :class:`~recpipe.errors.RequestError`.

========================  ==============================================================
request                   route
========================  ==============================================================
:meth:`recommend`         a known user: the model's user scores (``model``) without the
                          items they have seen (``exclude_seen``); an unknown user: the
                          request context's items (``item_aggregate`` or the model's
                          session scoring) or the contextual fallback
:meth:`recommend_session` a session of item ids (with event types and times): the model's
                          session scoring; for a model with item vectors and no session
                          scoring the recency-weighted mean of the session's item vectors
                          searched in the item index (``item_aggregate``); sessions with
                          no known item: the fallback
:meth:`similar`           a known item: the model's item scores, else the item index
                          (``item_similarity``); a new item by its metadata: the content
                          model (``content``); otherwise popularity
========================  ==============================================================

Models with item vectors (MF, the content models) get an item index
(:mod:`recpipe.serve.index`): exact top-K by a matrix product, or faiss for catalogues
of ``serve.ann_min_items`` items and more. Other models are scored in full and ranked
by :func:`~recpipe.serve.index.top_k`. :meth:`recommend_sessions` scores a batch of
session requests at once (the service batches concurrent requests into it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recpipe.config import ServeParams
from recpipe.errors import ArtifactError, RequestError
from recpipe.features.context import EVENT_TYPE_INDEX, gap_bucket_of
from recpipe.features.idmap import N_RESERVED, UNK
from recpipe.models.base import Recommender
from recpipe.models.coldstart import STRATEGIES, STRATEGY_REASONS, ColdStartPolicy
from recpipe.models.data import Queries
from recpipe.models.embedding import aggregate_items, has_known_items
from recpipe.models.registry import load_model
from recpipe.serve.bundle import (
    FALLBACK_DIR,
    MODEL_DIR,
    read_index_vectors,
    read_info,
    read_seen,
)
from recpipe.serve.index import ExactIndex, FaissIndex, build_index, top_k
from recpipe.serve.schemas import (
    DEFAULT_K,
    ItemMetadata,
    Recommendation,
    RequestContext,
    SessionRequest,
)

__all__ = ["Predictor"]

log = logging.getLogger(__name__)

_NS_PER_S = 1_000_000_000
_NS_PER_HOUR = 3600 * _NS_PER_S
_NS_PER_DAY = 24 * _NS_PER_HOUR
_EPOCH_DOW = 3  # 1970-01-01 was a Thursday (Monday = 0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _nanoseconds(moment: datetime) -> int:
    """Nanoseconds since the epoch; a naive time is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _NS_PER_S + delta.microseconds * 1000


def _matching(transposed: np.ndarray | None, vectors: np.ndarray) -> np.ndarray | None:
    """``transposed`` when it holds ``vectors`` transposed (its shape, and 64 columns spread
    over the table compared exactly), else None (with a warning when given)."""
    if transposed is None:
        return None
    n, d = vectors.shape
    if transposed.shape == (d, n) and transposed.dtype == np.float32:
        sample = np.unique(np.linspace(0, n - 1, num=min(n, 64)).astype(np.int64))
        if np.array_equal(transposed[:, sample], vectors[sample].T):
            return transposed
    log.warning("the bundle's index vectors do not match the model's; building the index")
    return None


def _hour_dow(ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hours = (ns // _NS_PER_HOUR) % 24
    dows = (ns // _NS_PER_DAY + _EPOCH_DOW) % 7
    return hours, dows


class Predictor:
    """A served model: raw ids in, top-k raw ids with scores and a strategy out.

    Parameters
    ----------
    model : Recommender
        The fitted champion; its meta must carry the id maps.
    fallback : Recommender
        The fitted fallback (``context_pop`` or ``pop``) over the same item table.
    seen : scipy.sparse.csr_matrix, optional
        (n_users, n_items) items each known user has had (``exclude_seen``).
    info : mapping, optional
        Lineage and metrics shown by :meth:`info` (the bundle's ``info.json``).
    settings : ServeParams, optional
        Limits, index and batching settings (default: the defaults).
    gap_buckets : int, default 16
        ``features.gap_buckets`` of the model's data (session context).
    index_vectors : numpy.ndarray, optional
        The exact index's (D, N) transposed unit item vectors, e.g. the bundle's
        memory-mapped copy that the service's workers share; used when they are the
        vectors the index would hold, ignored (with a warning) otherwise.

    Raises
    ------
    ArtifactError
        The model carries no id maps.

    Examples
    --------
    >>> predictor = Predictor.from_artifact("bundle/")  # doctest: +SKIP
    >>> predictor.recommend_session(["i42", "i7"], k=3)  # doctest: +SKIP
    Recommendation(items=['i8', 'i43', 'i3'], scores=[...], strategy='model')
    """

    def __init__(
        self,
        model: Recommender,
        fallback: Recommender,
        *,
        seen: sp.csr_matrix | None = None,
        info: Mapping[str, Any] | None = None,
        settings: ServeParams | None = None,
        gap_buckets: int = 16,
        index_vectors: np.ndarray | None = None,
    ) -> None:
        meta = model.meta
        if meta.item_map is None or meta.user_map is None:
            raise ArtifactError(
                f"the {model.name} artifact carries no id maps; a served model needs them"
            )
        self.model = model
        self.fallback = fallback
        self.policy = ColdStartPolicy(model, fallback)
        self.settings = settings or ServeParams()
        self.gap_buckets = int(gap_buckets)
        self.item_map, self.user_map = meta.item_map, meta.user_map
        self._ids = np.concatenate([np.array([None] * N_RESERVED, dtype=object), meta.item_map.ids])
        # request-time lookups: a dict answers one id in ~100 ns, while IdMap.encode
        # (built for millions of ids at once) rebuilds its hash table on every call
        self._item_index = {str(v): i for i, v in enumerate(meta.item_map.ids, N_RESERVED)}
        self._user_index = {str(v): i for i, v in enumerate(meta.user_map.ids, N_RESERVED)}
        if seen is not None and seen.shape != (meta.n_users, meta.n_items):
            raise ArtifactError(
                f"seen items have shape {seen.shape}, expected {(meta.n_users, meta.n_items)}"
            )
        self.seen = seen
        self._info = dict(info or {})
        vectors = self.policy.unit_vectors
        s = self.settings
        self.index: ExactIndex | FaissIndex | None = None
        if vectors is not None:
            self.index = build_index(
                vectors,
                ann_min_items=s.ann_min_items,
                ann_index=s.ann_index,
                quantize=s.quantize,
                nlist=s.ann_nlist,
                nprobe=s.ann_nprobe,
                hnsw_m=s.hnsw_m,
                ef_search=s.hnsw_ef_search,
                transposed=_matching(index_vectors, vectors),
            )
        self._content = self.policy.content
        self._encoder = None if self._content is None else self._content.meta.item_encoder
        log.info(
            "predictor: %s over %d items, fallback %s, index %s",
            model.name,
            meta.n_real_items,
            fallback.name,
            None if self.index is None else self.index.describe(),
        )

    # construction ------------------------------------------------------------
    @classmethod
    def from_artifact(cls, bundle: Path | str) -> Predictor:
        """Load a serving bundle (:mod:`recpipe.serve.bundle`) written by the package stage.

        Raises
        ------
        ArtifactError
            The directory is not a complete bundle, or a part of it cannot be loaded.
        """
        bundle = Path(bundle)
        info = read_info(bundle)
        model = load_model(bundle / MODEL_DIR)
        fallback = load_model(bundle / FALLBACK_DIR)
        seen = read_seen(bundle, model.meta.n_users, model.meta.n_items)
        index_vectors = read_index_vectors(bundle)
        try:
            settings = ServeParams.model_validate(info.get("serve", {}))
        except ValueError as exc:
            raise ArtifactError(
                f"bundle {str(bundle)!r} has invalid serve settings: {exc}"
            ) from exc
        return cls(
            model,
            fallback,
            seen=seen,
            info=info,
            settings=settings,
            gap_buckets=int(info.get("gap_buckets", 16)),
            index_vectors=index_vectors,
        )

    # limits ------------------------------------------------------------------
    def _check_k(self, k: int | None) -> int:
        """``k`` (None: the default, capped at ``max_k``), or RequestError."""
        if k is None:
            return min(DEFAULT_K, self.settings.max_k)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise RequestError("k", f"must be a positive integer, got {k!r}")
        if k > self.settings.max_k:
            raise RequestError("k", f"may be at most {self.settings.max_k}, got {k}")
        return k

    def _check_length(self, field: str, n: int) -> None:
        if n > self.settings.max_session_length:
            raise RequestError(
                field, f"may hold at most {self.settings.max_session_length} items, got {n}"
            )

    def check_session(self, request: SessionRequest) -> None:
        """Raise :class:`RequestError` if a session request breaks a limit."""
        self._check_k(request.k)
        self._check_length("items", len(request.items))

    # ranking -----------------------------------------------------------------
    def _top_k(
        self, scores: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(B, K) best item indices and scores of full (B, n_items) score rows."""
        if exclude is not None:
            for row, items in enumerate(exclude):
                if len(items):
                    scores[row, items] = -np.inf
        values, columns = top_k(scores, min(k, scores.shape[1]))
        return columns.astype(np.int64, copy=False), values

    def _answers(
        self, index: np.ndarray, scores: np.ndarray, names: np.ndarray, ks: Sequence[int]
    ) -> list[Recommendation]:
        """One :class:`Recommendation` per row: the first k valid entries, decoded."""
        valid = (index >= N_RESERVED) & np.isfinite(scores)
        ids = self._ids[np.where(valid, index, 0)]
        out = []
        for row, k in enumerate(ks):
            keep = valid[row]
            out.append(
                Recommendation(
                    items=ids[row][keep][:k].tolist(),
                    scores=scores[row][keep][:k].astype(float).tolist(),
                    strategy=str(names[row]),
                    reason=STRATEGY_REASONS.get(str(names[row]), ""),
                )
            )
        return out

    def _encode_lists(self, lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded (B, T) indices of item id lists (T >= 1) and their lengths."""
        lengths = np.array([len(x) for x in lists], dtype=np.int64)
        t = max(int(lengths.max(initial=0)), 1)
        items = np.zeros((len(lists), t), dtype=np.int64)
        total = int(lengths.sum())
        if total:
            lookup = self._item_index.get
            codes = np.fromiter((lookup(i, UNK) for x in lists for i in x), np.int64, total)
            rows = np.repeat(np.arange(len(lists)), lengths)
            starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
            cols = t - np.repeat(lengths, lengths) + (np.arange(total) - starts)
            items[rows, cols] = codes
        return items, lengths

    def _session_context(
        self, requests: Sequence[SessionRequest], items: np.ndarray, lengths: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The (B, T) context arrays the requests carry (all or none of each kind)."""
        b, t = items.shape
        rows = np.repeat(np.arange(b), lengths)
        cols = (
            t
            - np.repeat(lengths, lengths)
            + (np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths))
        )
        context: dict[str, np.ndarray] = {}
        if requests[0].event_types is not None:
            codes = np.zeros((b, t), dtype=np.int64)
            flat = [EVENT_TYPE_INDEX.get(e, 0) for r in requests for e in (r.event_types or [])]
            codes[rows, cols] = flat
            context["event_type_idx"] = codes
        if requests[0].timestamps is not None:
            ns = np.zeros((b, t), dtype=np.int64)
            ns[rows, cols] = [_nanoseconds(x) for r in requests for x in (r.timestamps or [])]
            real = np.zeros((b, t), dtype=bool)
            real[rows, cols] = True
            hours, dows = _hour_dow(ns)
            seconds = np.full((b, t), np.nan)
            follows = real[:, 1:] & real[:, :-1]
            seconds[:, 1:] = np.where(follows, (ns[:, 1:] - ns[:, :-1]) / _NS_PER_S, np.nan)
            context["hour"] = np.where(real, hours, 0)
            context["dow"] = np.where(real, dows, 0)
            context["gap_bucket"] = np.where(real, gap_bucket_of(seconds, self.gap_buckets), 0)
            context["timestamps"] = ns
        return context

    def _route_sessions(
        self,
        items: np.ndarray,
        context: Mapping[str, np.ndarray],
        ks: Sequence[int],
        exclude_seen: Sequence[bool],
    ) -> list[Recommendation]:
        kmax = max(ks)
        b = items.shape[0]
        exclude = [
            np.unique(row[row >= N_RESERVED]) if drop else np.zeros(0, dtype=np.int64)
            for row, drop in zip(items, exclude_seen, strict=True)
        ]
        index_out = np.full((b, kmax), -1, dtype=np.int64)
        score_out = np.full((b, kmax), -np.inf, dtype=np.float32)
        names = np.empty(b, dtype=object)
        rest = np.arange(b)
        vectors = self.policy.unit_vectors
        if (
            self.index is not None
            and vectors is not None
            and "session" not in self.model.query_kinds
        ):
            known = has_known_items(items)
            rows = np.flatnonzero(known)
            if rows.size:
                query = aggregate_items(vectors, items[rows], self.policy.decay)
                idx, sc = self.index.search(query, kmax, [exclude[r] for r in rows])
                index_out[rows, : idx.shape[1]] = idx
                score_out[rows, : sc.shape[1]] = sc
                names[rows] = "item_aggregate"
            rest = np.flatnonzero(~known)
        if rest.size:
            queries = Queries.for_sessions(items, **context)
            routed = self.policy.sessions(queries.take(rest))
            idx, sc = self._top_k(routed.scores, kmax, [exclude[r] for r in rest])
            index_out[rest, : idx.shape[1]] = idx
            score_out[rest, : sc.shape[1]] = sc
            names[rest] = routed.strategy
        return self._answers(index_out, score_out, names, ks)

    # requests ----------------------------------------------------------------
    def recommend_sessions(self, requests: Sequence[SessionRequest]) -> list[Recommendation]:
        """Answer a batch of session requests (one answer per request, in order).

        Requests are grouped by the context they carry (event types, timestamps), so
        that a request without times is never scored as if it happened at midnight.

        Raises
        ------
        RequestError
            A request breaks a limit (check requests with :meth:`check_session` first
            when one bad request must not fail the others).
        """
        for request in requests:
            self.check_session(request)
        out: list[Recommendation | None] = [None] * len(requests)
        groups: dict[tuple[bool, bool], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.event_types is not None, r.timestamps is not None), []).append(i)
        for rows in groups.values():
            part = [requests[i] for i in rows]
            items, lengths = self._encode_lists([r.items for r in part])
            context = self._session_context(part, items, lengths)
            answers = self._route_sessions(
                items, context, [self._check_k(r.k) for r in part], [r.exclude_seen for r in part]
            )
            for i, answer in zip(rows, answers, strict=True):
                out[i] = answer
        return [a for a in out if a is not None]

    def recommend_session(
        self,
        items: Sequence[str],
        event_types: Sequence[str] | None = None,
        timestamps: Sequence[datetime | float | str] | None = None,
        k: int | None = None,
        exclude_seen: bool = True,
    ) -> Recommendation:
        """Next items of one session (item ids oldest first; see the module docstring);
        ``exclude_seen`` leaves out the session's own items.

        Raises
        ------
        RequestError
            ``k`` or the session length is above the limit.
        pydantic.ValidationError
            Malformed arguments (unknown event type, lists of different lengths).
        """
        request = SessionRequest(
            items=list(items),
            event_types=None if event_types is None else list(event_types),
            timestamps=None if timestamps is None else list(timestamps),
            k=k,
            exclude_seen=exclude_seen,
        )
        return self.recommend_sessions([request])[0]

    def recommend(
        self,
        user_id: str,
        k: int | None = None,
        exclude_seen: bool = True,
        context: RequestContext | Mapping[str, Any] | None = None,
    ) -> Recommendation:
        """Top-``k`` items for a user (see the module docstring).

        Parameters
        ----------
        user_id : str
            The user's raw id; an unknown one takes the cold-start path.
        k : int, optional
            At most ``serve.max_k``; default 20 (or ``max_k`` when smaller).
        exclude_seen : bool, default True
            Leave out the items the user had (known users) and the context's items.
        context : RequestContext or mapping, optional
            ``timestamp``, ``event_type`` and recent ``items`` of the request.

        Raises
        ------
        RequestError
            ``k`` or the context's item count is above the limit.
        """
        k = self._check_k(k)
        ctx = (
            context
            if isinstance(context, RequestContext)
            else RequestContext.model_validate(dict(context or {}))
        )
        self._check_length("context.items", len(ctx.items))
        users = np.array([self._user_index.get(str(user_id), UNK)], dtype=np.int64)
        items, _ = self._encode_lists([ctx.items])
        columns: dict[str, np.ndarray] = {}
        if ctx.event_type is not None:
            columns["event_type_idx"] = np.full(items.shape, EVENT_TYPE_INDEX[ctx.event_type])
        if ctx.timestamp is not None:
            hour, dow = _hour_dow(np.array([_nanoseconds(ctx.timestamp)]))
            columns["hour"] = np.full(items.shape, int(hour[0]))
            columns["dow"] = np.full(items.shape, int(dow[0]))
        routed = self.policy.users(users, items, columns)
        exclude = [np.zeros(0, dtype=np.int64)]
        if exclude_seen:
            parts = [items[0][items[0] >= N_RESERVED]]
            user = int(users[0])
            if self.seen is not None and user >= N_RESERVED:
                parts.append(self.seen.indices[self.seen.indptr[user] : self.seen.indptr[user + 1]])
            exclude = [np.unique(np.concatenate(parts)).astype(np.int64)]
        idx, sc = self._top_k(routed.scores, k, exclude)
        return self._answers(idx, sc, routed.strategy, [k])[0]

    def similar(
        self,
        item_id: str | None = None,
        metadata: ItemMetadata | Mapping[str, Any] | None = None,
        k: int | None = None,
    ) -> Recommendation:
        """Items similar to a known item, or to a new item given by its metadata.

        A known ``item_id`` wins over ``metadata``; an unknown id without metadata (or
        a model without content) gets popularity. The item itself is never returned.

        Raises
        ------
        RequestError
            ``k`` above the limit, neither argument given, or metadata attributes the
            model does not know.
        """
        k = self._check_k(k)
        if item_id is None and metadata is None:
            raise RequestError("item_id", "give item_id, or metadata for a new item")
        item = self._item_index.get(str(item_id), UNK) if item_id is not None else UNK
        vectors = self.policy.unit_vectors
        if item >= N_RESERVED:
            exclude = [np.array([item], dtype=np.int64)]
            if (
                self.index is not None
                and vectors is not None
                and "item" not in self.model.query_kinds
            ):
                idx, sc = self.index.search(vectors[[item]], k, exclude)
                names = np.array(["item_similarity"], dtype=object)
                return self._answers(idx, sc, names, [k])[0]
            routed = self.policy.similar(np.array([item]))
            idx, sc = self._top_k(routed.scores, k, exclude)
            return self._answers(idx, sc, routed.strategy, [k])[0]
        if metadata is not None and self._encoder is not None:
            meta = (
                metadata
                if isinstance(metadata, ItemMetadata)
                else ItemMetadata.model_validate(dict(metadata))
            )
            routed = self.policy.similar_to_content(self._encode_metadata(meta))
        else:
            routed = self.policy.similar(np.array([UNK]))
        idx, sc = self._top_k(routed.scores, k, None)
        return self._answers(idx, sc, routed.strategy, [k])[0]

    def _encode_metadata(self, meta: ItemMetadata) -> Any:
        """One new item's content, encoded by the content model's fitted encoder."""
        assert self._encoder is not None
        known = list(self._encoder.numeric_columns or [])
        unknown = sorted(set(meta.attributes) - set(known))
        if unknown:
            raise RequestError(
                "metadata.attributes",
                f"unknown attribute(s) {unknown}; the model knows {known}",
            )
        row: dict[str, Any] = {"item_id": "__new_item__", "categories": list(meta.categories)}
        if meta.title is not None:
            row["title"] = meta.title
        if meta.text is not None:
            row["text"] = meta.text
        row.update({name: float(value) for name, value in meta.attributes.items()})
        return self._encoder.transform(pd.DataFrame([row]))

    # description ---------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """What is served: model, lineage, metrics, sizes, index, limits, strategies."""
        meta, info = self.model.meta, self._info
        metrics = {
            str(k): float(v)
            for k, v in (info.get("metrics") or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        return {
            "name": self.model.name,
            "split": meta.split,
            "registered_model": info.get("registered_model"),
            "registry_version": info.get("registry_version"),
            "source": str(info.get("source", "artifact")),
            "data_hash": str(info.get("data_hash", "unknown")),
            "git_commit": str(info.get("git_commit", "unknown")),
            "metrics": metrics,
            "created_at": str(info.get("created_at", "")),
            "n_items": meta.n_real_items,
            "n_users": meta.n_users - N_RESERVED,
            "query_kinds": sorted(self.model.query_kinds),
            "fallback": self.fallback.name,
            "index": None if self.index is None else self.index.describe(),
            "limits": {
                "max_k": self.settings.max_k,
                "max_session_length": self.settings.max_session_length,
            },
            "strategies": list(STRATEGIES),
            "content_attributes": (
                None if self._encoder is None else list(self._encoder.numeric_columns or [])
            ),
        }
