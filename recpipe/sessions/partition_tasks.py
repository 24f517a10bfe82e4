"""The per-partition steps of the partitioned sessions stage, as plain functions.

:func:`recpipe.sessions.scaled.prepare_sessions_arrow` runs each step once per user-hash
partition through a :data:`Mapper`: :func:`serial_map` (the arrow engine: one after the
other, in this process) or a Dask client's futures (the dask engine,
:mod:`recpipe.sessions.distributed`; both in :mod:`recpipe.data.cluster`). The
functions are module-level and take only picklable arguments (paths, arrays, params),
read and write files in the shared work folder (a local path or the URL of a store:
:mod:`recpipe.data.workfs`), and return small summaries; the global
reductions between steps (the item dictionary and support counts, the session
dictionary, cut-offs, draws) stay with the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recpipe.config import SessionsParams
from recpipe.data import workfs
from recpipe.data.cluster import Mapper, serial_map
from recpipe.data.workfs import WorkPath
from recpipe.errors import SplitError
from recpipe.sessions._arrays import Codes, encode, take_rows, timestamps_ns
from recpipe.sessions.cold import anonymous_as_users
from recpipe.sessions.parts import PART_NAMES, TEST, TRAIN, VALID, presence, user_presence_counts
from recpipe.sessions.sessionize import select_event_types, sessionize

__all__ = [
    "Mapper",
    "PartitionArrays",
    "PartitionRef",
    "concat_pieces",
    "conform",
    "filter_partition",
    "piece_name",
    "serial_map",
    "sessionize_bucket",
    "work_path",
    "write_partition",
]

_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min


def work_path(work: WorkPath, name: str, k: int, suffix: str = ".parquet") -> WorkPath:
    """Partition ``k``'s file ``name`` in the work folder."""
    return workfs.join(work, f"{name}-{k:05d}{suffix}")


def conform(table: pa.Table, schema: pa.Schema, what: str) -> pa.Table:
    """``table`` with ``schema`` (every partition's file parts share one schema).

    Raises
    ------
    SplitError
        The columns cannot be cast to ``schema``.
    """
    if table.schema.equals(schema, check_metadata=True):
        return table
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise SplitError(
            f"{what}: a partition's columns {table.schema} do not match the first "
            f"partition's {schema}: {exc}"
        ) from exc


# --------------------------------------------------------------------------- build
def sessionize_bucket(
    bucket: WorkPath, k: int, work: WorkPath, params: SessionsParams
) -> tuple[pa.Array, np.ndarray, int, int]:
    """Select event types in one user-hash bucket (a Parquet file or folder of pieces),
    sessionize it, write it as partition ``k`` with its local item codes, and remove the
    bucket (:func:`~recpipe.data.workfs.consumed`). Returns ``(item uniques, count per
    unique, rows, rows dropped by type)``."""
    frame, stats = select_event_types(workfs.read_pandas(bucket), params.event_types)
    frame = sessionize(frame, params)
    item = encode(frame["item_id"])
    workfs.write_pandas(work_path(work, "sess", k), frame)
    workfs.save_npy(work_path(work, "item", k, ".npy"), item.codes)
    counts = np.bincount(item.codes[item.codes >= 0], minlength=item.n_uniques)
    workfs.consumed(bucket)
    return item.uniques, counts, len(frame), int(stats["dropped"])


@dataclass
class Filtered:
    """What :func:`filter_partition` returns about one partition."""

    rows: int
    schema: pa.Schema
    sessions: pa.Array
    users: pa.Array
    missing_sessions: int
    any_user: bool
    anonymous: bool


def filter_partition(
    work: WorkPath, k: int, item_map: np.ndarray, keep_item: np.ndarray
) -> Filtered:
    """Drop partition ``k``'s rows of items below the support threshold (``keep_item``
    over global item codes; ``item_map``: the partition's local codes to global ones),
    and write its filtered events and integer columns (items global; sessions and users
    local) to the work folder."""
    frame = workfs.read_pandas(work_path(work, "sess", k))
    local = workfs.load_npy(work_path(work, "item", k, ".npy"))
    item = np.where(local >= 0, item_map[np.maximum(local, 0)], -1)
    keep = (item >= 0) & keep_item[np.maximum(item, 0)]
    frame = take_rows(frame, keep)
    item = item[keep].astype(np.int32)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    workfs.write_table(work_path(work, "part", k), table)
    session = encode(frame["session_id"])
    user = encode(frame["user_id"])
    workfs.save_npy(work_path(work, "session", k, ".npy"), session.codes)  # local codes
    workfs.save_npz(
        work_path(work, "arrays", k, ".npz"),
        ts=timestamps_ns(frame["timestamp"]),
        item=item,
        user=user.codes,
    )
    workfs.consumed(work_path(work, "sess", k))
    workfs.consumed(work_path(work, "item", k, ".npy"))
    return Filtered(
        rows=len(frame),
        schema=table.schema,
        sessions=session.uniques,
        users=user.uniques,
        missing_sessions=int(np.count_nonzero(session.codes < 0)),
        any_user=bool((user.codes >= 0).any()),
        anonymous=bool(((user.codes < 0) & (session.codes >= 0)).any()),
    )


# --------------------------------------------------------------------------- access
@dataclass
class PartitionArrays:
    """One partition's integer columns: items and sessions global, users local."""

    ts: np.ndarray
    item: np.ndarray
    session: np.ndarray
    user: Codes
    cuser: Codes  # cold start: anonymous sessions as users


@dataclass
class PartitionRef:
    """What a task needs to read partition ``k`` of the work folder."""

    work: WorkPath
    k: int
    params: SessionsParams
    session_map: np.ndarray
    users: pa.Array
    cusers: pa.Array
    converts: bool

    def frame(self, *, converted: bool = False) -> pd.DataFrame:
        """The partition's events (cold start: anonymous sessions as users)."""
        frame = workfs.read_pandas(work_path(self.work, "part", self.k))
        if converted and self.converts:
            out = anonymous_as_users(frame, self.params)
            if out is frame:  # the in-memory path converts the whole column's dtype
                out = frame.assign(user_id=frame["user_id"].astype("string"))
            frame = out
        return frame

    def arrays(self) -> PartitionArrays:
        """The partition's integer columns."""
        z = workfs.load_npz(work_path(self.work, "arrays", self.k, ".npz"))
        ts, item, user = z["ts"], z["item"], z["user"]
        local = workfs.load_npy(work_path(self.work, "session", self.k, ".npy"))
        smap = self.session_map
        session = np.where(local >= 0, smap[np.maximum(local, 0)], -1).astype(np.int32)
        users = Codes(user, self.users)
        cuser = users
        if self.converts:
            cuser = Codes(
                workfs.load_npy(work_path(self.work, "cuser", self.k, ".npy")), self.cusers
            )
        return PartitionArrays(ts, item, session, users, cuser)


# --------------------------------------------------------------------------- splits
@dataclass
class Written:
    """What :func:`write_partition` gathers about one partition of one split."""

    rows: np.ndarray
    lo: list[int]
    hi: list[int]
    users: dict[str, int]
    item_keys: np.ndarray  # part * n_items + item, distinct
    item_counts: np.ndarray  # rows per key
    session_keys: np.ndarray | None  # part * n_sessions + session, distinct
    checks: dict[str, bool] | None


Sink = dict[str, pq.ParquetWriter] | WorkPath


def write_partition(
    ref: PartitionRef,
    part_path: WorkPath,
    sink: Sink,
    schema: pa.Schema,
    sizes: tuple[int, int, bool],
    converted: bool = False,
    frame_check: Callable[[list[pd.DataFrame]], dict[str, bool]] | None = None,
) -> Written:
    """Write partition ``ref.k``'s train/valid/test rows (part codes at ``part_path``)
    and summarise them.

    ``sink`` is either open writers by part name (appended to, in this process) or a
    folder that gets ``<part>-<k>.arrow`` pieces (for :func:`concat_pieces`).
    ``sizes`` is ``(n_items, n_sessions, has_sessions)``; ``frame_check(frames)``
    returns per-partition leakage checks on the three frames.
    """
    n_items, n_sessions, has_sessions = sizes
    a = ref.arrays()
    part = workfs.load_npy(part_path)
    frame = ref.frame(converted=converted)
    frames = [take_rows(frame, part == code) for code in (TRAIN, VALID, TEST)]
    del frame
    lo, hi = [_I64_MAX] * 3, [_I64_MIN] * 3
    for code, sub in enumerate(frames):
        name = PART_NAMES[code]
        table = conform(
            pa.Table.from_pandas(sub, preserve_index=False), schema, f"split part {name}"
        )
        if isinstance(sink, dict):
            sink[name].write_table(table)
        else:  # Arrow IPC: cheap to write, encoded once by concat
            workfs.write_ipc(workfs.join(sink, piece_name(name, ref.k)), table)
        ts = a.ts[part == code]
        if len(ts):
            lo[code], hi[code] = int(ts.min()), int(ts.max())
    user = a.cuser if converted else a.user
    ok = a.item >= 0
    item_keys, item_counts = np.unique(
        part[ok].astype(np.int64) * n_items + a.item[ok], return_counts=True
    )
    session_keys = None
    if has_sessions:
        s_ok = a.session >= 0
        session_keys = np.unique(part[s_ok].astype(np.int64) * n_sessions + a.session[s_ok])
    return Written(
        rows=np.bincount(part, minlength=4),
        lo=lo,
        hi=hi,
        users=user_presence_counts(presence(user, part)),
        item_keys=item_keys,
        item_counts=item_counts,
        session_keys=session_keys,
        checks=frame_check(frames) if frame_check is not None else None,
    )


def piece_name(part: str, k: int) -> str:
    """The file name of partition ``k``'s piece of ``part`` (an Arrow IPC file)."""
    return f"{part}-{k:05d}.arrow"


def concat_pieces(pieces: list[WorkPath], out: WorkPath, schema: pa.Schema) -> int:
    """Append the Arrow IPC ``pieces`` (of :func:`write_partition`) in order to one
    Parquet file ``out``, removing them (:func:`~recpipe.data.workfs.consumed`); returns
    its rows."""
    rows = 0
    with workfs.parquet_writer(out, schema) as writer:
        for piece in pieces:
            table = workfs.read_ipc(piece)
            what = f"{workfs.name_of(out)} piece {workfs.name_of(piece)}"
            writer.write_table(conform(table, schema, what))
            rows += table.num_rows
            del table
            workfs.consumed(piece)
    return rows
