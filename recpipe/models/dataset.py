"""One split's encoded data as the models see it, read once per process.

:func:`load_split` reads a features folder (``data/features/<split>/``: meta, id maps,
the ``train``/``valid``/``test`` parts, the item content beside it) into a
:class:`SplitData`. The train, evaluate and gate stages of one run all need the same
splits; the last few reads are kept in memory, keyed by the folder's file sizes and
modification times, so a run reads each split's files once however many candidates
train on it, and a rewritten folder is read again. Treat the returned data as read-only
(as :class:`~recpipe.models.data.Interactions` already asks).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
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
        ``train``, ``valid`` and ``test``.
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
    import pyarrow.parquet as pq

    from recpipe.errors import ArtifactError

    if block_users < 1 or batch_rows < 1:
        raise ValueError(
            f"block_users and batch_rows must be >= 1; got {block_users} and {batch_rows}"
        )
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"encoded events {str(path)!r} do not exist; run the features stage")
    columns = ["user_idx", "item_idx"]
    with pq.ParquetFile(path) as file:
        names = file.schema_arrow.names
        if any(c not in names for c in columns):
            raise ArtifactError(f"encoded events {str(path)!r} lack {columns}; got {names}")
        ranges = _user_ranges(file, names.index("user_idx"))
        for lo in range(0, n_users, block_users):
            hi = lo + block_users
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


def _read(folder: Path) -> SplitData:
    meta = DataMeta.from_features(folder)
    parts = {p: Interactions.from_parquet(folder / f"{p}.parquet") for p in PART_NAMES}
    keys = test_user_keys(folder) if folder.name in _USER_KEYED_SPLITS else None
    return SplitData(meta=meta, parts=parts, test_user_keys=keys)


def load_split(folder: Path | str) -> SplitData:
    """The split in ``folder`` (a features-stage output), read once per process.

    Raises
    ------
    ArtifactError
        A file is missing or disagrees with the others.
    """
    folder = Path(folder).resolve()
    key = (str(folder), _fingerprint(folder))
    found = _CACHE.get(key)
    if found is not None:
        _CACHE.move_to_end(key)
        log.debug("split %s: in memory", folder.name)
        return found
    data = _read(folder)
    for stale in [k for k in _CACHE if k[0] == key[0]]:
        del _CACHE[stale]  # the folder was rewritten
    _CACHE[key] = data
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return data


def clear_cache() -> None:
    """Forget the splits kept in memory."""
    _CACHE.clear()
