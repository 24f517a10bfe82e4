"""Contiguous integer indices for string ids, with reserved padding and unknown slots.

Every embedding table in recpipe is indexed through an :class:`IdMap` fitted on a
training split:

====================  =====================================================================
index                 meaning
====================  =====================================================================
:data:`PAD` = 0       padding (never an id; sequence models mask it)
:data:`UNK` = 1       unknown: ids not seen in training (or seen fewer than ``min_count``
                      times) and nulls; the cold-start slot
2 ..                  the known ids, most frequent first (ties by id), so an index is
                      stable for a given training set
====================  =====================================================================

``len(idmap)`` is the embedding table size (ids plus :data:`N_RESERVED`), and
:attr:`IdMap.counts` the training counts aligned to indices (reserved slots 0), the
input of popularity samplers. Encoding is a single Arrow hash lookup
(``pyarrow.compute.index_in``), so millions of ids encode in about a second.

Ids are strings (the canonical schema); values of another type are converted with
pandas' ``astype("string")`` both when fitting and when encoding.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recpipe.errors import ArtifactError

log = logging.getLogger(__name__)

#: Index of the padding slot.
PAD = 0
#: Index of the unknown (out-of-vocabulary / cold-start / null) slot.
UNK = 1
#: Number of reserved slots before the first real id.
N_RESERVED = 2

_FORMAT = "recpipe.idmap"
_FORMAT_VERSION = "1"


def as_arrow_strings(values: pd.Series | Sequence[Any] | np.ndarray) -> pa.Array | pa.ChunkedArray:
    """Values as an Arrow (large) string array, nulls kept; zero-copy for Arrow-backed strings.

    Parameters
    ----------
    values : pandas.Series, sequence or numpy.ndarray
        (N,) ids or texts; non-string values are converted with ``astype("string")``.

    Returns
    -------
    pyarrow.Array or pyarrow.ChunkedArray
        (N,) of type ``large_string``.
    """
    if isinstance(values, pd.Series):
        series = values
    elif isinstance(values, pd.Index):
        series = values.to_series(index=pd.RangeIndex(len(values)))
    elif isinstance(values, np.ndarray):
        series = pd.Series(values)  # 1-D only: a 2-D array raises here
    else:
        series = pd.Series(list(values), dtype=object)
    if series.dtype == object or not pd.api.types.is_string_dtype(series.dtype):
        series = series.astype("string")
    arr = pa.array(series, from_pandas=True)
    return arr.cast(pa.large_string()) if arr.type != pa.large_string() else arr


_HASH_BASE = np.uint64(0x100000001B3)
_HASH_WEIGHTS = np.ones(1, dtype=np.uint64)


def _hash_weights(n: int) -> np.ndarray:
    """``_HASH_BASE ** j`` (mod 2**64) for ``j < n``, kept and grown as needed."""
    global _HASH_WEIGHTS
    if len(_HASH_WEIGHTS) < n:
        size = max(n, 2 * len(_HASH_WEIGHTS))
        powers = np.full(size, _HASH_BASE, dtype=np.uint64)
        powers[0] = 1
        _HASH_WEIGHTS = np.cumprod(powers, dtype=np.uint64)  # wraps mod 2**64
    return _HASH_WEIGHTS[:n]


def string_hashes(values: pa.Array) -> np.ndarray:
    """A 64-bit hash of each string of a ``large_string`` array, vectorised.

    Equal strings hash equal (nulls hash like ``""``); different strings rarely do, so
    a caller that needs exact matches compares the strings of equal hashes.

    Parameters
    ----------
    values : pyarrow.Array
        (N,) ``large_string`` (``string`` is cast to it).

    Returns
    -------
    numpy.ndarray
        (N,) uint64.
    """
    if pa.types.is_string(values.type):
        values = values.cast(pa.large_string())
    if not pa.types.is_large_string(values.type):
        raise TypeError(f"string_hashes needs a large_string array, got {values.type}")
    n = len(values)
    offsets = np.frombuffer(
        values.buffers()[1], dtype=np.int64, count=n + 1, offset=8 * values.offset
    )
    lengths = np.diff(offsets).astype(np.uint64)
    first, last = int(offsets[0]), int(offsets[-1])
    sums = np.zeros(n, dtype=np.uint64)
    if last > first:
        data = np.frombuffer(values.buffers()[2], dtype=np.uint8, count=last - first, offset=first)
        starts = offsets[:-1] - first
        nonempty = np.flatnonzero(lengths)
        within = np.arange(last - first) - np.repeat(starts, lengths.astype(np.int64))
        terms = (data.astype(np.uint64) + np.uint64(1)) * _hash_weights(int(lengths.max()))[within]
        sums[nonempty] = np.add.reduceat(terms, starts[nonempty])
    # splitmix64 finaliser of the polynomial sum and the length
    h = sums ^ (lengths * np.uint64(0x9E3779B97F4A7C15))
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


@dataclass(eq=False)
class IdMap:
    """A frozen id -> index mapping with :data:`PAD` and :data:`UNK` reserved.

    Build it with :meth:`fit`; the constructor takes the already-ordered ids.

    Parameters
    ----------
    ids : numpy.ndarray
        (n_ids,) object array of distinct, non-null string ids; ``ids[i]`` gets
        index ``i + N_RESERVED``.
    id_counts : numpy.ndarray
        (n_ids,) int64 training counts of ``ids`` (zeros when unknown).
    min_count : int
        The ``min_count`` the map was fitted with (recorded, not re-applied).

    Examples
    --------
    >>> m = IdMap.fit(pd.Series(["b", "a", "b", None]))
    >>> m.encode(["a", "b", "zzz", None]).tolist()
    [3, 2, 1, 1]
    >>> m.decode([0, 1, 2, 3]).tolist()
    [None, None, 'b', 'a']
    >>> len(m), m.counts.tolist()
    (4, [0, 0, 2, 1])
    """

    ids: np.ndarray
    id_counts: np.ndarray
    min_count: int = 1
    _value_set: pa.Array = field(init=False, repr=False)
    # (sorted string hashes of the ids, the ids' positions in that order), or False when
    # two ids share a hash; built on the first encode of fewer values than ids
    _hash_index: tuple[np.ndarray, np.ndarray] | bool | None = field(
        init=False, repr=False, default=None
    )

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids, dtype=object)
        if ids.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {ids.shape}")
        counts = np.zeros(len(ids), dtype=np.int64) if self.id_counts is None else self.id_counts
        counts = np.asarray(counts, dtype=np.int64)
        if counts.shape != ids.shape:
            raise ValueError(f"id_counts has shape {counts.shape}, expected {ids.shape} like ids")
        value_set = pa.array(ids, type=pa.large_string(), from_pandas=True)
        if value_set.null_count:
            raise ValueError(f"ids hold {value_set.null_count} null(s); ids must be non-null")
        n_distinct = len(pc.unique(value_set))
        if n_distinct != len(ids):
            dup = pd.Series(ids).loc[lambda s: s.duplicated()].head(5).tolist()
            raise ValueError(f"ids must be distinct; {len(ids) - n_distinct} repeated, e.g. {dup}")
        self.ids = ids
        self.id_counts = counts
        self.min_count = int(self.min_count)
        self._value_set = value_set

    # construction -------------------------------------------------------
    @classmethod
    def fit(cls, values: pd.Series | Sequence[Any], min_count: int = 1) -> IdMap:
        """Index the ids seen at least ``min_count`` times; nulls are ignored.

        Parameters
        ----------
        values : pandas.Series or sequence of str
            (N,) ids, one per event (repeats are counted).
        min_count : int, default 1
            Ids seen fewer times map to :data:`UNK`.

        Returns
        -------
        IdMap
            Ids ordered by count descending, then by id (code point order), from
            index :data:`N_RESERVED`.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        arr = as_arrow_strings(values)
        vc = pc.value_counts(arr.drop_null())
        return cls.from_counts(vc.field("values"), vc.field("counts"), min_count)

    @classmethod
    def from_counts(
        cls,
        ids: pa.Array | pa.ChunkedArray | Sequence[str],
        counts: pa.Array | pa.ChunkedArray | Sequence[int] | np.ndarray,
        min_count: int = 1,
    ) -> IdMap:
        """The map :meth:`fit` gives for values whose distinct ids are ``ids``, each seen
        ``counts`` times: what a caller that counts ids batch by batch (the features
        stage streaming a split part) builds without holding every value.

        Parameters
        ----------
        ids : pyarrow.Array or sequence of str
            (M,) distinct, non-null ids.
        counts : pyarrow.Array or array-like of int
            (M,) how often each id was seen (>= 1).
        min_count : int, default 1
            Ids seen fewer times map to :data:`UNK`.

        Returns
        -------
        IdMap
            Equal to ``IdMap.fit(values, min_count)``.

        Examples
        --------
        >>> IdMap.from_counts(["a", "b"], [1, 2]) == IdMap.fit(pd.Series(["b", "a", "b"]))
        True
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        id_arr = ids if isinstance(ids, pa.Array | pa.ChunkedArray) else pa.array(ids)
        count_arr = counts if isinstance(counts, pa.Array | pa.ChunkedArray) else pa.array(counts)
        if len(id_arr) != len(count_arr):
            raise ValueError(f"{len(id_arr)} ids but {len(count_arr)} counts; expected one each")
        table = pa.table(
            {"id": id_arr.cast(pa.large_string()), "count": count_arr.cast(pa.int64())}
        )
        n_distinct = len(table)
        table = table.filter(pc.greater_equal(table["count"], min_count))
        table = table.sort_by([("count", "descending"), ("id", "ascending")])
        id_values = table["id"].to_numpy(zero_copy_only=False).astype(object)
        id_counts = table["count"].to_numpy().astype(np.int64)
        log.debug(
            "IdMap: %d ids from %d values (%d below min_count=%d)",
            len(id_values),
            int(pc.sum(count_arr).as_py() or 0),
            n_distinct - len(id_values),
            min_count,
        )
        return cls(ids=id_values, id_counts=id_counts, min_count=min_count)

    def extend(self, values: pd.Series | Sequence[Any] | np.ndarray) -> IdMap:
        """A new map with the ids of ``values`` that this one lacks appended, count 0.

        Used for catalogue items without training events (the ``cold_start``
        split), so that a content model can rank them.

        Parameters
        ----------
        values : pandas.Series, sequence or numpy.ndarray
            (N,) ids; nulls, repeats and ids already in the map are ignored.

        Returns
        -------
        IdMap
            The same indices for the known ids; the new ids follow them, sorted by
            id (code point order), with training count 0, so the order is still
            "count descending, then id". ``min_count`` is kept. ``self`` is not
            modified.

        Examples
        --------
        >>> m = IdMap.fit(pd.Series(["b", "a", "b"])).extend(["z", "a", None, "c", "z"])
        >>> m.ids.tolist(), m.counts.tolist()
        (['b', 'a', 'c', 'z'], [0, 0, 2, 1, 0, 0])
        """
        arr = as_arrow_strings(values).drop_null()
        distinct = pc.unique(arr)
        new = distinct.filter(pc.invert(pc.is_in(distinct, value_set=self._value_set)))
        new = new.take(pc.sort_indices(new))
        added = new.to_numpy(zero_copy_only=False).astype(object)
        log.debug("IdMap.extend: %d new ids (count 0) after %d known", len(added), self.n_ids)
        return IdMap(
            ids=np.concatenate([self.ids, added]),
            id_counts=np.concatenate([self.id_counts, np.zeros(len(added), dtype=np.int64)]),
            min_count=self.min_count,
        )

    # mapping ------------------------------------------------------------
    def __len__(self) -> int:
        """Embedding table size: number of ids plus :data:`N_RESERVED`."""
        return len(self.ids) + N_RESERVED

    @property
    def n_ids(self) -> int:
        """Number of real ids (without the reserved slots)."""
        return len(self.ids)

    @property
    def counts(self) -> np.ndarray:
        """(len(self),) int64 training counts by index; the reserved slots hold 0."""
        return np.concatenate([np.zeros(N_RESERVED, dtype=np.int64), self.id_counts])

    def __contains__(self, value: object) -> bool:
        return bool(self.encode([value])[0] >= N_RESERVED) if isinstance(value, str) else False

    def encode(self, values: pd.Series | Sequence[Any] | np.ndarray) -> np.ndarray:
        """Map ids to indices; unknown ids and nulls give :data:`UNK`, never an error.

        Parameters
        ----------
        values : pandas.Series, sequence or numpy.ndarray
            (N,) ids. Arrow-backed string Series (the canonical dtype) are read
            without a copy; other inputs are converted to strings first.

        Returns
        -------
        numpy.ndarray
            (N,) int64 indices in ``[UNK, len(self))``.
        """
        arr = as_arrow_strings(values)
        if len(arr) < len(self._value_set) and (found := self._encode_hashed(arr)) is not None:
            return found
        pos = pc.index_in(arr, value_set=self._value_set)
        if isinstance(pos, pa.ChunkedArray):
            pos = pos.combine_chunks() if pos.num_chunks != 1 else pos.chunk(0)
        # a miss (null position) becomes -1, and -1 + N_RESERVED is UNK
        found = pos.fill_null(UNK - N_RESERVED).to_numpy(zero_copy_only=False)
        return np.add(found, N_RESERVED, dtype=np.int64)

    def _encode_hashed(self, arr: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
        """:meth:`encode` of fewer values than ids, through a sorted index of the ids'
        hashes kept on the map (``index_in`` would hash every id again on each call:
        most of the time of encoding a batch, or a request, against a large map).
        A value is found when its hash is an id's and its string equals that id's, so
        the result is ``index_in``'s; None when two ids share a hash (then ``index_in``
        is used)."""
        if self._hash_index is None:
            hashes = string_hashes(self._value_set)
            order = np.argsort(hashes, kind="stable")
            sorted_hashes = hashes[order]
            unique = not np.any(sorted_hashes[1:] == sorted_hashes[:-1])
            self._hash_index = (sorted_hashes, order) if unique else False
        if self._hash_index is False or not self.n_ids:
            return None
        assert isinstance(self._hash_index, tuple)
        sorted_hashes, order = self._hash_index
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
        hashes = string_hashes(arr)
        # sorted needles: searchsorted walks the ids' hashes in order (3-4x faster)
        needles = np.argsort(hashes)
        at = np.empty(len(hashes), dtype=np.int64)
        at[needles] = np.searchsorted(sorted_hashes, hashes[needles])
        np.minimum(at, len(order) - 1, out=at)
        candidate = order[at]
        same = pc.equal(arr, self._value_set.take(pa.array(candidate)))
        found = (sorted_hashes[at] == hashes) & same.fill_null(False).to_numpy(zero_copy_only=False)
        return np.where(found, candidate + N_RESERVED, UNK).astype(np.int64)

    def decode(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Map indices back to ids; the reserved slots give ``None``.

        Parameters
        ----------
        indices : array-like of int
            Any shape; each in ``[0, len(self))``.

        Returns
        -------
        numpy.ndarray
            Object array of the same shape holding ids (str) or ``None``.
        """
        idx = np.asarray(indices)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
        idx = idx.astype(np.int64, copy=False)
        bad = (idx < 0) | (idx >= len(self))
        if bad.any():
            raise ValueError(
                f"{int(bad.sum())} index(es) outside [0, {len(self)}), e.g. {idx[bad][:5].tolist()}"
            )
        table = np.concatenate([np.array([None] * N_RESERVED, dtype=object), self.ids])
        return table[idx]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdMap):
            return NotImplemented
        return (
            self.min_count == other.min_count
            and np.array_equal(self.ids, other.ids)
            and np.array_equal(self.id_counts, other.id_counts)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable container semantics

    def __repr__(self) -> str:
        head = ", ".join(repr(i) for i in self.ids[:3])
        more = ", ..." if len(self.ids) > 3 else ""
        return f"IdMap(n_ids={self.n_ids}, min_count={self.min_count}, ids=[{head}{more}])"

    # persistence --------------------------------------------------------
    def save(self, path: Path | str) -> Path:
        """Write the map as a small Parquet file (``id``, ``count``), atomically.

        Parameters
        ----------
        path : pathlib.Path or str
            File to write; parent folders are created.

        Returns
        -------
        pathlib.Path
            ``path``.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table(
            {"id": self._value_set.cast(pa.string()), "count": pa.array(self.id_counts)},
        ).replace_schema_metadata(
            {
                "format": _FORMAT,
                "version": _FORMAT_VERSION,
                "min_count": str(self.min_count),
                "n_reserved": str(N_RESERVED),
            }
        )
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: Path | str) -> IdMap:
        """Read a map written by :meth:`save`.

        Raises
        ------
        ArtifactError
            The file is missing, unreadable, or not an id map.
        """
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"id map {str(path)!r} does not exist; expected a Parquet file")
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise ArtifactError(
                f"id map {str(path)!r} is not a readable Parquet file: {exc}"
            ) from exc
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        if meta.get("format") != _FORMAT or {"id", "count"} - set(table.column_names):
            raise ArtifactError(
                f"id map {str(path)!r} is not a recpipe id map (format={meta.get('format')!r}, "
                f"columns={table.column_names}); expected columns ['id', 'count']"
            )
        if meta.get("n_reserved") != str(N_RESERVED):
            raise ArtifactError(
                f"id map {str(path)!r} was written with n_reserved={meta.get('n_reserved')}, "
                f"this recpipe uses {N_RESERVED}"
            )
        try:
            return cls(
                ids=table["id"].to_numpy(zero_copy_only=False).astype(object),
                id_counts=table["count"].to_numpy(zero_copy_only=False).astype(np.int64),
                min_count=int(meta.get("min_count", "1")),
            )
        except (ValueError, TypeError, pa.ArrowException) as exc:
            raise ArtifactError(f"id map {str(path)!r} is corrupt: {exc}") from exc
