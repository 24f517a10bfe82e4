"""The data a model sees: :class:`DataMeta`, :class:`Interactions` and :class:`Queries`.

These containers are the inputs of the model contract (:mod:`recpipe.models.base`).
Terms (B: batch of queries, T: prefix length, N: events, S: sessions):

============================  ==============================================================
:class:`DataMeta`             n_items, n_users (table sizes with the reserved slots),
                              item_counts (train popularity by index), split name, and
                              optionally the split's id maps (copied into artifacts),
                              item categories, item content and its encoder
:class:`Interactions`         the encoded events of one split part as (N,) arrays sorted by
                              (session, time), with CSR session ``offsets`` (S + 1,)
:class:`Queries`              a batch of one kind: ``user`` (B,) users, ``session`` (B, T)
                              left-padded prefixes with their context, or ``item`` (B,) items
============================  ==============================================================

:meth:`DataMeta.from_features` reads the meta of a features split folder; a model
artifact carries its DataMeta too (:mod:`recpipe.models.artifact` writes and reads it,
with the id maps under the same file names, :data:`ITEM_MAP_FILE` and
:data:`USER_MAP_FILE`, and its JSON files through :func:`read_json`, which lives here
because this module is the lower of the two). :func:`check_range` and
:func:`int_array` are the index checks the contract shares.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from recpipe.errors import ArtifactError
from recpipe.features.idmap import N_RESERVED, PAD, IdMap, string_hashes

if TYPE_CHECKING:
    from recpipe.features.content import ContentEncoder, ItemContent

QueryKind = Literal["user", "session", "item"]
#: Every query kind a model can support.
QUERY_KINDS: frozenset[str] = frozenset({"user", "session", "item"})
#: Per-event context columns of an encoded frame (and of session queries).
CONTEXT_COLUMNS: tuple[str, ...] = ("event_type_idx", "gap_bucket", "hour", "dow")
#: The id maps' files in a features split folder (a model artifact copies them by the same names).
ITEM_MAP_FILE = "item_map.parquet"
USER_MAP_FILE = "user_map.parquet"

_CONTEXT_DTYPE = np.int16  # holds every context code (gap_bucket may exceed int8)


# ---------------------------------------------------------------------- helpers
def int_array(values: Any, what: str, ndim: int) -> np.ndarray:
    """``values`` as an int64 array of ``ndim`` dimensions, with a clear error otherwise."""
    arr = np.asarray(values)
    if arr.ndim != ndim:
        raise ValueError(f"{what} must be {ndim}-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def check_range(arr: np.ndarray, size: int, what: str) -> None:
    """Raise if an index array leaves ``[0, size)``."""
    if arr.size == 0:
        return
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= size:
        bad = arr[(arr < 0) | (arr >= size)]
        raise ValueError(
            f"{what} must lie in [0, {size}), got {bad.size} outside, e.g. {bad[:5].tolist()}"
        )


def _check_offsets(offsets: np.ndarray, n_events: int) -> np.ndarray:
    off = int_array(offsets, "offsets", 1)
    if off.shape[0] < 1 or off[0] != 0 or off[-1] != n_events:
        raise ValueError(
            f"offsets must run from 0 to the number of events ({n_events}), got "
            f"{off[:1].tolist()} ... {off[-1:].tolist()}"
        )
    if np.any(np.diff(off) < 0):
        raise ValueError("offsets must be non-decreasing")
    return off


def read_json(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path`` (a features or artifact ``meta.json``, a config).

    Raises
    ------
    ArtifactError
        The file is missing, is not valid JSON or does not hold an object; the
        message names ``what`` and the path.
    """
    if not path.is_file():
        raise ArtifactError(f"{what} {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{what} {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{what} {str(path)!r} must hold a JSON object")
    return data


# ---------------------------------------------------------------------- DataMeta
@dataclass(frozen=True, eq=False)
class DataMeta:
    """What a model may know about its data before seeing it: sizes and popularity.

    Parameters
    ----------
    n_items, n_users : int
        Embedding table sizes, the reserved slots included (``len(IdMap)``): real
        items are ``N_RESERVED .. n_items - 1``.
    item_counts : numpy.ndarray
        (n_items,) int64 number of train events of each item index (reserved slots 0).
    split : str, default ""
        Name of the split (``session``, ``global_temporal``, ...); recorded in artifacts.
    item_map, user_map : IdMap or None
        The split's id maps, copied into saved artifacts so that a served model can
        translate ids; ``None`` for data built in memory.
    item_categories : scipy.sparse.csr_matrix or None
        (n_items, n_categories) float32 multi-hot categories of each item index
        (column 0: unknown category; reserved rows and items without content are
        empty), from the features stage's item content; copied into artifacts.
    item_content : ItemContent or None
        The items' encoded content (categories, hashed text, numeric attributes)
        aligned to the item index: row ``i`` is item index ``i`` (``n_items`` rows;
        reserved rows and items without content are empty). Copied into the
        artifacts of models that set :attr:`Recommender.uses_content`.
    item_encoder : ContentEncoder or None
        The fitted encoder that produced ``item_content``, to encode new items the
        same way (cold start at serving time); copied with ``item_content``.
    gap_buckets : int or None
        ``features.gap_buckets`` the split's context was encoded with (the
        ``gap_bucket`` column), recorded in every artifact so that serving and the
        gate encode a model's inputs as it was trained; None for data built in memory.

    Examples
    --------
    >>> meta = DataMeta(n_items=5, n_users=3, item_counts=np.array([0, 0, 4, 1, 1]))
    >>> meta.n_real_items
    3
    """

    n_items: int
    n_users: int
    item_counts: np.ndarray = field(repr=False)
    split: str = ""
    item_map: IdMap | None = field(default=None, repr=False)
    user_map: IdMap | None = field(default=None, repr=False)
    item_categories: sp.csr_matrix | None = field(default=None, repr=False)
    item_content: ItemContent | None = field(default=None, repr=False)
    item_encoder: ContentEncoder | None = field(default=None, repr=False)
    gap_buckets: int | None = None

    def __post_init__(self) -> None:
        n_items, n_users = int(self.n_items), int(self.n_users)
        if n_items <= N_RESERVED:
            raise ValueError(
                f"n_items must exceed the {N_RESERVED} reserved slots, got {self.n_items}"
            )
        if n_users < N_RESERVED:
            raise ValueError(f"n_users must be >= {N_RESERVED}, got {self.n_users}")
        counts = np.array(self.item_counts, dtype=np.int64)  # a private copy
        if counts.shape != (n_items,):
            raise ValueError(f"item_counts must have shape ({n_items},), got {counts.shape}")
        if np.any(counts < 0):
            raise ValueError("item_counts must be non-negative")
        counts.setflags(write=False)
        for what, idmap, size in (
            ("item", self.item_map, n_items),
            ("user", self.user_map, n_users),
        ):
            if idmap is not None and len(idmap) != size:
                raise ValueError(f"{what}_map has {len(idmap)} slots, expected n_{what}s={size}")
        if self.item_categories is not None:
            cats = sp.csr_matrix(self.item_categories, dtype=np.float32)
            if cats.shape[0] != n_items or cats.shape[1] < 1:
                raise ValueError(
                    f"item_categories must have shape ({n_items}, n_categories), got {cats.shape}"
                )
            object.__setattr__(self, "item_categories", cats)
        _check_content(self.item_content, self.item_encoder, n_items)
        object.__setattr__(self, "n_items", n_items)
        object.__setattr__(self, "n_users", n_users)
        object.__setattr__(self, "item_counts", counts)
        object.__setattr__(self, "split", str(self.split))
        if self.gap_buckets is not None:
            gaps = int(self.gap_buckets)
            if gaps != self.gap_buckets or gaps < 2:
                raise ValueError(f"gap_buckets must be an integer >= 2, got {self.gap_buckets!r}")
            object.__setattr__(self, "gap_buckets", gaps)

    @property
    def n_real_items(self) -> int:
        """Number of real items (without the reserved slots)."""
        return self.n_items - N_RESERVED

    @classmethod
    def from_features(cls, directory: Path | str) -> DataMeta:
        """Read the meta of one split folder written by the features stage.

        Parameters
        ----------
        directory : pathlib.Path or str
            ``data/features/<split>/`` holding ``meta.json``, ``item_map.parquet`` and
            ``user_map.parquet``; the item content in ``../content/items/`` and its
            encoder in ``../content/item_encoder/`` are read when present.

        Returns
        -------
        DataMeta
            Sizes from meta.json, train counts and maps from the id maps, item
            content (aligned to the item map) and its encoder when present.

        Raises
        ------
        ArtifactError
            A file is missing or disagrees with the others.
        """
        directory = Path(directory)
        meta = read_json(directory / "meta.json", "features meta")
        item_map = IdMap.load(directory / ITEM_MAP_FILE)
        user_map = IdMap.load(directory / USER_MAP_FILE)
        content = _item_content(directory.parent / "content" / "items", item_map)
        encoder = _item_encoder(directory.parent / "content" / "item_encoder")
        try:
            return cls(
                n_items=int(meta["n_items"]),
                n_users=int(meta["n_users"]),
                item_counts=item_map.counts,
                split=str(meta.get("split", directory.name)),
                item_map=item_map,
                user_map=user_map,
                item_categories=_item_categories(content),
                item_content=content,
                item_encoder=encoder,
                gap_buckets=meta.get("gap_buckets"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"features folder {str(directory)!r} is inconsistent: {exc!s}; "
                "re-run the features stage"
            ) from exc

    @classmethod
    def from_interactions(
        cls,
        train: Interactions,
        *,
        n_items: int | None = None,
        n_users: int | None = None,
        split: str = "",
    ) -> DataMeta:
        """Meta for data built in memory: counts from ``train``, sizes given or inferred.

        Parameters
        ----------
        train : Interactions
            The training events.
        n_items, n_users : int, optional
            Table sizes; default one more than the largest index in ``train`` (at
            least ``N_RESERVED + 1`` items).
        split : str, default ""
            Name recorded in artifacts.
        """
        if n_items is None:
            n_items = max(int(train.item_idx.max(initial=0)) + 1, N_RESERVED + 1)
        if n_users is None:
            n_users = max(int(train.user_idx.max(initial=0)) + 1, N_RESERVED)
        check_range(train.item_idx, n_items, "train item_idx")
        counts = np.bincount(train.item_idx, minlength=n_items).astype(np.int64)
        counts[:N_RESERVED] = 0
        return cls(n_items=n_items, n_users=n_users, item_counts=counts, split=split)

    def sizes(self) -> dict[str, Any]:
        """The JSON-able part: ``{"split", "n_items", "n_users"}``."""
        return {"split": self.split, "n_items": self.n_items, "n_users": self.n_users}


def _item_content(content_dir: Path, item_map: IdMap) -> ItemContent | None:
    """The item content of the features stage aligned to ``item_map``, or None if absent."""
    if not content_dir.is_dir():
        return None
    from recpipe.features.content import ItemContent, align

    content = align(ItemContent.load(content_dir), item_map)
    assert isinstance(content, ItemContent)
    return content


def _item_encoder(encoder_dir: Path) -> ContentEncoder | None:
    """The fitted item encoder of the features stage, or None if absent."""
    if not encoder_dir.is_dir():
        return None
    from recpipe.features.content import ContentEncoder

    return ContentEncoder.load(encoder_dir)


def _item_categories(content: ItemContent | None) -> sp.csr_matrix | None:
    """The categories of aligned item content, or None when there are none to use."""
    if content is None:
        return None
    cats = sp.csr_matrix(content.categories, dtype=np.float32)
    if cats.nnz == 0 or cats.shape[1] < 2:  # only the "unknown" column: no information
        return None
    return cats


def _check_content(
    content: ItemContent | None, encoder: ContentEncoder | None, n_items: int
) -> None:
    """Raise if item content or its encoder do not fit a table of ``n_items`` items."""
    if content is None and encoder is None:
        return
    from recpipe.features.content import ContentEncoder, ItemContent

    if content is not None:
        if not isinstance(content, ItemContent):
            raise TypeError(f"item_content must be an ItemContent, got {type(content).__name__}")
        if len(content) != n_items:
            raise ValueError(
                f"item_content must have one row per item index (n_items={n_items}), got "
                f"{len(content)} rows; align it to the item map with "
                "recpipe.features.content.align"
            )
    if encoder is not None:
        if not isinstance(encoder, ContentEncoder):
            raise TypeError(f"item_encoder must be a ContentEncoder, got {type(encoder).__name__}")
        if not encoder.is_fitted:
            raise ValueError("item_encoder must be fitted")
        if content is not None:
            got = (content.categories.shape[1], content.text.shape[1], list(content.numeric_names))
            want = (encoder.n_categories, encoder.text_buckets, encoder.numeric_names)
            if got != want:
                raise ValueError(
                    "item_content does not match item_encoder: (categories, text buckets, "
                    f"numeric columns) {got} vs {want}"
                )


# ---------------------------------------------------------------------- Interactions


def _read_encoded(path: Path, batch_rows: int) -> dict[str, np.ndarray] | None:
    """The :class:`Interactions` arrays of the encoded part ``path``, read batch by batch;
    None when the file breaks a rule of :meth:`Interactions.from_frame` (a missing
    column, a null, a session in two runs, time going back within a session), which
    then reads it whole and says what is wrong."""
    required = ("session_id", "user_idx", "item_idx", "timestamp")
    with pq.ParquetFile(path) as file:
        names = file.schema_arrow.names
        if any(c not in names for c in required):
            return None
        optional = [c for c in ("value", *CONTEXT_COLUMNS) if c in names]
        dtypes = {
            "user_idx": np.int32,
            "item_idx": np.int32,
            "value": np.float32,
            **dict.fromkeys(CONTEXT_COLUMNS, _CONTEXT_DTYPE),
        }
        total = file.metadata.num_rows
        # filled in place (no list of batches to concatenate: the arrays are held once)
        arrays = {
            c: np.empty(total, dtype=dtypes.get(c, np.int64)) for c in (*required[1:], *optional)
        }
        starts: list[np.ndarray] = []  # positions where a session starts
        hashes: list[np.ndarray] = []  # of each session's id, to find one in two runs
        last_session: Any = None
        last_ts = 0
        n = 0
        for batch in file.iter_batches(batch_size=batch_rows, columns=[*required, *optional]):
            m = batch.num_rows
            if m == 0:
                continue
            if any(column.null_count for column in batch.columns):
                return None
            sessions = batch.column("session_id")
            if not (pa.types.is_string(sessions.type) or pa.types.is_large_string(sessions.type)):
                sessions = sessions.cast(pa.large_string())
            same = pc.equal(sessions[1:], sessions[:-1]).to_numpy(zero_copy_only=False)
            first = sessions[0].as_py()
            new = np.flatnonzero(np.r_[first != last_session, ~same])
            ts = batch.column("timestamp")
            if pa.types.is_timestamp(ts.type):
                ts = ts.cast(pa.timestamp("ns", ts.type.tz)).cast(pa.int64())
            ts_ns = ts.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            back = np.flatnonzero(np.diff(np.r_[last_ts, ts_ns]) < 0)
            if back.size and not np.all(np.isin(back, new)):  # back in time within a session
                return None
            run_ids = sessions.take(pa.array(new)).cast(pa.large_string())
            hashes.append(string_hashes(run_ids))
            starts.append(new + n)
            arrays["timestamp"][n : n + m] = ts_ns
            for c in ("user_idx", "item_idx", *optional):
                arrays[c][n : n + m] = batch.column(c).to_numpy(zero_copy_only=False)
            last_session, last_ts = sessions[m - 1].as_py(), int(ts_ns[-1])
            n += m
    runs = np.sort(np.concatenate(hashes)) if hashes else np.empty(0, np.uint64)
    if np.any(runs[1:] == runs[:-1]):  # a session in two runs (or a hash collision)
        return None
    if n != total:
        return None
    for c, default, dtype in [("value", 1.0, np.float32)] + [
        (c, 0, _CONTEXT_DTYPE) for c in CONTEXT_COLUMNS
    ]:
        if c not in arrays:
            arrays[c] = np.full(n, default, dtype=dtype)
    offsets = np.concatenate([*starts, [n]]) if n else np.zeros(1)
    arrays["offsets"] = offsets.astype(np.int64)
    if arrays["user_idx"].size and (
        int(arrays["user_idx"].min()) < 0 or int(arrays["item_idx"].min()) < 0
    ):
        return None
    return arrays


@dataclass(frozen=True, eq=False)
class Interactions:
    """The encoded events of one split part, as aligned arrays. N: events, S: sessions.

    Events are grouped by session and sorted by time within a session, as the
    features stage writes them; session ``s`` holds positions
    ``offsets[s] : offsets[s + 1]``.

    Parameters
    ----------
    user_idx, item_idx : numpy.ndarray
        (N,) int32 user and item indices (``UNK`` for ids unseen in train).
    timestamp : numpy.ndarray
        (N,) int64 nanoseconds since the epoch (UTC).
    value : numpy.ndarray
        (N,) float32 rating or weight of each event.
    event_type_idx, gap_bucket, hour, dow : numpy.ndarray
        (N,) int16 context codes (see :mod:`recpipe.features.context`).
    offsets : numpy.ndarray
        (S + 1,) int64 CSR index pointer over sessions.

    Build it with :meth:`from_frame` or :meth:`from_parquet`. Derived matrices are
    cached on the instance; treat them as read-only.
    """

    user_idx: np.ndarray
    item_idx: np.ndarray
    timestamp: np.ndarray
    value: np.ndarray
    event_type_idx: np.ndarray
    gap_bucket: np.ndarray
    hour: np.ndarray
    dow: np.ndarray
    offsets: np.ndarray
    _cache: dict[tuple[Any, ...], Any] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if np.ndim(self.item_idx) != 1:
            raise ValueError(f"item_idx must be 1-D, got shape {np.shape(self.item_idx)}")
        n = int(np.shape(self.item_idx)[0])
        columns: dict[str, tuple[Any, Any]] = {
            "user_idx": (self.user_idx, np.int32),
            "item_idx": (self.item_idx, np.int32),
            "timestamp": (self.timestamp, np.int64),
            "value": (self.value, np.float32),
            **{c: (getattr(self, c), _CONTEXT_DTYPE) for c in CONTEXT_COLUMNS},
        }
        for name, (values, dtype) in columns.items():
            arr = np.asarray(values)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},) like item_idx, got {arr.shape}")
            object.__setattr__(self, name, arr.astype(dtype, copy=False))
        if n and (int(self.item_idx.min()) < 0 or int(self.user_idx.min()) < 0):
            raise ValueError("user_idx and item_idx must be non-negative indices")
        object.__setattr__(self, "offsets", _check_offsets(self.offsets, n))

    # construction ---------------------------------------------------------
    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Interactions:
        """Arrays of an encoded events frame (the features stage's Parquet schema).

        Parameters
        ----------
        frame : pandas.DataFrame
            Columns ``session_id``, ``user_idx``, ``item_idx``, ``timestamp``
            (datetime or int64 ns) and optionally ``value`` (default 1.0) and the
            context columns (default 0, "unknown"); rows grouped by session and
            sorted by time within each session.

        Raises
        ------
        ValueError
            A required column is missing, a session's rows are not contiguous, or
            time goes backwards within a session.
        """
        missing = [c for c in ("session_id", "user_idx", "item_idx", "timestamp") if c not in frame]
        if missing:
            raise ValueError(
                f"encoded frame lacks column(s) {missing}; expected the features stage's "
                "columns (session_id, user_idx, item_idx, timestamp, value, context)"
            )
        n = len(frame)
        codes, uniques = pd.factorize(frame["session_id"])
        if n and codes.min() < 0:
            raise ValueError(f"session_id holds {int((codes < 0).sum())} null(s)")
        change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
        if n and change.shape[0] + 1 != len(uniques):
            raise ValueError(
                f"events must be grouped by session (sorted by session_id, timestamp): "
                f"{len(uniques)} sessions appear in {change.shape[0] + 1} separate runs"
            )
        offsets = np.concatenate([[0], change, [n]] if n else [[0]]).astype(np.int64)
        ts = frame["timestamp"]
        if pd.api.types.is_datetime64_any_dtype(ts.dtype):
            if not isinstance(ts.dtype, pd.DatetimeTZDtype):
                ts = ts.dt.tz_localize("UTC")
            ts_ns = ts.dt.tz_convert("UTC").to_numpy(dtype="datetime64[ns]").view(np.int64)
        else:
            ts_ns = ts.to_numpy(dtype=np.int64)
        back = np.flatnonzero(np.diff(ts_ns) < 0) + 1  # a step back in time ...
        if back.size and not np.all(np.isin(back, change)):  # ... only at session starts
            raise ValueError("events must be sorted by time within each session")

        def col(name: str, default: float, dtype: Any) -> np.ndarray:
            if name in frame:
                return frame[name].to_numpy(dtype=dtype)
            return np.full(n, default, dtype=dtype)

        return cls(
            user_idx=frame["user_idx"].to_numpy(dtype=np.int32),
            item_idx=frame["item_idx"].to_numpy(dtype=np.int32),
            timestamp=ts_ns,
            value=col("value", 1.0, np.float32),
            **{c: col(c, 0, _CONTEXT_DTYPE) for c in CONTEXT_COLUMNS},
            offsets=offsets,
        )

    @classmethod
    def from_parquet(cls, path: Path | str, batch_rows: int = 1 << 18) -> Interactions:
        """Read an encoded part (``data/features/<split>/<part>.parquet``).

        The file is read ``batch_rows`` rows at a time into arrays allocated once: the
        ``session_id`` strings are compared batch by batch and never held whole, so the
        memory is the arrays (about 28 bytes an event) plus one batch (a 7.2M-event part:
        about 460 MiB above the imports instead of 770 MiB through a frame). The result
        equals ``from_frame(pd.read_parquet(path))``; a file that breaks one of
        :meth:`from_frame`'s rules (or holds nulls) is read whole and handed to it, so
        the errors are the same.

        Raises
        ------
        ArtifactError
            The file is missing or unreadable.
        ValueError
            As :meth:`from_frame`.
        """
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(
                f"encoded events {str(path)!r} do not exist; run the features stage"
            )
        try:
            arrays = _read_encoded(path, batch_rows)
            frame = None if arrays is not None else pd.read_parquet(path)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise ArtifactError(f"encoded events {str(path)!r} are unreadable: {exc}") from exc
        return cls.from_frame(frame) if arrays is None else cls(**arrays)

    # shape ----------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.item_idx.shape[0])

    def __repr__(self) -> str:
        return f"Interactions(n_events={len(self)}, n_sessions={self.n_sessions})"

    @property
    def n_events(self) -> int:
        """N: number of events."""
        return len(self)

    @property
    def n_sessions(self) -> int:
        """S: number of sessions."""
        return int(self.offsets.shape[0] - 1)

    @property
    def session_index(self) -> np.ndarray:
        """(N,) int64 session number of each event (cached)."""
        key = ("session_index",)
        if key not in self._cache:
            self._cache[key] = np.repeat(np.arange(self.n_sessions), np.diff(self.offsets))
        return self._cache[key]

    # derived matrices -----------------------------------------------------
    def _matrix(self, rows: np.ndarray, shape: tuple[int, int], weighted: bool) -> sp.csr_matrix:
        data = self.value.astype(np.float32) if weighted else np.ones(len(self), np.float32)
        m = sp.csr_matrix((data, (rows, self.item_idx)), shape=shape)  # sums duplicates
        if not weighted:
            m.data[:] = 1.0
        m.sort_indices()
        return m

    def user_item_matrix(
        self, n_users: int, n_items: int, *, weighted: bool = False
    ) -> sp.csr_matrix:
        """The (n_users, n_items) user-item matrix (cached; do not modify it).

        Parameters
        ----------
        n_users, n_items : int
            Table sizes (usually from :class:`DataMeta`).
        weighted : bool, default False
            False: 1 where the user has any event on the item. True: the sum of the
            events' ``value``.

        Returns
        -------
        scipy.sparse.csr_matrix
            float32, sorted indices.
        """
        key = ("user_item", int(n_users), int(n_items), bool(weighted))
        if key not in self._cache:
            check_range(self.user_idx, n_users, "user_idx")
            check_range(self.item_idx, n_items, "item_idx")
            self._cache[key] = self._matrix(self.user_idx, (n_users, n_items), weighted)
        return self._cache[key]

    def session_item_matrix(self, n_items: int, *, weighted: bool = False) -> sp.csr_matrix:
        """The (S, n_items) session-item matrix (cached; do not modify it).

        Same weighting as :meth:`user_item_matrix`, with sessions for rows.
        """
        key = ("session_item", int(n_items), bool(weighted))
        if key not in self._cache:
            check_range(self.item_idx, n_items, "item_idx")
            shape = (self.n_sessions, n_items)
            self._cache[key] = self._matrix(self.session_index, shape, weighted)
        return self._cache[key]


# ---------------------------------------------------------------------- Queries
@dataclass(frozen=True, eq=False)
class Queries:
    """A batch of B queries of one kind. B: batch size, T: prefix length.

    ==========  ==================================================================
    kind        fields
    ==========  ==================================================================
    ``user``    ``users`` (B,): recommend for a known user (their train history)
    ``session`` ``items`` (B, T): the session so far, left-padded with PAD (0),
                most recent event last (column T - 1); optional ``users`` (B,)
                and per-event context of the same shape: ``event_type_idx``,
                ``gap_bucket``, ``hour``, ``dow``, ``timestamps`` (int64 ns)
    ``item``    ``items`` (B,): items similar to / following one item
    ==========  ==================================================================

    A session row may be all PAD (an empty prefix); models then fall back to what
    they know without context. Use the constructors :meth:`for_users`,
    :meth:`for_items`, :meth:`for_sessions`, :meth:`from_item_lists` and
    :meth:`session_prefixes` rather than the raw constructor.

    Examples
    --------
    >>> q = Queries.from_item_lists([[5, 7], [9]])
    >>> q.items.tolist(), q.last_items.tolist()
    ([[5, 7], [0, 9]], [7, 9])
    """

    kind: QueryKind
    users: np.ndarray | None = None
    items: np.ndarray | None = None
    event_type_idx: np.ndarray | None = None
    gap_bucket: np.ndarray | None = None
    hour: np.ndarray | None = None
    dow: np.ndarray | None = None
    timestamps: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.kind not in QUERY_KINDS:
            raise ValueError(f"query kind must be one of {sorted(QUERY_KINDS)}, got {self.kind!r}")
        set_ = object.__setattr__
        if self.kind == "user":
            if self.users is None or self.items is not None:
                raise ValueError("user queries take users (B,) and no items")
        elif self.items is None:
            raise ValueError(f"{self.kind} queries need items")
        if self.users is not None:
            set_(self, "users", int_array(self.users, "users", 1))
        if self.kind == "item":
            set_(self, "items", int_array(self.items, "item query items", 1))
        if self.kind == "session":
            items = int_array(self.items, "session query items", 2)
            # left padding: once a row has an item, no PAD may follow
            real = items != PAD
            if np.any(real[:, :-1] & ~real[:, 1:]):
                raise ValueError(
                    "session query items must be left-padded with PAD (0), most recent "
                    "event last; found PAD after an item"
                )
            set_(self, "items", items)
            extras = dict.fromkeys(CONTEXT_COLUMNS, _CONTEXT_DTYPE) | {"timestamps": np.int64}
            for name, dtype in extras.items():
                values = getattr(self, name)
                if values is not None:
                    arr = int_array(values, name, 2)
                    if arr.shape != items.shape:
                        raise ValueError(f"{name} must have shape {items.shape} like items")
                    set_(self, name, arr.astype(dtype, copy=False))
        elif any(getattr(self, c) is not None for c in (*CONTEXT_COLUMNS, "timestamps")):
            raise ValueError(f"context arrays belong to session queries, not {self.kind} queries")
        if self.users is not None and self.items is not None and len(self.users) != len(self.items):
            raise ValueError(f"users has {len(self.users)} rows, items {len(self.items)}")

    # constructors ---------------------------------------------------------
    @classmethod
    def for_users(cls, users: Sequence[int] | np.ndarray) -> Queries:
        """User queries: ``users`` (B,) user indices."""
        return cls(kind="user", users=np.asarray(users))

    @classmethod
    def for_items(cls, items: Sequence[int] | np.ndarray) -> Queries:
        """Item queries: ``items`` (B,) item indices."""
        return cls(kind="item", items=np.asarray(items))

    @classmethod
    def for_sessions(
        cls,
        items: np.ndarray,
        *,
        users: np.ndarray | None = None,
        timestamps: np.ndarray | None = None,
        **context: np.ndarray,
    ) -> Queries:
        """Session queries from a left-padded (B, T) item array and optional context.

        ``context`` takes the (B, T) arrays named in :data:`CONTEXT_COLUMNS`.
        """
        unknown = set(context) - set(CONTEXT_COLUMNS)
        if unknown:
            raise ValueError(f"unknown context {sorted(unknown)}; expected {list(CONTEXT_COLUMNS)}")
        return cls(kind="session", items=items, users=users, timestamps=timestamps, **context)

    @classmethod
    def from_item_lists(
        cls, sessions: Sequence[Sequence[int]], *, max_len: int | None = None
    ) -> Queries:
        """Session queries from lists of item indices (oldest first), left-padded.

        Parameters
        ----------
        sessions : sequence of sequences of int
            B prefixes; each keeps its last ``max_len`` items.
        max_len : int, optional
            T; default the longest prefix (at least 1).
        """
        lengths = np.array([len(s) for s in sessions], dtype=np.int64)
        t = int(max_len) if max_len is not None else max(int(lengths.max(initial=0)), 1)
        if t < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        flat = np.fromiter((i for s in sessions for i in s), dtype=np.int64, count=lengths.sum())
        items = np.full((len(sessions), t), PAD, dtype=np.int64)
        # position of each item counted from the end of its session: 0 = most recent
        rows = np.repeat(np.arange(len(sessions)), lengths)
        from_end = np.repeat(np.cumsum(lengths), lengths) - np.arange(flat.shape[0]) - 1
        keep = from_end < t
        items[rows[keep], t - 1 - from_end[keep]] = flat[keep]
        return cls(kind="session", items=items)

    @classmethod
    def session_prefixes(cls, data: Interactions, prefix_end: np.ndarray, max_len: int) -> Queries:
        """Session queries for next-item prediction from event positions.

        Row b holds the last ``max_len`` events of its session up to and including
        position ``prefix_end[b]`` (see :func:`recpipe.sessions.batching.prefixes`),
        with their context, timestamps and the session's user.

        Parameters
        ----------
        data : Interactions
            The events the positions point into.
        prefix_end : numpy.ndarray
            (B,) int positions of the last event of each prefix.
        max_len : int
            T: the longest prefix kept (older events are cut).
        """
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        ends = int_array(prefix_end, "prefix_end", 1)
        check_range(ends, len(data), "prefix_end")
        starts = data.offsets[data.session_index[ends]]  # (B,)
        pos = ends[:, None] - np.arange(max_len - 1, -1, -1)[None, :]  # (B, T)
        valid = pos >= starts[:, None]
        pos = np.where(valid, pos, 0)

        def gather(values: np.ndarray) -> np.ndarray:
            return np.where(valid, values[pos], 0)

        return cls(
            kind="session",
            items=gather(data.item_idx),
            users=data.user_idx[ends],
            timestamps=gather(data.timestamp),
            **{c: gather(getattr(data, c)) for c in CONTEXT_COLUMNS},
        )

    # access ---------------------------------------------------------------
    def __len__(self) -> int:
        return int((self.users if self.kind == "user" else self.items).shape[0])

    @property
    def last_items(self) -> np.ndarray:
        """(B,) the most recent item of each session query (PAD for an empty one),
        or the item of each item query."""
        if self.kind == "session":
            return self.items[:, -1]
        if self.kind == "item":
            return self.items
        raise ValueError("user queries have no items")

    def take(self, rows: np.ndarray | slice) -> Queries:
        """The queries at ``rows`` (for batching)."""
        names = ("users", "items", *CONTEXT_COLUMNS, "timestamps")
        subset = {n: getattr(self, n)[rows] for n in names if getattr(self, n) is not None}
        return replace(self, **subset)
