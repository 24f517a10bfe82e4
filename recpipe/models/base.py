"""The model contract: training data, queries, the :class:`Recommender` base class, artifacts.

Every model and baseline in recpipe is a :class:`Recommender`, so that ``evaluate/``,
``gates/`` and ``serve/`` treat them all alike. The contract, in full:

- **Built from** ``(config, meta)``: ``config`` is the model's own pydantic
  :class:`ModelConfig` (unknown keys are errors), ``meta`` the :class:`DataMeta` of the
  split it is trained on (table sizes and train popularity). Sizes that come from data
  are never configured.
- **fit** ``(train: Interactions, valid: Interactions | None) -> self``. Same config,
  same data and same ``config.seed`` give the same scores.
- **score** ``(queries: Queries, candidates=None) -> ndarray``: one row of float32
  scores per query, higher is better. Without candidates the row covers the whole
  catalogue, ``(B, n_items)``, and the reserved slots (:data:`~recpipe.features.idmap.PAD`,
  :data:`~recpipe.features.idmap.UNK`) hold ``-inf``; with candidates ``(B, C)`` (or
  ``(C,)``, shared by every query) the result is ``(B, C)``. Every other score is
  finite. A model declares the query kinds it understands in :attr:`Recommender.query_kinds`;
  any other kind raises :class:`ValueError` naming the supported ones.
- **save** ``(path)`` writes a self-contained artifact directory; :meth:`Recommender.load`
  reads any model's artifact back (dispatching on the model name it records) without
  params.yaml. A missing, incomplete or corrupt artifact raises
  :class:`~recpipe.errors.ArtifactError`.

Terms (B: batch of queries, T: prefix length, N: events, S: sessions, C: candidates):

============================  ==============================================================
:class:`DataMeta`             n_items, n_users (table sizes with the reserved slots),
                              item_counts (train popularity by index), split name, and
                              optionally the split's id maps (copied into artifacts),
                              item categories, item content and its encoder
:class:`Interactions`         the encoded events of one split part as (N,) arrays sorted by
                              (session, time), with CSR session ``offsets`` (S + 1,)
:class:`Queries`              a batch of one kind: ``user`` (B,) users, ``session`` (B, T)
                              left-padded prefixes with their context, or ``item`` (B,) items
:class:`ModelConfig`          base of every model config (``seed``; extra keys forbidden)
:class:`Recommender`          the abstract model: subclasses implement ``_fit``, ``_score``,
                              ``_save_state`` and ``_load_state``
============================  ==============================================================

Artifact layout (a directory; ``meta.json`` is written last, so its presence marks a
complete artifact, and a save replaces an older artifact only once the new one is
complete)::

    config.json          the model config (``Config.model_dump(mode="json")``)
    data.npz             DataMeta.item_counts
    item_map.parquet     the split's item / user id maps, when DataMeta carries them
    user_map.parquet
    item_categories.npz  the items' multi-hot categories, when DataMeta carries them
    item_content/        the items' encoded content (ItemContent.save) and the fitted
    item_encoder/        ContentEncoder (ContentEncoder.save), for models whose class
                         sets ``uses_content`` and when DataMeta carries them
    ...                  the model's state, written by ``_save_state`` (npz files read
                         with ``allow_pickle=False``, or torch state dicts)
    meta.json            format, recpipe version, model name, DataMeta sizes, created_at,
                         the list of files

Model authors store arrays with :func:`save_arrays` / :func:`load_arrays` and sparse
matrices with :func:`csr_to_arrays` / :func:`csr_from_arrays`; these raise
:class:`~recpipe.errors.ArtifactError` with the file and key on any problem.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import time
import uuid
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recpipe import __version__
from recpipe.errors import ArtifactError, ConfigError, RecpipeError
from recpipe.features.idmap import N_RESERVED, PAD, IdMap

if TYPE_CHECKING:
    from recpipe.features.content import ContentEncoder, ItemContent

log = logging.getLogger(__name__)

QueryKind = Literal["user", "session", "item"]
#: Every query kind a model can support.
QUERY_KINDS: frozenset[str] = frozenset({"user", "session", "item"})
#: Per-event context columns of an encoded frame (and of session queries).
CONTEXT_COLUMNS: tuple[str, ...] = ("event_type_idx", "gap_bucket", "hour", "dow")

ARTIFACT_FORMAT = "recpipe.model"
ARTIFACT_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
META_FILE = "meta.json"
DATA_FILE = "data.npz"
ITEM_MAP_FILE = "item_map.parquet"
USER_MAP_FILE = "user_map.parquet"
CATEGORIES_FILE = "item_categories.npz"
ITEM_CONTENT_DIR = "item_content"
ITEM_ENCODER_DIR = "item_encoder"
_BASE_FILES = (CONFIG_FILE, DATA_FILE, META_FILE)

#: What reading a damaged state file raises (numpy, zip, torch.load), turned into ArtifactError.
_STATE_ERRORS = (
    OSError,
    EOFError,
    KeyError,
    ValueError,
    TypeError,
    RuntimeError,
    zipfile.BadZipFile,
    pickle.UnpicklingError,
)

_CONTEXT_DTYPE = np.int16  # holds every context code (gap_bucket may exceed int8)


class NotFittedError(RecpipeError, RuntimeError):
    """A model was asked to score or save before :meth:`Recommender.fit`."""


# ---------------------------------------------------------------------- helpers
def _int_array(values: Any, what: str, ndim: int) -> np.ndarray:
    """``values`` as an int64 array of ``ndim`` dimensions, with a clear error otherwise."""
    arr = np.asarray(values)
    if arr.ndim != ndim:
        raise ValueError(f"{what} must be {ndim}-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_range(arr: np.ndarray, size: int, what: str) -> None:
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
    off = _int_array(offsets, "offsets", 1)
    if off.shape[0] < 1 or off[0] != 0 or off[-1] != n_events:
        raise ValueError(
            f"offsets must run from 0 to the number of events ({n_events}), got "
            f"{off[:1].tolist()} ... {off[-1:].tolist()}"
        )
    if np.any(np.diff(off) < 0):
        raise ValueError("offsets must be non-decreasing")
    return off


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
        meta = _read_json(directory / "meta.json", "features meta")
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
        _check_range(train.item_idx, n_items, "train item_idx")
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
    def from_parquet(cls, path: Path | str) -> Interactions:
        """Read an encoded part (``data/features/<split>/<part>.parquet``).

        Raises
        ------
        ArtifactError
            The file is missing or unreadable.
        """
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(
                f"encoded events {str(path)!r} do not exist; run the features stage"
            )
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"encoded events {str(path)!r} are unreadable: {exc}") from exc
        return cls.from_frame(frame)

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
            _check_range(self.user_idx, n_users, "user_idx")
            _check_range(self.item_idx, n_items, "item_idx")
            self._cache[key] = self._matrix(self.user_idx, (n_users, n_items), weighted)
        return self._cache[key]

    def session_item_matrix(self, n_items: int, *, weighted: bool = False) -> sp.csr_matrix:
        """The (S, n_items) session-item matrix (cached; do not modify it).

        Same weighting as :meth:`user_item_matrix`, with sessions for rows.
        """
        key = ("session_item", int(n_items), bool(weighted))
        if key not in self._cache:
            _check_range(self.item_idx, n_items, "item_idx")
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
            set_(self, "users", _int_array(self.users, "users", 1))
        if self.kind == "item":
            set_(self, "items", _int_array(self.items, "item query items", 1))
        if self.kind == "session":
            items = _int_array(self.items, "session query items", 2)
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
                    arr = _int_array(values, name, 2)
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
        ends = _int_array(prefix_end, "prefix_end", 1)
        _check_range(ends, len(data), "prefix_end")
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


# ---------------------------------------------------------------------- config
class ModelConfig(BaseModel):
    """Base of every model config: unknown keys are errors; values are frozen.

    Every field has a default, so ``Config()`` is a working model. Sizes that come
    from data (n_items, n_users) never appear here: they come from :class:`DataMeta`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(default=0, description="seed of every random choice in fit")


def _config_error(err: ValidationError, model: str) -> str:
    lines = [f"invalid config for model {model!r}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key (not an option of {model!r})")
        else:
            lines.append(f"  - {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


# ---------------------------------------------------------------------- Recommender
class Recommender(ABC):
    """A recommender model: built from ``(config, meta)``, fitted, scored, saved, loaded.

    Subclasses set the class attributes and implement four hooks:

    - ``_fit(train, valid)``: learn from the events (sizes from ``self.meta``).
    - ``_score(queries) -> (B, n_items)``: scores for every item, a new array the
      caller may modify (reserved slots may hold anything; :meth:`score` masks them).
      Override ``_score_candidates(queries, candidates)`` too when scoring a subset
      is cheaper than scoring everything.
    - ``_save_state(path)`` / ``_load_state(path)``: write / read the fitted state
      inside the artifact directory (use :func:`save_arrays` / :func:`load_arrays`).

    Class attributes
    ----------------
    name : str
        Registry name (``recpipe.models.MODELS`` key), recorded in artifacts.
    Config : type[ModelConfig]
        The config class (pydantic, ``extra="forbid"``).
    query_kinds : frozenset[str]
        The :class:`Queries` kinds the model can score.
    uses_content : bool
        Whether the model reads ``meta.item_content`` (default False); if so,
        :meth:`save` copies the item content and its encoder into the artifact.

    Parameters
    ----------
    config : ModelConfig, mapping or None
        An instance of ``Config``, or a mapping validated into one (None: defaults).
    meta : DataMeta
        Sizes and popularity of the split.

    Raises
    ------
    ConfigError
        ``config`` has an unknown key or a bad value; the message names the key.

    Examples
    --------
    >>> from recpipe.models import build_model
    >>> frame = pd.DataFrame({"session_id": ["s1", "s1", "s2"], "user_idx": [2, 2, 3],
    ...                       "item_idx": [2, 3, 2], "timestamp": [0, 1, 2]})
    >>> train = Interactions.from_frame(frame)
    >>> model = build_model("pop", {}, DataMeta.from_interactions(train)).fit(train)
    >>> model.score(Queries.for_users([2])).tolist()
    [[-inf, -inf, 2.0, 1.0]]
    """

    name: ClassVar[str]
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    query_kinds: ClassVar[frozenset[str]]
    #: Whether user scores are predicted ratings (evaluable by the ``rating`` protocol).
    predicts_ratings: ClassVar[bool] = False
    #: Whether the model reads ``meta.item_content``; its artifacts then carry the item
    #: content and encoder (other models' artifacts stay small).
    uses_content: ClassVar[bool] = False

    def __init__(self, config: ModelConfig | Mapping[str, Any] | None, meta: DataMeta) -> None:
        if not isinstance(meta, DataMeta):
            raise TypeError(f"meta must be a DataMeta, got {type(meta).__name__}")
        self.config = type(self).parse_config(config)
        self.meta = meta
        self._fitted = False

    # class-level checks -----------------------------------------------------
    @classmethod
    def parse_config(cls, config: ModelConfig | Mapping[str, Any] | None) -> ModelConfig:
        """Validate ``config`` into ``cls.Config``; :class:`ConfigError` names bad keys."""
        if isinstance(config, cls.Config):
            return config
        if isinstance(config, ModelConfig):
            raise ConfigError(
                f"model {cls.name!r} takes a {cls.Config.__name__}, got {type(config).__name__}"
            )
        if config is not None and not isinstance(config, Mapping):
            raise ConfigError(
                f"config of model {cls.name!r} must be a mapping, got {type(config).__name__}"
            )
        try:
            return cls.Config.model_validate(dict(config or {}))
        except ValidationError as err:
            raise ConfigError(_config_error(err, cls.name)) from None

    @classmethod
    def check_contract(cls) -> None:
        """Raise :class:`TypeError` if the class attributes break the contract (used by
        the registry, so that a broken model fails at registration, not at serving)."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__qualname__}.name must be a non-empty string")
        if not (isinstance(cls.Config, type) and issubclass(cls.Config, ModelConfig)):
            raise TypeError(f"{cls.__qualname__}.Config must subclass ModelConfig")
        if cls.Config.model_config.get("extra") != "forbid":
            raise TypeError(f"{cls.__qualname__}.Config must forbid extra keys")
        kinds = getattr(cls, "query_kinds", None)
        if not isinstance(kinds, frozenset) or not kinds or not kinds <= QUERY_KINDS:
            raise TypeError(
                f"{cls.__qualname__}.query_kinds must be a non-empty frozenset of "
                f"{sorted(QUERY_KINDS)}, got {kinds!r}"
            )
        if getattr(cls, "__abstractmethods__", None):
            raise TypeError(
                f"{cls.__qualname__} leaves {sorted(cls.__abstractmethods__)} unimplemented"
            )

    # fit / score ------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`load`) has run."""
        return self._fitted

    def fit(self, train: Interactions, valid: Interactions | None = None) -> Self:
        """Learn from ``train``; ``valid`` may drive early stopping.

        Parameters
        ----------
        train : Interactions
            Training events, indices within ``meta``'s sizes.
        valid : Interactions, optional
            Held-out events (indices within the same sizes).

        Returns
        -------
        Self
            The fitted model.
        """
        for what, data in (("train", train), ("valid", valid)):
            if data is None:
                continue
            _check_range(data.item_idx, self.meta.n_items, f"{what} item_idx")
            _check_range(data.user_idx, self.meta.n_users, f"{what} user_idx")
        start = time.perf_counter()
        self._fit(train, valid)
        self._fitted = True
        log.info(
            "fitted %s on %d events (%d sessions) in %.2f s",
            self.name,
            len(train),
            train.n_sessions,
            time.perf_counter() - start,
        )
        return self

    def score(self, queries: Queries, candidates: np.ndarray | None = None) -> np.ndarray:
        """Score items for each query; higher is better.

        Parameters
        ----------
        queries : Queries
            B queries of a kind in :attr:`query_kinds`.
        candidates : numpy.ndarray, optional
            (B, C) item indices to score per query, or (C,) for every query.

        Returns
        -------
        numpy.ndarray
            float32 (B, n_items) without candidates, else (B, C). Reserved slots
            (PAD, UNK) score ``-inf``; every other score is finite.

        Raises
        ------
        ValueError
            The query kind is not supported, or an index is out of range.
        NotFittedError
            The model is not fitted.
        """
        self._require_fitted()
        self._check_queries(queries)
        b = len(queries)
        if candidates is None:
            out = np.asarray(self._score(queries), dtype=np.float32)
            if out.shape != (b, self.meta.n_items):
                raise RuntimeError(
                    f"{self.name}._score returned shape {out.shape}, expected "
                    f"{(b, self.meta.n_items)}"
                )
            if not out.flags.writeable:
                out = out.copy()
            out[:, :N_RESERVED] = -np.inf
            return out
        cand = _int_array(candidates, "candidates", np.ndim(candidates))
        if cand.ndim == 1:
            cand = np.broadcast_to(cand, (b, cand.shape[0]))
        if cand.ndim != 2 or cand.shape[0] != b:
            raise ValueError(f"candidates must be (C,) or ({b}, C), got shape {cand.shape}")
        _check_range(cand, self.meta.n_items, "candidates")
        out = np.asarray(self._score_candidates(queries, cand), dtype=np.float32)
        if out.shape != cand.shape:
            raise RuntimeError(
                f"{self.name}._score_candidates returned shape {out.shape}, expected {cand.shape}"
            )
        if not out.flags.writeable:
            out = out.copy()
        out[cand < N_RESERVED] = -np.inf
        return out

    def item_vectors(self) -> np.ndarray | None:
        """(n_items, D) float32 vectors of the items, when the model has any.

        The cold-start strategies (:mod:`recpipe.models.coldstart`) compare items and
        aggregate request items by the cosine of these vectors. The default (models
        without item embeddings: popularity, kNN, Markov) is None.
        """
        return None

    def _check_queries(self, queries: Queries) -> None:
        if not isinstance(queries, Queries):
            raise TypeError(f"queries must be Queries, got {type(queries).__name__}")
        if queries.kind not in self.query_kinds:
            raise ValueError(
                f"model {self.name!r} cannot score {queries.kind!r} queries; it supports "
                f"{sorted(self.query_kinds)}"
            )
        if queries.users is not None:
            _check_range(queries.users, self.meta.n_users, "query users")
        if queries.items is not None:
            _check_range(queries.items, self.meta.n_items, "query items")

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise NotFittedError(f"model {self.name!r} is not fitted; call fit() or load()")

    @abstractmethod
    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        """Learn the model's state from ``train`` (and optionally ``valid``)."""

    @abstractmethod
    def _score(self, queries: Queries) -> np.ndarray:
        """(B, n_items) scores of every item for each query (a new array)."""

    def _score_candidates(self, queries: Queries, candidates: np.ndarray) -> np.ndarray:
        """(B, C) scores of ``candidates`` (B, C); by default gathered from :meth:`_score`."""
        return np.take_along_axis(self._score(queries), candidates, axis=1)

    # persistence --------------------------------------------------------------
    @abstractmethod
    def _save_state(self, path: Path) -> None:
        """Write the fitted state into the (new, empty but for base files) ``path``."""

    @abstractmethod
    def _load_state(self, path: Path) -> None:
        """Read the state written by :meth:`_save_state`; raise ArtifactError if corrupt."""

    def save(self, path: Path | str) -> Path:
        """Write a self-contained artifact directory, replacing an older artifact.

        The artifact is assembled in a temporary sibling folder and moved into
        place when complete, so a reader never sees half an artifact.

        Parameters
        ----------
        path : pathlib.Path or str
            The artifact directory (e.g. ``models/<name>``); parents are created.

        Returns
        -------
        pathlib.Path
            ``path``.

        Raises
        ------
        NotFittedError
            The model is not fitted.
        ArtifactError
            ``path`` exists and is not a recpipe model artifact (it is never replaced).
        """
        self._require_fitted()
        path = Path(path)
        foreign = path.is_file() or (
            path.is_dir() and not (path / META_FILE).is_file() and any(path.iterdir())
        )
        if foreign:
            raise ArtifactError(
                f"{str(path)!r} exists and is not a recpipe model artifact; refusing to replace it"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        # a unique sibling (same file system, so the final move is a rename); mkdir
        # rather than mkdtemp so that the artifact gets the umask's permissions, not 0700
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
        tmp.mkdir()
        try:
            (tmp / CONFIG_FILE).write_text(
                json.dumps(self.config.model_dump(mode="json"), indent=2) + "\n"
            )
            save_arrays(tmp / DATA_FILE, item_counts=self.meta.item_counts)
            if self.meta.item_map is not None:
                self.meta.item_map.save(tmp / ITEM_MAP_FILE)
            if self.meta.user_map is not None:
                self.meta.user_map.save(tmp / USER_MAP_FILE)
            if self.meta.item_categories is not None:
                save_arrays(
                    tmp / CATEGORIES_FILE, **csr_to_arrays("categories", self.meta.item_categories)
                )
            if type(self).uses_content:
                if self.meta.item_content is not None:
                    self.meta.item_content.save(tmp / ITEM_CONTENT_DIR)
                if self.meta.item_encoder is not None:
                    self.meta.item_encoder.save(tmp / ITEM_ENCODER_DIR)
            self._save_state(tmp)
            files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
            meta = {
                "format": ARTIFACT_FORMAT,
                "format_version": ARTIFACT_FORMAT_VERSION,
                "model": self.name,
                "class": f"{type(self).__module__}.{type(self).__qualname__}",
                "recpipe_version": __version__,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "query_kinds": sorted(self.query_kinds),
                "data": self.meta.sizes(),
                "files": [*files, META_FILE],
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
            if path.exists():
                old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log.info("saved %s artifact to %s", self.name, path)
        return path

    @classmethod
    def load(cls, path: Path | str) -> Recommender:
        """Read an artifact written by :meth:`save`, whatever model it holds.

        Called on a subclass (``ItemKNN.load(p)``), the artifact must hold that model.

        Raises
        ------
        ArtifactError
            The directory is missing, incomplete, corrupt, of another format version,
            or holds an unknown model (or not a ``cls``).
        """
        path = Path(path)
        if not path.is_dir():
            raise ArtifactError(
                f"model artifact {str(path)!r} does not exist; expected a directory "
                "written by Recommender.save"
            )
        meta = _read_json(path / META_FILE, "model artifact meta")
        if meta.get("format") != ARTIFACT_FORMAT:
            raise ArtifactError(
                f"{str(path)!r} is not a recpipe model artifact (format "
                f"{meta.get('format')!r}, expected {ARTIFACT_FORMAT!r})"
            )
        version = meta.get("format_version")
        if version != ARTIFACT_FORMAT_VERSION:
            raise ArtifactError(
                f"model artifact {str(path)!r} has format version {version!r}; this recpipe "
                f"({__version__}) reads version {ARTIFACT_FORMAT_VERSION}"
            )
        files = meta.get("files")
        if not isinstance(files, list):
            raise ArtifactError(f"model artifact {str(path)!r}: meta.json lacks the file list")
        missing = [f for f in files if not (path / str(f)).is_file()]
        if missing:
            raise ArtifactError(f"model artifact {str(path)!r} is incomplete: missing {missing}")

        from recpipe.models import MODELS  # the registry imports the model modules

        name = meta.get("model")
        model_cls = MODELS.get(name) if isinstance(name, str) else None
        if model_cls is None:
            raise ArtifactError(
                f"model artifact {str(path)!r} holds unknown model {name!r}; "
                f"known: {sorted(MODELS)}"
            )
        if not issubclass(model_cls, cls):
            raise ArtifactError(
                f"model artifact {str(path)!r} holds a {name!r} model "
                f"({model_cls.__name__}), not a {cls.__name__}"
            )
        if meta.get("recpipe_version") != __version__:
            log.warning(
                "model artifact %s was written by recpipe %s; this is %s",
                path,
                meta.get("recpipe_version"),
                __version__,
            )
        try:
            config = model_cls.Config.model_validate(_read_json(path / CONFIG_FILE, "model config"))
        except ValidationError as err:
            raise ArtifactError(
                f"model artifact {str(path)!r}: {_config_error(err, name)}"
            ) from None
        data_meta = _load_data_meta(path, meta)
        model = model_cls(config, data_meta)
        try:
            model._load_state(path)
        except ArtifactError:
            raise
        except _STATE_ERRORS as exc:
            raise ArtifactError(
                f"model artifact {str(path)!r}: cannot load the {name} state: {exc}"
            ) from exc
        model._fitted = True
        log.info("loaded %s artifact from %s", name, path)
        return model

    def __repr__(self) -> str:
        state = "fitted" if self._fitted else "not fitted"
        return f"{type(self).__name__}({self.config!r}, n_items={self.meta.n_items}, {state})"


# ---------------------------------------------------------------------- artifact I/O
def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ArtifactError(f"{what} {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{what} {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{what} {str(path)!r} must hold a JSON object")
    return data


def _load_data_meta(path: Path, meta: Mapping[str, Any]) -> DataMeta:
    data = meta.get("data")
    if not isinstance(data, Mapping):
        raise ArtifactError(f"model artifact {str(path)!r}: meta.json lacks the data sizes")
    counts = load_arrays(path / DATA_FILE, ["item_counts"])["item_counts"]
    item_map = IdMap.load(path / ITEM_MAP_FILE) if (path / ITEM_MAP_FILE).is_file() else None
    user_map = IdMap.load(path / USER_MAP_FILE) if (path / USER_MAP_FILE).is_file() else None
    categories = None
    if (path / CATEGORIES_FILE).is_file():
        arrays = load_arrays(path / CATEGORIES_FILE, csr_keys("categories"))
        shape = tuple(int(x) for x in arrays["categories_shape"])
        categories = csr_from_arrays(arrays, "categories", (shape[0], shape[1]))
    content, encoder = _load_content(path)
    try:
        return DataMeta(
            n_items=int(data["n_items"]),
            n_users=int(data["n_users"]),
            item_counts=counts,
            split=str(data.get("split", "")),
            item_map=item_map,
            user_map=user_map,
            item_categories=categories,
            item_content=content,
            item_encoder=encoder,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"model artifact {str(path)!r}: inconsistent data meta: {exc}") from exc


def _load_content(path: Path) -> tuple[ItemContent | None, ContentEncoder | None]:
    """The item content and encoder an artifact holds (None for what it lacks)."""
    content_dir, encoder_dir = path / ITEM_CONTENT_DIR, path / ITEM_ENCODER_DIR
    if not (content_dir.is_dir() or encoder_dir.is_dir()):
        return None, None
    from recpipe.features.content import ContentEncoder, ItemContent

    try:
        content = ItemContent.load(content_dir) if content_dir.is_dir() else None
        encoder = ContentEncoder.load(encoder_dir) if encoder_dir.is_dir() else None
    except ArtifactError as exc:
        raise ArtifactError(f"model artifact {str(path)!r}: {exc}") from exc
    except _STATE_ERRORS as exc:
        raise ArtifactError(
            f"model artifact {str(path)!r}: cannot read the item content: {exc}"
        ) from exc
    return content, encoder


def save_arrays(path: Path, **arrays: np.ndarray) -> Path:
    """Write named arrays to an ``.npz`` file (no pickled objects).

    Parameters
    ----------
    path : pathlib.Path
        The file to write.
    **arrays : numpy.ndarray
        Numeric or fixed-width string arrays (object arrays are refused).
    """
    for key, arr in arrays.items():
        if np.asarray(arr).dtype == object:
            raise TypeError(f"array {key!r} has dtype object, which cannot be saved without pickle")
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def load_arrays(path: Path, keys: Collection[str]) -> dict[str, np.ndarray]:
    """Read the ``keys`` of an ``.npz`` file written by :func:`save_arrays`.

    Raises
    ------
    ArtifactError
        The file is missing or corrupt, or lacks a key.
    """
    if not path.is_file():
        raise ArtifactError(f"artifact file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = sorted(set(keys) - set(npz.files))
            if missing:
                raise ArtifactError(
                    f"artifact file {str(path)!r} lacks array(s) {missing}; it holds {npz.files}"
                )
            return {k: npz[k] for k in keys}
    except ArtifactError:
        raise
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"artifact file {str(path)!r} is corrupt: {exc}") from exc


def csr_to_arrays(prefix: str, matrix: sp.spmatrix | sp.sparray) -> dict[str, np.ndarray]:
    """A sparse matrix as ``{prefix_data, prefix_indices, prefix_indptr, prefix_shape}``."""
    m = sp.csr_matrix(matrix)
    return {
        f"{prefix}_data": m.data,
        f"{prefix}_indices": m.indices,
        f"{prefix}_indptr": m.indptr,
        f"{prefix}_shape": np.asarray(m.shape, dtype=np.int64),
    }


def csr_keys(prefix: str) -> list[str]:
    """The keys :func:`csr_to_arrays` writes for ``prefix``."""
    return [f"{prefix}_{k}" for k in ("data", "indices", "indptr", "shape")]


def csr_from_arrays(
    arrays: Mapping[str, np.ndarray], prefix: str, shape: tuple[int, int]
) -> sp.csr_matrix:
    """Rebuild the matrix written by :func:`csr_to_arrays`, checking its structure.

    Raises
    ------
    ArtifactError
        The arrays do not form a valid CSR matrix of ``shape``.
    """
    stored = tuple(int(s) for s in arrays[f"{prefix}_shape"])
    if stored != tuple(shape):
        raise ArtifactError(f"sparse matrix {prefix!r} has shape {stored}, expected {shape}")
    try:
        m = sp.csr_matrix(
            (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
            shape=shape,
        )
        m.check_format(full_check=True)
    except (ValueError, TypeError, IndexError) as exc:
        raise ArtifactError(f"sparse matrix {prefix!r} is corrupt: {exc}") from exc
    return m


def expect_shape(arr: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Return ``arr`` if it has ``shape``; otherwise raise :class:`ArtifactError`."""
    if arr.shape != shape:
        raise ArtifactError(f"{what} has shape {arr.shape}, expected {shape}")
    return arr
