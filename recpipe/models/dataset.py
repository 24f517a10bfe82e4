"""One split's encoded data as the models see it, read once per process.

:func:`load_split` reads a features folder (``data/features/<split>/``: meta, id maps,
the ``train``/``valid``/``test`` parts, the item content beside it) into a
:class:`SplitData`. The train, evaluate and gate stages of one run all need the same
splits; the last few reads are kept in memory, keyed by the folder's file sizes and
modification times, so a run reads each split's files once however many candidates
train on it, and a rewritten folder is read again. Treat the returned data as read-only
(as :class:`~recpipe.models.data.Interactions` already asks).

A part too large to hold whole can be read a block of users at a time instead:
:class:`BlockedPart` (blocks of about ``block_rows`` events that never split a user's
events, for :func:`recpipe.evaluate.protocols.user_topk_blocks`) and
:func:`user_blocks` (fixed ranges of user indices).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from recpipe.models.data import DataMeta, Interactions
from recpipe.sessions.parts import PART_NAMES

log = logging.getLogger(__name__)

#: Splits whose test part keeps the raw ``user_id`` (the cold_users protocol groups by it).
_USER_KEYED_SPLITS = frozenset({"cold_start"})
#: How many splits stay in memory (a run's train, evaluate and gate stages share them).
CACHE_SIZE = 3


@dataclass(frozen=True)
class SplitData:
    """A split's meta, its encoded parts and (cold_start) the test events' user keys.

    Attributes
    ----------
    meta : DataMeta
        Sizes, id maps, item content and the preprocessing the features stage used.
    parts : dict[str, Interactions]
        ``train``, ``valid`` and ``test`` (those asked of :func:`load_split`).
    test_user_keys : numpy.ndarray or None
        ``(N,)`` int64 codes of the test part's raw ``user_id`` (-1 for a null),
        aligned with its events, for the ``cold_start`` split; else None.
    """

    meta: DataMeta
    parts: dict[str, Interactions]
    test_user_keys: np.ndarray | None = None


def test_user_keys(folder: Path) -> np.ndarray | None:
    """Integer keys of the raw test user ids of a ``cold_start`` features folder.

    Returns
    -------
    numpy.ndarray or None
        ``(N,)`` int64 codes of the encoded test part's ``user_id`` column (-1 for a
        null), aligned with its events; ``None`` (with a warning) when the column is
        missing, so the cold_users protocol falls back to one user per session.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    path = folder / "test.parquet"
    if "user_id" not in pq.read_schema(path).names:
        log.warning("%s has no user_id column; re-run the features stage", path)
        return None
    codes, _ = pd.factorize(pd.read_parquet(path, columns=["user_id"])["user_id"])
    return np.asarray(codes, dtype=np.int64)


def user_blocks(
    path: Path | str, n_users: int, block_users: int, batch_rows: int = 1 << 18
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The ``(user_idx, item_idx)`` events of an encoded part, a range of users at a time.

    For ``lo = 0, block_users, 2 * block_users, ... < n_users`` it yields the events of
    the users ``lo <= user_idx < lo + block_users`` (blocks without events are left
    out), in file order: what :func:`recpipe.evaluate.protocols.user_topk_blocks`
    scores block by block. Each block reads the file's two index columns once,
    ``batch_rows`` rows at a time, and skips the row groups whose statistics say they
    hold none of its users; the memory is one block and one batch.

    Parameters
    ----------
    path : pathlib.Path or str
        An encoded part (``data/features/<split>/test.parquet``).
    n_users : int
        The user table size (``DataMeta.n_users``); every ``user_idx`` is below it.
    block_users : int
        Users per block (>= 1).
    batch_rows : int, default 1 << 18
        Rows read at a time.

    Yields
    ------
    (numpy.ndarray, numpy.ndarray)
        ``(N_b,)`` int32 user and item indices of the block's events.

    Raises
    ------
    ArtifactError
        The file is missing or lacks the two columns.
    ValueError
        ``block_users`` or ``batch_rows`` is below 1.
    """
    if block_users < 1 or batch_rows < 1:
        raise ValueError(
            f"block_users and batch_rows must be >= 1; got {block_users} and {batch_rows}"
        )
    bounds = np.append(np.arange(0, n_users, block_users), n_users)
    yield from _range_blocks(Path(path), bounds, batch_rows)


def _open_encoded(path: Path, columns: Sequence[str]) -> Any:
    """The Parquet file of an encoded part, checked for ``columns``."""
    import pyarrow.parquet as pq

    from recpipe.errors import ArtifactError

    if not path.is_file():
        raise ArtifactError(f"encoded events {str(path)!r} do not exist; run the features stage")
    file = pq.ParquetFile(path)
    names = file.schema_arrow.names
    if any(c not in names for c in columns):
        file.close()
        raise ArtifactError(f"encoded events {str(path)!r} lack {list(columns)}; got {names}")
    return file


def _range_blocks(
    path: Path, bounds: np.ndarray, batch_rows: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The ``(user_idx, item_idx)`` events of the users ``bounds[b] <= user_idx <
    bounds[b + 1]``, block by block in file order (empty blocks left out): one read of the
    two index columns per block, skipping row groups by their statistics."""
    columns = ["user_idx", "item_idx"]
    with _open_encoded(path, columns) as file:
        ranges = _user_ranges(file, file.schema_arrow.names.index("user_idx"))
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            groups = [g for g, (a, b) in enumerate(ranges) if a < hi and b >= lo]
            users: list[np.ndarray] = []
            items: list[np.ndarray] = []
            for batch in file.iter_batches(
                batch_size=batch_rows, columns=columns, row_groups=groups
            ):
                u = batch.column(0).to_numpy(zero_copy_only=False)
                keep = (u >= lo) & (u < hi)
                if keep.any():
                    users.append(u[keep].astype(np.int32, copy=False))
                    items.append(
                        batch.column(1).to_numpy(zero_copy_only=False)[keep].astype(np.int32)
                    )
            if users:
                yield np.concatenate(users), np.concatenate(items)


class BlockedPart:
    """An encoded part read a block of users at a time instead of whole.

    The blocks hold about ``block_rows`` events each and never split a user's events: a
    first pass over the ``user_idx`` column counts each user's events, and the users,
    in index order, are cut into consecutive ranges of at most ``block_rows`` events (a
    user with more events than that is a block alone). Each :meth:`blocks` call then
    reads the part's two index columns once per block (:func:`user_blocks`' reader), so
    the memory is the per-user counts, one block and one batch. What
    :func:`recpipe.evaluate.protocols.user_topk_blocks` scores; the evaluate stage uses
    it for a user top-K split's test part of ``evaluate.stream_min_rows`` rows or more.

    Parameters
    ----------
    path : pathlib.Path or str
        An encoded part (``data/features/<split>/test.parquet``).
    n_users : int
        The user table size (``DataMeta.n_users``); every ``user_idx`` is below it.
    block_rows : int
        Events per block (>= 1), but for a user with more.
    batch_rows : int, default 1 << 18
        Rows read at a time.

    Raises
    ------
    ArtifactError
        The file is missing or lacks ``user_idx`` and ``item_idx``.
    ValueError
        ``block_rows`` or ``batch_rows`` is below 1.
    """

    def __init__(
        self, path: Path | str, n_users: int, block_rows: int, batch_rows: int = 1 << 18
    ) -> None:
        if block_rows < 1 or batch_rows < 1:
            raise ValueError(
                f"block_rows and batch_rows must be >= 1; got {block_rows} and {batch_rows}"
            )
        self.path = Path(path)
        self.n_users = int(n_users)
        self.block_rows = int(block_rows)
        self.batch_rows = int(batch_rows)
        with _open_encoded(self.path, ["user_idx", "item_idx"]) as file:
            self.n_rows = int(file.metadata.num_rows)

    def __repr__(self) -> str:
        return (
            f"BlockedPart({str(self.path)!r}, n_rows={self.n_rows}, block_rows={self.block_rows})"
        )

    def __len__(self) -> int:
        return self.n_rows

    @cached_property
    def bounds(self) -> np.ndarray:
        """``(B + 1,)`` int64 user indices: block ``b`` holds users ``bounds[b]`` to
        ``bounds[b + 1] - 1``."""
        from recpipe.errors import ArtifactError

        counts = np.zeros(self.n_users, dtype=np.int64)
        with _open_encoded(self.path, ["user_idx"]) as file:
            for batch in file.iter_batches(batch_size=self.batch_rows, columns=["user_idx"]):
                u = batch.column(0).to_numpy(zero_copy_only=False)
                if len(u) and (u.min() < 0 or u.max() >= self.n_users):
                    raise ArtifactError(
                        f"{str(self.path)!r} holds user_idx in [{u.min()}, {u.max()}]; "
                        f"expected [0, {self.n_users})"
                    )
                counts += np.bincount(u, minlength=self.n_users)
        return block_bounds(counts, self.block_rows)

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The ``(user_idx, item_idx)`` int32 events of each block in turn, in file order
        within a block; every call reads the file again."""
        return _range_blocks(self.path, self.bounds, self.batch_rows)

    def load(self) -> Interactions:
        """The whole part (for the protocols that need every event at once)."""
        log.info("%s: read whole (%d rows)", self.path, self.n_rows)
        return Interactions.from_parquet(self.path, batch_rows=self.batch_rows)


def whole(part: Interactions | BlockedPart) -> Interactions:
    """``part`` itself, or a :class:`BlockedPart` read whole."""
    return part.load() if isinstance(part, BlockedPart) else part


def block_bounds(counts: np.ndarray, block_rows: int) -> np.ndarray:
    """Cut users ``0 .. len(counts) - 1``, in order, into ranges of at most ``block_rows``
    events (``counts[u]``: user ``u``'s), a user with more being a range alone.

    Returns
    -------
    numpy.ndarray
        ``(B + 1,)`` int64 bounds from 0 to ``len(counts)``.

    Examples
    --------
    >>> block_bounds(np.array([2, 1, 5, 0, 1]), 3).tolist()
    [0, 2, 3, 5]
    """
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1; got {block_rows}")
    cum = np.cumsum(counts, dtype=np.int64)
    bounds = [0]
    n = len(counts)
    while bounds[-1] < n:
        lo = bounds[-1]
        base = int(cum[lo - 1]) if lo else 0
        hi = int(np.searchsorted(cum, base + block_rows, side="right"))
        bounds.append(max(hi, lo + 1))
    return np.asarray(bounds, dtype=np.int64)


def _user_ranges(file: Any, column: int) -> list[tuple[float, float]]:
    """``(min, max)`` user index of each row group (``(-inf, inf)`` without statistics)."""
    out = []
    for g in range(file.metadata.num_row_groups):
        stats = file.metadata.row_group(g).column(column).statistics
        if stats is not None and stats.has_min_max:
            out.append((stats.min, stats.max))
        else:
            out.append((-np.inf, np.inf))
    return out


def _fingerprint(folder: Path) -> tuple[Any, ...]:
    """Sizes and modification times of every file the split's data comes from."""
    files = [p for p in sorted(folder.iterdir()) if p.is_file()]
    content = folder.parent / "content"
    if content.is_dir():
        files += sorted(p for p in content.rglob("*") if p.is_file())
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


_CACHE: OrderedDict[tuple[Any, ...], SplitData] = OrderedDict()


def _read(folder: Path, parts: Sequence[str], known: SplitData | None) -> SplitData:
    """The split with ``parts``, taking the meta and the parts ``known`` holds from it."""
    meta = DataMeta.from_features(folder) if known is None else known.meta
    have = {} if known is None else known.parts
    read = {
        p: have[p] if p in have else Interactions.from_parquet(folder / f"{p}.parquet")
        for p in parts
    }
    keys = None if known is None else known.test_user_keys
    if keys is None and folder.name in _USER_KEYED_SPLITS and "test" in parts:
        keys = test_user_keys(folder)
    return SplitData(meta=meta, parts=read, test_user_keys=keys)


#: The parts a model is fitted and validated on: what the train and tune stages read
#: (the test part is the evaluate stage's alone; a large one stays on disk until then).
FIT_PARTS = ("train", "valid")


def load_split(folder: Path | str, parts: Sequence[str] = PART_NAMES) -> SplitData:
    """The split in ``folder`` (a features-stage output), read once per process.

    ``parts`` are the parts to read (default all three; the evaluate stage leaves out a
    test part it reads by blocks). A split in memory with every part asked for is
    returned as it is, with its other parts too.

    Raises
    ------
    ArtifactError
        A file is missing or disagrees with the others.
    ValueError
        ``parts`` names a part that is not one of ``PART_NAMES``.
    """
    unknown = [p for p in parts if p not in PART_NAMES]
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; expected some of {list(PART_NAMES)}")
    folder = Path(folder).resolve()
    key = (str(folder), _fingerprint(folder))
    found = _CACHE.get(key)
    if found is not None and set(parts) <= set(found.parts):
        _CACHE.move_to_end(key)
        log.debug("split %s: in memory", folder.name)
        return found
    wanted = [p for p in PART_NAMES if p in parts or (found is not None and p in found.parts)]
    data = _read(folder, wanted, found)  # the parts in memory are kept, not read again
    for stale in [k for k in _CACHE if k[0] == key[0]]:
        del _CACHE[stale]  # the folder was rewritten, or held fewer parts
    _CACHE[key] = data
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return data


def clear_cache() -> None:
    """Forget the splits kept in memory."""
    _CACHE.clear()
