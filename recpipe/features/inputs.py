"""Model-input iterators over encoded interactions: BPR triplets and CTR tables.

Everything here is numpy in, numpy out (the trainer turns arrays into tensors),
vectorised per batch, and deterministic given its seeds:

- :func:`triplet_batches` yields ``(user, positive, negatives)`` minibatches for
  pairwise / sampled objectives (BPR matrix factorization, Rendle et al. 2009,
  "BPR: Bayesian Personalized Ranking from Implicit Feedback").
- :func:`ctr_examples` builds a labelled table for click-through-rate models
  (Wide & Deep, Cheng et al. 2016; DeepFM, Guo et al. 2017): sampled negatives
  for implicit data, given labels for explicit data, plus hashed cross-product
  columns for the wide (memorisation) part; :func:`ctr_batches` iterates it.
- :func:`cross_columns` / :func:`hash_cross` compute the crosses, also at
  serving time, from the ``crosses``, ``n_cross_buckets`` and ``hash_seed``
  recorded in :class:`CtrExamples` (the vectorised hash may move to
  ``features/hashing.py``).

Sharding for DistributedDataParallel: every iterator takes ``rank`` and
``world_size``; all ranks must pass the same ``seed`` so that they share one
epoch permutation, of which rank ``r`` takes every ``world_size``-th element
starting at ``r``. The ranks' shards are disjoint and together cover the epoch;
their sizes differ by at most one (pass ``drop_last=True`` for the same number
of full batches on every rank). Pass ``seed = base_seed + epoch`` for a new
order each epoch. Give each rank's :class:`NegativeSampler` its own seed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from recpipe.features.hashing import hash_pairs
from recpipe.features.sampling import NegativeSampler

log = logging.getLogger(__name__)

DEFAULT_CROSSES: tuple[tuple[str, str], ...] = (
    ("user", "category"),
    ("category", "hour"),
    ("category", "dow"),
    ("hour", "dow"),
)
"""Crosses built by default, each one only where both of its fields exist."""

DEFAULT_CROSS_BUCKETS = 1 << 18
_BASE_FIELDS = ("user", "item", "category")


# ---------------------------------------------------------------------- helpers
def shard_order(
    n: int,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> np.ndarray:
    """The row order one rank visits in one epoch.

    Parameters
    ----------
    n : int
        Number of rows in the epoch.
    batch_size : int
        Rows per batch (used by ``drop_last``).
    shuffle : bool
        Permute the rows with ``seed`` (the same permutation on every rank).
    seed : int
        Seed of the permutation.
    rank, world_size : int
        This process's rank and the number of processes; rank ``r`` takes rows
        ``perm[r::world_size]``.
    drop_last : bool
        Keep only ``n // (batch_size * world_size)`` full batches per rank (the
        same count on every rank), dropping the rest of the permutation.

    Returns
    -------
    np.ndarray
        (n_rank,) int64 row indices, disjoint across ranks.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n, dtype=np.int64)
    if drop_last:
        order = order[: (n // (batch_size * world_size)) * batch_size * world_size]
    return order[rank::world_size]


def _as_index_array(name: str, values: np.ndarray, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries, expected {n}")
    return arr.astype(np.int64, copy=False)


def hash_cross(
    a: np.ndarray, b: np.ndarray, *, n_buckets: int, seed: int = 0, name: str = ""
) -> np.ndarray:
    """Hash pairs of integers into ``[0, n_buckets)`` (vectorised, stable across runs).

    ``h = splitmix64(splitmix64(a ^ salt) ^ b) mod n_buckets`` on uint64, where
    ``salt`` comes from ``seed`` and ``name`` (so two crosses of the same fields
    under different names land in unrelated buckets).

    Parameters
    ----------
    a, b : np.ndarray
        (N,) integer arrays.
    n_buckets : int
        Size of the hashed space.
    seed : int
        Hash seed (record it with the model).
    name : str
        Name of the cross, mixed into the salt.

    Returns
    -------
    np.ndarray
        (N,) int64 bucket ids.
    """
    return hash_pairs(a, b, n_buckets, seed, name=name)


def cross_name(a: str, b: str) -> str:
    """Column name of the cross of fields ``a`` and ``b``: ``cross_{a}_{b}``."""
    return f"cross_{a}_{b}"


def cross_columns(
    fields: Mapping[str, np.ndarray],
    crosses: Sequence[tuple[str, str]],
    *,
    n_buckets: int,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Hashed cross-product columns for the wide part of Wide & Deep.

    Parameters
    ----------
    fields : Mapping[str, np.ndarray]
        Integer columns, each (N,).
    crosses : Sequence[tuple[str, str]]
        Pairs of field names.
    n_buckets, seed : int
        Hashed space size and hash seed.

    Returns
    -------
    dict[str, np.ndarray]
        ``{cross_name(a, b): (N,) int64 bucket ids}`` in the order of ``crosses``.
    """
    out: dict[str, np.ndarray] = {}
    for a, b in crosses:
        missing = [f for f in (a, b) if f not in fields]
        if missing:
            raise ValueError(f"cross ({a}, {b}) needs fields {missing}; have {sorted(fields)}")
        name = cross_name(a, b)
        out[name] = hash_cross(fields[a], fields[b], n_buckets=n_buckets, seed=seed, name=name)
    return out


# ---------------------------------------------------------------------- triplets
@dataclass(frozen=True, slots=True)
class TripletBatch:
    """One minibatch of (user, positive item, sampled negatives). B: batch size.

    Attributes
    ----------
    users : np.ndarray
        (B,) int64 user indices.
    positives : np.ndarray
        (B,) int64 item indices the users interacted with.
    negatives : np.ndarray
        (B, n_negatives) int64 sampled item indices.
    """

    users: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray

    def __len__(self) -> int:
        return int(self.users.shape[0])


def triplet_batches(
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    *,
    n_negatives: int,
    batch_size: int,
    sampler: NegativeSampler,
    shuffle: bool = True,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    exclude_positive: bool = False,
) -> Iterator[TripletBatch]:
    """Iterate one epoch of (user, positive, negatives) minibatches.

    Every input pair (``user_idx[i]``, ``item_idx[i]``) is emitted exactly once
    per epoch across all ranks (repeated pairs in the input are emitted as often
    as they occur); the last batch may be smaller unless ``drop_last``.

    Parameters
    ----------
    user_idx, item_idx : np.ndarray
        (n,) int user and item index of each positive interaction.
    n_negatives : int
        Negatives per positive, drawn from ``sampler``.
    batch_size : int
        B: rows per batch.
    sampler : NegativeSampler
        Source of negatives (its own seed governs the draws).
    shuffle : bool, default True
        Permute the pairs with ``seed`` (pass ``base_seed + epoch``).
    seed : int, default 0
        Seed of the permutation; the same on every rank.
    rank, world_size : int
        DDP sharding (see the module docstring).
    drop_last : bool, default False
        Yield only full batches, the same number on every rank.
    exclude_positive : bool, default False
        Redraw negatives equal to the row's positive
        (:meth:`NegativeSampler.sample_excluding`); the default keeps the draws
        exactly distributed as ``sampler.probabilities`` (for logQ correction).

    Yields
    ------
    TripletBatch
        users (B,), positives (B,), negatives (B, n_negatives).
    """
    users = _as_index_array("user_idx", user_idx)
    items = _as_index_array("item_idx", item_idx, users.shape[0])
    if n_negatives < 0:
        raise ValueError(f"n_negatives must be >= 0, got {n_negatives}")
    order = shard_order(
        users.shape[0],
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
    )
    # Arguments are checked above, on the call; batches are made lazily below.
    return _triplets(users, items, order, batch_size, n_negatives, sampler, exclude_positive)


def _triplets(
    users: np.ndarray,
    items: np.ndarray,
    order: np.ndarray,
    batch_size: int,
    n_negatives: int,
    sampler: NegativeSampler,
    exclude_positive: bool,
) -> Iterator[TripletBatch]:
    for start in range(0, order.shape[0], batch_size):
        idx = order[start : start + batch_size]
        pos = items[idx]
        if exclude_positive:
            neg = sampler.sample_excluding(pos, n_negatives)
        else:
            neg = sampler.sample_matrix(idx.shape[0], n_negatives)
        yield TripletBatch(users=users[idx], positives=pos, negatives=neg)


# ---------------------------------------------------------------------- CTR tables
@dataclass(frozen=True, slots=True)
class CtrBatch:
    """One minibatch of a CTR table. B: batch size.

    Attributes
    ----------
    fields : dict[str, np.ndarray]
        Name -> (B,) int64 feature column (``user``, ``item``, optional
        ``category``, context columns, then ``cross_*`` columns).
    label : np.ndarray
        (B,) float32 targets.
    """

    fields: dict[str, np.ndarray]
    label: np.ndarray

    def __len__(self) -> int:
        return int(self.label.shape[0])


@dataclass(frozen=True)
class CtrExamples:
    """A labelled table for Wide & Deep / DeepFM. N: number of rows.

    Attributes
    ----------
    fields : dict[str, np.ndarray]
        Name -> (N,) int64 feature column: ``user``, ``item``, ``category``
        (when an item-category lookup was given), each context column, then one
        ``cross_{a}_{b}`` column per cross (bucket ids in ``[0, n_cross_buckets)``).
    label : np.ndarray
        (N,) float32 targets (1 positive, 0 sampled negative, or given labels).
    source : np.ndarray
        (N,) int64 index of the input event each row comes from (a positive and
        its negatives share it: the group of group-wise metrics).
    crosses : tuple[tuple[str, str], ...]
        The crossed field pairs, in column order.
    n_cross_buckets : int
        Size of the hashed cross space.
    hash_seed : int
        Seed of the cross hash; with ``crosses`` and ``n_cross_buckets`` it is
        what serving needs to rebuild the crosses (:func:`cross_columns`).
    """

    fields: dict[str, np.ndarray]
    label: np.ndarray
    source: np.ndarray
    crosses: tuple[tuple[str, str], ...]
    n_cross_buckets: int
    hash_seed: int

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @property
    def positive_rate(self) -> float:
        """Mean label."""
        return float(self.label.mean()) if len(self) else float("nan")

    def take(self, rows: np.ndarray) -> CtrBatch:
        """The rows ``rows`` as a :class:`CtrBatch` (copies)."""
        return CtrBatch(
            fields={name: col[rows] for name, col in self.fields.items()},
            label=self.label[rows],
        )


def ctr_examples(
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    *,
    negatives_per_positive: int,
    sampler: NegativeSampler | None = None,
    seed: int = 0,
    item_category: np.ndarray | None = None,
    context: Mapping[str, np.ndarray] | None = None,
    labels: np.ndarray | None = None,
    crosses: Sequence[tuple[str, str]] | None = None,
    n_cross_buckets: int = DEFAULT_CROSS_BUCKETS,
    hash_seed: int = 0,
) -> CtrExamples:
    """Build the labelled table of a CTR model from encoded events.

    Implicit data (``labels=None``): each event is a positive (label 1) followed
    by ``negatives_per_positive`` rows with the same user and context and an
    item drawn from ``sampler`` (never the positive itself), label 0. The rows
    of event ``i`` are ``i * (1 + k) ... i * (1 + k) + k``. Explicit data
    (``labels`` given, e.g. ``rating >= 4``): one row per event with that label,
    no sampling (``negatives_per_positive`` must be 0).

    Parameters
    ----------
    user_idx, item_idx : np.ndarray
        (n,) int user and item index of each event.
    negatives_per_positive : int
        k: sampled negatives per positive (implicit data).
    sampler : NegativeSampler, optional
        Source of negatives; required when ``k > 0``. It is not advanced:
        the draws come from ``sampler.reseeded(seed)``.
    seed : int, default 0
        Seed of the negative draws: same inputs and seed, same table.
    item_category : np.ndarray, optional
        (n_items,) int category index of each item index; adds a ``category``
        column (for negatives too).
    context : Mapping[str, np.ndarray], optional
        Name -> (n,) int per-event context column (``event_type``,
        ``gap_bucket``, ``hour``, ``dow``, ...), copied onto the negatives.
    labels : np.ndarray, optional
        (n,) explicit targets (finite; binary for a BCE model).
    crosses : Sequence[tuple[str, str]], optional
        Field pairs to cross; default: those of :data:`DEFAULT_CROSSES` whose
        fields are present.
    n_cross_buckets : int, default 2**18
        Size of the hashed cross space.
    hash_seed : int, default 0
        Seed of the cross hash.

    Returns
    -------
    CtrExamples
        The table; N = n * (1 + k) rows for implicit data, n for explicit.
    """
    users = _as_index_array("user_idx", user_idx)
    n = users.shape[0]
    items = _as_index_array("item_idx", item_idx, n)
    k = int(negatives_per_positive)
    if k < 0:
        raise ValueError(f"negatives_per_positive must be >= 0, got {k}")
    context = dict(context or {})
    for name in context:
        if name in (*_BASE_FIELDS, "label") or name.startswith("cross_"):
            raise ValueError(f"context column name {name!r} is reserved")
    ctx = {name: _as_index_array(f"context[{name!r}]", col, n) for name, col in context.items()}

    if labels is not None:
        if k:
            raise ValueError(
                f"labels given (explicit feedback) with negatives_per_positive={k}: "
                "expected 0 (explicit data is not negative-sampled)"
            )
        label = np.asarray(labels, dtype=np.float32)
        if label.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {label.shape}")
        if not np.all(np.isfinite(label)):
            raise ValueError("labels must be finite")
        rows_items = items
        source = np.arange(n, dtype=np.int64)
    else:
        grid = np.empty((n, 1 + k), dtype=np.int64)
        grid[:, 0] = items
        if k:
            if sampler is None:
                raise ValueError(f"negatives_per_positive={k} needs a sampler")
            draw = sampler.reseeded(seed, cache_size=max(n * k, 1))
            grid[:, 1:] = draw.sample_excluding(items, k)
        rows_items = grid.reshape(-1)
        label = np.zeros((n, 1 + k), dtype=np.float32)
        label[:, 0] = 1.0
        label = label.reshape(-1)
        source = np.repeat(np.arange(n, dtype=np.int64), 1 + k)

    fields: dict[str, np.ndarray] = {"user": users[source], "item": rows_items}
    if item_category is not None:
        lookup = _as_index_array("item_category", item_category)
        if rows_items.size and int(rows_items.max()) >= lookup.shape[0]:
            raise ValueError(
                f"item index {int(rows_items.max())} is beyond item_category "
                f"({lookup.shape[0]} entries)"
            )
        fields["category"] = lookup[rows_items]
    for name, col in ctx.items():
        fields[name] = col[source]

    if crosses is None:
        crosses = tuple(c for c in DEFAULT_CROSSES if c[0] in fields and c[1] in fields)
    crosses = tuple((str(a), str(b)) for a, b in crosses)
    fields.update(cross_columns(fields, crosses, n_buckets=n_cross_buckets, seed=hash_seed))
    examples = CtrExamples(
        fields=fields,
        label=label,
        source=source,
        crosses=crosses,
        n_cross_buckets=int(n_cross_buckets),
        hash_seed=int(hash_seed),
    )
    log.info(
        "CTR table: %d rows from %d events (%d negatives each), positive rate %.3f, %d crosses",
        len(examples),
        n,
        k,
        examples.positive_rate,
        len(crosses),
    )
    return examples


def ctr_batches(
    examples: CtrExamples,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> Iterator[CtrBatch]:
    """Iterate one epoch of a CTR table in minibatches.

    Parameters
    ----------
    examples : CtrExamples
        The table.
    batch_size : int
        B: rows per batch.
    shuffle : bool, default True
        Permute rows with ``seed`` (pass ``base_seed + epoch``).
    seed : int, default 0
        Seed of the permutation; the same on every rank.
    rank, world_size : int
        DDP sharding (see the module docstring).
    drop_last : bool, default False
        Yield only full batches, the same number on every rank.

    Yields
    ------
    CtrBatch
        fields name -> (B,) int64, label (B,) float32.
    """
    order = shard_order(
        len(examples),
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
    )
    return (examples.take(order[i : i + batch_size]) for i in range(0, order.shape[0], batch_size))
