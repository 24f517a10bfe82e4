"""Cold-start routing: every request gets an answer, and says which strategy gave it.

A trained model knows the users and items of its training data. Requests in
production also carry new users, anonymous visitors with nothing but the time and
the page they are on, and items added to the catalogue after training.
:class:`ColdStartPolicy` wraps a fitted model (the champion) with the strategies
for those, row by row:

=======================  ==============================================================
strategy                 when
=======================  ==============================================================
``model``                the model scores the request itself (known user; a session or
                         item query of a model that scores that kind)
``item_aggregate``       an unknown user, or a session for a model without session
                         queries, with known items in the request: the recency-weighted
                         mean of the model's item vectors
                         (:func:`~recpipe.models.embedding.aggregate_items`), cosine
``item_similarity``      similar items of a known item for a model without item
                         queries: cosine of the model's item vectors
``content``              similar items of a *new* item given by its metadata: the
                         content model embeds it (:meth:`embed_content`)
``context_popularity``   nothing known but the request's context (hour, day, event type)
                         and categories: the fallback model (``context_pop``)
``popularity``           nothing known at all: the fallback's global popularity
=======================  ==============================================================

Unknown ids (:data:`~recpipe.features.idmap.UNK`, or indices outside the tables) are
routed, never raised on. A model's item vectors come from
:meth:`Recommender.item_vectors <recpipe.models.base.Recommender.item_vectors>`;
without them the item strategies fall back to the fallback model.

Used by the evaluation (a model without session queries still answers the
``cold_users`` protocol through ``item_aggregate``) and by serving.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from recpipe.features.content import ItemContent
from recpipe.features.idmap import N_RESERVED, PAD, UNK
from recpipe.models.base import Recommender
from recpipe.models.data import CONTEXT_COLUMNS, Queries
from recpipe.models.embedding import aggregate_items, has_known_items

__all__ = [
    "STRATEGIES",
    "STRATEGY_REASONS",
    "ColdStartPolicy",
    "Routed",
    "SessionScorer",
    "Strategy",
]

Strategy = Literal[
    "model",
    "item_aggregate",
    "item_similarity",
    "content",
    "context_popularity",
    "popularity",
]
#: Every strategy a :class:`Routed` answer can name.
STRATEGIES: tuple[str, ...] = (
    "model",
    "item_aggregate",
    "item_similarity",
    "content",
    "context_popularity",
    "popularity",
)

#: Why each strategy answered, as an answer states it (see the module docstring's table).
STRATEGY_REASONS: dict[str, str] = {
    "model": "the model scores this request",
    "item_aggregate": "unknown user or a query kind the model does not score: from the "
    "request's known items (the mean of their item vectors)",
    "item_similarity": "the model scores no item queries: cosine of its item vectors",
    "content": "a new item: embedded from its metadata by the content model",
    "context_popularity": "nothing in the request is known to the model: popularity in "
    "the request's context (hour, day, event type, categories)",
    "popularity": "nothing in the request is known: global popularity",
}


@dataclass(frozen=True)
class Routed:
    """Scores of a batch of requests and the strategy that produced each row.

    Attributes
    ----------
    scores : numpy.ndarray
        (B, n_items) float32, higher is better; reserved slots ``-inf``.
    strategy : numpy.ndarray
        (B,) object: one of :data:`STRATEGIES` per row.
    """

    scores: np.ndarray
    strategy: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def counts(self) -> dict[str, int]:
        """How many rows each strategy answered."""
        names, counts = np.unique(self.strategy.astype(str), return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


@dataclass
class ColdStartPolicy:
    """A fitted model with its cold-start strategies (see the module docstring).

    Parameters
    ----------
    model : Recommender
        The fitted model that answers what it can.
    fallback : Recommender
        A fitted model that scores ``session`` queries from context alone (empty
        prefixes): ``context_pop`` (contextual popularity), or ``pop``.
    content : Recommender, optional
        A fitted content model (``content2cf``, ``content2vec``) that embeds new items
        from metadata; ``model`` itself when it is one and this is None.
    decay : float, default 0.8
        Recency weight ratio of ``item_aggregate``.
    """

    model: Recommender
    fallback: Recommender
    content: Recommender | None = None
    decay: float = 0.8
    _vectors: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if "session" not in self.fallback.query_kinds:
            raise ValueError(
                f"the fallback model {self.fallback.name!r} must score 'session' queries "
                f"(context_pop or pop), it scores {sorted(self.fallback.query_kinds)}"
            )
        if self.fallback.meta.n_items != self.model.meta.n_items:
            raise ValueError(
                f"the fallback has {self.fallback.meta.n_items} item slots, the model "
                f"{self.model.meta.n_items}; fit both on the same split"
            )
        if self.content is None and hasattr(self.model, "embed_content"):
            self.content = self.model
        vectors = self.model.item_vectors()
        self._vectors = None if vectors is None else _normalised(np.asarray(vectors, np.float32))

    # ------------------------------------------------------------------ helpers
    @property
    def n_items(self) -> int:
        """Item table size (reserved slots included)."""
        return self.model.meta.n_items

    @property
    def unit_vectors(self) -> np.ndarray | None:
        """(n_items, D) float32 unit-norm item vectors of the model, as the item strategies
        compare them (zero rows for zero vectors); None for a model without item vectors.
        Serving indexes these for top-K retrieval; treat them as read-only."""
        return self._vectors

    def _known_items(self, items: np.ndarray) -> np.ndarray:
        """``items`` with indices outside the table replaced by UNK (skipped, and
        keeping the left padding of session rows intact)."""
        items = np.asarray(items, dtype=np.int64)
        return np.where((items >= 0) & (items < self.n_items), items, UNK)

    def _cosine(self, query_vectors: np.ndarray) -> np.ndarray:
        assert self._vectors is not None
        scores = (query_vectors @ self._vectors.T).astype(np.float32)
        scores[:, :N_RESERVED] = -np.inf
        return scores

    def _fallback(self, queries: Queries) -> tuple[np.ndarray, np.ndarray]:
        """Fallback scores of session rows, named ``context_popularity`` where the
        request carries context or items (whose categories ``context_pop`` uses) and
        the fallback is contextual, ``popularity`` otherwise."""
        scores = self.fallback.score(queries)
        informed = has_known_items(queries.items)
        if any(getattr(queries, c) is not None for c in CONTEXT_COLUMNS):
            informed[:] = True
        if self.fallback.name != "context_pop":
            informed[:] = False
        names = np.where(informed, "context_popularity", "popularity").astype(object)
        return scores, names

    # ------------------------------------------------------------------ requests
    def sessions(self, queries: Queries) -> Routed:
        """Answer ``session`` queries (a live session, or an unknown user's request items).

        Rows with known items go to the model (``model``) when it scores sessions,
        else to ``item_aggregate`` when it has item vectors; the rest (and every row
        of a model with neither) to the fallback, which uses the context and the
        categories of the request.
        """
        if queries.kind != "session":
            raise ValueError(f"sessions() takes 'session' queries, got {queries.kind!r}")
        items = self._known_items(queries.items)
        queries = Queries(
            kind="session",
            items=items,
            **{c: getattr(queries, c) for c in CONTEXT_COLUMNS},
            timestamps=queries.timestamps,
        )
        scores = np.empty((len(queries), self.n_items), dtype=np.float32)
        names = np.empty(len(queries), dtype=object)
        answered = has_known_items(items)
        if "session" not in self.model.query_kinds and self._vectors is None:
            answered[:] = False
        if answered.any():  # only the rows the model cannot answer go to the fallback
            rows = np.flatnonzero(answered)
            if "session" in self.model.query_kinds:
                scores[rows] = self.model.score(queries.take(rows))
                names[rows] = "model"
            else:
                scores[rows] = self._cosine(aggregate_items(self._vectors, items[rows], self.decay))
                names[rows] = "item_aggregate"
        if not answered.all():
            rows = np.flatnonzero(~answered)
            scores[rows], names[rows] = self._fallback(queries.take(rows))
        return Routed(scores=scores, strategy=names)

    def users(
        self,
        users: np.ndarray,
        request_items: np.ndarray | None = None,
        context: Mapping[str, np.ndarray] | None = None,
    ) -> Routed:
        """Answer user requests; unknown users are answered from their request.

        Parameters
        ----------
        users : numpy.ndarray
            (B,) user indices (UNK or out of range: unknown).
        request_items : numpy.ndarray, optional
            (B, T) left-padded items of each request (e.g. recently viewed), used for
            unknown users (``item_aggregate`` / the model's session scoring).
        context : mapping, optional
            (B, T) context columns of the request items (``event_type_idx``, ``hour``,
            ...), for the contextual fallback.
        """
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        b = users.shape[0]
        items = (
            np.full((b, 1), PAD, dtype=np.int64)
            if request_items is None
            else np.asarray(request_items, dtype=np.int64).reshape(b, -1)
        )
        columns = {c: None for c in CONTEXT_COLUMNS}
        for name, values in (context or {}).items():
            if name not in columns:
                raise ValueError(f"unknown context column {name!r}; expected {CONTEXT_COLUMNS}")
            columns[name] = np.asarray(values).reshape(items.shape)
        scores = np.empty((b, self.n_items), dtype=np.float32)
        names = np.empty(b, dtype=object)
        known = (users >= N_RESERVED) & (users < self.model.meta.n_users)
        if "user" not in self.model.query_kinds:
            known[:] = False
        if known.any():
            rows = np.flatnonzero(known)
            scores[rows] = self.model.score(Queries.for_users(users[rows]))
            names[rows] = "model"
        if not known.all():  # unknown users: answered from their request
            rows = np.flatnonzero(~known)
            requests = Queries(kind="session", items=items, **columns).take(rows)
            routed = self.sessions(requests)
            scores[rows], names[rows] = routed.scores, routed.strategy
        return Routed(scores=scores, strategy=names)

    def similar(self, items: np.ndarray) -> Routed:
        """Similar items of each of ``items`` (B,); unknown items get popularity."""
        items = self._known_items(np.asarray(items, dtype=np.int64).reshape(-1))
        known = items >= N_RESERVED
        routed = self.sessions(Queries.from_item_lists([[] for _ in items], max_len=1))
        scores, names = routed.scores, routed.strategy
        if known.any():
            rows = np.flatnonzero(known)
            if "item" in self.model.query_kinds:
                scores[rows] = self.model.score(Queries.for_items(items[rows]))
                names[rows] = "model"
            elif self._vectors is not None:
                scores[rows] = self._cosine(self._vectors[items[rows]])
                names[rows] = "item_similarity"
            else:
                scores[rows] = self.fallback.score(Queries.for_items(items[rows]))
                names[rows] = "context_popularity"
        return Routed(scores=scores, strategy=names)

    def similar_to_content(self, content: ItemContent) -> Routed:
        """Similar items of new items given by their encoded metadata (``content``).

        The content model embeds them and ranks the catalogue by cosine with its own
        item vectors; rows it cannot embed (no usable content), or every row when
        there is no content model, get popularity.
        """
        n = len(content)
        routed = self.sessions(Queries.from_item_lists([[] for _ in range(n)], max_len=1))
        scores, names = routed.scores, routed.strategy
        model = self.content
        if model is None or n == 0:
            return routed
        embedded = np.asarray(model.embed_content(content), dtype=np.float32)
        catalogue = _normalised(np.asarray(model.item_vectors(), dtype=np.float32))
        usable = np.linalg.norm(embedded, axis=1) > 0
        if usable.any():
            rows = np.flatnonzero(usable)
            block = (_normalised(embedded[rows]) @ catalogue.T).astype(np.float32)
            block[:, :N_RESERVED] = -np.inf
            scores[rows] = block
            names[rows] = "content"
        return Routed(scores=scores, strategy=names)


class SessionScorer:
    """:meth:`ColdStartPolicy.sessions` behind the ``score`` of the model contract.

    Lets the evaluation protocols score session queries of a model that has no
    session scoring of its own (MF, CTR models) through its ``item_aggregate``
    cold-start strategy, exactly as serving answers them. It has the parts of a
    :class:`~recpipe.models.base.Recommender` the protocols read: ``name``,
    ``query_kinds`` (``session``), ``meta`` and ``score``.
    """

    query_kinds: frozenset[str] = frozenset({"session"})

    def __init__(self, policy: ColdStartPolicy) -> None:
        self.policy = policy
        self.name = policy.model.name
        self.meta = policy.model.meta

    def score(self, queries: Queries, candidates: np.ndarray | None = None) -> np.ndarray:
        """(B, n_items) scores, or (B, C) of ``candidates`` ((C,) or (B, C))."""
        scores = self.policy.sessions(queries).scores
        if candidates is None:
            return scores
        cand = np.asarray(candidates, dtype=np.int64)
        if cand.ndim == 1:
            return scores[:, cand]
        return np.take_along_axis(scores, cand, axis=1)
