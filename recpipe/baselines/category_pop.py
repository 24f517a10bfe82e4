"""Popularity within category: the cold-item baseline that content models must beat.

``category_pop`` (:class:`CategoryPopularity`) ranks items first by how much the query
likes their categories and then by train popularity. It is the natural yardstick for
cold items (items with categories but no train event): collaborative baselines score
them by a prior at best, while this one places them among the query's favourite
categories. Content-based and hybrid models are gated against it on cold items.

Categories come from :attr:`DataMeta.item_categories`, a multi-hot (n_items,
n_categories) matrix whose column 0 is the "unknown" category. An item's
*categories* are its non-zero columns, without column 0 unless it is the only one;
an item with no column at all counts as "unknown" (column 0) when counting events.

Scores (Q: a query, i: an item, c: a category)::

    score(Q, i)  = affinity(Q, i) + tie * (pop(i) + 0.01 u_i [count_i = 0])
    affinity(Q, i) = mean over the categories c of i of p_Q(c)
    p_Q(c)       = (n_Q(c) + prior * share(c)) / (n_Q + prior)
    pop(i)       = log1p(count_i) / log1p(max count)              (in [0, 1])
    u_i          = a seeded uniform draw in [0, 1) (shuffle_ties; else 0): breaks the
                   ties of items without train events (e.g. cold items of one category)

where each train event spreads one unit of mass evenly over its item's categories,
``share(c)`` is the global fraction of the train mass in c, and ``n_Q(c)`` is the
query's mass in c (``n_Q`` its total): the user's train events (``user`` queries;
an unknown user has none, so ``p_Q = share``), the prefix items weighted by recency
(``session``: the most recent item weighs 1, the one before ``decay``, ...) or the
item itself (``item``: mass 1). An item without any category scores the global share
of "unknown" as its affinity. Without categories in the meta the model is plain
(log-scaled) popularity, with a warning at fit.

The smoothed preference is the Dirichlet-prior estimate of a multinomial, which
shrinks short histories towards the global category mix (as in the additive
smoothing of language models; Zhai & Lafferty 2004, "A Study of Smoothing Methods
for Language Models Applied to Information Retrieval").
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recpipe.errors import ArtifactError
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
from recpipe.models.data import QUERY_KINDS, DataMeta, Interactions, Queries
from recpipe.models.embedding import recency_weights
from recpipe.models.space import Float, SearchSpace

__all__ = [
    "CategoryPopConfig",
    "CategoryPopularity",
    "CategoryProfile",
    "category_affinity",
    "category_preferences",
    "item_category_weights",
    "log_popularity",
]

log = logging.getLogger(__name__)

_STATE = "state.npz"
UNKNOWN_CATEGORY = 0


# ---------------------------------------------------------------------- helpers
def item_category_weights(categories: sp.spmatrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """Each item's categories as a row-stochastic matrix, and which items have any.

    Parameters
    ----------
    categories : scipy.sparse matrix
        (n_items, n_categories) multi-hot categories (column 0: unknown), as
        :attr:`DataMeta.item_categories`; non-zero entries count as membership.

    Returns
    -------
    weights : scipy.sparse.csr_matrix
        (n_items, n_categories) float64: row i spreads 1 evenly over i's categories
        (column 0 dropped unless it is the only one); an item with no category puts
        its 1 on column 0; reserved rows are empty.
    has_categories : numpy.ndarray
        (n_items,) bool: whether the item has any column set (reserved rows False).

    Examples
    --------
    >>> cats = sp.csr_matrix(np.array([[0, 0], [0, 0], [1, 1], [1, 0], [0, 0]]))
    >>> w, has = item_category_weights(cats)
    >>> w.toarray().tolist()
    [[0.0, 0.0], [0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]
    >>> has.tolist()
    [False, False, True, True, False]
    """
    m = sp.coo_matrix(categories)
    n_items, n_cat = m.shape
    keep = m.data != 0
    rows, cols = m.row[keep], m.col[keep]
    member = sp.csr_matrix(
        (np.ones(rows.shape[0]), (rows, cols)), shape=(n_items, n_cat), dtype=np.float64
    )
    member.data[:] = 1.0  # a repeated entry counts once
    has_categories = np.diff(member.indptr) > 0
    known = np.diff(member[:, 1:].indptr) > 0  # a category besides "unknown"
    member = sp.coo_matrix(member)
    drop = (member.col == UNKNOWN_CATEGORY) & known[member.row]
    rows, cols = member.row[~drop], member.col[~drop]
    empty = np.flatnonzero(~has_categories)
    rows = np.concatenate([rows, empty])
    cols = np.concatenate([cols, np.full(empty.shape[0], UNKNOWN_CATEGORY)])
    per_row = np.bincount(rows, minlength=n_items).astype(np.float64)
    data = 1.0 / per_row[rows]
    real = rows >= N_RESERVED
    weights = sp.csr_matrix((data[real], (rows[real], cols[real])), shape=(n_items, n_cat))
    weights.sort_indices()
    has_categories[:N_RESERVED] = False
    return weights, has_categories


def log_popularity(counts: np.ndarray) -> np.ndarray:
    """(n_items,) float64 ``log1p(count) / log1p(max count)`` in [0, 1] (reserved slots 0)."""
    counts = np.asarray(counts, dtype=np.float64).copy()
    counts[:N_RESERVED] = 0.0
    top = np.log1p(counts.max(initial=0.0))
    return np.log1p(counts) / top if top > 0 else np.zeros_like(counts)


def category_preferences(mass: np.ndarray, share: np.ndarray, prior: float) -> np.ndarray:
    """Smoothed category preferences ``(n(c) + prior * share(c)) / (n + prior)``.

    Parameters
    ----------
    mass : numpy.ndarray
        (B, n_categories) each query's (weighted) event mass per category.
    share : numpy.ndarray
        (n_categories,) global category shares (summing to 1).
    prior : float
        Strength of the global shares, in pseudo-events (>= 0).

    Returns
    -------
    numpy.ndarray
        (B, n_categories) float64, ``n`` the row sums of ``mass``; rows with
        ``n + prior == 0`` get ``share``.
    """
    mass = np.asarray(mass, dtype=np.float64)
    denom = mass.sum(axis=1, keepdims=True) + prior  # n + prior
    smoothed = mass + prior * share[None, :]
    out = np.divide(smoothed, denom, out=np.zeros_like(smoothed), where=denom > 0)
    out[(denom <= 0).ravel()] = share
    return out


def category_affinity(
    preferences: np.ndarray, weights: sp.csr_matrix, has_categories: np.ndarray, share: np.ndarray
) -> np.ndarray:
    """(B, n_items) mean preference over each item's categories.

    Parameters
    ----------
    preferences : numpy.ndarray
        (B, n_categories) from :func:`category_preferences`.
    weights, has_categories
        From :func:`item_category_weights`.
    share : numpy.ndarray
        (n_categories,) global shares; items without any category get ``share[0]``.
    """
    affinity = np.asarray((weights @ np.asarray(preferences, dtype=np.float64).T).T)
    affinity[:, ~has_categories] = share[UNKNOWN_CATEGORY]
    return affinity


class CategoryProfile:
    """Global and per-user category mass of a train split, and query preferences.

    The part of ``category_pop`` that other models reuse (``context_pop`` adds the
    category preference of a request to its contextual popularity).

    Parameters
    ----------
    categories : scipy.sparse matrix
        (n_items, n_categories) item categories (:attr:`DataMeta.item_categories`).
    share : numpy.ndarray
        (n_categories,) global category shares.
    user_mass : scipy.sparse.csr_matrix
        (n_users, n_categories) each user's train mass per category.
    """

    def __init__(
        self, categories: sp.spmatrix, share: np.ndarray, user_mass: sp.csr_matrix
    ) -> None:
        self.weights, self.has_categories = item_category_weights(categories)
        self.share = np.asarray(share, dtype=np.float64)
        self.user_mass = sp.csr_matrix(user_mass, dtype=np.float64)

    @property
    def n_categories(self) -> int:
        """Number of category columns (the unknown one included)."""
        return int(self.weights.shape[1])

    @classmethod
    def fit(cls, categories: sp.spmatrix, train: Interactions, n_users: int) -> CategoryProfile:
        """Count the train events' category mass, globally and per user.

        Events on reserved items (unknown ids) are skipped; every other event spreads
        one unit over its item's categories. With no event at all the shares are
        uniform.
        """
        weights, _ = item_category_weights(categories)
        n_items = weights.shape[0]
        real = train.item_idx >= N_RESERVED
        mass = np.asarray(weights.T @ np.bincount(train.item_idx[real], minlength=n_items))
        total = mass.sum()
        n_cat = weights.shape[1]
        share = mass / total if total > 0 else np.full(n_cat, 1.0 / n_cat)
        known = real & (train.user_idx >= N_RESERVED)  # the UNK user pools many: no profile
        events = sp.csr_matrix(
            (np.ones(int(known.sum())), (train.user_idx[known], train.item_idx[known])),
            shape=(n_users, n_items),
        )
        user_mass = sp.csr_matrix(events @ weights)
        user_mass.eliminate_zeros()
        return cls(categories, share, user_mass)

    def item_mass(self, items: np.ndarray, decay: float) -> np.ndarray:
        """(B, n_categories) recency-weighted category mass of left-padded (B, T) items."""
        weights = recency_weights(np.asarray(items), decay).astype(np.float64)
        b, t = weights.shape
        flat = sp.csr_matrix(
            (weights.ravel(), (np.repeat(np.arange(b), t), np.asarray(items).ravel())),
            shape=(b, self.weights.shape[0]),
        )
        return np.asarray((flat @ self.weights).todense())

    def query_mass(self, queries: Queries, decay: float) -> np.ndarray:
        """(B, n_categories) the category mass behind each query.

        ``user``: the user's train events; ``session``: the prefix items weighted by
        recency (ratio ``decay``); ``item``: the item itself (mass 1). Reserved and
        unknown users / items carry no mass.
        """
        if queries.kind == "user":
            return self.user_mass[queries.users].toarray()
        items = queries.items[:, None] if queries.kind == "item" else queries.items
        return self.item_mass(items, decay)

    def affinity(self, mass: np.ndarray, prior: float) -> np.ndarray:
        """(B, n_items) ``affinity(Q, i)`` of queries with category ``mass`` (module docstring)."""
        prefs = category_preferences(mass, self.share, prior)
        return category_affinity(prefs, self.weights, self.has_categories, self.share)

    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as named arrays (for :func:`save_arrays`)."""
        return {"category_share": self.share, **csr_to_arrays("user_mass", self.user_mass)}

    @classmethod
    def from_arrays(cls, path: Path, meta: DataMeta) -> CategoryProfile:
        """Read the state of :meth:`arrays` from the npz file ``path``.

        Raises
        ------
        ArtifactError
            Missing arrays or shapes that disagree with ``meta``'s categories.
        """
        if meta.item_categories is None:
            raise ArtifactError(f"{str(path)!r} holds category state but the artifact has none")
        n_cat = int(meta.item_categories.shape[1])
        arrays = load_arrays(path, ["category_share", *csr_keys("user_mass")])
        share = expect_shape(arrays["category_share"], (n_cat,), "category shares")
        user_mass = csr_from_arrays(arrays, "user_mass", (meta.n_users, n_cat))
        return cls(meta.item_categories, share, user_mass)


# ---------------------------------------------------------------------- model
class CategoryPopConfig(ModelConfig):
    """Options of ``category_pop``."""

    prior: float = Field(
        default=1.0, ge=0, description="pseudo-events of the global category mix in a preference"
    )
    tie: float = Field(
        default=1e-3, ge=0, description="weight of the log popularity (breaks affinity ties)"
    )
    decay: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="session queries: weight ratio between a prefix item and the next one",
    )
    shuffle_ties: bool = Field(
        default=True,
        description="order items with equal affinity and popularity (e.g. cold items of one "
        "category) by a seeded random draw, instead of leaving them tied",
    )


class CategoryPopularity(Recommender):
    """Popularity within the query's favourite categories (see the module docstring).

    Scores every query kind. All real items get finite scores; cold items (no train
    event) rank by the affinity of their categories alone.

    Examples
    --------
    >>> import pandas as pd
    >>> from recpipe.models.data import DataMeta
    >>> train = Interactions.from_frame(pd.DataFrame({"session_id": ["a", "a", "b"],
    ...     "user_idx": [2, 2, 3], "item_idx": [2, 3, 2], "timestamp": [0, 1, 2]}))
    >>> cats = sp.csr_matrix(np.array([[0, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]]))
    >>> meta = DataMeta(n_items=5, n_users=4, item_counts=[0, 0, 2, 1, 0], item_categories=cats)
    >>> model = CategoryPopularity({"tie": 0.0}, meta).fit(train)
    >>> model.score(Queries.for_items([4]))[0, 2:].astype(float).round(3).tolist()  # item 4: col 2
    [0.333, 0.667, 0.667]
    """

    name: ClassVar[str] = "category_pop"
    search_space: ClassVar[SearchSpace] = {
        "prior": Float(0.01, 10.0, log=True),
        "decay": Float(0.1, 1.0),
    }
    Config: ClassVar[type[ModelConfig]] = CategoryPopConfig
    query_kinds: ClassVar[frozenset[str]] = QUERY_KINDS
    config: CategoryPopConfig

    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        n_items = self.meta.n_items
        real = train.item_idx[train.item_idx >= N_RESERVED]
        self._pop = log_popularity(np.bincount(real, minlength=n_items))
        self._profile: CategoryProfile | None = None
        self._set_tie_order()
        if self.meta.item_categories is None:
            log.warning(
                "%s: the data has no item categories; scoring by plain popularity", self.name
            )
            return
        self._profile = CategoryProfile.fit(self.meta.item_categories, train, self.meta.n_users)
        log.debug(
            "%s: %d categories, shares %s",
            self.name,
            self._profile.n_categories,
            np.round(self._profile.share[:8], 3).tolist(),
        )

    def _set_tie_order(self) -> None:
        """The within-tie order: ``tie * pop``, plus for items without train events a
        seeded draw in ``[0, 0.01 tie)``.

        Cold items sharing a category set tie on affinity and have no popularity; under
        the evaluation's conservative tie rule they would all rank after the relevant
        ones. A fixed random order among them is what a "popular in your categories"
        list shows in practice (its expected quality is that of a random pick within the
        categories). The draw stays below the popularity term of any item with an event
        (``tie * log(2) / log1p(max count)``), so it never reorders warm items, and is a
        function of ``seed`` (not stored).
        """
        draw = np.random.default_rng(self.config.seed).random(self.meta.n_items)
        jitter = np.where(self._pop > 0, 0.0, 0.01 * draw) if self.config.shuffle_ties else 0.0
        self._tie_score = (self.config.tie * (self._pop + jitter)).astype(np.float64)

    def _score(self, queries: Queries) -> np.ndarray:
        pop = self._pop.astype(np.float32)
        if self._profile is None:
            return np.tile(pop, (len(queries), 1))
        mass = self._profile.query_mass(queries, self.config.decay)
        affinity = self._profile.affinity(mass, self.config.prior)
        return (affinity + self._tie_score).astype(np.float32)

    def _save_state(self, path: Path) -> None:
        extra = self._profile.arrays() if self._profile is not None else {}
        save_arrays(
            path / _STATE, pop=self._pop, has_profile=np.asarray(self._profile is not None), **extra
        )

    def _load_state(self, path: Path) -> None:
        arrays = load_arrays(path / _STATE, ["pop", "has_profile"])
        self._pop = expect_shape(arrays["pop"], (self.meta.n_items,), "log popularity")
        self._set_tie_order()
        has_profile = bool(expect_shape(arrays["has_profile"], (), "has_profile flag"))
        self._profile = (
            CategoryProfile.from_arrays(path / _STATE, self.meta) if has_profile else None
        )
