"""Contextual popularity: what is popular at this hour, on this weekday, for this event type.

``context_pop`` (:class:`ContextPopularity`) answers anonymous requests that carry
nothing but their context: the hour and day of week of the current event, its event
type (view, cart, ...) and possibly a category hint through the items seen so far.
It is the cold-user baseline of the session models.

Fit counts the train events of each item per hour (24), per weekday (7) and per
event type (:func:`~recpipe.features.context.context_cardinalities`), and smooths
each conditional popularity towards the global one (``m``: pseudo-events, N: train
events on real items, K: real items)::

    P(i)     = (n(i) + 1/2) / (N + K/2)                  additive smoothing: P(i) > 0
    P(i | v) = (n(i, v) + m P(i)) / (n(v) + m)            for a context value v

Scoring is naive Bayes over the context features f whose value v_f is known,
treated as independent given the item::

    score(i) = log P(i) + sum_f [log P(i | v_f) - log P(i)]
               (+ log lift_cat(i), see below)

so that with no known context the score is the log global popularity, and each known
feature multiplies in its lift ``P(i | v) / P(i)``. Every term is finite: ``P(i) > 0``
for every real item and ``m > 0``. The context of a ``session`` query is that of its
last column, the current event (the most recent one: prefixes are left-padded), when
the query carries context arrays; a code outside the feature's range, and event type
0 ("unknown"), skip that feature. ``user`` queries score by global popularity.

With ``use_categories`` and item categories in the meta, a request with known items
(the session prefix, weighted by recency with ratio ``decay``, or the item of an
``item`` query) adds the log lift of its category preference,
``log(affinity(Q, i) / affinity(i))``: ``affinity`` as in
:mod:`recpipe.baselines.category_pop` (mean smoothed category preference over i's
categories, ``prior`` pseudo-events of the global mix), divided by the same affinity
under the global mix so that an item's popularity is not counted twice.

References: contextual pre-filtering of popularity (Adomavicius & Tuzhilin 2011,
"Context-Aware Recommender Systems"); the naive-Bayes combination of independent
evidence (e.g. Manning, Raghavan & Schütze 2008, ch. 13).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recpipe.baselines.category_pop import CategoryProfile
from recpipe.errors import ArtifactError
from recpipe.features.context import context_cardinalities
from recpipe.features.idmap import N_RESERVED
from recpipe.models.artifact import (
    csr_from_arrays,
    csr_keys,
    csr_to_arrays,
    expect_shape,
    load_arrays,
    save_arrays,
)
from recpipe.models.base import ModelConfig, Recommender
from recpipe.models.data import QUERY_KINDS, Interactions, Queries
from recpipe.models.embedding import has_known_items
from recpipe.models.space import Float, SearchSpace

__all__ = ["CONTEXT_FEATURES", "ContextPopConfig", "ContextPopularity", "context_sizes"]

log = logging.getLogger(__name__)

_STATE = "state.npz"
#: Context columns the model conditions on (``gap_bucket`` is left out: it says
#: nothing about which item is popular).
CONTEXT_FEATURES: tuple[str, ...] = ("hour", "dow", "event_type_idx")
#: Pseudo-count added to every item's train count in the global popularity.
_ITEM_PSEUDO_COUNT = 0.5
#: Guards the category lift against a zero affinity (a category no event has).
_EPS = 1e-12


def context_sizes() -> dict[str, int]:
    """Number of codes of each of :data:`CONTEXT_FEATURES` (codes lie in ``[0, size)``)."""
    sizes = context_cardinalities(gap_buckets=2)  # the gap size is not used
    return {f: sizes[f] for f in CONTEXT_FEATURES}


#: Codes that carry no information: event type 0 is padding / unknown.
_UNKNOWN_CODES: dict[str, frozenset[int]] = {"event_type_idx": frozenset({0})}


class ContextPopConfig(ModelConfig):
    """Options of ``context_pop``."""

    m: float = Field(
        default=10.0, gt=0, description="pseudo-events of global popularity in each conditional"
    )
    use_categories: bool = Field(
        default=True, description="add the category preference of the request's items"
    )
    prior: float = Field(
        default=1.0, ge=0, description="pseudo-events of the global category mix in a preference"
    )
    decay: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="session queries: weight ratio between a prefix item and the next one",
    )


class ContextPopularity(Recommender):
    """Popularity conditioned on the request's context (see the module docstring).

    Scores every query kind: ``session`` (context of the current event, category
    hint of the prefix), ``item`` (global popularity with the item's category hint)
    and ``user`` (global popularity). Every real item scores finite.
    """

    name: ClassVar[str] = "context_pop"
    search_space: ClassVar[SearchSpace] = {
        "m": Float(0.1, 100.0, log=True),
        "prior": Float(0.01, 10.0, log=True),
    }
    Config: ClassVar[type[ModelConfig]] = ContextPopConfig
    query_kinds: ClassVar[frozenset[str]] = QUERY_KINDS
    config: ContextPopConfig

    # fit --------------------------------------------------------------------
    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        n_items = self.meta.n_items
        real = train.item_idx >= N_RESERVED
        items = train.item_idx[real].astype(np.int64)
        self._counts = np.bincount(items, minlength=n_items).astype(np.float64)
        self._tables: dict[str, sp.csr_matrix] = {}
        for feature, size in context_sizes().items():
            codes = getattr(train, feature)[real].astype(np.int64)
            inside = (codes >= 0) & (codes < size)
            if not inside.all():
                log.warning(
                    "%s: %d train events have a %s code outside [0, %d); not counted",
                    self.name,
                    int((~inside).sum()),
                    feature,
                    size,
                )
            table = sp.csr_matrix(
                (np.ones(int(inside.sum())), (codes[inside], items[inside])),
                shape=(size, n_items),
            )
            table.sum_duplicates()
            self._tables[feature] = table
        self._profile: CategoryProfile | None = None
        if self.config.use_categories and self.meta.item_categories is not None:
            self._profile = CategoryProfile.fit(self.meta.item_categories, train, self.meta.n_users)
        self._derive()
        log.debug(
            "%s: %d events on %d items; categories %s",
            self.name,
            items.shape[0],
            int(np.count_nonzero(self._counts)),
            "used" if self._profile is not None else "not used",
        )

    def _derive(self) -> None:
        """Log global popularity and the (size, n_items) log lift table of each feature."""
        n_items = self.meta.n_items
        counts = self._counts.copy()
        counts[:N_RESERVED] = 0.0
        n_real = n_items - N_RESERVED
        global_p = (counts + _ITEM_PSEUDO_COUNT) / (counts.sum() + _ITEM_PSEUDO_COUNT * n_real)
        global_p[:N_RESERVED] = 1.0  # reserved slots: any positive value (masked in score)
        self._log_p = np.log(global_p).astype(np.float32)
        m = self.config.m
        self._lifts: dict[str, np.ndarray] = {}
        for feature, table in self._tables.items():
            n_iv = table.toarray()  # (size, n_items)
            n_v = n_iv[:, N_RESERVED:].sum(axis=1, keepdims=True)
            conditional = (n_iv + m * global_p[None, :]) / (n_v + m)
            self._lifts[feature] = (np.log(conditional) - np.log(global_p)[None, :]).astype(
                np.float32
            )
        if self._profile is not None:
            # affinity under the global mix (a query with no mass): the lift's denominator
            no_mass = np.zeros((1, self._profile.n_categories))
            self._base_affinity = self._profile.affinity(no_mass, self.config.prior)[0]

    # score ------------------------------------------------------------------
    def context_codes(self, queries: Queries) -> dict[str, np.ndarray | None]:
        """The current event's code of each of :data:`CONTEXT_FEATURES`, per query.

        Parameters
        ----------
        queries : Queries
            Any kind; only ``session`` queries carry context.

        Returns
        -------
        dict
            feature -> (B,) int64 codes of the last column, with -1 where the code is
            unknown (outside the feature's range, or event type 0); None when the
            queries carry no such context.
        """
        out: dict[str, np.ndarray | None] = {}
        for feature, size in context_sizes().items():
            values = getattr(queries, feature) if queries.kind == "session" else None
            if values is None or values.shape[1] == 0:
                out[feature] = None
                continue
            codes = values[:, -1].astype(np.int64)
            unknown = (codes < 0) | (codes >= size)
            for code in _UNKNOWN_CODES.get(feature, ()):
                unknown |= codes == code
            out[feature] = np.where(unknown, -1, codes)
        return out

    def _score(self, queries: Queries) -> np.ndarray:
        b = len(queries)
        scores = np.tile(self._log_p, (b, 1))
        for feature, codes in self.context_codes(queries).items():
            if codes is None:
                continue
            known = codes >= 0
            if known.any():
                scores[known] += self._lifts[feature][codes[known]]
        if self._profile is not None and queries.kind != "user":
            items = queries.items[:, None] if queries.kind == "item" else queries.items
            hinted = has_known_items(items)
            if hinted.any():
                mass = self._profile.item_mass(items[hinted], self.config.decay)
                affinity = self._profile.affinity(mass, self.config.prior)
                lift = np.log(affinity + _EPS) - np.log(self._base_affinity + _EPS)[None, :]
                scores[hinted] += lift.astype(np.float32)
        return scores

    # persistence --------------------------------------------------------------
    def _save_state(self, path: Path) -> None:
        tables: dict[str, np.ndarray] = {}
        for feature, table in self._tables.items():
            tables.update(csr_to_arrays(f"count_{feature}", table))
        extra = self._profile.arrays() if self._profile is not None else {}
        save_arrays(
            path / _STATE,
            counts=self._counts,
            has_profile=np.asarray(self._profile is not None),
            **tables,
            **extra,
        )

    def _load_state(self, path: Path) -> None:
        n_items = self.meta.n_items
        sizes = context_sizes()
        keys = ["counts", "has_profile", *(k for f in sizes for k in csr_keys(f"count_{f}"))]
        arrays = load_arrays(path / _STATE, keys)
        self._counts = expect_shape(arrays["counts"], (n_items,), "item counts")
        self._tables = {
            f: csr_from_arrays(arrays, f"count_{f}", (size, n_items)) for f, size in sizes.items()
        }
        has_profile = bool(expect_shape(arrays["has_profile"], (), "has_profile flag"))
        if has_profile and not self.config.use_categories:
            raise ArtifactError(f"{str(path)!r}: category state saved with use_categories off")
        self._profile = (
            CategoryProfile.from_arrays(path / _STATE, self.meta) if has_profile else None
        )
        self._derive()
