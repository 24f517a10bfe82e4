"""Sampled-negative ranking: only to check an implementation against papers that use it.

**Not a model comparison.** Ranking the target among a few sampled items instead of
the whole catalogue is known to mis-rank models (Krichene & Rendle, KDD 2020; Cañamares
& Castells, RecSys 2020): the gate never uses it and every metric it gives is prefixed
``sampled<N>/`` so no report can mistake it for the full-ranking figures.

:func:`sampled_user_topk` follows the leave-last-out protocol of SASRec (Kang & McAuley
2018): each test user's target is ranked among ``n_negatives`` items drawn uniformly
from the items the user never touched (in any part given), the model scoring the user
from what it knows of them. Ties count against the target.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from recpipe.evaluate.common import ProtocolResult
from recpipe.features.idmap import N_RESERVED
from recpipe.models.base import Recommender
from recpipe.models.data import DataMeta, Interactions, Queries

log = logging.getLogger(__name__)

#: What every report says next to sampled metrics.
LABEL = "sampled negatives: for checking against papers only; mis-ranks models, never gated"


def _touched(parts: Sequence[Interactions], users: np.ndarray, n_items: int) -> list[set[int]]:
    """The items each of ``users`` has in any of ``parts``."""
    where = {int(u): i for i, u in enumerate(users)}
    out: list[set[int]] = [set() for _ in users]
    for part in parts:
        for u, item in zip(part.user_idx.tolist(), part.item_idx.tolist(), strict=True):
            row = where.get(u)
            if row is not None:
                out[row].add(item)
    return out


def sampled_user_topk(
    model: Recommender,
    test: Interactions,
    meta: DataMeta,
    *,
    touched: Sequence[Interactions] = (),
    n_negatives: int = 100,
    ks: Sequence[int] = (1, 5, 10),
    seed: int = 0,
    chunk_size: int = 512,
) -> ProtocolResult:
    """Rank each test user's last test item among ``n_negatives`` sampled items.

    Parameters
    ----------
    model : Recommender
        A fitted model that scores ``user`` queries.
    test : Interactions
        The test events; a user's target is their last one (leave-last-out: the one).
    touched : sequence of Interactions
        The other parts (train, valid): items there are never drawn as negatives.
    n_negatives : int
        Items drawn per user (uniformly, without the user's items; SASRec: 100).
    ks : sequence of int
        Cut-offs of ``hit@K`` and ``ndcg@K``.

    Returns
    -------
    ProtocolResult
        ``metrics`` ``sampled<N>/hit@K`` and ``sampled<N>/ndcg@K`` (per user in
        ``per_query``); ``protocol`` says it is the sampled one.
    """
    if "user" not in model.query_kinds:
        raise ValueError(f"model {model.name!r} cannot score user queries")
    known = (test.user_idx >= N_RESERVED) & (test.item_idx >= N_RESERVED)
    rows = np.flatnonzero(known)
    order = rows[np.lexsort((test.timestamp[rows], test.user_idx[rows]))]
    users, last = np.unique(test.user_idx[order][::-1], return_index=True)
    targets = test.item_idx[order][::-1][last].astype(np.int64)
    if users.size == 0:
        raise ValueError("no test user with a known user and item")
    seen = _touched([*touched, test], users, meta.n_items)
    rng = np.random.default_rng(seed)
    n_real = meta.n_items - N_RESERVED
    candidates = np.empty((users.size, n_negatives + 1), dtype=np.int64)
    candidates[:, 0] = targets
    for i, items in enumerate(seen):
        if n_real - len(items) < n_negatives:
            raise ValueError(f"user {users[i]} has touched too many items to draw {n_negatives}")
        drawn: list[int] = []
        while len(drawn) < n_negatives:
            pick = rng.integers(N_RESERVED, meta.n_items, size=2 * n_negatives)
            drawn.extend(int(p) for p in pick if p not in items and p not in drawn)
        candidates[i, 1:] = drawn[:n_negatives]
    ranks = np.empty(users.size, dtype=np.int64)
    for start in range(0, users.size, chunk_size):
        part = slice(start, start + chunk_size)
        scores = model.score(Queries.for_users(users[part]))
        picked = np.take_along_axis(scores, candidates[part], axis=1)
        ranks[part] = (picked[:, 1:] >= picked[:, :1]).sum(axis=1)  # ties against
    prefix = f"sampled{n_negatives}"
    per_query: dict[str, np.ndarray] = {}
    for k in sorted(set(ks)):
        hit = ranks < k
        per_query[f"{prefix}/hit@{k}"] = hit.astype(np.float64)
        per_query[f"{prefix}/ndcg@{k}"] = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    log.debug("%s: %s on %d users (%s)", prefix, model.name, users.size, LABEL)
    return ProtocolResult(
        metrics={key: float(v.mean()) for key, v in per_query.items()},
        per_query=per_query,
        n_queries=int(users.size),
        protocol=f"sampled_user_topk ({LABEL})",
    )
