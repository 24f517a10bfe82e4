"""A split part encoded batch by batch, so the features stage never holds a whole part.

:func:`count_ids` counts the ids of a part's id column one record batch at a time
(only that column is read; the memory is the distinct ids and their counts), which is
all :meth:`~recpipe.features.idmap.IdMap.from_counts` needs to build the split's id
maps. :func:`encode_part_file` then reads the part again in record batches, encodes each
with :func:`~recpipe.features.encode.encode_events` and appends it to the output file as
one or more row groups: the peak memory is the id maps plus about one batch, instead
of the whole part plus its encoded copy.

The result is the frame :func:`~recpipe.features.encode.encode_events` gives for the
whole part (the same rows, values and dtypes; the file differs only in its row
groups). That holds because every event's context depends only on the earlier events
of its session: a batch is cut at a session boundary (the rows of the session the
batch ends in are carried into the next batch), so each session is encoded whole, once
the part is grouped by session. The sessions stage writes it so (every engine); a part
that is not grouped (a session id that reappears after another session's rows) is
detected while streaming and encoded whole instead, with the same result.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recpipe.features.encode import encode_events
from recpipe.features.idmap import UNK, IdMap, as_arrow_strings, string_hashes

log = logging.getLogger(__name__)

__all__ = ["BATCH_ROWS", "ROW_GROUP_ROWS", "count_ids", "encode_part_file", "read_batches"]

#: Rows read and encoded at a time: about 100 MB of peak memory (canonical events, their
#: pandas and encoded copies); larger batches were no faster (bench/features.py).
BATCH_ROWS = 1 << 18
#: Encoded rows gathered into one row group of the output (about 40 MB encoded): a
#: Parquet writer is a third slower on row groups of 256k rows than of 1M.
ROW_GROUP_ROWS = 1 << 20
#: Per-batch id counts wait for at least this many rows before they are summed.
_MERGE_ROWS = 1 << 20


def _check_batch_rows(batch_rows: int) -> int:
    if int(batch_rows) != batch_rows or batch_rows < 1:
        raise ValueError(f"batch_rows must be a positive integer, got {batch_rows!r}")
    return int(batch_rows)


def _ids(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``column`` as a (large) string array, converted as :func:`as_arrow_strings`
    converts the pandas column ``pd.read_parquet`` gives."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.cast(pa.large_string())
    out = as_arrow_strings(column.to_pandas())
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def read_batches(
    path: Path | str, columns: list[str] | None = None, batch_rows: int = BATCH_ROWS
) -> Iterator[pa.Table]:
    """The rows of the Parquet file ``path`` as tables of at most ``batch_rows`` rows,
    in file order (only ``columns``, when given); nothing for an empty file."""
    batch_rows = _check_batch_rows(batch_rows)
    with pq.ParquetFile(path) as file:
        for batch in file.iter_batches(batch_size=batch_rows, columns=columns):
            if batch.num_rows:
                yield pa.Table.from_batches([batch])


def count_ids(
    path: Path | str, columns: Sequence[str], batch_rows: int = BATCH_ROWS
) -> dict[str, pa.Table]:
    """How often each id of each of ``columns`` occurs in the Parquet file ``path``
    (nulls left out), reading only those columns, ``batch_rows`` rows at a time.

    Returns
    -------
    dict[str, pyarrow.Table]
        By column: a table of columns ``id`` (large string, distinct) and ``count``
        (int64), in no particular order: ``IdMap.from_counts(t["id"], t["count"], m)``
        equals ``IdMap.fit(pd.read_parquet(path)[column], m)``.
    """
    empty = pa.table({"id": pa.array([], pa.large_string()), "count": pa.array([], pa.int64())})
    totals = dict.fromkeys(columns, empty)
    pending: dict[str, list[pa.Table]] = {c: [] for c in columns}

    def merge(tables: list[pa.Table]) -> pa.Table:
        summed = pa.concat_tables(tables).group_by("id").aggregate([("count", "sum")])
        return pa.table({"id": summed["id"], "count": summed["count_sum"]})

    for table in read_batches(path, list(columns), batch_rows):
        for column in columns:
            vc = pc.value_counts(_ids(table[column]).drop_null())
            pending[column].append(
                pa.table({"id": vc.field("values"), "count": vc.field("counts")})
            )
            # merged once the pending counts outgrow the totals (and 1M rows): each
            # merge at least doubles what it sums, so the merges cost O(rows)
            waiting = sum(t.num_rows for t in pending[column])
            if waiting >= max(2 * totals[column].num_rows, _MERGE_ROWS):
                totals[column] = merge([totals[column], *pending[column]])
                pending[column] = []
    for column in columns:
        if pending[column]:
            totals[column] = merge([totals[column], *pending[column]])
    return {column: total.cast(empty.schema) for column, total in totals.items()}


def _to_frame(table: pa.Table) -> pd.DataFrame:
    # the conversion pd.read_parquet makes (pyarrow engine, default dtypes)
    return table.to_pandas()


def _trailing_run_start(sessions: pa.Array) -> int:
    """Index where the last session run of ``sessions`` starts (``len`` when the last
    row's session is null: a null session is one event, never continued)."""
    n = len(sessions)
    if not sessions[n - 1].is_valid:
        return n
    same = pc.fill_null(pc.equal(sessions[1:], sessions[:-1]), False)
    breaks = np.flatnonzero(~same.to_numpy(zero_copy_only=False))
    return int(breaks[-1]) + 1 if breaks.size else 0


def _run_hashes(sessions: pa.Array) -> np.ndarray:
    """(R,) uint64 hashes of the session id of each run of equal non-null ids."""
    n = len(sessions)
    if n == 0:
        return np.empty(0, np.uint64)
    same = pc.fill_null(pc.equal(sessions[1:], sessions[:-1]), False)
    starts = np.flatnonzero(np.r_[True, ~same.to_numpy(zero_copy_only=False)])
    return string_hashes(sessions.take(pa.array(starts)).drop_null())


class _Stats:
    """The :func:`~recpipe.features.encode.encoding_stats` of a part, summed over batches."""

    def __init__(self) -> None:
        self.rows = self.sessions = self.unknown_items = self.unknown_users = 0

    def add(self, encoded: pd.DataFrame) -> None:
        self.rows += len(encoded)
        # batches hold whole sessions, so their distinct counts add up
        self.sessions += int(encoded["session_id"].nunique())
        self.unknown_items += int((encoded["item_idx"].to_numpy() == UNK).sum())
        self.unknown_users += int((encoded["user_idx"].to_numpy() == UNK).sum())

    def result(self) -> dict[str, Any]:
        n = self.rows
        return {
            "rows": n,
            "sessions": self.sessions,
            "unknown_item_share": self.unknown_items / n if n else 0.0,
            "unknown_user_share": self.unknown_users / n if n else 0.0,
        }


def _encode(
    table: pa.Table, items: IdMap, users: IdMap, gap_buckets: int, keep_user_id: bool
) -> pd.DataFrame:
    frame = _to_frame(table)
    out = encode_events(frame, items, users, gap_buckets)
    if keep_user_id:
        out["user_id"] = frame["user_id"].reset_index(drop=True)
    return out


def encode_part_file(
    src: Path | str,
    dst: Path | str,
    items: IdMap,
    users: IdMap,
    gap_buckets: int,
    *,
    keep_user_id: bool = False,
    batch_rows: int = BATCH_ROWS,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> dict[str, Any]:
    """Encode the split part ``src`` into ``dst`` batch by batch.

    Parameters
    ----------
    src : pathlib.Path or str
        A canonical split part (Parquet), grouped by session as the sessions stage
        writes it.
    dst : pathlib.Path or str
        The encoded part to write (:data:`~recpipe.features.encode.ENCODED_COLUMNS`,
        plus the raw ``user_id`` with ``keep_user_id``), in row groups of about
        ``row_group_rows`` rows.
    items, users : IdMap
        The split's id maps.
    gap_buckets : int
        Gap buckets of the context features.
    keep_user_id : bool, default False
        Keep the raw ``user_id`` column (the ``cold_start`` split's test part).
    batch_rows : int, default BATCH_ROWS
        Rows read at a time; a batch grows past it only to hold a session whole.
    row_group_rows : int, default ROW_GROUP_ROWS
        Encoded batches are written once they hold this many rows (or at the end).

    Returns
    -------
    dict
        The part's :func:`~recpipe.features.encode.encoding_stats`.

    Notes
    -----
    ``pd.read_parquet(dst)`` equals ``encode_events(pd.read_parquet(src), ...)``
    (the same frame :func:`~recpipe.features.build.split_features` builds). When the
    part turns out not to be grouped by session, it is encoded whole (logged).
    """
    src, dst = Path(src), Path(dst)
    stats = _Stats()
    hashes: list[np.ndarray] = []
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None

    pending: list[pa.Table] = []  # encoded batches not written yet

    def flush() -> None:
        nonlocal writer
        if not pending:
            return
        table = pa.concat_tables(pending)
        if writer is None:
            writer = pq.ParquetWriter(dst, table.schema, compression="snappy")
        writer.write_table(table, row_group_size=max(table.num_rows, 1))
        pending.clear()

    def write(table: pa.Table) -> None:
        nonlocal schema
        encoded = _encode(table, items, users, gap_buckets, keep_user_id)
        stats.add(encoded)
        arrow = pa.Table.from_pandas(encoded, schema=schema, preserve_index=False)
        schema = arrow.schema
        pending.append(arrow)
        if sum(t.num_rows for t in pending) >= row_group_rows:
            flush()

    try:
        carry: pa.Table | None = None
        for batch in read_batches(src, batch_rows=batch_rows):
            table = batch if carry is None else pa.concat_tables([carry, batch])
            sessions = _ids(table["session_id"])
            cut = _trailing_run_start(sessions)
            carry = table.slice(cut) if cut < table.num_rows else None
            if cut:
                hashes.append(_run_hashes(sessions[:cut]))
                write(table.slice(0, cut))
        if carry is not None:
            hashes.append(_run_hashes(_ids(carry["session_id"])))
            write(carry)
        if schema is None:  # an empty part: its schema and dtypes still
            write(pq.read_schema(src).empty_table())
        flush()
    finally:
        if writer is not None:
            writer.close()
    runs = np.sort(np.concatenate(hashes)) if hashes else np.empty(0, np.uint64)
    if not np.any(runs[1:] == runs[:-1]):
        return stats.result()
    # a session id in two runs (or, rarely, two ids with one hash): encode the part whole
    log.info("%s is not grouped by session; encoding it whole", src)
    frame = pd.read_parquet(src)
    encoded = encode_events(frame, items, users, gap_buckets)
    if keep_user_id:
        encoded["user_id"] = frame["user_id"].reset_index(drop=True)
    del frame
    encoded.to_parquet(dst, index=False)
    whole = _Stats()
    whole.sessions = int(encoded["session_id"].nunique())  # ids shared across runs
    whole.rows = len(encoded)
    whole.unknown_items = int((encoded["item_idx"].to_numpy() == UNK).sum())
    whole.unknown_users = int((encoded["user_idx"].to_numpy() == UNK).sum())
    return whole.result()
