"""Integer views of event columns and fast row selection (private to recpipe.sessions).

Sessionization and splitting never compare strings row by row: id columns are
dictionary-encoded once into ``int32`` codes (Arrow hash tables), timestamps are
``int64`` nanoseconds, orderings are stable counting/radix sorts, and output
frames are assembled column by column with Arrow ``take``/``filter`` and NumPy
fancy indexing (several times faster than ``DataFrame.take`` / boolean
indexing on Arrow-backed string columns, whose per-call overhead dominates).

A column whose codes are already known is not hashed again: sessionize and the
support filter :func:`remember_codes` of the id columns they write (they have them
from their own work), and :func:`encode` looks a column up there first
(:func:`known_codes`), so the filter and the splits that follow on the same frame
(or a shallow copy of it) reuse them. The codes are those :func:`encode` would
compute; they are kept as long as the column's Arrow data lives.
"""

from __future__ import annotations

import functools
import itertools
import os
import weakref
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

try:  # pandas' O(n + k) counting sort (C); a private but long-stable helper
    from pandas._libs.algos import groupsort_indexer as _groupsort_indexer
except ImportError:  # pragma: no cover - depends on the pandas build
    _groupsort_indexer = None

T = TypeVar("T")
R = TypeVar("R")

NS_PER_MINUTE = 60_000_000_000
NS_PER_DAY = 86_400_000_000_000
_RLE_SAMPLE = 65_536  # values sampled to decide whether run-length encoding pays


@dataclass(frozen=True)
class Codes:
    """Dictionary codes of one id column.

    Attributes
    ----------
    codes : numpy.ndarray
        ``int32`` code per row, ``-1`` for a null.
    uniques : pyarrow.Array
        The distinct non-null values (``large_string``); row ``i`` holds
        ``uniques[codes[i]]``.
    """

    codes: np.ndarray
    uniques: pa.Array

    @property
    def n_uniques(self) -> int:
        return len(self.uniques)

    @functools.cached_property
    def has_null(self) -> bool:
        """Whether some row is null (computed once: the splits ask many times)."""
        return bool(len(self.codes)) and bool((self.codes < 0).any())

    def subset(self, rows: np.ndarray) -> Codes:
        """Codes of a row subset (positions or a boolean mask); same dictionary."""
        return Codes(self.codes[rows], self.uniques)

    def n_distinct(self, rows: np.ndarray | None = None) -> int:
        """Distinct non-null values among ``rows`` (all rows when ``None``)."""
        c = self.codes if rows is None else self.codes[rows]
        if self.has_null:
            c = c[c >= 0]
        if not len(c):
            return 0
        seen = np.zeros(self.n_uniques, bool)
        seen[c] = True
        return int(np.count_nonzero(seen))


def to_arrow(series: pd.Series) -> pa.Array:
    """One contiguous Arrow array of a column (no copy for single-chunk Arrow columns)."""
    values = series.array
    out = pa.array(values) if hasattr(values, "__arrow_array__") else None
    if out is None or not (pa.types.is_string(out.type) or pa.types.is_large_string(out.type)):
        out = pa.array(series.astype("string").array)
    if isinstance(out, pa.ChunkedArray):
        out = out.combine_chunks() if out.num_chunks != 1 else out.chunk(0)
    if pa.types.is_string(out.type):
        out = out.cast(pa.large_string())
    return out


def encode(series: pd.Series) -> Codes:
    """Dictionary-encode an id column into ``int32`` codes (first-appearance order).

    Where values come in runs (session ids of a sessionized table; users in
    session order) the column is run-length encoded first and only the run
    values are hashed, several times faster; the codes are identical either way.
    A column remembered by :func:`remember_codes` is not hashed at all.
    """
    known = known_codes(series)
    if known is not None:
        return known
    arr = to_arrow(series)
    n = len(arr)
    if n == 0:
        return Codes(np.empty(0, np.int32), pa.array([], type=pa.large_string()))
    if n >= 2**31:
        raise ValueError(f"at most 2**31 - 1 rows can be encoded, got {n}")
    sample = arr.slice(0, min(n, _RLE_SAMPLE))
    changes = pc.sum(pc.not_equal(sample.slice(1), sample.slice(0, len(sample) - 1))).as_py()
    if (changes or 0) * 2 < len(sample):
        ree = pc.run_end_encode(arr)
        enc = ree.values.dictionary_encode()
        run_codes = _indices(enc)
        lengths = np.diff(ree.run_ends.to_numpy(), prepend=0)
        codes = np.repeat(run_codes, lengths)
    else:
        enc = arr.dictionary_encode()
        codes = _indices(enc)
    return Codes(codes.astype(np.int32, copy=False), large(enc.dictionary))


def _indices(enc: pa.DictionaryArray) -> np.ndarray:
    """A dictionary array's indices as NumPy, ``-1`` for a null (no copy without nulls)."""
    if enc.indices.null_count == 0:
        return enc.indices.to_numpy()
    return pc.fill_null(enc.indices, -1).to_numpy()


def first_appearance(codes: np.ndarray, uniques: pa.Array) -> Codes:
    """``codes`` over ``uniques`` (e.g. a subset or a reordering of another column's
    codes) renumbered as :func:`encode` numbers them: by first appearance, with only
    the values that occur; ``-1`` (null) stays ``-1``. No string is hashed."""
    seen = pd.unique(codes)  # an integer hash table: the codes in order of appearance
    seen = seen[seen >= 0]
    k = len(uniques)
    if len(seen) == k and bool((seen == np.arange(k)).all()):
        return Codes(codes.astype(np.int32, copy=False), large(uniques))
    remap = np.full(k + 1, -1, np.int32)  # the last slot: a null's code -1 maps to -1
    remap[seen] = np.arange(len(seen), dtype=np.int32)
    return Codes(remap[codes], large(uniques.take(pa.array(seen))))


# --------------------------------------------------------------------------- known codes
#: ``id(arrow data) -> [weak reference to it, its codes or a function computing them]``;
#: an entry goes with its data
_KNOWN: dict[int, list[Any]] = {}


def _arrow_data(series: pd.Series) -> pa.ChunkedArray | None:
    """The Arrow data of a pandas Arrow string column (``None`` for other columns).

    Arrow data are immutable and pandas shares them between shallow copies of a
    frame; a value set into the column replaces them, so they identify the values."""
    values = series.array
    if not isinstance(values, pd.arrays.ArrowStringArray):
        return None
    data = values.__arrow_array__()
    return data if isinstance(data, pa.ChunkedArray) else None


def remember_codes(series: pd.Series, codes: Codes | Callable[[], Codes]) -> None:
    """Remember ``codes`` (as :func:`encode` gives them) as the codes of ``series``.

    ``codes`` may be a function that computes them, called on the first
    :func:`known_codes` (so that nobody pays for codes nobody asks for). Only for
    pandas Arrow string columns; the entry lives as long as the column's Arrow
    data, which a frame's shallow copies share."""
    data = _arrow_data(series)
    if data is None or (isinstance(codes, Codes) and len(data) != len(codes.codes)):
        return
    key = id(data)

    def forget(ref: weakref.ref[pa.ChunkedArray], key: int = key) -> None:
        entry = _KNOWN.get(key)
        if entry is not None and entry[0] is ref:
            _KNOWN.pop(key, None)

    _KNOWN[key] = [weakref.ref(data, forget), codes]


def known_codes(series: pd.Series) -> Codes | None:
    """The codes :func:`remember_codes` kept for ``series``'s values, or ``None``."""
    data = _arrow_data(series)
    if data is None:
        return None
    entry = _KNOWN.get(id(data))
    if entry is None or entry[0]() is not data:
        return None
    codes = entry[1]
    if not isinstance(codes, Codes):
        codes = codes()
        if len(codes.codes) != len(data):  # pragma: no cover - a caller's mistake
            return None
        entry[1] = codes  # computed once (two threads at once may both compute them)
    return codes


def encode_parts(series: list[pd.Series]) -> list[Codes]:
    """Encode several columns with one shared dictionary (codes comparable across them)."""
    chunks = pa.chunked_array([to_arrow(s) for s in series], pa.large_string())
    codes = encode(pd.Series(pd.arrays.ArrowStringArray(chunks)))
    bounds = np.cumsum([0] + [len(s) for s in series])
    return [codes.subset(slice(a, b)) for a, b in itertools.pairwise(bounds)]


def fixed_width(values: pa.Array) -> int | None:
    """The byte length shared by every value of a ``large_string`` array without nulls
    (zero-padded ids, hashes, UUIDs), or ``None`` when lengths differ or a value is null."""
    n = len(values)
    if not n or values.null_count or not pa.types.is_large_string(values.type):
        return None
    offsets = np.frombuffer(values.buffers()[1], np.int64, n + 1, values.offset * 8)
    width = int(offsets[1] - offsets[0])
    if width == 0 or int(offsets[-1] - offsets[0]) != n * width:
        return None
    # equal total is necessary, not sufficient: compare every length (a pass over n + 1 ints)
    return width if bool((np.diff(offsets) == width).all()) else None


def take_strings(
    values: pa.Array, indices: np.ndarray, nulls: np.ndarray | None = None
) -> pa.Array:
    """``values.take(indices)`` (``large_string``; ``nulls``: rows to set null).

    Values of one fixed byte length (:func:`fixed_width`; zero-padded ids) are
    gathered by NumPy as fixed-size byte records, about three times faster than
    Arrow's variable-length ``take`` on millions of rows; any other array is taken by
    Arrow. The result's values are the same either way. ``indices`` must be
    non-negative (a null is asked for through ``nulls``)."""
    values = large(values)
    width = fixed_width(values) if nulls is None and len(indices) >= 1024 else None
    if width is None:
        return values.take(pa.array(indices, mask=nulls))
    n = len(indices)
    start = int(np.frombuffer(values.buffers()[1], np.int64, 1, values.offset * 8)[0])
    records = np.frombuffer(values.buffers()[2], np.uint8, len(values) * width, start).view(
        f"V{width}"
    )
    data = records[indices]  # bounds-checked like Arrow's take (an IndexError otherwise)
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    return pa.Array.from_buffers(
        pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def large(values: pa.Array) -> pa.Array:
    """``values`` as ``large_string`` (the type of pandas' Arrow string columns)."""
    return values if pa.types.is_large_string(values.type) else values.cast(pa.large_string())


def string_array(values: pa.Array) -> pd.arrays.ArrowStringArray:
    """A pandas ``string`` array over Arrow ``values`` without copying."""
    return pd.arrays.ArrowStringArray(large(values))


def timestamps_ns(series: pd.Series) -> np.ndarray:
    """UTC timestamps as ``int64`` nanoseconds since the epoch (any datetime unit)."""
    if not isinstance(series.dtype, pd.DatetimeTZDtype):
        series = pd.to_datetime(series, utc=True)
    return series.to_numpy(dtype="datetime64[ns]").view(np.int64)


def iso(ns: int | np.integer | None) -> str | None:
    """ISO 8601 of nanoseconds since the epoch (UTC); ``None`` stays ``None``."""
    return None if ns is None else pd.Timestamp(int(ns), unit="ns", tz="UTC").isoformat()


def round_half_up(x: np.ndarray | float) -> np.ndarray:
    """Round to the nearest integer, halves up (deterministic, unlike banker's rounding)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def max_threads() -> int:
    """Threads for column-parallel work: the CPUs this process may use, at most 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def parallel_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]``, on threads when there is more than one item.

    Arrow kernels and NumPy copies release the GIL, so independent columns are
    hashed or gathered side by side; results keep the order of ``items``.
    """
    work = list(items)
    workers = min(len(work), max_threads())
    if workers <= 1:
        return [fn(x) for x in work]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recpipe-sessions") as pool:
        return list(pool.map(fn, work))


# --------------------------------------------------------------------------- ordering
def _radix_argsort(keys: np.ndarray, n_keys: int) -> np.ndarray:
    """LSD radix sort on 16-bit digits (NumPy's stable sort is a radix sort for them)."""
    order = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    shift = 16
    while (n_keys - 1) >> shift:
        digit = ((keys[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
        shift += 16
    return order


def stable_argsort(keys: np.ndarray, n_keys: int, *, counting: bool = True) -> np.ndarray:
    """Stable ``argsort`` of integer keys in ``[0, n_keys)``.

    A counting sort (pandas' C ``groupsort_indexer``, O(n + n_keys), ~5x faster
    than NumPy on millions of rows) when available and ``counting``; otherwise a
    NumPy radix sort on 16-bit digits. Both give the same permutation.
    """
    n = len(keys)
    if n_keys <= 1 or n <= 1:
        return np.arange(n, dtype=np.intp)
    if n_keys <= 1 << 8:
        return np.argsort(keys.astype(np.uint8), kind="stable")
    if counting and _groupsort_indexer is not None and n_keys <= 4 * n + 1024:
        try:
            indexer, _ = _groupsort_indexer(keys.astype(np.intp, copy=False), n_keys)
        except (TypeError, ValueError):  # pragma: no cover - a changed private signature
            pass
        else:
            return np.asarray(indexer)
    return _radix_argsort(keys, n_keys)


def group_time_order(keys: np.ndarray, n_keys: int, ts: np.ndarray) -> np.ndarray:
    """Positions sorted by ``(key, timestamp, row)``: ties keep the input row order.

    When the rows of each key already come in time order (a time-sorted log, or
    a sessionized table whose sessions do not overlap per user) one stable sort
    by key is enough; that is checked, and otherwise the rows are sorted by time
    first.
    """
    n = len(ts)
    if n < 2:
        return np.arange(n, dtype=np.intp)
    if bool((ts[1:] >= ts[:-1]).all()):
        return stable_argsort(keys, n_keys)
    order = stable_argsort(keys, n_keys)
    t, k = ts[order], keys[order]
    if bool(((t[1:] >= t[:-1]) | (k[1:] != k[:-1])).all()):
        return order
    by_time = np.argsort(ts, kind="stable")  # timsort: fast on presorted runs
    return by_time[stable_argsort(keys[by_time], n_keys)]


# --------------------------------------------------------------------------- rows
def take_rows(
    frame: pd.DataFrame, rows: np.ndarray, coded: Mapping[str, Codes] | None = None
) -> pd.DataFrame:
    """Rows of ``frame`` (positions or a boolean mask), fresh ``RangeIndex``, dtypes kept.

    All the rows in order are a shallow copy, another contiguous run of rows a
    slice (both shared with ``frame`` under pandas' copy-on-write). Otherwise
    columns are gathered one by one, side by side on threads: Arrow
    ``take``/``filter`` for Arrow-backed columns, NumPy for NumPy-backed and
    datetime columns, ``Series.take`` for anything else.

    ``coded``: :func:`encode`'s codes of some Arrow string columns of ``frame``
    (their :func:`known_codes` are used too). Those columns are gathered from their
    dictionaries (``uniques.take(codes[rows])``: the same values, several times
    faster than gathering the strings themselves for a permutation), and the
    output's codes are remembered (:func:`remember_codes`), so that encoding them
    later hashes nothing.
    """
    n = len(frame)
    if rows.dtype == bool:
        if len(rows) != n:
            raise ValueError(f"mask of length {len(rows)} for {n} rows")
        mask: np.ndarray | None = rows
        k = int(np.count_nonzero(rows))
        start = int(np.argmax(rows)) if k else 0
        contiguous = k == 0 or bool(rows[start : start + k].all())
        positions = None
    else:
        mask = None
        positions = rows
        k = len(positions)
        start = int(positions[0]) if k else 0
        contiguous = k == 0 or (positions[-1] - start + 1 == k and _is_run(positions))
    sources: dict[str, Codes] = {}
    for name in frame.columns:
        codes = (coded or {}).get(name) if isinstance(name, str) else None
        if codes is None:
            codes = known_codes(frame[name])
        if codes is not None and isinstance(frame[name].array, pd.arrays.ArrowStringArray):
            sources[name] = codes
    if contiguous:
        # every row: the columns' data stay shared, and so do their codes
        out = frame.reset_index(drop=True) if k == n else frame.iloc[start : start + k]
        out = out.reset_index(drop=True)
        for name, codes in sources.items():
            if k == n:
                remember_codes(out[name], codes)
            else:

                def run(codes: Codes = codes) -> Codes:
                    return first_appearance(codes.codes[start : start + k], codes.uniques)

                remember_codes(out[name], run)
        return out
    pa_mask = pa.array(mask) if mask is not None else None
    pa_idx = pa.array(positions) if mask is None else None
    # the rows, for codes computed later: a copy, as the caller may reuse its mask
    kept = mask.copy() if mask is not None and sources else None

    def pick(name: Any, col: pd.Series) -> Any:
        values = col.array
        codes = sources.get(name)
        if codes is not None and mask is not None:
            # a filter copies runs of strings, as fast as the codes; the output's
            # codes are computed when asked for
            def subset(codes: Codes = codes) -> Codes:
                assert kept is not None
                return first_appearance(codes.codes[kept], codes.uniques)

            return type(values)(pa.array(values).filter(pa_mask)), subset
        if codes is not None:
            picked = codes.codes[positions]
            nulls = picked < 0 if codes.has_null else None
            arr = take_strings(codes.uniques, picked, nulls)

            def reorder(picked: np.ndarray = picked, uniques: pa.Array = codes.uniques) -> Codes:
                return first_appearance(picked, uniques)

            return type(values)(arr), reorder
        if isinstance(values, pd.arrays.ArrowStringArray | pd.arrays.ArrowExtensionArray):
            arr = pa.array(values)
            return type(values)(
                arr.filter(pa_mask) if pa_mask is not None else arr.take(pa_idx)
            ), None
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            raw = col.to_numpy(dtype=f"datetime64[{col.dt.unit}]")
            if mask is not None:
                ints = pa.array(raw.view(np.int64)).filter(pa_mask).to_numpy()
                picked = ints.view(raw.dtype)
            else:
                picked = raw[positions]
            return datetime_array(picked, col.dtype), None
        if isinstance(col.dtype, np.dtype):
            raw = col.to_numpy()
            if mask is not None and raw.dtype.kind in "biuf":  # Arrow's filter: no copy in
                return pa.array(raw).filter(pa_mask).to_numpy(zero_copy_only=False), None
            return (raw[mask] if mask is not None else raw[positions]), None
        taken = col.take(np.flatnonzero(mask) if positions is None else positions)
        return taken.array, None

    names = list(frame.columns)
    columns = [frame[name] for name in names]  # pandas objects touched on this thread only
    picked = parallel_map(lambda item: pick(*item), list(zip(names, columns, strict=True)))
    out = pd.DataFrame(dict(zip(names, [values for values, _ in picked], strict=True)), copy=False)
    for name, (_, codes) in zip(names, picked, strict=True):
        if codes is not None:
            remember_codes(out[name], codes)
    return out


def datetime_array(values: np.ndarray, dtype: pd.DatetimeTZDtype) -> Any:
    """A pandas array of ``dtype`` over UTC ``datetime64`` ``values``, without a copy
    where pandas allows (its ``DatetimeArray._simple_new``); otherwise localised."""
    simple_new = getattr(pd.arrays.DatetimeArray, "_simple_new", None)
    if simple_new is not None and values.dtype == np.dtype(f"datetime64[{dtype.unit}]"):
        try:
            return simple_new(values, dtype=dtype)
        except (TypeError, ValueError):  # pragma: no cover - a changed private signature
            pass
    utc = pd.Series(values, copy=False).dt.tz_localize("UTC")
    return utc.dt.tz_convert(dtype.tz).array


def _is_run(positions: np.ndarray) -> bool:
    return bool((np.diff(positions) == 1).all())
