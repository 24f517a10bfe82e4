"""Sequential rules and the first-order Markov chain for next-item prediction.

Sequential rules (SR; Kamehkhosh, Jannach & Ludewig 2017, "A Comparison of Frequent
Pattern Techniques and a Deep Learning Method for Session-Based Recommendation";
Ludewig & Jannach 2018, "Evaluation of Session-based Recommendation Algorithms"): for
every pair of events in a session where item j follows item i by k steps,
``1 <= k <= max_steps``, the rule i -> j gains weight w(k) (``div``: 1/k, ``linear``:
max(1 - 0.1 k, 0), ``same``: 1). Each item keeps its ``pruning`` strongest rules. The
next item after a session is scored by the rules of the session's last item.

``markov`` is the first-order Markov chain, SR with ``max_steps = 1`` (rules are
transition counts; Ludewig & Jannach's "MC").

Both score ``session`` queries (by the last item of the prefix) and ``item`` queries
(the item as the last one). A popularity prior of weight ``pop_weight`` (in
[0, pop_weight]) is added so that items no rule reaches are ranked too, and prefixes
whose last item is unknown fall back to popularity.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

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
from recpipe.models.data import Interactions, Queries
from recpipe.models.space import Int, SearchSpace
from recpipe.models.sparse import popularity_prior, top_k_per_row

log = logging.getLogger(__name__)

_STATE = "state.npz"


class MarkovConfig(ModelConfig):
    """Options of ``markov``."""

    pruning: int = Field(default=20, ge=0, description="rules kept per item; 0 keeps all")
    pop_weight: float = Field(default=1e-6, ge=0, description="weight of the popularity prior")


class SequentialRulesConfig(MarkovConfig):
    """Options of ``sr``."""

    max_steps: int = Field(default=10, ge=1, description="largest gap (in events) of a rule")
    weighting: Literal["div", "linear", "same"] = Field(
        default="div", description="weight of a rule by its gap k: 1/k, 1 - 0.1 k, or 1"
    )


def step_weights(max_steps: int, weighting: str) -> np.ndarray:
    """(max_steps,) weight of a rule by its gap k = 1 .. max_steps."""
    k = np.arange(1, max_steps + 1, dtype=np.float64)
    if weighting == "div":
        return 1.0 / k
    if weighting == "linear":
        return np.maximum(1.0 - 0.1 * k, 0.0)
    if weighting == "same":
        return np.ones_like(k)
    raise ValueError(f"weighting must be 'div', 'linear' or 'same', got {weighting!r}")


def sequential_rules(train: Interactions, n_items: int, weights: np.ndarray) -> sp.csr_matrix:
    """Rule weights: entry (i, j) sums ``weights[k - 1]`` over events j that follow an
    event i by k steps in the same session. Reserved items take part in no rule.

    Parameters
    ----------
    train : Interactions
        Events grouped by session, in time order.
    n_items : int
        Catalogue size.
    weights : numpy.ndarray
        (max_steps,) weight of each gap.

    Returns
    -------
    scipy.sparse.csr_matrix
        (n_items, n_items) float64.
    """
    items = train.item_idx.astype(np.int64)
    session = train.session_index
    rules = sp.csr_matrix((n_items, n_items), dtype=np.float64)
    for k, weight in enumerate(weights, start=1):  # one vectorised pass per gap
        if k >= items.shape[0] or weight == 0:
            break
        src, dst = items[:-k], items[k:]
        keep = (session[:-k] == session[k:]) & (src >= N_RESERVED) & (dst >= N_RESERVED)
        data = np.full(int(keep.sum()), weight)
        rules = rules + sp.csr_matrix((data, (src[keep], dst[keep])), shape=(n_items, n_items))
    return rules


class MarkovChain(Recommender):
    """First-order Markov chain: the next item by transition counts from the last item."""

    name: ClassVar[str] = "markov"
    search_space: ClassVar[SearchSpace] = {"pruning": Int(5, 100, log=True)}
    Config: ClassVar[type[ModelConfig]] = MarkovConfig
    query_kinds: ClassVar[frozenset[str]] = frozenset({"session", "item"})
    config: MarkovConfig

    def _step_weights(self) -> np.ndarray:
        return np.ones(1)

    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        n_items = self.meta.n_items
        rules = sequential_rules(train, n_items, self._step_weights())
        if self.config.pruning:
            rules = top_k_per_row(rules, self.config.pruning)
        self._rules = sp.csr_matrix(rules, dtype=np.float32)
        self._prior = popularity_prior(np.bincount(train.item_idx, minlength=n_items))
        log.debug("%s: %d rules over %d items", self.name, self._rules.nnz, n_items)

    def _score(self, queries: Queries) -> np.ndarray:
        last = queries.last_items  # (B,)
        known = last >= N_RESERVED
        # unknown / empty prefixes read row PAD, which holds no rule
        scores = self._rules[np.where(known, last, 0)].toarray()
        scores += (self.config.pop_weight * self._prior).astype(np.float32)
        return scores.astype(np.float32, copy=False)

    def _save_state(self, path: Path) -> None:
        save_arrays(path / _STATE, prior=self._prior, **csr_to_arrays("rules", self._rules))

    def _load_state(self, path: Path) -> None:
        n_items = self.meta.n_items
        arrays = load_arrays(path / _STATE, ["prior", *csr_keys("rules")])
        self._prior = expect_shape(arrays["prior"], (n_items,), "popularity prior")
        self._rules = csr_from_arrays(arrays, "rules", (n_items, n_items))


class SequentialRules(MarkovChain):
    """Sequential rules (SR): transitions within ``max_steps``, weighted by the gap."""

    name: ClassVar[str] = "sr"
    search_space: ClassVar[SearchSpace] = {
        "pruning": Int(5, 100, log=True),
        "max_steps": Int(2, 20),
    }
    Config: ClassVar[type[ModelConfig]] = SequentialRulesConfig
    config: SequentialRulesConfig

    def _step_weights(self) -> np.ndarray:
        return step_weights(self.config.max_steps, self.config.weighting)
