"""What the evaluation protocols share: their result type and a few checks and metrics.

:class:`ProtocolResult` is what every protocol returns (:mod:`recpipe.evaluate.protocols`,
:mod:`recpipe.evaluate.cold`, :mod:`recpipe.evaluate.pointwise`); :func:`check_chunk`
validates their ``chunk_size`` and :func:`catalogue_metrics` measures their top-K lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recpipe.evaluate.metrics import coverage, popularity_bias
from recpipe.features.idmap import N_RESERVED
from recpipe.models.data import DataMeta

__all__ = ["ProtocolResult", "catalogue_metrics", "check_chunk"]


@dataclass
class ProtocolResult:
    """The outcome of one protocol run for one model.

    Attributes
    ----------
    metrics : dict[str, float]
        Mean metrics over all queries (``recall@20``, ``mrr@10``, ...), plus the
        catalogue metrics ``coverage@K`` and ``popularity_bias@K``.
    per_query : dict[str, numpy.ndarray]
        ``(n_queries,)`` float64 per-query values of every non-catalogue metric; the
        queries depend only on the test data, so the arrays of two models evaluated on
        the same data are aligned (paired bootstrap).
    slices : dict[str, dict[str, float]]
        Mean metrics over subsets of the queries, each with its query count ``"n"``.
    n_queries : int
        Number of evaluated queries.
    protocol : str
        ``"next_item"``, ``"user_topk"``, ``"cold_items"``, ``"cold_users"``,
        ``"cold_start"``, ``"rating"`` or ``"ctr"``.
    skipped_users : int
        Test users left out of :func:`~recpipe.evaluate.protocols.user_topk` (unknown
        user, or no known test item) or of :func:`~recpipe.evaluate.cold.cold_users`.
    skipped : dict[str, str]
        Protocols of a combined evaluation (:func:`~recpipe.evaluate.protocols.cold_start`)
        that could not run,
        with the reason (e.g. the model does not score their query kind).
    """

    metrics: dict[str, float]
    per_query: dict[str, np.ndarray]
    slices: dict[str, dict[str, float]] = field(default_factory=dict)
    n_queries: int = 0
    protocol: str = ""
    skipped_users: int = 0
    skipped: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------- helpers
def check_chunk(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")


def catalogue_metrics(
    lists: np.ndarray, meta: DataMeta, item_counts: np.ndarray, ks: Sequence[int]
) -> dict[str, float]:
    """``coverage@K`` and ``popularity_bias@K`` of the top-K lists."""
    out = coverage(lists, meta.n_items, ks, n_reserved=N_RESERVED)
    if np.any(lists >= 0):
        out.update(popularity_bias(lists, item_counts, ks, n_reserved=N_RESERVED))
    return out
