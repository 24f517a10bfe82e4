"""Chunked (Arrow) import and Parquet writing of event logs larger than pandas memory.

The ``arrow`` engine of ``params.prep`` (see :class:`recpipe.config.PrepParams`) never
holds the whole events table: a raw ``csv`` or ``parquet`` source is streamed in
batches of ``batch_rows`` rows, each batch canonicalized by the *same* function as the
pandas import (:func:`recpipe.data.generic.csv_chunk_events` /
:func:`~recpipe.data.generic.parquet_chunk_events`) and appended to one Parquet file.

Same output as the pandas engine, byte for byte:

* :class:`EventsWriter` writes row groups of :data:`ROW_GROUP_ROWS` rows (pyarrow's
  default, what ``DataFrame.to_parquet`` writes), each from one contiguous Arrow table
  converted from pandas exactly as ``to_parquet`` does, so the file -- schema, pandas
  metadata, row groups, pages -- is the one ``write_tables`` writes for the same rows,
  and the manifest's ``content_hash`` agrees too;
* :class:`EventStats` computes :func:`recpipe.data.schema.table_stats` incrementally
  (distinct users/items/sessions, event type counts in the order ``value_counts``
  gives, time range).

Other source kinds (synthetic, movielens, yoochoose, ...) are bounded data sets: the
arrow engine imports them in memory like the pandas engine (:func:`import_chunked`
logs it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recpipe.config import DataParams
from recpipe.data.schema import (
    EVENTS_FILE,
    ITEMS_FILE,
    MANIFEST_FILE,
    USERS_FILE,
    CanonicalTables,
    build_manifest,
    coerce_events,
    read_tables,
    write_tables,
)
from recpipe.errors import DataImportError
from recpipe.workspace import shown

log = logging.getLogger(__name__)

__all__ = [
    "CHUNKED_KINDS",
    "ROW_GROUP_ROWS",
    "DistinctCounter",
    "EventStats",
    "EventsWriter",
    "empty_events",
    "import_chunked",
    "iter_event_batches",
    "iter_source_events",
    "read_side_tables",
    "write_chunked_tables",
]

#: Source kinds the arrow engine streams; the others are imported in memory.
CHUNKED_KINDS: tuple[str, ...] = ("csv", "parquet")

#: Rows per Parquet row group: pyarrow's default, i.e. what ``DataFrame.to_parquet`` writes.
ROW_GROUP_ROWS = 1024 * 1024


def empty_events() -> pd.DataFrame:
    """A canonical events frame with no rows (canonical dtypes)."""
    return coerce_events(
        pd.DataFrame(
            {
                "user_id": pd.Series([], dtype="string"),
                "item_id": pd.Series([], dtype="string"),
                "timestamp": pd.Series([], dtype="datetime64[ns, UTC]"),
                "event_type": pd.Series([], dtype="string"),
                "value": pd.Series([], dtype="float64"),
                "session_id": pd.Series([], dtype="string"),
            }
        )
    )


# ----------------------------------------------------------------------- writer ---


class EventsWriter:
    """Append pandas frames to one Parquet file, as ``DataFrame.to_parquet`` of their
    concatenation would write it.

    Frames are buffered up to :data:`ROW_GROUP_ROWS` rows and written as one row group
    from one contiguous Arrow table (so the bytes match ``to_parquet``, which slices the
    whole table into row groups of that size). Memory: about one row group. Every
    frame must have the columns and dtypes of the first; ``template`` (a frame with
    those columns, e.g. with no rows) gives the schema when no row is written, and the
    file then equals ``template.iloc[:0].to_parquet(path, index=False)``. A context
    manager: the file is closed on exit, and removed when the block raised.
    """

    def __init__(self, path: str | Path, template: pd.DataFrame | None = None) -> None:
        self.path = Path(path)
        self.rows = 0
        self._template = template
        self._schema: pa.Schema | None = None
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def _to_arrow(self, frame: pd.DataFrame) -> pa.Table:
        # exactly what pandas' pyarrow engine does for to_parquet(index=False)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._schema is None:
            self._schema = table.schema
        elif not table.schema.equals(self._schema, check_metadata=True):
            raise DataImportError(
                f"cannot append to {self.path}: frame schema {table.schema} differs from "
                f"the file's schema {self._schema}; expected the same columns and dtypes"
            )
        return table

    def write(self, frame: pd.DataFrame) -> None:
        """Append the rows of ``frame`` (its index is not written)."""
        if frame.attrs:
            frame = frame.copy(deep=False)
            frame.attrs = {}
        table = self._to_arrow(frame)
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        while self._pending_rows >= ROW_GROUP_ROWS:
            self._flush(ROW_GROUP_ROWS)

    def _flush(self, n: int) -> None:
        table = pa.concat_tables(self._pending)
        head, rest = table.slice(0, n), table.slice(n)
        if self._writer is None:
            assert self._schema is not None
            self._writer = pq.ParquetWriter(self.path, self._schema)
        self._writer.write_table(head.combine_chunks())
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def close(self) -> Path:
        """Write what is buffered and close the file; returns its path."""
        if self._pending_rows:
            self._flush(self._pending_rows)
        if self._writer is None:  # no rows at all: the file to_parquet writes for none
            template = self._template if self._template is not None else empty_events()
            template = template.iloc[:0].copy(deep=False)
            template.attrs = {}
            pq.write_table(pa.Table.from_pandas(template, preserve_index=False), self.path)
        else:
            self._writer.close()
            self._writer = None
        return self.path

    def __enter__(self) -> EventsWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        if self._writer is not None:
            self._writer.close()
        self.path.unlink(missing_ok=True)


# ------------------------------------------------------------------------ stats ---


class DistinctCounter:
    """Exact count of distinct non-null strings over a stream of columns (Arrow kernels).

    Keeps the distinct values seen (as Arrow arrays, merged as they grow): memory is
    about the distinct values, not the rows.
    """

    def __init__(self) -> None:
        self._parts: list[pa.Array] = []
        self._held = 0
        self._merged = 0

    def add(self, values: pd.Series) -> None:
        """Count the values of one chunk."""
        arr = pa.array(values.array, from_pandas=True)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        uniques = pc.unique(arr.drop_null())
        if len(uniques):
            self._parts.append(uniques)
            self._held += len(uniques)
        if self._held > 2 * self._merged + 1_000_000:
            self._merge()

    def _merge(self) -> None:
        if len(self._parts) > 1:
            types = {p.type for p in self._parts}
            parts = (
                self._parts if len(types) == 1 else [p.cast(pa.large_string()) for p in self._parts]
            )
            self._parts = [pc.unique(pa.concat_arrays(parts))]
        self._held = self._merged = sum(len(p) for p in self._parts)

    def count(self) -> int:
        """The number of distinct non-null values added so far."""
        self._merge()
        return self._merged


class EventStats:
    """:func:`recpipe.data.schema.table_stats` of an events table fed in chunks.

    ``update`` each chunk in table order; :meth:`result` gives the same dict as
    ``table_stats`` of the concatenated table (also the order of ``event_types``:
    count descending, ties in order of first appearance, as ``value_counts`` gives).
    """

    def __init__(self) -> None:
        self.rows = 0
        self._users = DistinctCounter()
        self._items = DistinctCounter()
        self._sessions = DistinctCounter()
        self._types: dict[str, int] = {}
        self._min: pd.Timestamp | None = None
        self._max: pd.Timestamp | None = None

    def update(self, events: pd.DataFrame) -> None:
        """Add one chunk of canonical events."""
        self.rows += len(events)
        self._users.add(events["user_id"])
        self._items.add(events["item_id"])
        self._sessions.add(events["session_id"])
        for key, count in events["event_type"].value_counts(sort=False).items():
            self._types[str(key)] = self._types.get(str(key), 0) + int(count)
        ts = events["timestamp"]
        lo, hi = ts.min(), ts.max()
        if not pd.isna(lo):
            self._min = lo if self._min is None else min(self._min, lo)
            self._max = hi if self._max is None else max(self._max, hi)

    def result(self, source: str, n_items: int, n_users: int) -> dict[str, Any]:
        """The stats dict (``n_items`` / ``n_users``: rows of the items / users tables)."""
        types = pd.Series(self._types, dtype="int64").sort_values(ascending=False, kind="stable")

        def iso(value: pd.Timestamp | None) -> str | None:
            if not self.rows:
                return None
            return pd.NaT.isoformat() if value is None else value.isoformat()

        return {
            "source": source,
            "rows": {"events": self.rows, "items": n_items, "users": n_users},
            "n_users": self._users.count(),
            "n_items": self._items.count(),
            "n_sessions": self._sessions.count(),
            "event_types": {str(k): int(v) for k, v in types.items()},
            "time_range": {"min": iso(self._min), "max": iso(self._max)},
        }


# --------------------------------------------------------------------- tables ---


def write_chunked_tables(
    events: Iterable[pd.DataFrame],
    out_dir: str | Path,
    side: CanonicalTables | Callable[[], CanonicalTables],
) -> dict[str, Any]:
    """:func:`recpipe.data.schema.write_tables` for events given as a stream of frames.

    Writes ``events.parquet`` (appended chunk by chunk, each coerced to the canonical
    events schema), ``items.parquet``, ``users.parquet`` and ``manifest.json`` into
    ``out_dir``; returns the manifest. Files and manifest equal what ``write_tables``
    writes for the concatenated events. ``side`` holds the items and users tables, the
    source and the input files (its events are ignored), or is called for them once
    the events are written (an importer reads its items table after the events).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = EventStats()
    with EventsWriter(out_dir / EVENTS_FILE, template=empty_events()) as writer:
        for chunk in events:
            chunk = coerce_events(chunk)
            stats.update(chunk)
            writer.write(chunk)
    tables = side() if callable(side) else side
    written = [out_dir / EVENTS_FILE]
    for name, frame in ((ITEMS_FILE, tables.items), (USERS_FILE, tables.users)):
        frame.to_parquet(out_dir / name, index=False)
        written.append(out_dir / name)
    result = stats.result(tables.source, len(tables.items), len(tables.users))
    manifest = build_manifest(tables, written, result)
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    log.info(
        "wrote %d events (chunked), %d items, %d users to %s",
        stats.rows,
        len(tables.items),
        len(tables.users),
        shown(out_dir),
    )
    return manifest


def iter_source_events(
    kind: str, path: str | Path, options: DataParams, batch_rows: int
) -> Iterator[pd.DataFrame]:
    """Canonical events of a ``csv`` or ``parquet`` source, streamed in batches."""
    from recpipe.data.generic import iter_csv_events, iter_parquet_events

    if kind == "csv":
        return iter_csv_events(path, options, batch_rows)
    if kind == "parquet":
        return iter_parquet_events(path, options, batch_rows)
    raise DataImportError(
        f"source kind {kind!r} cannot be streamed; expected one of {list(CHUNKED_KINDS)}"
    )


def import_chunked(
    kind: str,
    path: str | Path,
    options: DataParams,
    out_dir: str | Path,
    *,
    batch_rows: int = 1_000_000,
) -> dict[str, Any]:
    """Import a raw data set into canonical tables in ``out_dir``, streaming the events.

    ``csv`` and ``parquet`` sources are read ``batch_rows`` rows at a time and written
    by :func:`write_chunked_tables`: the files and manifest equal those of
    ``write_tables(import_source(kind, path, options), out_dir)``, and so do the errors
    for bad input (a value-level error counts within the batch that holds it). Other
    kinds are bounded data sets and are imported in memory, as the pandas engine does.
    ``out_dir`` should be a fresh staging folder: on error it holds a partial import.
    Returns the manifest.
    """
    from recpipe.data.generic import csv_input_files, items_table, parquet_input_files

    if batch_rows < 1:
        raise DataImportError(f"batch_rows must be at least 1, got {batch_rows}")
    if kind not in CHUNKED_KINDS:
        from recpipe.data.sources import import_source

        log.info("prep.engine=arrow: %s is a bounded data set; importing it in memory", kind)
        return write_tables(import_source(kind, path, options), Path(out_dir))
    started = time.perf_counter()
    files = csv_input_files(path) if kind == "csv" else parquet_input_files(path)
    stats: dict[str, int] = {"rows": 0}

    def events() -> Iterator[pd.DataFrame]:
        for chunk in iter_source_events(kind, path, options, batch_rows):
            stats["rows"] += len(chunk)
            yield chunk

    def side() -> CanonicalTables:
        items, item_files = items_table(options)
        return CanonicalTables(
            events=empty_events(), items=items, source=kind, input_files=[*files, *item_files]
        )

    manifest = write_chunked_tables(events(), out_dir, side)
    elapsed = time.perf_counter() - started
    log.info(
        "imported %s from %s (streamed, %d rows a batch): %d events in %.2f s (%.0f events/s)",
        kind,
        path,
        batch_rows,
        stats["rows"],
        elapsed,
        stats["rows"] / elapsed if elapsed > 0 else float("inf"),
    )
    return manifest


# ---------------------------------------------------------------------- reading ---


def iter_event_batches(path: str | Path, batch_rows: int = 1_000_000) -> Iterator[pd.DataFrame]:
    """The canonical events of a Parquet file in frames of at most ``batch_rows`` rows.

    Each frame is what ``read_tables`` would give for those rows (canonical dtypes),
    with an index continuing the previous frame's (label = row of the file).
    """
    file = pq.ParquetFile(path)
    offset = 0
    for batch in file.iter_batches(batch_size=batch_rows):
        frame = coerce_events(pa.Table.from_batches([batch]).to_pandas())
        frame.index = pd.RangeIndex(offset, offset + len(frame))
        offset += len(frame)
        yield frame


def read_side_tables(in_dir: str | Path) -> CanonicalTables:
    """The items and users tables and the source of canonical tables in ``in_dir``,
    with *no* events (they stay on disk: stream them with :func:`iter_event_batches`);
    :func:`recpipe.data.schema.read_tables` with ``events=False``."""
    return read_tables(Path(in_dir), events=False)
