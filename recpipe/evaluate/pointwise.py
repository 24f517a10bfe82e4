"""Pointwise protocols: each query is one (user, item) pair whose prediction is scored.

:func:`rating` (models with ``predicts_ratings``)
    RMSE and MAE of the model's user score of each test ``rating`` event's item, read
    as a predicted rating.

:func:`ctr` (user splits, models with ``predicts_ctr``)
    Click-through-rate metrics of a model's ``predict_proba``: every distinct known
    (user, item) test pair is a positive, paired with sampled items the user never
    interacted with (in train or test) as negatives; ``auc`` and ``logloss``.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from recpipe.evaluate.common import ProtocolResult, check_chunk
from recpipe.evaluate.metrics import ctr_metrics, rating_metrics
from recpipe.features.context import EVENT_TYPE_INDEX
from recpipe.features.idmap import N_RESERVED
from recpipe.models.base import Recommender
from recpipe.models.data import DataMeta, Interactions, Queries

log = logging.getLogger(__name__)

__all__ = ["CtrPredictor", "ctr", "rating"]

_RATING = EVENT_TYPE_INDEX["rating"]


# ---------------------------------------------------------------------- rating
def rating(
    model: Recommender,
    test: Interactions,
    meta: DataMeta,
    *,
    chunk_size: int = 4096,
) -> ProtocolResult:
    """Rating prediction: RMSE and MAE over the test ``rating`` events.

    Each rating event ``(u, i, r)`` is one query: the prediction is
    ``model.score(Queries.for_users([u]), candidates=[[i]])``, i.e. the model's user
    score of the item, read as a predicted rating (meaningful for models with
    :attr:`~recpipe.models.base.Recommender.predicts_ratings`).

    Parameters
    ----------
    model : Recommender
        A fitted model that scores ``user`` queries.
    test : Interactions
        The test events; only those of event type ``rating`` are evaluated, their
        ``value`` being the true rating.
    meta : DataMeta
        Sizes of the split (unused but for the common protocol signature).
    chunk_size : int, default 4096
        Ratings predicted at a time.

    Returns
    -------
    ProtocolResult
        ``metrics``: ``{"rmse", "mae"}``; ``per_query``: ``"squared_error"`` and
        ``"absolute_error"`` of each rating, in test event order; ``slices``: empty;
        ``n_queries``: the number of test ratings.

    Raises
    ------
    ValueError
        The test data holds no rating event, the model cannot score user queries,
        or ``chunk_size`` is invalid.

    Notes
    -----
    Ratings of unknown users or items are **kept**, not skipped, so that the query
    set is the same for every model. An unknown user (``UNK``) gets the model's own
    fallback (``bias``: global mean + item bias). An unknown or ``PAD`` item is a
    reserved slot, which :meth:`~recpipe.models.base.Recommender.score` scores
    ``-inf``; its rating is predicted with item bias 0 instead: the model's
    ``user_baseline(users)`` when it has one (``bias``: ``mu + b_u``), otherwise the
    mean of the user's scores over the real items.
    """
    check_chunk(chunk_size)
    if "user" not in model.query_kinds:
        raise ValueError(
            f"model {model.name!r} cannot score 'user' queries (supports "
            f"{sorted(model.query_kinds)}); rating evaluation needs them"
        )
    rated = np.flatnonzero(test.event_type_idx == _RATING)
    n = len(rated)
    if n == 0:
        raise ValueError("no rating events in the test data; the rating protocol needs them")
    users = test.user_idx[rated].astype(np.int64)
    items = test.item_idx[rated].astype(np.int64)
    truth = test.value[rated].astype(np.float64)
    pred = np.empty(n, dtype=np.float64)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        pred[start:stop] = model.score(
            Queries.for_users(users[start:stop]), candidates=items[start:stop, None]
        )[:, 0]
    reserved = items < N_RESERVED
    if reserved.any():
        log.info("rating: %d of %d test ratings are of unknown items", reserved.sum(), n)
        pred[reserved] = _no_item_prediction(model, users[reserved], chunk_size)
    metrics = rating_metrics(pred, truth)
    err = pred - truth
    per_query = {"squared_error": err**2, "absolute_error": np.abs(err)}
    log.debug("rating %s: %d ratings, rmse=%.4f", model.name, n, metrics["rmse"])
    return ProtocolResult(
        metrics=metrics, per_query=per_query, slices={}, n_queries=n, protocol="rating"
    )


def _no_item_prediction(model: Recommender, users: np.ndarray, chunk_size: int) -> np.ndarray:
    """Predicted ratings of ``users`` for an item the model knows nothing of (bias 0)."""
    baseline = getattr(model, "user_baseline", None)
    if callable(baseline):
        return np.asarray(baseline(users), dtype=np.float64)
    out = np.empty(len(users), dtype=np.float64)
    for start in range(0, len(users), chunk_size):
        stop = min(start + chunk_size, len(users))
        scores = model.score(Queries.for_users(users[start:stop]))[:, N_RESERVED:]
        out[start:stop] = scores.mean(axis=1)
    return out


# ---------------------------------------------------------------------- ctr
class CtrPredictor(Protocol):
    """What :func:`ctr` needs of a model: a name and click probabilities of pairs."""

    name: str

    def predict_proba(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(N,) probabilities of aligned (N,) user and item indices."""
        ...


def _known_pair_keys(data: Interactions, n_items: int) -> np.ndarray:
    """Sorted distinct ``user * n_items + item`` of the pairs with known user and item."""
    users = data.user_idx.astype(np.int64)
    items = data.item_idx.astype(np.int64)
    known = (users >= N_RESERVED) & (items >= N_RESERVED)
    return np.unique(users[known] * n_items + items[known])


def _in_sorted(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Boolean mask of ``keys`` (any shape) found in the sorted 1-D ``sorted_keys``."""
    if sorted_keys.size == 0:
        return np.zeros(keys.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return sorted_keys[pos] == keys


def ctr(
    model: CtrPredictor,
    train: Interactions,
    test: Interactions,
    meta: DataMeta,
    *,
    negatives: int = 4,
    seed: int = 0,
    chunk_size: int = 65_536,
    max_rounds: int = 50,
) -> ProtocolResult:
    """Click-through-rate evaluation: AUC and log loss of ``model.predict_proba``.

    Every distinct (user, item) pair of ``test`` whose user and item are known (not
    ``UNK``) is a positive (label 1). Each gets ``negatives`` items drawn uniformly
    from the real items (seeded) that its user interacted with neither in ``train``
    nor in ``test`` (label 0); draws that hit such an item are redrawn up to
    ``max_rounds`` times and then dropped (only for users who have seen almost every
    item). The same data and seed give the same pairs for every model.

    Parameters
    ----------
    model : CtrPredictor
        A fitted model with ``predict_proba(users, items)`` (e.g. ``wide_deep``,
        ``deepfm``).
    train, test : Interactions
        The split's train and test parts (indices of the split ``meta`` describes).
    meta : DataMeta
        Sizes of the split.
    negatives : int, default 4
        Sampled negatives per positive.
    seed : int, default 0
        Seed of the negative draws.
    chunk_size : int, default 65536
        Pairs passed to ``predict_proba`` at a time.
    max_rounds : int, default 50
        Redraw rounds for negatives that hit an item of the user.

    Returns
    -------
    ProtocolResult
        ``metrics``: ``{"auc", "logloss"}`` over all rows
        (:func:`~recpipe.evaluate.metrics.ctr_metrics`); ``per_query`` (one entry per
        positive, in (user, item) order): ``"pair_auc"``, the share of its negatives
        scored below it (ties count one half), and ``"logloss"``, the mean log loss of
        its rows; ``n_queries``: the number of positives.

    Raises
    ------
    ValueError
        The model has no ``predict_proba``, an argument is invalid, or the test part
        holds no known (user, item) pair.
    """
    check_chunk(chunk_size)
    if negatives < 1:
        raise ValueError(f"negatives must be >= 1; got {negatives}")
    if not callable(getattr(model, "predict_proba", None)):
        raise ValueError(
            f"model {getattr(model, 'name', model)!r} has no predict_proba; the ctr "
            "protocol needs click probabilities"
        )
    n_items = meta.n_items
    if n_items <= N_RESERVED:
        raise ValueError("the catalogue holds no real item")
    positives = _known_pair_keys(test, n_items)
    if positives.size == 0:
        raise ValueError("the test data holds no (known user, known item) pair to evaluate")
    seen = np.union1d(_known_pair_keys(train, n_items), positives)
    users = positives // n_items
    items = positives % n_items

    rng = np.random.default_rng(seed)
    neg = rng.integers(N_RESERVED, n_items, size=(positives.size, negatives), dtype=np.int64)
    hit = _in_sorted(users[:, None] * n_items + neg, seen)
    for _ in range(max_rounds):
        if not hit.any():
            break
        rows, cols = np.nonzero(hit)
        neg[rows, cols] = rng.integers(N_RESERVED, n_items, size=rows.size, dtype=np.int64)
        hit[rows, cols] = _in_sorted(users[rows] * n_items + neg[rows, cols], seen)
    valid = ~hit
    keep = valid.any(axis=1)
    if not keep.all():
        log.debug(
            "ctr: %d of %d positives dropped (their users have seen every item)",
            int((~keep).sum()),
            keep.size,
        )
        users, items, neg, valid = users[keep], items[keep], neg[keep], valid[keep]
    if users.size == 0:
        raise ValueError("no test positive has an item its user has not seen to sample")
    if (~valid).any():
        log.info("ctr: %d negative draws dropped after %d rounds", int((~valid).sum()), max_rounds)

    n_pos = users.size
    neg_rows, neg_cols = np.nonzero(valid)  # row-major: grouped by positive
    row_users = np.concatenate([users, users[neg_rows]])
    row_items = np.concatenate([items, neg[neg_rows, neg_cols]])
    label = np.concatenate([np.ones(n_pos), np.zeros(neg_rows.size)])
    prob = np.empty(row_users.size, dtype=np.float64)
    for start in range(0, row_users.size, chunk_size):
        stop = min(start + chunk_size, row_users.size)
        part = np.asarray(model.predict_proba(row_users[start:stop], row_items[start:stop]))
        if part.shape != (stop - start,):
            raise ValueError(
                f"model {model.name!r}: predict_proba returned shape {part.shape}, "
                f"expected ({stop - start},)"
            )
        prob[start:stop] = part
    metrics = ctr_metrics(prob, label)

    # per positive: share of its negatives below it, and the mean log loss of its rows
    p_pos, p_neg = prob[:n_pos], prob[n_pos:]
    wins = (p_pos[neg_rows] > p_neg) + 0.5 * (p_pos[neg_rows] == p_neg)
    n_neg = np.bincount(neg_rows, minlength=n_pos)
    pair_auc = np.bincount(neg_rows, weights=wins, minlength=n_pos) / n_neg
    clipped = np.clip(prob, 1e-15, 1.0 - 1e-15)
    row_loss = -(label * np.log(clipped) + (1.0 - label) * np.log(1.0 - clipped))
    group_loss = row_loss[:n_pos] + np.bincount(neg_rows, weights=row_loss[n_pos:], minlength=n_pos)
    per_query = {"pair_auc": pair_auc, "logloss": group_loss / (1.0 + n_neg)}
    log.debug(
        "ctr %s: %d positives, %d negatives, auc=%.4f, logloss=%.4f",
        model.name,
        n_pos,
        neg_rows.size,
        metrics["auc"],
        metrics["logloss"],
    )
    return ProtocolResult(
        metrics=metrics, per_query=per_query, slices={}, n_queries=n_pos, protocol="ctr"
    )
