"""Inputs of session-based models: session-parallel mini-batches, padded sequences, prefixes.

Events are encoded numpy arrays sorted by (session, time); a session is
described by CSR-style ``offsets`` (int64, length ``n_sessions + 1``): session
``s`` holds the events at positions ``offsets[s] : offsets[s + 1]``. The
iterators here return *positions* into the event arrays rather than item ids,
so the caller can gather any per-event column (item, event type, time gap,
hour) with one fancy index.

- :class:`SessionParallelBatches`: the session-parallel mini-batches of GRU4Rec
  (Hidasi et al. 2016, "Session-based Recommendations with Recurrent Neural
  Networks", section 3.1.1). Each of B rows ("lanes") walks through one session
  event by event; the input of a step is the lane's current event and the
  target the next event of the same session. When a lane's session has no
  next event left, the lane takes the next session of the queue and signals a
  ``reset``: the model zeroes that row's hidden state before the step.
- :func:`padded_sequences`: left-padded (B, T) sequences with next-item targets
  at every position, for sequential models (GRU over whole sequences,
  self-attention).
- :func:`prefixes`: every (prefix, next event) pair of each session, the
  next-item evaluation protocol.

Sessions shorter than 2 events have no (input, target) pair and are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from recpipe.features.idmap import PAD

log = logging.getLogger(__name__)


def _check_offsets(offsets: np.ndarray) -> np.ndarray:
    off = np.asarray(offsets)
    if off.ndim != 1 or off.shape[0] < 1:
        raise ValueError(f"offsets must be 1-D of length n_sessions + 1, got shape {off.shape}")
    if off.size > 1 and not np.issubdtype(off.dtype, np.integer):
        raise ValueError(f"offsets must hold integers, got dtype {off.dtype}")
    off = off.astype(np.int64, copy=False)
    if off[0] != 0:
        raise ValueError(f"offsets must start at 0, got {int(off[0])}")
    if np.any(np.diff(off) < 0):
        raise ValueError("offsets must be non-decreasing")
    return off


def _session_order(
    n_sessions: int, eligible: np.ndarray, *, shuffle: bool, seed: int, rank: int, world_size: int
) -> np.ndarray:
    """Eligible session numbers in visiting order for one rank (strided shard)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    order = np.flatnonzero(eligible)
    if shuffle:
        order = np.random.default_rng(seed).permutation(order)
    return order[rank::world_size]


def session_of_positions(offsets: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Session number of each event position.

    Parameters
    ----------
    offsets : np.ndarray
        (n_sessions + 1,) int64 session starts.
    positions : np.ndarray
        (N,) int event positions.

    Returns
    -------
    np.ndarray
        (N,) int64 session numbers.
    """
    off = _check_offsets(offsets)
    return np.searchsorted(off, np.asarray(positions), side="right").astype(np.int64) - 1


# ---------------------------------------------------------------------- session-parallel
@dataclass(frozen=True, slots=True)
class SessionStep:
    """One step of session-parallel mini-batches. B: batch size (number of lanes).

    Attributes
    ----------
    inputs : np.ndarray
        (B,) int64 positions of the current events (0 in inactive rows, a valid
        position so that gathering never fails; mask with ``active``).
    targets : np.ndarray
        (B,) int64 positions of the next events (``inputs + 1`` in active rows,
        0 in inactive rows).
    reset : np.ndarray
        (B,) bool, True where the row starts a new session at this step: zero
        that row's hidden state before computing the step. False in inactive rows.
    active : np.ndarray
        (B,) bool, False in rows that have no session left (only at the tail of
        an epoch with ``drop_tail=False``).
    session : np.ndarray
        (B,) int64 session number of each row (-1 in inactive rows).
    """

    inputs: np.ndarray
    targets: np.ndarray
    reset: np.ndarray
    active: np.ndarray
    session: np.ndarray

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


class SessionParallelBatches:
    """Session-parallel mini-batches (Hidasi et al. 2016, section 3.1.1).

    B lanes each hold one session. The first step of a session has ``reset``
    set; each step feeds the lane's current event as input and the following
    event of the same session as target. A lane whose session has no next
    event left takes the next session of the queue (lanes that free up at the
    same step take queued sessions in lane order). Within a session, events are
    visited in order; within an epoch, every event except the last of its
    session is an input exactly once and every event except the first is a
    target exactly once (with ``drop_tail=False``).

    Iterating the object runs one epoch; it can be iterated again (same order
    unless :meth:`set_epoch` changed the seed).

    Parameters
    ----------
    offsets : np.ndarray
        (n_sessions + 1,) int64 start of each session in the event arrays.
    batch_size : int
        B: number of parallel lanes.
    shuffle_sessions : bool, default False
        Visit sessions in a seeded random order; otherwise in their given order
        (sort sessions by start time beforehand for the paper's setting).
    seed : int, default 0
        Seed of the session order; the same on every rank.
    rank, world_size : int, default 0, 1
        DDP sharding: rank ``r`` runs the sessions ``order[r::world_size]``, so
        ranks see disjoint sessions that together cover the epoch. The number
        of steps can differ between ranks (use ``torch.distributed``'s ``Join``
        or ``drop_tail``).
    drop_tail : bool, default False
        False: keep stepping once the queue is empty, marking rows with no
        session left inactive (``active=False``) until every session is done,
        so every event is used. True: stop at the first step at which a free
        lane finds the queue empty, as in the paper and its reference
        implementation; every batch is then full, and the rest of the sessions
        still running in the other lanes, and of the sessions still queued when
        several lanes free up at once, is not visited (at most B - 1 sessions
        in all). The steps are exactly those of ``drop_tail=False`` up to its
        first step with an inactive row. With fewer eligible sessions than
        lanes and ``drop_tail=True`` nothing is yielded.

    Examples
    --------
    >>> offsets = np.array([0, 3, 5, 6, 9])  # session 2 has one event: skipped
    >>> steps = list(SessionParallelBatches(offsets, batch_size=2))
    >>> [s.inputs.tolist() for s in steps]  # inactive rows read position 0
    [[0, 3], [1, 6], [0, 7]]
    >>> [s.targets.tolist() for s in steps]
    [[1, 4], [2, 7], [0, 8]]
    >>> [s.reset.tolist() for s in steps]
    [[True, True], [False, True], [False, False]]
    >>> steps[-1].active.tolist()
    [False, True]
    """

    def __init__(
        self,
        offsets: np.ndarray,
        batch_size: int,
        *,
        shuffle_sessions: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_tail: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.offsets = _check_offsets(offsets)
        self.batch_size = int(batch_size)
        self.shuffle_sessions = bool(shuffle_sessions)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_tail = bool(drop_tail)
        self._epoch = 0
        lengths = np.diff(self.offsets)
        self._eligible = lengths >= 2
        # Validate the sharding arguments now rather than at the first iteration.
        self._order()

    def set_epoch(self, epoch: int) -> None:
        """Use seed ``seed + epoch`` for the session order (with ``shuffle_sessions``)."""
        self._epoch = int(epoch)

    def _order(self) -> np.ndarray:
        return _session_order(
            self.offsets.shape[0] - 1,
            self._eligible,
            shuffle=self.shuffle_sessions,
            seed=self.seed + self._epoch,
            rank=self.rank,
            world_size=self.world_size,
        )

    @property
    def n_sessions(self) -> int:
        """Sessions of length >= 2 this rank visits per epoch."""
        return int(self._order().shape[0])

    @property
    def n_transitions(self) -> int:
        """(input, target) pairs of this rank per epoch (with ``drop_tail=False``)."""
        order = self._order()
        return int((self.offsets[order + 1] - self.offsets[order] - 1).sum())

    def __iter__(self) -> Iterator[SessionStep]:
        order = self._order()
        starts = self.offsets[order]
        ends = self.offsets[order + 1]  # exclusive
        n_queue = order.shape[0]
        n_lanes = self.batch_size
        if n_queue < n_lanes and self.drop_tail:
            log.warning(
                "session-parallel batches: %d sessions for %d lanes with drop_tail=True: "
                "nothing to yield",
                n_queue,
                n_lanes,
            )
            return

        # Lane state: current position, exclusive end, queue slot (-1: inactive).
        pos = np.zeros(n_lanes, dtype=np.int64)
        end = np.zeros(n_lanes, dtype=np.int64)
        slot = np.full(n_lanes, -1, dtype=np.int64)
        reset = np.zeros(n_lanes, dtype=bool)
        n_first = min(n_lanes, n_queue)
        pos[:n_first] = starts[:n_first]
        end[:n_first] = ends[:n_first]
        slot[:n_first] = np.arange(n_first)
        reset[:n_first] = True
        next_slot = n_first
        active = slot >= 0

        while active.any():
            inputs = np.where(active, pos, 0)
            session = np.where(active, order[np.maximum(slot, 0)], -1)
            yield SessionStep(
                inputs=inputs,
                targets=np.where(active, pos + 1, 0),
                reset=reset.copy(),
                active=active.copy(),
                session=session,
            )
            pos += 1
            reset[:] = False
            # A lane is done when its new position has no next event.
            done = np.flatnonzero(active & (pos + 1 >= end))
            if done.size == 0:
                continue
            take = min(done.size, n_queue - next_slot)
            if take < done.size and self.drop_tail:
                return
            lanes = done[:take]
            new = np.arange(next_slot, next_slot + take)
            pos[lanes] = starts[new]
            end[lanes] = ends[new]
            slot[lanes] = new
            reset[lanes] = True
            next_slot += take
            idle = done[take:]
            slot[idle] = -1
            active[idle] = False


# ---------------------------------------------------------------------- padded sequences
@dataclass(frozen=True, slots=True)
class SequenceBatch:
    """Left-padded sequences with next-item targets. B: batch size, T: max_len.

    Attributes
    ----------
    items : np.ndarray
        (B, T) int64 input items, left-padded with PAD (0): row b holds the last
        ``lengths[b]`` items of its session before the final target.
    targets : np.ndarray
        (B, T) int64 next item of each input (``items`` shifted by one; PAD where
        padded).
    positions : np.ndarray
        (B, T) int64 event positions of the inputs, for gathering per-event
        columns (0 where padded: mask with ``items != PAD`` or ``lengths``).
    lengths : np.ndarray
        (B,) int64 number of non-padded positions, ``1 <= lengths <= T``.
    session : np.ndarray
        (B,) int64 session number of each row.
    """

    items: np.ndarray
    targets: np.ndarray
    positions: np.ndarray
    lengths: np.ndarray
    session: np.ndarray

    def __len__(self) -> int:
        return int(self.lengths.shape[0])


def padded_sequences(
    offsets: np.ndarray,
    item_idx: np.ndarray,
    *,
    max_len: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[SequenceBatch]:
    """Iterate one epoch of left-padded session sequences for sequential models.

    Each session of length L >= 2 gives one row: inputs are its events
    ``max(0, L - 1 - max_len) ... L - 2`` and targets the events one later, so a
    session longer than ``max_len + 1`` contributes only its last ``max_len``
    transitions (SASRec-style truncation; use :func:`prefixes` for evaluation
    over every position). T is always ``max_len``, so with left padding the
    last input sits at column T - 1 in every row.

    Parameters
    ----------
    offsets : np.ndarray
        (n_sessions + 1,) int64 session starts.
    item_idx : np.ndarray
        (n_events,) int item index of each event (never PAD for real events).
    max_len : int
        T: maximum number of input positions.
    batch_size : int
        B: sequences per batch (the last batch may be smaller).
    shuffle : bool
        Visit sessions in a seeded random order.
    seed : int
        Seed of the order; the same on every rank.
    rank, world_size : int, default 0, 1
        DDP sharding of sessions (strided, disjoint across ranks).

    Yields
    ------
    SequenceBatch
        items (B, T), targets (B, T), positions (B, T), lengths (B,), session (B,).
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    off = _check_offsets(offsets)
    items_all = np.asarray(item_idx)
    if items_all.shape != (int(off[-1]),):
        raise ValueError(
            f"item_idx must have shape ({int(off[-1])},) to match offsets, got {items_all.shape}"
        )
    items_all = items_all.astype(np.int64, copy=False)
    order = _session_order(
        off.shape[0] - 1,
        np.diff(off) >= 2,
        shuffle=shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
    )
    # Arguments are checked above, on the call; batches are made lazily below.
    return _padded(off, items_all, order, max_len, batch_size)


def _padded(
    off: np.ndarray, items_all: np.ndarray, order: np.ndarray, max_len: int, batch_size: int
) -> Iterator[SequenceBatch]:
    cols = np.arange(max_len, dtype=np.int64)
    for start in range(0, order.shape[0], batch_size):
        sess = order[start : start + batch_size]
        last_input = off[sess + 1] - 2  # (B,) position of the last input event
        lengths = np.minimum(off[sess + 1] - off[sess] - 1, max_len)
        # Column t of row b holds position last_input[b] - (T - 1 - t).
        positions = last_input[:, None] - (max_len - 1 - cols)[None, :]
        valid = cols[None, :] >= (max_len - lengths)[:, None]
        positions = np.where(valid, positions, 0)
        yield SequenceBatch(
            items=np.where(valid, items_all[positions], PAD),
            targets=np.where(valid, items_all[positions + 1], PAD),
            positions=positions,
            lengths=lengths,
            session=sess,
        )


# ---------------------------------------------------------------------- prefixes
def prefixes(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (prefix, next event) pair of every session, for next-item evaluation.

    The prefix of pair ``j`` is the events ``offsets[s] ... prefix_end[j]``
    (inclusive) of its session ``s`` (see :func:`session_of_positions`); its
    target is the event right after, ``target[j] = prefix_end[j] + 1``. Pairs are
    listed in event order; sessions of length < 2 give none.

    Parameters
    ----------
    offsets : np.ndarray
        (n_sessions + 1,) int64 session starts.

    Returns
    -------
    prefix_end_positions : np.ndarray
        (n_pairs,) int64 position of the last event of each prefix.
    target_positions : np.ndarray
        (n_pairs,) int64 position of the event to predict.

    Examples
    --------
    >>> ends, targets = prefixes(np.array([0, 3, 4, 6]))
    >>> ends.tolist(), targets.tolist()
    ([0, 1, 4], [1, 2, 5])
    """
    off = _check_offsets(offsets)
    n_events = int(off[-1])
    is_first = np.zeros(n_events, dtype=bool)
    starts = off[:-1][np.diff(off) > 0]
    is_first[starts] = True
    targets = np.flatnonzero(~is_first).astype(np.int64)
    return targets - 1, targets
