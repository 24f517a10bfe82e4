"""Writing one split's parts, partition by partition, for the partitioned sessions stage.

:func:`write_split` is the last pass of every split of
:func:`recpipe.sessions.scaled.prepare_sessions_arrow`: each partition's rows go to the
train/valid/test files by their part codes (:class:`SplitParts`, one ``.npy`` file per
partition in the work folder), through the store's mapper, and the per-partition
summaries are gathered into the split's statistics. With the dask engine each partition
writes its pieces into the work folder (a local path or the URL of a store,
:mod:`recpipe.data.workfs`), one task per part appends them, and the part files are
moved (or downloaded) into the split's output folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recpipe.data import workfs
from recpipe.data.workfs import WorkPath
from recpipe.sessions.partition_tasks import (
    _I64_MAX,
    _I64_MIN,
    PartitionArrays,
    Written,
    concat_pieces,
    piece_name,
    work_path,
    write_partition,
)
from recpipe.sessions.parts import PART_NAMES, summarise_parts

if TYPE_CHECKING:
    from recpipe.sessions.scaled import _Store

__all__ = [
    "FrameCheck",
    "PartitionHook",
    "SplitParts",
    "SplitWritten",
    "time_checks",
    "write_split",
]


class SplitParts:
    """Per-partition part codes (int8 per row), kept as ``.npy`` files in the work dir.

    With the work folder in a store, this process keeps them in its local folder (the
    passes of a split save and load them several times) and :meth:`publish` uploads them
    for the tasks that write the parts."""

    def __init__(self, store: _Store, kind: str) -> None:
        self.store, self.kind = store, kind
        self.remote = not isinstance(store.work, Path)

    def path(self, k: int) -> WorkPath:
        """Partition ``k``'s part codes in the work folder (what the tasks read)."""
        return work_path(self.store.work, f"part-{self.kind}", k, ".npy")

    def _own(self, k: int) -> WorkPath:
        return self.store.local / f"part-{self.kind}-{k:05d}.npy" if self.remote else self.path(k)

    def save(self, k: int, part: np.ndarray) -> None:
        """Keep partition ``k``'s part codes."""
        workfs.save_npy(self._own(k), part)

    def load(self, k: int) -> np.ndarray:
        """Partition ``k``'s part codes."""
        return workfs.load_npy(self._own(k))

    def publish(self) -> None:
        """Put every partition's part codes in the work folder (in a store: upload)."""
        if self.remote:
            for k in range(self.store.n_partitions):
                own = self._own(k)
                assert isinstance(own, Path)
                workfs.put(own, self.path(k))


@dataclass
class SplitWritten:
    """What :func:`write_split` gathers over the partitions of one split."""

    rows: np.ndarray
    parts: dict[str, Any]
    cold: dict[str, int]
    items: np.ndarray
    sessions: np.ndarray | None
    ranges: list[tuple[Any, Any]]
    checks: dict[str, bool]


PartitionHook = Callable[[int, PartitionArrays, np.ndarray], None]
FrameCheck = Callable[[list[pd.DataFrame]], dict[str, bool]]


def write_split(
    store: _Store,
    parts: SplitParts,
    out: Path,
    *,
    converted: bool = False,
    hook: PartitionHook | None = None,
    frame_check: FrameCheck | None = None,
) -> SplitWritten:
    """Write the parts partition by partition (through the store's mapper) and gather
    their statistics.

    ``hook(k, arrays, part)`` sees each partition's rows (here, after the writes);
    ``frame_check([train, valid, test])`` runs with each partition's write, and each of
    its checks holds when it holds in every partition. On a cluster each partition
    writes its own pieces, then one task per part appends them into the part's file,
    both in the work folder (the workers need no access to ``out``).
    """
    out.mkdir(parents=True, exist_ok=True)
    schema = store.cschema if converted and store.converts else store.schema
    assert schema is not None
    n_items, n_sessions = max(len(store.item_ids), 1), max(len(store.session_ids), 1)
    has_sessions = store.missing_sessions < store.n
    sizes = (n_items, n_sessions, has_sessions)

    parts.publish()

    def args(sink: Any) -> list[tuple[Any, ...]]:
        return [
            (store.ref(k), parts.path(k), sink, schema, sizes, converted, frame_check)
            for k in range(store.n_partitions)
        ]

    if store.parallel:  # the workers write in the (shared) work folder; moved to out here
        pieces = workfs.join(store.work, f"pieces-{out.name}")
        files = workfs.join(store.work, f"files-{out.name}")
        workfs.make_dir(pieces)
        workfs.make_dir(files)
        results: list[Written] = store.map(write_partition, args(pieces))
        names = [
            [workfs.join(pieces, piece_name(n, k)) for k in range(store.n_partitions)]
            for n in PART_NAMES
        ]
        store.map(
            concat_pieces,
            [
                (p, workfs.join(files, f"{n}.parquet"), schema)
                for n, p in zip(PART_NAMES, names, strict=True)
            ],
        )
        # a rename when the work folder is on out's filesystem; from a store, a download
        for name in PART_NAMES:
            workfs.move_out(workfs.join(files, f"{name}.parquet"), out / f"{name}.parquet")
        workfs.remove(pieces)
        workfs.remove(files)
    else:
        writers = {name: pq.ParquetWriter(out / f"{name}.parquet", schema) for name in PART_NAMES}
        try:
            results = store.map(write_partition, args(writers))
        finally:
            for writer in writers.values():
                writer.close()
    rows = np.zeros(4, np.int64)
    items = np.zeros((4, n_items), bool)
    sessions = np.zeros((4, n_sessions), bool) if has_sessions else None
    item_rows = np.zeros((4, n_items), np.int64)
    users = dict.fromkeys(results[0].users, 0)
    lo, hi = [_I64_MAX] * 3, [_I64_MIN] * 3
    checks: dict[str, bool] = {}
    for k, r in enumerate(results):
        rows += r.rows
        lo = [min(x, y) for x, y in zip(lo, r.lo, strict=True)]
        hi = [max(x, y) for x, y in zip(hi, r.hi, strict=True)]
        for key, value in r.users.items():
            users[key] += value
        items.flat[r.item_keys] = True
        item_rows.flat[r.item_keys] += r.item_counts
        if sessions is not None and r.session_keys is not None:
            sessions.flat[r.session_keys] = True
        for name, value in (r.checks or {}).items():
            checks[name] = checks.get(name, True) and value
        if hook is not None:
            hook(k, store.arrays(k), parts.load(k))
    ranges = [(lo[c], hi[c]) if hi[c] != _I64_MIN else (None, None) for c in range(3)]

    def new_item_rows(code: int, new_items: np.ndarray) -> int:
        return int(item_rows[code][new_items].sum())

    parts_stats, cold = summarise_parts(rows, users, items, sessions, ranges, new_item_rows)
    return SplitWritten(rows, parts_stats, cold, items, sessions, ranges, checks)


def time_checks(written: SplitWritten) -> dict[str, bool]:
    """``test_after_train`` / ``valid_after_train`` / ``test_after_valid`` on timestamps."""
    checks = {}
    for name, a, b in (
        ("test_after_train", 0, 2),
        ("valid_after_train", 0, 1),
        ("test_after_valid", 1, 2),
    ):
        (_, hi_a), (lo_b, _) = written.ranges[a], written.ranges[b]
        checks[name] = hi_a is None or lo_b is None or lo_b > hi_a
    return checks
