"""User-hash partitioning of a canonical events table larger than memory.

:func:`partition_by_user` streams an events Parquet file (or folder of parts) in record
batches and writes each row to one of ``n_partitions`` bucket files by a stable hash of
its ``user_id`` (rows without a user: of their ``session_id``). Every per-user (and
per-anonymous-session) computation of the pipeline then runs on one bucket at a time:
validation's duplicate rule, sessionization, the per-user splits.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recpipe.data import workfs
from recpipe.data.cluster import Mapper
from recpipe.data.workfs import WorkPath
from recpipe.errors import SplitError

__all__ = [
    "bucket_of",
    "bucket_pieces",
    "partition_by_user",
    "partition_in_pieces",
    "write_bucket_pieces",
    "write_buckets",
]


def bucket_of(batch: pa.RecordBatch | pa.Table, n_partitions: int) -> np.ndarray:
    """Bucket of each row: a stable hash of ``user_id`` (of ``session_id`` where null)."""
    frame = batch.select(["user_id", "session_id"]).to_pandas()
    user = frame["user_id"]
    key = user.where(user.notna(), "\x00s:" + frame["session_id"].astype("string"))
    if key.isna().any():
        raise SplitError(
            f"{int(key.isna().sum())} event(s) have neither user_id nor session_id; "
            "partitioned sessionization needs one of them (use prep.engine=pandas)"
        )
    hashes = pd.util.hash_pandas_object(key.astype("string"), index=False).to_numpy()
    return (hashes % np.uint64(n_partitions)).astype(np.int64)


def write_buckets(
    batches: Iterable[tuple[pa.RecordBatch, np.ndarray]], out_dir: WorkPath, n_partitions: int
) -> list[WorkPath]:
    """Append each batch's rows to ``bucket-<k>.parquet`` in ``out_dir`` by its bucket
    array (one ``k`` in ``[0, n_partitions)`` per row), keeping the rows' order within a
    bucket. Returns the bucket files that got rows, by ``k``."""
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for batch, bucket in batches:
            order = np.argsort(bucket, kind="stable")
            bounds = np.searchsorted(bucket[order], np.arange(n_partitions + 1))
            table = pa.Table.from_batches([batch]).take(pa.array(order))
            for k in range(n_partitions):
                lo, hi = int(bounds[k]), int(bounds[k + 1])
                if lo == hi:
                    continue
                if k not in writers:
                    name = f"bucket-{k:05d}.parquet"
                    writers[k] = workfs.parquet_writer(workfs.join(out_dir, name), table.schema)
                writers[k].write_table(table.slice(lo, hi - lo))
    finally:
        for writer in writers.values():
            writer.close()
    return [workfs.join(out_dir, f"bucket-{k:05d}.parquet") for k in sorted(writers)]


def partition_by_user(
    source: WorkPath, out_dir: WorkPath, n_partitions: int, batch_rows: int = 1_000_000
) -> list[WorkPath]:
    """Split an events Parquet file or folder into ``n_partitions`` user-hash buckets.

    Rows keep their input order within a bucket. Returns the bucket files that got
    rows (``bucket-<k>.parquet`` in ``out_dir``, which is emptied first). ``source`` and
    ``out_dir`` are local paths or URLs of a store (:mod:`recpipe.data.workfs`).
    """
    if n_partitions < 1:
        raise SplitError(f"n_partitions must be at least 1, got {n_partitions}")
    out = workfs.work_path(out_dir)
    workfs.remove(out)
    workfs.make_dir(out)
    dataset = workfs.dataset(workfs.work_path(source))
    # no read-ahead: the default (16 batches, 4 files) would hold ~16 batches at once
    batches = dataset.to_batches(batch_size=batch_rows, batch_readahead=0, fragment_readahead=0)
    return write_buckets(
        ((b, bucket_of(b, n_partitions)) for b in batches if b.num_rows), out, n_partitions
    )


def partition_in_pieces(
    source: WorkPath,
    out_dir: WorkPath,
    n_partitions: int,
    batch_rows: int,
    mapper: Mapper,
) -> list[WorkPath]:
    """:func:`partition_by_user` with one task per piece of the input, run by ``mapper``
    (``mapper(fn, [args, ...])``: e.g. Dask futures), each writing its rows of every
    bucket as ``bucket-<k>/piece-<i>.parquet``: a shuffle by user through the store.

    A piece is a run of whole row groups of one file, about ``batch_rows`` rows. The
    bucket folders hold the same rows in the same order as :func:`partition_by_user`'s
    files (pieces are numbered in input order). Returns the bucket folders that got rows.
    """
    if n_partitions < 1:
        raise SplitError(f"n_partitions must be at least 1, got {n_partitions}")
    out = workfs.work_path(out_dir)
    workfs.remove(out)
    workfs.make_dir(out)
    pieces: list[tuple[WorkPath, list[int]]] = []
    for file in workfs.dataset_files(workfs.work_path(source)):
        meta = workfs.parquet_file(file).metadata
        group: list[int] = []
        rows = 0
        for g in range(meta.num_row_groups):
            group.append(g)
            rows += meta.row_group(g).num_rows
            if rows >= batch_rows:
                pieces.append((file, group))
                group, rows = [], 0
        if group:
            pieces.append((file, group))
    args = [(file, groups, i, out, n_partitions) for i, (file, groups) in enumerate(pieces)]
    got = set().union(*mapper(bucket_pieces, args)) if args else set()
    return [workfs.join(out, f"bucket-{k:05d}") for k in sorted(got)]


def bucket_pieces(
    file: WorkPath, row_groups: list[int], i: int, out_dir: WorkPath, n_partitions: int
) -> set[int]:
    """Write piece ``i`` (``row_groups`` of ``file``) into ``out_dir/bucket-<k>/`` by user
    hash, keeping the rows' order; returns the buckets that got rows."""
    table = workfs.parquet_file(file).read_row_groups(row_groups)
    if not table.num_rows:
        return set()
    return write_bucket_pieces(table, bucket_of(table, n_partitions), i, out_dir)


def write_bucket_pieces(table: pa.Table, bucket: np.ndarray, i: int, out_dir: WorkPath) -> set[int]:
    """Write ``table``'s rows of each bucket ``k`` (``bucket``: one per row) as
    ``out_dir/bucket-<k>/piece-<i>.parquet``, keeping their order; returns the ``k``s."""
    order = np.argsort(bucket, kind="stable")
    ks, starts = np.unique(bucket[order], return_index=True)
    ends = [*starts[1:], len(order)]
    table = table.take(pa.array(order))
    for k, lo, hi in zip(ks, starts, ends, strict=True):
        folder = workfs.join(out_dir, f"bucket-{int(k):05d}")
        workfs.make_dir(folder)
        piece = table.slice(int(lo), int(hi - lo))
        workfs.write_table(workfs.join(folder, f"piece-{i:06d}.parquet"), piece)
    return {int(k) for k in ks}
