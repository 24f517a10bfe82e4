"""The ingest stage on a Dask cluster (``prep.engine: dask``) for ``csv`` and ``parquet``.

The arrow engine's streamed import (:func:`recpipe.data.chunked.import_chunked`) with the
reading and canonicalizing as Dask tasks: one task per piece of a ``parquet`` source
(whole row groups of one file, about ``batch_rows`` rows) or per file of a ``csv``
source (streamed in batches of ``batch_rows`` rows), each running the same
canonicalization as the other engines (:func:`~recpipe.data.generic.parquet_chunk_events`,
:func:`~recpipe.data.generic.iter_csv_events`) and writing its canonical events as
Arrow IPC pieces into a work folder. The pieces are then appended in input order by
:func:`~recpipe.data.chunked.write_chunked_tables` here, so ``events.parquet`` and the
manifest are the other engines' byte for byte. The one events file is written by one
process: what the cluster shares is the parsing and canonicalizing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from recpipe.config import DataParams
from recpipe.data import workfs
from recpipe.data.chunked import CHUNKED_KINDS, empty_events, write_chunked_tables
from recpipe.data.cluster import Mapper, dask_client, dask_mapper
from recpipe.data.schema import CanonicalTables
from recpipe.data.storage import Location, is_url, location, parquet_file
from recpipe.data.workfs import WorkPath
from recpipe.errors import ConfigError, DataImportError

log = logging.getLogger(__name__)

__all__ = ["csv_file_pieces", "import_dask", "import_in_pieces", "parquet_piece"]


def import_dask(
    kind: str,
    path: str | Path,
    options: DataParams,
    out_dir: str | Path,
    *,
    batch_rows: int = 1_000_000,
    address: str | None = None,
    workers: int = 2,
    work_dir: WorkPath | None = None,
) -> dict[str, Any]:
    """:func:`import_in_pieces` on the scheduler at ``address``, else on a temporary
    local cluster of ``workers`` processes; returns the manifest.

    Raises
    ------
    ConfigError
        ``path`` is a ``memory://`` URL: the memory of this process, which the worker
        processes cannot read.
    """
    if is_url(path) and str(path).startswith("memory://"):
        raise ConfigError(
            f"data.path {str(path)!r} is in this process's memory, which Dask's worker "
            "processes cannot read; expected a store every worker reaches (a shared "
            "path, file:///abs/path, s3://bucket/key, ...) or prep.engine=arrow"
        )
    with dask_client(address, workers) as client:
        return import_in_pieces(
            kind,
            path,
            options,
            out_dir,
            batch_rows=batch_rows,
            mapper=dask_mapper(client),
            work_dir=work_dir,
        )


def import_in_pieces(
    kind: str,
    path: str | Path,
    options: DataParams,
    out_dir: str | Path,
    *,
    batch_rows: int,
    mapper: Mapper,
    work_dir: WorkPath | None = None,
) -> dict[str, Any]:
    """Import a ``csv`` or ``parquet`` source into canonical tables in ``out_dir`` (a
    fresh staging folder) with the per-piece work run by ``mapper``; the files and
    manifest of :func:`~recpipe.data.chunked.import_chunked`. Returns the manifest.

    ``path`` is a local path or an fsspec URL (:mod:`recpipe.data.storage`) that every
    worker reads. The workers write their canonical pieces into ``work_dir`` (default
    ``out_dir/.pieces``; on several machines, a folder they all reach: a mount, or the
    URL of a store, :mod:`recpipe.data.workfs`), removed after.

    Raises
    ------
    DataImportError
        Another source kind, ``batch_rows`` below 1, or bad input (as the arrow engine;
        a bad value is named by its rows within its piece).
    """
    from recpipe.data.generic import (
        _dataset_files,
        _parquet_source,
        csv_input_files,
        items_table,
    )

    if kind not in CHUNKED_KINDS:
        raise DataImportError(
            f"source kind {kind!r} cannot be imported in pieces; expected one of "
            f"{list(CHUNKED_KINDS)}"
        )
    if batch_rows < 1:
        raise DataImportError(f"batch_rows must be at least 1, got {batch_rows}")
    started = time.perf_counter()
    out = Path(out_dir)
    work = workfs.work_path(work_dir) if work_dir is not None else out / ".pieces"
    workfs.remove(work)  # a killed run's pieces
    workfs.make_dir(work)
    try:
        if kind == "parquet":
            source = location(path, "data.path")
            dataset, mapping, present = _parquet_source(source, options, "parquet")
            columns = sorted({mapping[n] for n in present})
            files = _dataset_files(dataset, source)
            args = [
                (file, groups, offset, options, columns, workfs.join(work, f"piece-{i:06d}.arrow"))
                for i, (file, groups, offset) in enumerate(_row_group_runs(files, batch_rows))
            ]
            written: list[list[WorkPath]] = mapper(parquet_piece, args)
            if not any(written):
                raise DataImportError(f"parquet: {str(path)!r} has no rows")
            input_files = sorted(files)
        else:
            input_files = csv_input_files(path)
            args = [
                (file, options, batch_rows, workfs.join(work, f"file-{i:05d}"))
                for i, file in enumerate(input_files)
            ]
            written = mapper(csv_file_pieces, args)
        rows = {"n": 0}

        def events() -> Iterator[pd.DataFrame]:
            for pieces in written:
                for piece in pieces:
                    frame = workfs.read_ipc(piece).to_pandas()
                    workfs.consumed(piece)
                    rows["n"] += len(frame)
                    yield frame

        def side() -> CanonicalTables:
            items, item_files = items_table(options)
            return CanonicalTables(
                events=empty_events(),
                items=items,
                source=kind,
                input_files=[*input_files, *item_files],
            )

        manifest = write_chunked_tables(events(), out, side)
    finally:
        workfs.remove(work)
    elapsed = time.perf_counter() - started
    log.info(
        "imported %s from %s in %d task(s): %d events in %.2f s",
        kind,
        path,
        len(args),
        rows["n"],
        elapsed,
    )
    return manifest


def _row_group_runs(
    files: list[Location], batch_rows: int
) -> list[tuple[Location, list[int], int]]:
    """``(file, row groups, first row)`` runs of about ``batch_rows`` rows, in order."""
    runs: list[tuple[Location, list[int], int]] = []
    offset = 0
    for file in files:
        meta = parquet_file(file).metadata
        group: list[int] = []
        start = offset
        for g in range(meta.num_row_groups):
            group.append(g)
            offset += meta.row_group(g).num_rows
            if offset - start >= batch_rows:
                runs.append((file, group, start))
                group, start = [], offset
        if group:
            runs.append((file, group, start))
    return runs


def _write_piece(frame: pd.DataFrame, path: WorkPath) -> WorkPath:
    workfs.write_ipc(path, pa.Table.from_pandas(frame, preserve_index=False))
    return path


def parquet_piece(
    file: Location,
    row_groups: list[int],
    offset: int,
    options: DataParams,
    columns: list[str],
    out: WorkPath,
) -> list[WorkPath]:
    """Canonical events of ``row_groups`` of ``file`` (rows from ``offset`` in the
    source), written to ``out``; ``[out]``, or ``[]`` when they hold no rows."""
    from recpipe.data.generic import parquet_chunk_events

    try:
        table = parquet_file(file).read_row_groups(row_groups, columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataImportError(f"parquet: cannot read {str(file)!r}: {exc}") from None
    if not table.num_rows:
        return []
    where = f"parquet {file} (rows {offset}-{offset + table.num_rows - 1})"
    return [_write_piece(parquet_chunk_events(table, options, where=where, offset=offset), out)]


def csv_file_pieces(
    file: Location, options: DataParams, batch_rows: int, out: WorkPath
) -> list[WorkPath]:
    """Canonical events of one delimited file (a local path or a URL), streamed in batches
    of ``batch_rows`` rows, each written as ``out-<j>.arrow``; the pieces in order."""
    from recpipe.data.generic import iter_csv_events

    return [
        _write_piece(frame, workfs.with_suffix_name(out, f"-{j:06d}.arrow"))
        for j, frame in enumerate(iter_csv_events(file, options, batch_rows))
    ]
