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
