"""Session-parallel mini-batches, padded sequences and prefixes over CSR session offsets."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recpipe.sessions.batching import (
    PAD,
    SessionParallelBatches,
    padded_sequences,
    prefixes,
    session_of_positions,
)

session_lengths = st.lists(st.integers(min_value=0, max_value=8), min_size=0, max_size=40)
batch_sizes = st.integers(min_value=1, max_value=6)


def offsets_of(lengths: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


def expected_inputs(offsets: np.ndarray) -> list[int]:
    """Every position except the last of each session of length >= 2."""
    return [p for s in range(len(offsets) - 1) for p in range(offsets[s], offsets[s + 1] - 1)]


def run(batches: SessionParallelBatches):
    steps = list(batches)
    for step in steps:
        for arr in (step.inputs, step.targets, step.reset, step.active, step.session):
            assert arr.shape == (batches.batch_size,)
    return steps


def check_steps(steps, offsets: np.ndarray, *, complete: bool) -> list[int]:
    """Check the session-parallel invariants; returns the active inputs in step order."""
    n_lanes = len(steps[0].inputs) if steps else 0
    current = [None] * n_lanes  # (session, last input) of each lane
    seen_inactive = [False] * n_lanes
    visited: Counter[int] = Counter()
    for step in steps:
        a = step.active
        assert np.all(step.targets[a] == step.inputs[a] + 1)
        sess = session_of_positions(offsets, step.inputs[a])
        assert np.array_equal(sess, step.session[a])
        assert np.array_equal(session_of_positions(offsets, step.targets[a]), sess)
        # Resets exactly at session starts, and only there.
        assert np.array_equal(step.reset[a], step.inputs[a] == offsets[step.session[a]])
        assert not step.reset[~a].any()
        assert np.all(step.session[~a] == -1)
        for lane in range(n_lanes):
            if not a[lane]:
                seen_inactive[lane] = True
                continue
            assert not seen_inactive[lane], "an inactive lane came back"
            s, p = int(step.session[lane]), int(step.inputs[lane])
            if step.reset[lane]:
                # The previous session of this lane was finished (its last input used).
                if current[lane] is not None:
                    ps, pp = current[lane]
                    assert pp == offsets[ps + 1] - 2
            else:
                assert current[lane] == (s, p - 1), "events out of session order"
            current[lane] = (s, p)
            visited[p] += 1
    assert all(c == 1 for c in visited.values()), "an event was an input twice"
    if complete:
        assert sorted(visited) == expected_inputs(offsets)
    return [int(p) for step in steps for p in step.inputs[step.active]]


@settings(max_examples=80, deadline=None, database=None)
@given(lengths=session_lengths, batch_size=batch_sizes, shuffle=st.booleans())
def test_every_event_once_in_session_order(lengths, batch_size, shuffle):
    offsets = offsets_of(lengths)
    batches = SessionParallelBatches(offsets, batch_size, shuffle_sessions=shuffle, seed=3)
    steps = run(batches)
    check_steps(steps, offsets, complete=True)
    # Targets: every event except the first of its session, once.
    targets = sorted(int(t) for s in steps for t in s.targets[s.active])
    assert targets == [p + 1 for p in expected_inputs(offsets)]
    assert batches.n_transitions == len(targets)
    # Only the tail has inactive rows: when a row is idle every session has started.
    started: set[int] = set()
    eligible = {s for s, n in enumerate(lengths) if n >= 2}
    for step in steps:
        started.update(step.session[step.active].tolist())
        if not step.active.all():
            assert started == eligible


@settings(max_examples=80, deadline=None, database=None)
@given(lengths=session_lengths, batch_size=batch_sizes, shuffle=st.booleans())
def test_drop_tail_is_the_full_stream_cut_at_the_first_idle_lane(lengths, batch_size, shuffle):
    offsets = offsets_of(lengths)
    full = run(SessionParallelBatches(offsets, batch_size, shuffle_sessions=shuffle, seed=5))
    cut = run(
        SessionParallelBatches(
            offsets, batch_size, shuffle_sessions=shuffle, seed=5, drop_tail=True
        )
    )
    n_full_steps = next((i for i, s in enumerate(full) if not s.active.all()), len(full))
    assert len(cut) == n_full_steps
    for a, b in zip(cut, full, strict=False):
        assert a.active.all()
        assert np.array_equal(a.inputs, b.inputs)
        assert np.array_equal(a.reset, b.reset)
    visited = check_steps(cut, offsets, complete=False)
    # At most B - 1 sessions are left unfinished or unstarted.
    eligible = [s for s, n in enumerate(lengths) if n >= 2]
    if len(eligible) < batch_size:
        assert cut == []
        return
    per_session = Counter(session_of_positions(offsets, np.array(visited, dtype=np.int64)))
    unfinished = [s for s in eligible if per_session[s] < lengths[s] - 1]
    assert len(unfinished) <= batch_size - 1


@settings(max_examples=80, deadline=None, database=None)
@given(
    lengths=session_lengths,
    batch_size=batch_sizes,
    world_size=st.integers(min_value=1, max_value=4),
    shuffle=st.booleans(),
)
def test_sharding_is_disjoint_and_complete(lengths, batch_size, world_size, shuffle):
    offsets = offsets_of(lengths)
    seen: list[int] = []
    for rank in range(world_size):
        steps = run(
            SessionParallelBatches(
                offsets,
                batch_size,
                shuffle_sessions=shuffle,
                seed=11,
                rank=rank,
                world_size=world_size,
            )
        )
        seen += check_steps(steps, offsets, complete=False)
    assert sorted(seen) == expected_inputs(offsets)  # disjoint (no repeats) and complete


def test_shuffle_is_seeded_and_set_epoch_changes_order():
    offsets = offsets_of([3] * 50)
    a = SessionParallelBatches(offsets, 4, shuffle_sessions=True, seed=1)
    b = SessionParallelBatches(offsets, 4, shuffle_sessions=True, seed=1)
    first = [s.session.tolist() for s in a]
    assert first == [s.session.tolist() for s in b]
    assert first == [s.session.tolist() for s in a]  # re-iterable, same epoch
    plain = [s.session.tolist() for s in SessionParallelBatches(offsets, 4)]
    assert plain[0] == [0, 1, 2, 3]
    assert first != plain
    a.set_epoch(1)
    assert [s.session.tolist() for s in a] != first


def test_hand_example_with_reset_and_tail():
    # Sessions: [0, 1, 2, 3], [4, 5], [6] (skipped), [7, 8, 9]
    offsets = np.array([0, 4, 6, 7, 10])
    steps = list(SessionParallelBatches(offsets, batch_size=2))
    assert [s.inputs.tolist() for s in steps] == [[0, 4], [1, 7], [2, 8]]
    assert [s.targets.tolist() for s in steps] == [[1, 5], [2, 8], [3, 9]]
    assert [s.reset.tolist() for s in steps] == [[True, True], [False, True], [False, False]]
    assert [s.session.tolist() for s in steps] == [[0, 1], [0, 3], [0, 3]]
    # Both lanes finish at the last step together: all steps full, drop_tail changes nothing.
    cut = list(SessionParallelBatches(offsets, batch_size=2, drop_tail=True))
    assert [s.inputs.tolist() for s in cut] == [[0, 4], [1, 7], [2, 8]]


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_len"):
        padded_sequences(
            np.array([0, 3]), np.arange(3), max_len=0, batch_size=2, shuffle=False, seed=0
        )
    with pytest.raises(ValueError, match="shape"):
        padded_sequences(
            np.array([0, 3]), np.arange(2), max_len=2, batch_size=2, shuffle=False, seed=0
        )
    with pytest.raises(ValueError, match="start at 0"):
        SessionParallelBatches(np.array([1, 3]), 2)
    with pytest.raises(ValueError, match="non-decreasing"):
        SessionParallelBatches(np.array([0, 3, 2]), 2)
    with pytest.raises(ValueError, match="batch_size"):
        SessionParallelBatches(np.array([0, 3]), 0)
    with pytest.raises(ValueError, match="rank"):
        SessionParallelBatches(np.array([0, 3]), 2, rank=2, world_size=2)


# ---------------------------------------------------------------------- padded sequences
def test_padded_sequences_hand_example():
    # Sessions (items): [10, 11, 12], [20] (skipped), [30, 31, 32, 33, 34]
    offsets = np.array([0, 3, 4, 9])
    items = np.array([10, 11, 12, 20, 30, 31, 32, 33, 34])
    (batch,) = list(
        padded_sequences(offsets, items, max_len=3, batch_size=8, shuffle=False, seed=0)
    )
    assert batch.items.tolist() == [[PAD, 10, 11], [31, 32, 33]]
    assert batch.targets.tolist() == [[PAD, 11, 12], [32, 33, 34]]
    assert batch.lengths.tolist() == [2, 3]
    assert batch.session.tolist() == [0, 2]
    assert batch.positions.tolist() == [[0, 0, 1], [5, 6, 7]]
    assert np.array_equal(
        items[batch.positions][batch.items != PAD], batch.items[batch.items != PAD]
    )


@settings(max_examples=60, deadline=None, database=None)
@given(
    lengths=session_lengths,
    batch_size=batch_sizes,
    max_len=st.integers(min_value=1, max_value=6),
    world_size=st.integers(min_value=1, max_value=3),
)
def test_padded_sequences_properties(lengths, batch_size, max_len, world_size):
    offsets = offsets_of(lengths)
    items = np.arange(offsets[-1], dtype=np.int64) + 2  # item = position + 2, never PAD
    rows: list[int] = []
    for rank in range(world_size):
        for b in padded_sequences(
            offsets,
            items,
            max_len=max_len,
            batch_size=batch_size,
            shuffle=True,
            seed=2,
            rank=rank,
            world_size=world_size,
        ):
            assert b.items.shape == b.targets.shape == b.positions.shape == (len(b), max_len)
            assert len(b) <= batch_size
            mask = b.items != PAD
            assert np.array_equal(mask.sum(axis=1), b.lengths)
            assert np.array_equal(mask, b.targets != PAD)
            assert np.all(b.targets[mask] == b.items[mask] + 1)  # next event of the session
            # Left-padded; the last input is the session's second-to-last event.
            assert np.all(mask[:, -1])
            assert np.array_equal(b.items[:, -1], offsets[b.session + 1] - 2 + 2)
            expected_len = np.minimum(np.diff(offsets)[b.session] - 1, max_len)
            assert np.array_equal(b.lengths, expected_len)
            rows += b.session.tolist()
    assert sorted(rows) == [s for s, n in enumerate(lengths) if n >= 2]


# ---------------------------------------------------------------------- prefixes
@settings(max_examples=60, deadline=None, database=None)
@given(lengths=session_lengths)
def test_prefixes_list_every_next_event(lengths):
    offsets = offsets_of(lengths)
    ends, targets = prefixes(offsets)
    assert np.array_equal(targets, ends + 1)
    assert targets.tolist() == [p + 1 for p in expected_inputs(offsets)]
    assert np.array_equal(
        session_of_positions(offsets, ends), session_of_positions(offsets, targets)
    )


def test_prefixes_hand_example():
    ends, targets = prefixes(np.array([0, 3, 3, 4, 6]))  # lengths 3, 0, 1, 2
    assert ends.tolist() == [0, 1, 4]
    assert targets.tolist() == [1, 2, 5]
