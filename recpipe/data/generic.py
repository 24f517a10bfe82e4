"""Generic event tables: any CSV (``csv``) or Parquet (``parquet``) file with a column mapping.

The mapping is :class:`recpipe.config.ColumnMapping` (``data.columns`` in params.yaml):
for each canonical events column, the source column that holds it, or ``null``
when the source has none. Missing columns are filled as follows: ``event_type`` ->
``data.default_event_type``, ``value`` -> 1.0, ``user_id`` / ``session_id`` -> null.

Column rules:

* ``item_id`` and ``timestamp`` must be present.
* An optional column (``user_id``, ``event_type``, ``value``, ``session_id``) mapped to
  a source column of *another* name must be present; one mapped to its own name
  (the default) is used when present and treated as absent otherwise (logged), so
  a plain ``user_id,item_id,timestamp`` file imports with no configuration.
* Timestamps: ``data.timestamp_unit`` (``s``/``ms``/``us``/``ns``) for epoch numbers,
  ``null`` for ISO 8601 strings (naive = UTC). Parquet timestamp columns are used
  as they are (naive = UTC).
* Ids are read as text (any spelling is an id); Parquet integer ids become strings.
* Event types are normalised with ``data.event_type_map`` as extra aliases; unknown
  spellings are kept for validation.

``path`` is a file, or a folder whose ``*.csv`` files (sorted) are concatenated;
for Parquet, a file or a folder (dataset) of Parquet files. Either may be a local path
or an fsspec URL (``file:///abs/path``, ``s3://bucket/prefix``, ...; see
:mod:`recpipe.data.storage`), and so may ``data.items_path``.

``data.items_path`` (optional) is a CSV (``data.sep``) or Parquet items table whose
item id column is ``item_id`` or the events' mapped item column. Every column is
kept; a text ``categories`` column of ``A|B`` strings becomes a list column.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from recpipe.config import ColumnMapping, DataParams
from recpipe.data._io import (
    Col,
    ColumnKind,
    build_events,
    event_types,
    iter_delimited,
    read_delimited,
    split_list,
    timestamps,
    to_float,
)
from recpipe.data.schema import CanonicalTables, empty_items, to_nanoseconds
from recpipe.data.storage import (
    Location,
    arrow_path,
    filesystem,
    is_url,
    location,
    name_of,
    url_under,
)
from recpipe.data.storage import exists as _exists
from recpipe.data.storage import glob as _glob
from recpipe.data.storage import is_dir as _is_dir
from recpipe.data.storage import is_file as _is_file
from recpipe.errors import DataImportError

log = logging.getLogger(__name__)

_OPTIONAL = ("user_id", "event_type", "value", "session_id")
_SEP_ALIASES = {"\\t": "\t", "tab": "\t", "TAB": "\t"}


def resolve_mapping(columns: ColumnMapping) -> tuple[dict[str, str], set[str]]:
    """Canonical -> source column for mapped columns, and the set that must be present.

    ``item_id`` and ``timestamp`` are always required; optional columns only when
    mapped to a source column of another name (see the module docstring).
    """
    mapping: dict[str, str] = {}
    required = {"item_id", "timestamp"}
    for name in ("user_id", "item_id", "timestamp", "event_type", "value", "session_id"):
        source = getattr(columns, name)
        if source is None:
            continue
        mapping[name] = source
        if source != name:
            required.add(name)
    return mapping, required


def _null_hint(name: str) -> str:
    return f"; set data.columns.{name}: null if the source has no such column"


def _sep(options: DataParams) -> str:
    return _SEP_ALIASES.get(options.sep, options.sep)


def _timestamp_kind(unit: str | None) -> ColumnKind:
    if unit is None:
        return "str"
    return "int" if unit == "ns" else "float"


def _assemble(
    frame: pd.DataFrame,
    present: set[str],
    timestamp: pd.Series,
    options: DataParams,
    where: str,
) -> pd.DataFrame:
    """Canonical events from a frame whose columns carry canonical names."""
    if "event_type" in present:
        etype: pd.Series | str = event_types(frame["event_type"], options.event_type_map)
    else:
        etype = str(event_types(pd.Series([options.default_event_type]), options.event_type_map)[0])
    value: pd.Series | float = 1.0
    if "value" in present:
        value = to_float(frame["value"], column=options.columns.value or "value", where=where)
    return build_events(
        frame["user_id"] if "user_id" in present else None,
        frame["item_id"],
        timestamp,
        etype,
        value,
        frame["session_id"] if "session_id" in present else None,
    )


# ----------------------------------------------------------------------- CSV ---


def import_csv(path: Location, options: DataParams) -> CanonicalTables:
    """Import a delimited events table with ``options.columns`` (see the module docstring).

    Each file is read whole and canonicalized by :func:`csv_chunk_events` (the
    chunked import, :func:`iter_csv_events`, runs the same function on each batch).
    """
    what = "csv"
    files = _csv_files(location(path, "data.path"))
    mapping, _ = resolve_mapping(options.columns)
    cols = _csv_cols(options)
    parts = []
    for file in files:
        raw = read_delimited(file, cols, sep=_sep(options), what=what)
        _log_absent(raw, mapping, what, file)
        parts.append(csv_chunk_events(raw, options, where=f"{what} {file}"))
        log.info("%s: %d events from %s", what, len(raw), file)
    events = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    items, item_files = items_table(options)
    return CanonicalTables(
        events=events, items=items, source=what, input_files=[*files, *item_files]
    )


def csv_input_files(path: Location) -> list[Location]:
    """The delimited files a ``csv`` source at ``path`` reads (a file, or a folder's
    ``*.csv``); URLs for a URL ``path``."""
    return _csv_files(location(path, "data.path"))


def iter_csv_events(path: Location, options: DataParams, batch_rows: int) -> Iterator[pd.DataFrame]:
    """Canonical events of a ``csv`` source, streamed in frames of at most ``batch_rows`` rows.

    The chunked counterpart of :func:`import_csv`: the same files in the same order,
    each read as a stream (:func:`~recpipe.data._io.iter_delimited`) and every batch
    canonicalized by :func:`csv_chunk_events`, so the concatenated frames equal
    ``import_csv(path, options).events``. Errors are those of :func:`import_csv`; a bad
    timestamp or value is reported with its file row as there, counted within its batch
    (the message names the batch's rows).
    """
    what = "csv"
    mapping, _ = resolve_mapping(options.columns)
    cols = _csv_cols(options)
    for file in _csv_files(location(path, "data.path")):
        n = 0
        for raw in iter_delimited(file, cols, sep=_sep(options), what=what, batch_rows=batch_rows):
            if n == 0:
                _log_absent(raw, mapping, what, file)
            start = int(raw.index[0])
            where = f"{what} {file} (data rows {start}-{start + len(raw) - 1})"
            yield csv_chunk_events(raw, options, where=where)
            n += len(raw)
        log.info("%s: %d events from %s", what, n, file)


def csv_chunk_events(raw: pd.DataFrame, options: DataParams, *, where: str) -> pd.DataFrame:
    """Canonical events of one chunk of a delimited file read with the ``csv`` columns.

    ``raw`` is a frame of :func:`~recpipe.data._io.read_delimited` (a whole file) or of
    :func:`~recpipe.data._io.iter_delimited` (a batch): source columns, absent optional
    ones listed in ``raw.attrs["absent"]``, index = the file's data row (errors name it).
    Row-local: the events of a file are the concatenation of its chunks' events.
    """
    mapping, _ = resolve_mapping(options.columns)
    absent = set(raw.attrs.get("absent", ()))
    present = {name for name, src in mapping.items() if src not in absent}
    frame = pd.DataFrame({name: raw[mapping[name]] for name in present})
    ts = timestamps(
        frame["timestamp"], options.timestamp_unit, column=mapping["timestamp"], where=where
    )
    return _assemble(frame, present, ts, options, where)


def _csv_cols(options: DataParams) -> list[Col]:
    """The columns a ``csv`` file is read with: one per distinct mapped source column."""
    mapping, required = resolve_mapping(options.columns)
    kinds: dict[str, ColumnKind] = {
        "user_id": "id",
        "item_id": "id",
        "session_id": "id",
        "event_type": "str",
        "value": "float",
        "timestamp": _timestamp_kind(options.timestamp_unit),
    }
    # one Col per distinct source column (two canonical columns may share one)
    cols: dict[str, Col] = {}
    for name, src in mapping.items():
        hint = "" if name in ("item_id", "timestamp") else f" (mapped to {name}){_null_hint(name)}"
        if src not in cols:
            cols[src] = Col(src, kinds[name], required=name in required, hint=hint)
        elif name in required and not cols[src].required:
            cols[src] = Col(src, cols[src].kind, required=True, hint=hint)
    return list(cols.values())


def _log_absent(raw: pd.DataFrame, mapping: dict[str, str], what: str, file: Location) -> None:
    absent = set(raw.attrs.get("absent", ()))
    present = {name for name, src in mapping.items() if src not in absent}
    for name in sorted(set(mapping) - present):
        log.info(
            "%s: %s has no column %r for %s; using the default",
            what,
            file,
            mapping[name],
            name,
        )


def _csv_files(path: Location) -> list[Location]:
    if _is_file(path):
        return [path]
    if _is_dir(path):
        files = _glob(path, "*.csv")
        if not files:
            raise DataImportError(
                f"csv: no *.csv file in folder {str(path)!r}; expected a delimited events "
                "file (or a folder of *.csv part files)"
            )
        return files
    raise DataImportError(
        f"csv: {str(path)!r} does not exist; expected a delimited events file "
        "(or a folder of *.csv part files)"
    )


# ------------------------------------------------------------------- Parquet ---


def _open_dataset(path: Location, what: str) -> pads.Dataset:
    if not _exists(path):
        raise DataImportError(
            f"{what}: {str(path)!r} does not exist; expected a Parquet file or a folder of them"
        )
    where, fs = arrow_path(path)
    try:
        return pads.dataset(where if fs is not None else path, format="parquet", filesystem=fs)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataImportError(
            f"{what}: {str(path)!r} is not readable as Parquet ({exc}); expected a Parquet "
            "file or a folder of Parquet files"
        ) from None


def _dataset_files(dataset: pads.Dataset, path: Location) -> list[Location]:
    """The files of ``dataset`` (opened at ``path``), sorted: URLs for a URL ``path``."""
    if not is_url(path):
        return sorted(Path(f) for f in dataset.files)
    fs, root = filesystem(str(path))
    return sorted(url_under(str(path), root, f, fs) for f in dataset.files)


def _arrow_to_series(column: pa.ChunkedArray) -> pd.Series:
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_integer(column.type) or pa.types.is_large_string(column.type):
        column = column.cast(pa.string())
    if pa.types.is_string(column.type):
        return column.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)
    return column.to_pandas()


def _parquet_timestamps(
    column: pa.ChunkedArray, options: DataParams, name: str, where: str, offset: int = 0
) -> pd.Series:
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        series = pd.Series(column.to_pandas())
        if pa.types.is_date(column.type):
            series = pd.to_datetime(series)
        if series.dt.tz is None:
            series = series.dt.tz_localize("UTC")
        series.index = pd.RangeIndex(offset, offset + len(series))  # warnings name the row
        # a time beyond 1677..2262 becomes null (a bad row for validation), with a warning
        return to_nanoseconds(series.dt.tz_convert("UTC"), column=name, where=where)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        values = pd.Series(column.to_pandas())
    else:
        values = _arrow_to_series(column)
    values.index = pd.RangeIndex(offset, offset + len(values))  # errors name the row
    return timestamps(values, options.timestamp_unit, column=name, where=where)


def _parquet_source(
    path: Location, options: DataParams, what: str
) -> tuple[pads.Dataset, dict[str, str], set[str]]:
    """The dataset, the column mapping and the mapped columns present (or a clear error)."""
    dataset = _open_dataset(path, what)
    mapping, required = resolve_mapping(options.columns)
    found = list(dataset.schema.names)
    present = {name for name, src in mapping.items() if src in found}
    for name in sorted(required - present):
        raise DataImportError(
            f"{what}: {str(path)!r} lacks column {mapping[name]!r} (mapped to {name}); "
            f"columns found: {found}"
            + ("" if name in ("item_id", "timestamp") else _null_hint(name))
        )
    return dataset, mapping, present


def parquet_chunk_events(
    table: pa.Table, options: DataParams, *, where: str, offset: int = 0
) -> pd.DataFrame:
    """Canonical events of one chunk (or all) of a Parquet events table.

    ``table`` holds the mapped source columns that are present; ``offset`` is the
    dataset row of its first row (errors name rows by it). Row-local: the events of a
    dataset are the concatenation of its chunks' events.
    """
    mapping, _ = resolve_mapping(options.columns)
    names = set(table.schema.names)
    present = {name for name, src in mapping.items() if src in names}
    ts = _parquet_timestamps(
        table.column(mapping["timestamp"]), options, mapping["timestamp"], where, offset
    )
    index = pd.RangeIndex(offset, offset + table.num_rows)
    frame = pd.DataFrame(
        {name: _arrow_to_series(table.column(mapping[name])).set_axis(index) for name in present},
        index=index,
    )
    return _assemble(frame, present, ts, options, where)


def import_parquet(path: Location, options: DataParams) -> CanonicalTables:
    """Import a Parquet events table with ``options.columns`` (see the module docstring).

    The table is read whole and canonicalized by :func:`parquet_chunk_events` (the
    chunked import, :func:`iter_parquet_events`, runs the same function on each batch).
    """
    what = "parquet"
    path = location(path, "data.path")
    dataset, mapping, present = _parquet_source(path, options, what)
    try:
        table = dataset.to_table(columns=sorted({mapping[n] for n in present}))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataImportError(f"{what}: cannot read {str(path)!r}: {exc}") from None
    if table.num_rows == 0:
        raise DataImportError(f"{what}: {str(path)!r} has no rows")
    events = parquet_chunk_events(table, options, where=f"{what} {path}")
    files = _dataset_files(dataset, path)
    log.info("%s: %d events from %s", what, len(events), path)
    items, item_files = items_table(options)
    return CanonicalTables(
        events=events, items=items, source=what, input_files=[*files, *item_files]
    )


def parquet_input_files(path: Location) -> list[Location]:
    """The Parquet files a ``parquet`` source at ``path`` reads (sorted; URLs for a URL)."""
    path = location(path, "data.path")
    return _dataset_files(_open_dataset(path, "parquet"), path)


def iter_parquet_events(
    path: Location, options: DataParams, batch_rows: int
) -> Iterator[pd.DataFrame]:
    """Canonical events of a ``parquet`` source, streamed in frames of at most ``batch_rows``.

    The chunked counterpart of :func:`import_parquet`: the dataset's record batches in
    order, each canonicalized by :func:`parquet_chunk_events`, so the concatenated
    frames equal ``import_parquet(path, options).events``.
    """
    what = "parquet"
    path = location(path, "data.path")
    dataset, mapping, present = _parquet_source(path, options, what)
    offset = 0
    # no read-ahead: the scanner's default (16 batches, 4 files) holds up to 16 batches,
    # most of a file of 1M-row row groups, while one frame at a time is canonicalized
    batches = dataset.to_batches(
        columns=sorted({mapping[n] for n in present}),
        batch_size=batch_rows,
        batch_readahead=0,
        fragment_readahead=0,
    )
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataImportError(f"{what}: cannot read {str(path)!r}: {exc}") from None
        if batch.num_rows == 0:
            continue
        where = f"{what} {path} (rows {offset}-{offset + batch.num_rows - 1})"
        yield parquet_chunk_events(
            pa.Table.from_batches([batch]), options, where=where, offset=offset
        )
        offset += batch.num_rows
    if offset == 0:
        raise DataImportError(f"{what}: {str(path)!r} has no rows")
    log.info("%s: %d events from %s", what, offset, path)


# --------------------------------------------------------------------- items ---


def items_table(options: DataParams) -> tuple[pd.DataFrame, list[Location]]:
    """The optional items table of ``options.items_path`` (read whole: it is small), and
    the files read."""
    if options.items_path is None:
        return empty_items(), []
    path = location(options.items_path, "data.items_path")
    item_col = options.columns.item_id
    if Path(name_of(path)).suffix.lower() in (".parquet", ".pq"):
        dataset = _open_dataset(path, "items")
        names = list(dataset.schema.names)
        key = "item_id" if "item_id" in names else item_col
        if key not in names:
            raise DataImportError(
                f"items: {str(path)!r} lacks column 'item_id' (or {item_col!r}); "
                f"columns found: {names}"
            )
        table = dataset.to_table()
        items = pd.DataFrame({n: _arrow_to_series(table.column(n)) for n in names})
    else:
        spellings = () if item_col == "item_id" else (item_col,)
        items = read_delimited(
            path,
            [Col("item_id", "id", aliases=spellings)],
            sep=_sep(options),
            what="items",
            allow_no_rows=True,
            extra_columns=True,
        )
        key = "item_id"
    items = items.rename(columns={key: "item_id"})
    if "categories" in items and pd.api.types.is_string_dtype(items["categories"]):
        items["categories"] = split_list(items["categories"], "|")
    items.attrs.clear()
    log.info("items: %d rows from %s", len(items), path)
    return items, [path]
