"""The sessions package's fast paths give what their general paths give.

``user_rank`` counts a row's later events without sorting the rows when the table
comes in runs of one user (a sessionized table); ``take_strings`` gathers
fixed-width strings as NumPy records. Both are compared with their references on
random inputs, including inputs where the fast path must decline.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recpipe.sessions import parts
from recpipe.sessions._arrays import Codes, fixed_width, take_strings


def _reference_rank(codes: np.ndarray, ts: np.ndarray, n_users: int) -> np.ndarray:
    """Later events of the row's user by (timestamp, row): a lexsort."""
    n = len(codes)
    counts = np.bincount(codes, minlength=n_users)
    order = np.lexsort((np.arange(n), ts, codes))
    out = np.empty(n, np.int64)
    out[order] = np.repeat(np.cumsum(counts), counts) - 1 - np.arange(n)
    return out


@st.composite
def user_runs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Rows in runs of one user (sometimes single rows), times sorted or not."""
    n_users = draw(st.integers(1, 5))
    runs = draw(st.lists(st.tuples(st.integers(0, n_users - 1), st.integers(1, 5)), max_size=30))
    codes = np.array([u for u, k in runs for _ in range(k)], dtype=np.int32)
    ts = np.array(draw(st.lists(st.integers(0, 12), min_size=len(codes), max_size=len(codes))))
    if draw(st.booleans()):
        ts = np.sort(ts)
    return codes, ts.astype(np.int64)


@settings(max_examples=300, deadline=None)
@given(user_runs())
def test_user_rank_equals_the_sorted_reference(data: tuple[np.ndarray, np.ndarray]) -> None:
    codes, ts = data
    if not len(codes):
        return
    _, codes = np.unique(codes, return_inverse=True)  # codes 0..k-1, all present
    codes = codes.astype(np.int32)
    k = int(codes.max()) + 1
    user = Codes(codes, pa.array([f"u{i}" for i in range(k)], pa.large_string()))
    after, counts = parts.user_rank(user, ts)
    assert after.dtype == np.int32
    assert np.array_equal(after, _reference_rank(codes, ts, k))
    assert np.array_equal(counts, np.bincount(codes, minlength=k))


def test_rank_by_runs_takes_a_sessionized_layout_and_declines_others() -> None:
    # two users, runs of 3: u0 u0 u0 u1 u1 u1 u0 u0 u0, each user's rows in time order
    codes = np.repeat(np.array([0, 1, 0], np.int32), 3)
    ts = np.array([0, 1, 1, 0, 5, 6, 2, 2, 9], np.int64)
    counts = np.bincount(codes)
    after = parts._rank_by_runs(codes, 2, counts, ts)
    assert after is not None
    assert after.tolist() == [5, 4, 3, 2, 1, 0, 2, 1, 0]
    assert after.tolist() == _reference_rank(codes, ts, 2).tolist()
    # u0's second run starts before its first ends: the sorting path's job
    late = ts.copy()
    late[6] = 0
    assert parts._rank_by_runs(codes, 2, counts, late) is None
    # a run out of time order
    inner = ts.copy()
    inner[1] = 3
    assert parts._rank_by_runs(codes, 2, counts, inner) is None
    # alternating users: runs of one row
    alt = np.array([0, 1] * 4, np.int32)
    assert parts._rank_by_runs(alt, 2, np.bincount(alt), np.arange(8)) is None


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.text(alphabet="abé", max_size=4), min_size=1, max_size=6),
    st.integers(0, 3),
    st.booleans(),
)
def test_take_strings_equals_arrow_take(values: list[str], offset: int, fixed: bool) -> None:
    if fixed:  # one byte length for all ("é" is two bytes): the NumPy path
        width = max(len(v.encode()) for v in values) or 1
        values = [v + "x" * (width - len(v.encode())) for v in values]
        assert fixed_width(pa.array(values, pa.large_string())) == width
    arr = pa.array(["pad"] * offset + values, pa.large_string()).slice(offset)
    idx = np.random.default_rng(len(values)).integers(0, len(values), 3000)
    out = take_strings(arr, idx)
    out.validate(full=True)
    assert out.equals(arr.take(pa.array(idx)))
    nulls = idx % 3 == 0
    assert take_strings(arr, idx, nulls).equals(arr.take(pa.array(idx, mask=nulls)))


def test_fixed_width_needs_one_length_and_no_null() -> None:
    assert fixed_width(pa.array(["ab", "cd"], pa.large_string())) == 2
    assert fixed_width(pa.array(["ab", "c", "def"], pa.large_string())) is None
    assert fixed_width(pa.array(["ab", None], pa.large_string())) is None
    assert fixed_width(pa.array(["", ""], pa.large_string())) is None
    with pytest.raises(IndexError):
        take_strings(pa.array(["ab", "cd"], pa.large_string()), np.full(2000, 2))
