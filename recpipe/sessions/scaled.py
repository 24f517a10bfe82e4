"""The sessions stage on a log larger than memory: user-hash partitions, one at a time.

:func:`prepare_sessions_arrow` does what the in-memory sessions stage does
(:func:`~recpipe.sessions.sessionize.select_event_types`,
:func:`~recpipe.sessions.sessionize.sessionize`,
:func:`~recpipe.sessions.sessionize.filter_support` with ``min_session_length=1``, then
every split of :func:`~recpipe.sessions.splits.iter_splits` with its stats and
:func:`~recpipe.sessions.splits.check_leakage` results) with peak memory of about one
user-hash partition plus arrays sized by the distinct items, sessions and users:

1. The events are streamed in record batches into ``n_partitions`` bucket files by a
   hash of ``user_id`` (of ``session_id`` for anonymous rows;
   :func:`~recpipe.data.partitions.partition_by_user`). Each bucket is filtered by
   event type and sessionized in memory: every session and every user lies in one bucket.
2. Item support is counted per bucket and summed into one global count per item; each
   bucket is then filtered and appended to the one ``events.parquet``.
3. Item and session ids get global integer codes (one dictionary each); user ids keep
   per-partition codes (a user lies in one partition). Each split runs in passes over
   the partitions' integer columns, with global quantities between passes:

   ``session``
       global: item support counts, session lengths (after the item filter, then on
       valid/test rows), the last timestamp, each session's start and part, the items
       seen in train. Per partition: the row masks.
   ``global_temporal``
       global: the two cut-off timestamps, exact order statistics of the per-partition
       sorted timestamps (bisection over memory-mapped arrays). Per partition: the cut.
   ``user_temporal`` / ``leave_last_out``
       per partition only (per user); global: whether some user has two events.
   ``cold_start``
       global: the cut-off; the candidate items (global codes) and users (ids gathered
       from the partitions) drawn with the seed; per item test rows and train presence.
       Per partition: the cut, the held-out rows, the per-user cold table (concatenated
       and sorted by id).

   Stats come from per-partition summaries: row counts, time ranges, presence of each
   item and session (global codes) and user counts (summed: users are per partition).
   The leakage checks are re-derived from the written parts' summaries: time ranges,
   per-session starts and lengths, item presence; per-user checks per partition.

Outputs equal the in-memory path's **as sets of rows**: compare after sorting both
tables by all columns and resetting the index. Rows are written partition by
partition; within a partition in the in-memory order restricted to its rows. Report
values are identical (the split stats hold no timings).

Not partitionable (refused or not detected): rows with neither a user nor a session
id are refused (:class:`~recpipe.errors.SplitError`; validation quarantines them);
generated session ids colliding with source ids only across partitions; a user id
equal to the ``session:<id>`` name cold-start gives an anonymous session.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recpipe.config import SessionsParams
from recpipe.data import workfs
from recpipe.data.partitions import partition_by_user
from recpipe.data.workfs import WorkPath
from recpipe.errors import SplitError, SplitNotApplicable
from recpipe.sessions._arrays import encode
from recpipe.sessions.cold import (
    cold_frame,
    cold_train_empty,
    draw_ids,
    mask_rows,
    nothing_held,
)
from recpipe.sessions.part_writes import SplitParts, time_checks, write_split
from recpipe.sessions.partition_tasks import (
    Mapper,
    PartitionArrays,
    PartitionRef,
    conform,
    filter_partition,
    serial_map,
    sessionize_bucket,
    work_path,
)
from recpipe.sessions.parts import (
    DROPPED,
    PART_NAMES,
    TEST,
    TRAIN,
    VALID,
    SplitResult,
    assemble_stats,
    not_applicable,
    presence,
)
from recpipe.sessions.sessionize import support_stats
from recpipe.sessions.splits import (
    SKIP_ON_ERROR,
    all_after,
    check_leakage,
    check_sequences,
    check_session_test,
    session_bounds,
    session_cutoffs,
    session_filter_empty,
    session_test_empty,
    session_train_empty,
)
from recpipe.sessions.temporal import (
    cut_cutoffs,
    cut_fractions,
    cut_parts,
    global_cutoffs,
    per_user_no_test,
    per_user_parts,
    users_by_events,
)

log = logging.getLogger(__name__)

__all__ = ["prepare_sessions_arrow"]

_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min

#: ``partitioner(source, out_dir, n_partitions, batch_rows)`` -> the bucket paths by ``k``
Partitioner = Callable[[WorkPath, WorkPath, int, int], list[WorkPath]]


def prepare_sessions_arrow(
    source: str | Path,
    events_out: str | Path,
    splits_out: str | Path,
    work_dir: WorkPath,
    params: SessionsParams,
    n_partitions: int = 16,
    batch_rows: int = 1_000_000,
    *,
    mapper: Mapper | None = None,
    partitioner: Partitioner = partition_by_user,
    copy_source: bool = False,
    local_dir: Path | None = None,
) -> dict[str, Any]:
    """The sessions stage, partition by partition (see the module notes).

    Parameters
    ----------
    source : path
        Validated canonical events: a Parquet file or a folder of Parquet parts.
    events_out : path
        The sessionized, support-filtered events, one Parquet file.
    splits_out : path
        Gets ``<kind>/{train,valid,test}.parquet`` per split that applies (and the
        ``cold_start`` split's ``cold_items`` / ``cold_users`` tables).
    work_dir : path or URL
        Scratch folder for buckets and integer columns (emptied first; removed at the
        end, also on error): a local path, or the URL of a store the workers share
        (:mod:`recpipe.data.workfs`).
    params : SessionsParams
    n_partitions : int
        User-hash partitions (memory ~ log / partitions).
    batch_rows : int
        Rows read at a time from ``source``.
    mapper : callable, optional
        Runs the per-partition steps (:mod:`recpipe.sessions.partition_tasks`):
        ``None`` one after the other here; the dask engine passes one that runs them as
        tasks on a cluster (``work_dir`` must then be a folder every worker reaches).
    partitioner : callable
        Writes the user-hash buckets (:func:`~recpipe.data.partitions.partition_by_user`).
    copy_source : bool
        Partition a copy of ``source`` made in ``work_dir`` (the workers' shared store).
    local_dir : path, optional
        Where this process keeps its own files (the sorted timestamps the cut-offs
        bisect, memory-mapped; with ``work_dir`` in a store, copies of the partitions'
        integer columns and each split's part codes): a temporary folder made there,
        removed at the end. Default: ``work_dir`` itself when it is local, else a
        temporary folder of the system's.

    Returns
    -------
    dict
        The report of the in-memory stage: ``events``, ``event_type_filter``,
        ``filter`` and ``splits`` (``{kind: {"stats", "leakage"} | {"skipped"}}``).

    Raises
    ------
    SplitError
        ``n_partitions`` below 1, rows with neither user nor session id, or a split
        that applies comes out with an empty test or train part (as in memory).
    """
    if n_partitions < 1:
        raise SplitError(f"n_partitions must be at least 1, got {n_partitions}")
    t0 = time.perf_counter()
    work = workfs.work_path(work_dir)
    workfs.remove(work)
    workfs.make_dir(work)
    Path(events_out).parent.mkdir(parents=True, exist_ok=True)
    own = local_dir is not None or not isinstance(work, Path)
    local = Path(tempfile.mkdtemp(prefix="recpipe-sessions-", dir=local_dir)) if own else work
    assert isinstance(local, Path)
    try:
        where: WorkPath = workfs.work_path(source)
        if copy_source:  # workers on other machines read it there, not in the workspace
            where = workfs.copy_into(Path(source), workfs.join(work, "input"))
        store, head = _Store.build(
            where,
            Path(events_out),
            work,
            params,
            n_partitions,
            batch_rows,
            mapper,
            partitioner,
            local,
        )
        report: dict[str, Any] = {**head, "splits": {}}
        for kind in dict.fromkeys(params.splits):
            report["splits"][kind] = _one_split(store, kind, params, Path(splits_out) / kind)
    finally:
        workfs.remove(work)
        if own:
            shutil.rmtree(local, ignore_errors=True)
    log.info(
        "sessions (arrow, %d partitions): %d events, %d splits in %.2f s",
        n_partitions,
        report["events"],
        len(report["splits"]),
        time.perf_counter() - t0,
    )
    return report


# --------------------------------------------------------------------------- partitions
class _Store:
    """The sessionized, filtered partitions (Parquet) and their integer columns (npz)."""

    def __init__(
        self, work: WorkPath, local: Path, params: SessionsParams, mapper: Mapper | None
    ) -> None:
        self.work = work
        self.local = local  # this process's own files
        self.params = params
        self.map: Mapper = mapper or serial_map
        self.parallel = mapper is not None
        self.n = 0
        self.sizes: list[int] = []
        self.item_ids = pa.array([], pa.large_string())
        self.session_ids = pa.array([], pa.large_string())
        self.session_maps: list[np.ndarray] = []
        self.users: list[pa.Array] = []
        self.cusers: list[pa.Array] = []
        self.converts = False
        self.missing_sessions = 0
        self.any_user = False
        self.any_cuser = False
        self.schema: pa.Schema | None = None
        self.cschema: pa.Schema | None = None
        self._cuts: dict[bool, tuple[list[Path], int, int, int]] = {}

    # ------------------------------------------------------------------ build
    @classmethod
    def build(
        cls,
        source: WorkPath,
        events_out: Path,
        work: WorkPath,
        params: SessionsParams,
        n_partitions: int,
        batch_rows: int,
        mapper: Mapper | None = None,
        partitioner: Partitioner = partition_by_user,
        local: Path | None = None,
    ) -> tuple[_Store, dict[str, Any]]:
        """Partition, select event types, sessionize, filter item support, write events."""
        if local is None:
            assert isinstance(work, Path), "a work folder in a store needs a local folder"
            local = work
        self = cls(work, local, params, mapper)
        buckets = partitioner(source, workfs.join(work, "buckets"), n_partitions, batch_rows)
        if not buckets:  # an empty log: one empty partition with the source's schema
            empty = workfs.join(work, "buckets", "bucket-00000.parquet")
            workfs.make_dir(workfs.join(work, "buckets"))
            workfs.write_table(empty, workfs.dataset(source).schema.empty_table())
            buckets = [empty]
        type_filter: dict[str, Any] = {"kept": params.event_types, "dropped": 0}
        done = self.map(sessionize_bucket, [(b, k, work, params) for k, b in enumerate(buckets)])
        uniques = [d[0] for d in done]
        type_filter["dropped"] = sum(d[3] for d in done)
        self.sizes = [d[2] for d in done]
        rows_in = sum(self.sizes)
        self.item_ids, item_maps = _global_dictionary(uniques)
        item_counts = np.zeros(len(self.item_ids), np.int64)
        for m, d in zip(item_maps, done, strict=True):
            item_counts[m] += d[1]
        keep_item = item_counts >= params.min_item_support_all
        filtered = self.map(
            filter_partition, [(work, k, item_maps[k], keep_item) for k in range(len(buckets))]
        )
        self.schema = filtered[0].schema
        with pq.ParquetWriter(events_out, self.schema) as writer:
            for k, f in enumerate(filtered):
                self.sizes[k] = f.rows
                table = workfs.read_table(self._path("part", k), schema=f.schema)
                writer.write_table(conform(table, self.schema, "events"))
                self.users.append(f.users)
                self.missing_sessions += f.missing_sessions
                self.any_user |= f.any_user
                self.converts |= params.cold_anonymous == "session" and f.anonymous
        sessions = [f.sessions for f in filtered]
        self.n = sum(self.sizes)
        filter_stats = support_stats(  # filter_support(events, min_item_support_all, 1)
            params.min_item_support_all,
            1,
            rows_in,
            self.n,
            self.n,
            int(np.count_nonzero(item_counts)),
            int(np.count_nonzero(keep_item & (item_counts > 0))),
            None,
            None,
        )
        self.session_ids, self.session_maps = _global_dictionary(sessions)
        self._converted_users()
        head = {"events": self.n, "event_type_filter": type_filter, "filter": filter_stats}
        log.info(
            "sessions (arrow): %d events in %d partitions, %d items, %d sessions",
            self.n,
            len(self.sizes),
            len(self.item_ids),
            len(self.session_ids),
        )
        return self, head

    def _converted_users(self) -> None:
        """Cold start's user codes (anonymous sessions as users), per partition."""
        for k in range(len(self.sizes)):
            if not self.converts:
                self.cusers.append(self.users[k])
                self.any_cuser = self.any_user
                continue
            frame = self.frame(k, converted=True)
            if self.cschema is None:
                self.cschema = pa.Table.from_pandas(frame, preserve_index=False).schema
            cuser = encode(frame["user_id"])
            self.cusers.append(cuser.uniques)
            self.any_cuser |= bool((cuser.codes >= 0).any())
            workfs.save_npy(self._path("cuser", k, ".npy"), cuser.codes)

    # ------------------------------------------------------------------ access
    def _path(self, name: str, k: int, suffix: str = ".parquet") -> WorkPath:
        return work_path(self.work, name, k, suffix)

    @property
    def n_partitions(self) -> int:
        return len(self.sizes)

    def ref(self, k: int) -> PartitionRef:
        """What a task needs to read partition ``k``."""
        cusers = self.cusers[k] if len(self.cusers) > k else self.users[k]
        return PartitionRef(
            self.work,
            k,
            self.params,
            self.session_maps[k],
            self.users[k],
            cusers,
            self.converts,
        )

    def frame(self, k: int, *, converted: bool = False) -> pd.DataFrame:
        """Partition ``k``'s events (cold start: anonymous sessions as users)."""
        return self.ref(k).frame(converted=converted)

    def arrays(self, k: int) -> PartitionArrays:
        """Partition ``k``'s integer columns (of a work folder in a store: read from a
        local copy, downloaded once; the passes of every split read them again)."""
        ref = self.ref(k)
        if not isinstance(self.work, Path):
            ref = dataclasses.replace(ref, work=self._mirror(k))
        return ref.arrays()

    def _mirror(self, k: int) -> Path:
        """The local folder holding copies of partition ``k``'s integer columns."""
        folder = self.local / "mirror"
        folder.mkdir(exist_ok=True)
        names = [("arrays", ".npz"), ("session", ".npy")]
        for name, suffix in names + ([("cuser", ".npy")] if self.converts else []):
            copy = folder / f"{name}-{k:05d}{suffix}"
            if not copy.exists():
                workfs.fetch(self._path(name, k, suffix), copy)
        return folder

    def cut(self, params: SessionsParams, kind: str, *, converted: bool) -> tuple[int, int, int]:
        """``(test_after, valid_after, m)`` of the global cut-off over rows with a user."""
        key = converted and self.converts
        if key not in self._cuts:
            files, m, lo, hi = [], 0, _I64_MAX, _I64_MIN
            for k in range(self.n_partitions):
                a = self.arrays(k)
                user = a.cuser if key else a.user
                ts = np.sort(a.ts[user.codes >= 0])
                if len(ts):  # this process's own: memory-mapped below
                    path = self.local / f"cut{int(key)}-{k:05d}.npy"
                    np.save(path, ts)
                    files.append(path)
                    m += len(ts)
                    lo, hi = min(lo, int(ts[0])), max(hi, int(ts[-1]))
            self._cuts[key] = (files, m, lo, hi)
        files, m, lo, hi = self._cuts[key]
        sorted_parts = [np.load(f, mmap_mode="r") for f in files]

        def kth(ks: list[int]) -> list[int]:
            return [_kth(sorted_parts, k, lo, hi) for k in ks]

        test_after, valid_after = global_cutoffs(m, kth, lo, hi, params, kind)
        return test_after, valid_after, m


def _global_dictionary(uniques: list[pa.Array]) -> tuple[pa.Array, list[np.ndarray]]:
    """One dictionary of several partitions' distinct values; each one's codes in it."""
    bounds = np.cumsum([0] + [len(u) for u in uniques])
    if not bounds[-1]:
        return pa.array([], pa.large_string()), [np.zeros(0, np.int32) for _ in uniques]
    encoded = pa.concat_arrays([u.cast(pa.large_string()) for u in uniques]).dictionary_encode()
    codes = encoded.indices.to_numpy().astype(np.int32)
    maps = [codes[a:b] for a, b in itertools.pairwise(bounds)]
    return encoded.dictionary, maps


def _kth(sorted_parts: list[np.ndarray], k: int, lo: int, hi: int) -> int:
    """The ``k``-th (0-based) smallest value over several sorted arrays, by bisection."""
    while lo < hi:
        mid = lo + (hi - lo) // 2
        if sum(int(np.searchsorted(a, mid, side="right")) for a in sorted_parts) >= k + 1:
            hi = mid
        else:
            lo = mid + 1
    return lo


# --------------------------------------------------------------------------- splits
def _one_split(store: _Store, kind: str, params: SessionsParams, out: Path) -> dict[str, Any]:
    """Run, write and summarise one split; ``{"skipped": reason}`` when it does not apply."""
    if kind == "session":
        reason = not_applicable(kind, store.n, store.missing_sessions, True)
    elif kind == "cold_start":
        reason = not_applicable(kind, store.n, 0, store.any_cuser)
    else:
        reason = not_applicable(kind, store.n, 0, store.any_user)
    if not reason:
        try:
            return _SPLITS[kind](store, params, kind, out)
        except SplitError as exc:
            if kind not in SKIP_ON_ERROR and not isinstance(exc, SplitNotApplicable):
                raise
            reason = str(exc).removeprefix(f"{kind} split: ")
            shutil.rmtree(out, ignore_errors=True)
    log.info("split %s skipped: %s", kind, reason)
    return {"skipped": reason}


def _result(kind: str, stats: dict[str, Any], leakage: dict[str, bool], out: Path) -> dict:
    log.info(
        "split %s: %s train / %s valid / %s test events; leak-free: %s",
        kind,
        *(stats["parts"][name]["rows"] for name in PART_NAMES),
        all(leakage.values()),
    )
    return {"stats": stats, "leakage": leakage}


# ------------------------------------------------------------------ session
def _session(store: _Store, params: SessionsParams, kind: str, out: Path) -> dict[str, Any]:
    s_min, l_min = params.item_support, params.min_session_length
    check_sequences(store.n, len(store.session_ids), params)
    n_items, n_sessions = max(len(store.item_ids), 1), max(len(store.session_ids), 1)
    counts = np.zeros(n_items, np.int64)
    for k in range(store.n_partitions):
        item = store.arrays(k).item
        counts += np.bincount(item[item >= 0], minlength=n_items)
    keep_item = counts >= s_min

    def item_kept(a: PartitionArrays) -> np.ndarray:
        return (a.item >= 0) & keep_item[np.maximum(a.item, 0)]

    lengths = np.zeros(n_sessions, np.int64)
    present = np.zeros(n_sessions, bool)
    after_items = 0
    for k in range(store.n_partitions):
        a = store.arrays(k)
        ki = item_kept(a)
        after_items += int(np.count_nonzero(ki))
        lengths += np.bincount(a.session[ki], minlength=n_sessions)
        present[a.session[a.session >= 0]] = True
    long_enough = lengths >= l_min if l_min > 1 else np.ones(n_sessions, bool)

    def kept(a: PartitionArrays) -> np.ndarray:
        return item_kept(a) & long_enough[a.session]

    n_kept, tmax = 0, _I64_MIN
    kept_items = np.zeros(n_items, bool)
    start = np.full(n_sessions, _I64_MAX, np.int64)
    for k in range(store.n_partitions):
        a = store.arrays(k)
        keep = kept(a)
        n_kept += int(np.count_nonzero(keep))
        kept_items[a.item[keep]] = True
        if keep.any():
            tmax = max(tmax, int(a.ts[keep].max()))
            np.minimum.at(start, a.session[keep], a.ts[keep])
    filter_stats = support_stats(
        s_min,
        l_min,
        store.n,
        after_items,
        n_kept,
        int(np.count_nonzero(counts)),
        int(np.count_nonzero(kept_items)),
        int(np.count_nonzero(present)),
        int(np.count_nonzero(long_enough & (lengths > 0))),
    )
    if not n_kept:
        raise session_filter_empty()
    test_start, valid_start = session_bounds(tmax, params)
    session_part = np.where(
        start >= test_start, TEST, np.where(start >= valid_start, VALID, TRAIN)
    ).astype(np.int8)
    parts = SplitParts(store, kind)
    seen = np.zeros(n_items, bool)
    in_valid = np.zeros(n_items, bool)
    for k in range(store.n_partitions):
        a = store.arrays(k)
        part = np.where(kept(a), session_part[a.session], DROPPED).astype(np.int8)
        seen[a.item[part == TRAIN]] = True
        in_valid[a.item[part == VALID]] = True
        parts.save(k, part)
    if not seen.any():
        raise session_train_empty(valid_start, params)
    test_seen = seen | in_valid if params.test_items_seen_in == "train_valid" else seen
    dropped = dict(filter_stats["dropped"])
    unseen_rows = {"valid": 0, "test": 0}
    held_lengths = np.zeros(n_sessions, np.int64)
    for k in range(store.n_partitions):
        a, part = store.arrays(k), parts.load(k)
        held = (part == VALID) | (part == TEST)
        known = np.where(
            part == TEST, test_seen[np.maximum(a.item, 0)], seen[np.maximum(a.item, 0)]
        )
        unseen = held & ~known
        for name, code in (("valid", VALID), ("test", TEST)):
            unseen_rows[name] += int(np.count_nonzero(unseen & (part == code)))
        part[unseen] = DROPPED
        held &= ~unseen
        held_lengths += np.bincount(a.session[held], minlength=n_sessions)
        parts.save(k, part)
    short_rows = {"valid": 0, "test": 0}
    for k in range(store.n_partitions):
        a, part = store.arrays(k), parts.load(k)
        short = ((part == VALID) | (part == TEST)) & (held_lengths[a.session] < 2)
        for name, code in (("valid", VALID), ("test", TEST)):
            short_rows[name] += int(np.count_nonzero(short & (part == code)))
        part[short] = DROPPED
        parts.save(k, part)
    held_out = {}
    for name, code in (("valid", VALID), ("test", TEST)):
        dropped[f"{name}_unseen_item"] = unseen_rows[name]
        dropped[f"{name}_short_session"] = short_rows[name]
        held_out[name] = int(np.count_nonzero((held_lengths >= 2) & (session_part == code)))
    check_session_test(held_out["test"], params)
    if held_out["test"] == 0:
        with_rows = long_enough & (lengths > 0)
        n_test_sessions = int(np.count_nonzero(session_part[with_rows] == TEST))
        raise session_test_empty(n_test_sessions, test_start, tmax, params)

    # leakage: per-session start and length within each part
    starts = np.full((3, n_sessions), _I64_MAX, np.int64)
    sizes = np.zeros((3, n_sessions), np.int64)

    def hook(k: int, a: PartitionArrays, part: np.ndarray) -> None:
        for code in (TRAIN, VALID, TEST):
            rows = part == code
            np.minimum.at(starts[code], a.session[rows], a.ts[rows])
            sizes[code] += np.bincount(a.session[rows], minlength=n_sessions)

    written = write_split(store, parts, out, hook=hook)
    cutoffs, used = session_cutoffs(tmax, valid_start, test_start, params)
    stats = assemble_stats(
        kind, store.n, written.parts, written.cold, used, cutoffs, dropped, {"filter": filter_stats}
    )
    assert written.sessions is not None  # every row has a session here
    in_part = written.sessions[:3]
    leakage: dict[str, bool] = {"test_nonempty": bool(written.rows[TEST] > 0)}
    for name, a_code, b_code in (
        ("test_after_train", 0, 2),
        ("valid_after_train", 0, 1),
        ("test_after_valid", 1, 2),
    ):
        leakage[name] = all_after(
            starts[b_code][in_part[b_code]], starts[a_code][in_part[a_code]], strict=True
        )
    leakage["sessions_disjoint"] = not bool(
        (in_part[0] & in_part[1]).any()
        or (in_part[0] & in_part[2]).any()
        or (in_part[1] & in_part[2]).any()
    )
    items = written.items
    if params.test_items_seen_in != "train_valid":  # as check_leakage
        leakage["test_items_in_train"] = not bool((items[TEST] & ~items[TRAIN]).any())
    leakage["valid_items_in_train"] = not bool((items[VALID] & ~items[TRAIN]).any())
    leakage["heldout_sessions_min_length_2"] = all(
        bool((sizes[code][in_part[code]] >= 2).all()) for code in (VALID, TEST)
    )
    return _result(kind, stats, leakage, out)


# ------------------------------------------------------------------ global temporal
def _global_temporal(store: _Store, params: SessionsParams, kind: str, out: Path) -> dict[str, Any]:
    test_after, valid_after, m = store.cut(params, kind, converted=False)
    parts = SplitParts(store, kind)
    for k in range(store.n_partitions):
        a = store.arrays(k)
        parts.save(k, cut_parts(a.ts, a.user.codes >= 0, test_after, valid_after))
    written = write_split(store, parts, out)
    cutoffs, used = cut_cutoffs(kind, test_after, valid_after, params)
    extra = {"fractions": cut_fractions(written.rows, m)}
    dropped = {"null_user": store.n - m}
    stats = assemble_stats(
        kind, store.n, written.parts, written.cold, used, cutoffs, dropped, extra
    )
    leakage = {"test_nonempty": bool(written.rows[TEST] > 0), **time_checks(written)}
    return _result(kind, stats, leakage, out)


# ------------------------------------------------------------------ per user
def _per_user(store: _Store, params: SessionsParams, kind: str, out: Path) -> dict[str, Any]:
    parts = SplitParts(store, kind)
    by_events = {"1": 0, "2": 0, "3+": 0}
    repeat_user, null_user = False, 0
    used: dict[str, Any] = {}
    rule = ""
    for k in range(store.n_partitions):
        a = store.arrays(k)
        part, count, used, rule = per_user_parts(a.user, a.ts, params, kind)
        repeat_user |= bool(np.any(count >= 2))
        for key, value in users_by_events(count).items():
            by_events[key] += value
        null_user += int(np.count_nonzero(part == DROPPED))
        parts.save(k, part)
    if not repeat_user:
        raise per_user_no_test(kind)
    # users lie in one partition: a per-user check holds iff it holds in each one
    written = write_split(store, parts, out, frame_check=partial(_frame_leakage, kind=kind))
    leakage = dict(written.checks)
    leakage["test_nonempty"] = bool(written.rows[TEST] > 0)
    extra = {"users_by_events": by_events}
    dropped = {"null_user": null_user}
    stats = assemble_stats(
        kind, store.n, written.parts, written.cold, used, {"rule": rule}, dropped, extra
    )
    return _result(kind, stats, leakage, out)


def _frame_leakage(frames: list[pd.DataFrame], kind: str) -> dict[str, bool]:
    """:func:`~recpipe.sessions.splits.check_leakage` of one partition's parts."""
    return check_leakage(SplitResult(*frames), kind)


# ------------------------------------------------------------------ cold start
def _cold_start(store: _Store, params: SessionsParams, kind: str, out: Path) -> dict[str, Any]:
    test_after, valid_after, m = store.cut(params, kind, converted=True)
    n_items = max(len(store.item_ids), 1)
    parts = SplitParts(store, kind)
    candidate_items = np.zeros(n_items, bool)
    candidate_users: list[pa.Array] = []
    for k in range(store.n_partitions):
        a = store.arrays(k)
        part = cut_parts(a.ts, a.cuser.codes >= 0, test_after, valid_after)
        test = part == TEST
        candidate_items[a.item[test & (a.item >= 0)]] = True
        users = np.unique(a.cuser.codes[test]).astype(np.int64)
        candidate_users.append(a.cuser.uniques.take(pa.array(users, pa.int64())))
        parts.save(k, part)
    cand_items = np.flatnonzero(candidate_items).astype(np.int64)
    item_rng = np.random.default_rng([params.cold_seed, 0])
    picked = draw_ids(
        store.item_ids.take(pa.array(cand_items)), params.cold_item_fraction, item_rng
    )
    held_items = np.sort(cand_items[picked])
    cand_users = pa.concat_arrays([u.cast(pa.large_string()) for u in candidate_users])
    user_rng = np.random.default_rng([params.cold_seed, 1])
    held_user_ids = cand_users.take(
        pa.array(draw_ids(cand_users, params.cold_user_fraction, user_rng), pa.int64())
    )
    if not len(held_items) and not len(held_user_ids):
        raise nothing_held(test_after, len(cand_items), len(cand_users), params)
    item_held = np.zeros(n_items, bool)
    item_held[held_items] = True
    dropped = {"null_user": store.n - m, "cold_item": 0, "cold_user": 0}
    test_rows = np.zeros(n_items, np.int64)
    in_train = np.zeros(n_items, bool)
    user_frames: list[pd.DataFrame] = []
    user_counts: dict[str, int] = {}
    cold_users: list[np.ndarray] = []
    held_users: list[np.ndarray] = []
    for k in range(store.n_partitions):
        a, part = store.arrays(k), parts.load(k)
        local_held = pc.is_in(a.cuser.uniques, value_set=held_user_ids).to_numpy(
            zero_copy_only=False
        )
        user_held = np.zeros(max(a.cuser.n_uniques, 1), bool)
        user_held[: len(local_held)] = local_held
        earlier = (part == TRAIN) | (part == VALID)
        cold_item_rows = earlier & mask_rows(a.item, item_held)
        cold_user_rows = earlier & ~cold_item_rows & mask_rows(a.cuser.codes, user_held)
        part[cold_item_rows | cold_user_rows] = DROPPED
        dropped["cold_item"] += int(np.count_nonzero(cold_item_rows))
        dropped["cold_user"] += int(np.count_nonzero(cold_user_rows))
        parts.save(k, part)
        ok = a.item >= 0
        test_rows += np.bincount(a.item[ok & (part == TEST)], minlength=n_items)
        in_train |= np.bincount(a.item[ok & (part == TRAIN)], minlength=n_items) > 0
        c = a.cuser.codes
        n_users = max(a.cuser.n_uniques, 1)
        u_ok = c >= 0
        frame, counts, is_cold = cold_frame(
            "user_id",
            a.cuser.uniques,
            np.bincount(c[u_ok & (part == TEST)], minlength=n_users),
            np.bincount(c[u_ok & (part == TRAIN)], minlength=n_users) > 0,
            np.flatnonzero(local_held),
        )
        user_frames.append(frame)
        for key, value in counts.items():
            user_counts[key] = user_counts.get(key, 0) + value
        cold_users.append(is_cold)
        held_users.append(user_held)
    if not in_train.any():
        raise cold_train_empty(params)
    items_frame, item_counts, cold_items = cold_frame(
        "item_id", store.item_ids, test_rows, in_train, held_items
    )
    users_frame = pd.concat(user_frames, ignore_index=True).sort_values(
        "user_id", kind="stable", ignore_index=True
    )
    either = 0
    user_checks = {"train": True, "valid": True, "test": True}

    def hook(k: int, a: PartitionArrays, part: np.ndarray) -> None:
        nonlocal either
        cold_user_rows = mask_rows(a.cuser.codes, cold_users[k])
        cold_item_rows = mask_rows(a.item, cold_items)
        either += int(np.count_nonzero((part == TEST) & (cold_item_rows | cold_user_rows)))
        present = presence(a.cuser, part)[:, : len(cold_users[k])]
        user_checks["train"] &= not bool((present[TRAIN] & cold_users[k]).any())
        user_checks["valid"] &= not bool((present[VALID] & held_users[k][: present.shape[1]]).any())
        user_checks["test"] &= bool(present[TEST][cold_users[k]].all())

    written = write_split(store, parts, out, converted=True, hook=hook)
    for name, table in (("cold_items", items_frame), ("cold_users", users_frame)):
        table.to_parquet(out / f"{name}.parquet", index=False)
    cutoffs, used = cut_cutoffs(kind, test_after, valid_after, params)
    extra = {
        "cold": {
            "items": item_counts,
            "users": user_counts,
            "test_rows_cold_item_or_user": either,
        }
    }
    stats = assemble_stats(
        kind, store.n, written.parts, written.cold, used, cutoffs, dropped, extra
    )
    items = written.items
    cold_item_mask = cold_items[: items.shape[1]]
    leakage = {"test_nonempty": bool(written.rows[TEST] > 0), **time_checks(written)}
    leakage |= {
        "cold_items_not_in_train": not bool((items[TRAIN] & cold_item_mask).any()),
        "held_out_items_not_in_valid": not bool((items[VALID] & item_held).any()),
        "cold_items_in_test": bool(items[TEST][cold_item_mask].all()),
        "cold_users_not_in_train": user_checks["train"],
        "held_out_users_not_in_valid": user_checks["valid"],
        "cold_users_in_test": user_checks["test"],
    }
    return _result(kind, stats, leakage, out)


_SPLITS: dict[str, Callable[[_Store, SessionsParams, str, Path], dict[str, Any]]] = {
    "session": _session,
    "global_temporal": _global_temporal,
    "user_temporal": _per_user,
    "leave_last_out": _per_user,
    "cold_start": _cold_start,
}
