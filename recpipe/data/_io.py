"""Strict, fast readers shared by the raw-data importers.

Every importer reads its delimited text files through :func:`read_delimited`:
pyarrow's multi-threaded CSV reader on the fast path, and -- only when that
fails -- a slower pass over the file that finds *where* it failed, so that the
:class:`~recpipe.errors.DataImportError` names the file, the line and what was
expected (a wrong number of fields, a truncated last line, a non-integer id,
UTF-16 or binary content, ...). Content problems (null ids, unknown event types,
duplicates) are never raised here: they are kept for validation.

Nothing in this module is public API; the importers in ``recpipe.data.*`` are.
"""

from __future__ import annotations

import contextlib
import csv
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recpipe.data.schema import make_events, normalise_event_types, to_utc
from recpipe.data.storage import Location, is_url, open_file
from recpipe.data.storage import exists as _exists
from recpipe.data.storage import is_file as _is_file
from recpipe.errors import DataImportError

log = logging.getLogger(__name__)

#: Cell spellings read as missing values (``NA`` is DIGINETICA's anonymous user).
NULL_VALUES: list[str] = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]

#: How many bytes of a file are sniffed for encoding problems.
SNIFF_BYTES = 1 << 16

#: What each column kind is parsed as by pyarrow.
ColumnKind = Literal["int_id", "id", "int", "float", "str"]

_ARROW_TYPES: dict[str, pa.DataType] = {
    "int_id": pa.int64(),
    "id": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "str": pa.string(),
}
_EXPECTED: dict[str, str] = {
    "int_id": "integer ids",
    "int": "integers",
    "float": "numbers",
}
_INT_PATTERN = r"[+-]?\d+"


def _types_mapper(dtype: pa.DataType) -> object | None:
    if dtype in (pa.string(), pa.large_string()):
        return pd.StringDtype("pyarrow")
    if dtype == pa.int64():
        return pd.Int64Dtype()
    return None


@dataclass(frozen=True)
class Col:
    """One column an importer reads.

    Parameters
    ----------
    name:
        Column name in the returned frame (and the header spelling looked for first).
    kind:
        ``int_id`` (integer-valued id, returned as string), ``id`` (any string id),
        ``int`` (nullable ``Int64``), ``float`` (``float64``) or ``str`` (string).
    aliases:
        Other accepted header spellings; matching is case-insensitive.
    required:
        A missing required column raises; a missing optional one comes back all-null.
    hint:
        Appended to the error message when the (required) column is missing.
    """

    name: str
    kind: ColumnKind = "str"
    aliases: tuple[str, ...] = ()
    required: bool = True
    hint: str = ""

    def spellings(self) -> set[str]:
        return {s.lower() for s in (self.name, *self.aliases)}


# --------------------------------------------------------------------- files ---


def require_dir(path: Path, kind: str, expected: str) -> Path:
    """``path`` as an existing folder, or a :class:`DataImportError` naming what belongs there."""
    if not path.exists():
        raise DataImportError(
            f"{kind}: {str(path)!r} does not exist; expected a folder with {expected}"
        )
    if not path.is_dir():
        raise DataImportError(
            f"{kind}: {str(path)!r} is not a folder; expected a folder with {expected}"
        )
    return path


def find_file(folder: Path, names: Sequence[str]) -> Path | None:
    """The first of ``names`` present in ``folder`` (names may be glob patterns)."""
    for name in names:
        if any(ch in name for ch in "*?["):
            hits = sorted(p for p in folder.glob(name) if p.is_file())
            if hits:
                return hits[0]
        elif (folder / name).is_file():
            return folder / name
    return None


def require_file(folder: Path, names: Sequence[str], kind: str, expected: str) -> Path:
    """The first of ``names`` in ``folder``, or an error listing what was looked for."""
    found = find_file(folder, names)
    if found is None:
        present = sorted(p.name for p in folder.iterdir())[:20]
        raise DataImportError(
            f"{kind}: no {' or '.join(repr(n) for n in names)} in folder {str(folder)!r}; "
            f"expected {expected}; the folder holds {present}"
        )
    return found


def check_text_file(path: Location, encoding: str = "utf-8") -> None:
    """Raise when ``path`` is missing, empty, UTF-16/binary, or not ``encoding`` text.

    ``path``: a local path or an fsspec URL. Only the first :data:`SNIFF_BYTES` are
    checked here; a bad byte further on is reported by the reader itself.
    """
    if not _exists(path):
        raise DataImportError(f"file {str(path)!r} does not exist")
    if not _is_file(path):
        raise DataImportError(f"{str(path)!r} is not a file")
    with open_file(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if not head.strip():
        raise DataImportError(
            f"file {str(path)!r} is empty; expected delimited text with data rows"
        )
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataImportError(
            f"file {str(path)!r} is UTF-16 encoded (it starts with a UTF-16 byte-order mark); "
            f"expected {encoding} text -- re-save it as UTF-8"
        )
    if head.startswith((b"PK\x03\x04", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"PAR1")):
        raise DataImportError(
            f"file {str(path)!r} is a compressed archive or binary (Parquet/zip/gzip) file; "
            f"expected plain {encoding} delimited text -- extract it first"
        )
    nul = head.find(b"\x00")
    if nul >= 0:
        raise DataImportError(
            f"file {str(path)!r} contains NUL bytes (first at byte {nul}): it is binary or "
            f"UTF-16 text; expected {encoding} delimited text"
        )
    if encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig"):
        _check_utf8(path, head, full=len(head) < SNIFF_BYTES)


def _check_utf8(path: Location, head: bytes, *, full: bool) -> None:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut by the sniff window is not an error
        if not full and exc.start >= len(head) - 3 and exc.reason == "unexpected end of data":
            return
        line = head.count(b"\n", 0, exc.start) + 1
        bad = head[exc.start : exc.start + 4]
        raise DataImportError(
            f"file {str(path)!r} is not valid UTF-8 (byte {bad[:1]!r} at offset {exc.start}, "
            f"line {line}); expected UTF-8 text -- convert the file (e.g. from latin-1) first"
        ) from None


def _header_fields(path: Location, sep: str, encoding: str, quoting: bool) -> list[str]:
    with open_file(path, "rt", encoding=encoding, newline="", errors="replace") as fh:
        for line in fh:
            if line.strip("\r\n"):
                break
        else:  # pragma: no cover - check_text_file rejects blank files first
            raise DataImportError(f"file {str(path)!r} is empty; expected a header row")
    line = line.lstrip("\ufeff").rstrip("\r\n")
    reader = csv.reader(
        [line], delimiter=sep, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE
    )
    return [f.strip() for f in next(reader)]


# ------------------------------------------------------------------- reading ---


@dataclass
class _Plan:
    """Where each wanted column is in the file (source name, or absent)."""

    source: dict[str, str] = field(default_factory=dict)  # our name -> name in file
    absent: list[Col] = field(default_factory=list)
    file_columns: list[str] = field(default_factory=list)
    header_lines: int = 1


def _plan(
    path: Location,
    cols: Sequence[Col],
    *,
    sep: str,
    encoding: str,
    quoting: bool,
    names: Sequence[str] | None,
    what: str,
) -> _Plan:
    plan = _Plan()
    if names is not None:
        plan.file_columns = list(names)
        plan.header_lines = 0
    else:
        plan.file_columns = _header_fields(path, sep, encoding, quoting)
    lower = {c.lower(): c for c in plan.file_columns}
    for col in cols:
        order = [col.name.lower(), *sorted(col.spellings() - {col.name.lower()})]
        hit = next((lower[s] for s in order if s in lower), None)
        if hit is not None:
            plan.source[col.name] = hit
        elif col.required:
            spell = sorted({col.name, *col.aliases})
            sep_name = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}.get(
                sep, repr(sep)
            )
            hint = ""
            if len(plan.file_columns) == 1 and sep not in plan.file_columns[0]:
                hint = f" (is the file {sep_name}-separated? the header has a single field)"
            raise DataImportError(
                f"{what}: file {str(path)!r} lacks column {col.name!r}"
                + (f" (accepted spellings: {spell})" if len(spell) > 1 else "")
                + f"; columns found: {plan.file_columns}{hint}{col.hint}"
            )
        else:
            plan.absent.append(col)
    return plan


def read_delimited(
    path: Location,
    cols: Sequence[Col],
    *,
    sep: str = ",",
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    quoting: bool = True,
    what: str = "import",
    allow_no_rows: bool = False,
    extra_columns: bool = False,
) -> pd.DataFrame:
    """Read a delimited text file strictly and fast.

    Parameters
    ----------
    path:
        The file: a local path or an fsspec URL (:mod:`recpipe.data.storage`).
    cols:
        The columns wanted (see :class:`Col`); the frame has them under ``Col.name``.
    sep:
        One-character field separator.
    names:
        All field names of a file *without* a header row; ``None`` = the first
        non-empty line is the header.
    encoding:
        Text encoding (``latin-1`` for MovieLens ``u.item``).
    quoting:
        Whether ``"`` quotes fields (off for formats that never quote).
    what:
        A short label for messages (the importer kind).
    allow_no_rows:
        Accept a file with a header but no data rows (optional side tables).
    extra_columns:
        Also return every other column of the file, with pyarrow's inferred types.

    Returns
    -------
    pandas.DataFrame
        The columns of ``cols`` (absent optional ones all-null, and listed in
        ``frame.attrs["absent"]``), then any extra columns.

    Raises
    ------
    DataImportError
        Missing or empty file, UTF-16/binary/undecodable content, a missing
        required column, a line with the wrong number of fields (naming the line),
        or a value that is not of its column's kind (naming lines and values).
    """
    if len(sep) != 1:
        raise DataImportError(f"{what}: separator {sep!r} must be a single character")
    check_text_file(path, encoding)
    plan = _plan(path, cols, sep=sep, encoding=encoding, quoting=quoting, names=names, what=what)
    by_name = {c.name: c for c in cols}
    types = {plan.source[n]: _ARROW_TYPES[by_name[n].kind] for n in plan.source}
    include = list(dict.fromkeys(plan.source.values()))
    if extra_columns:
        include += [c for c in plan.file_columns if c not in include]
    table = _read_arrow(
        path,
        plan,
        types,
        include,
        sep=sep,
        encoding=encoding,
        quoting=quoting,
        what=what,
        cols=cols,
    )
    if table.num_rows == 0 and not allow_no_rows:
        _raise_no_rows(path, plan, what)
    frame = _to_frame(table, plan, cols, include if extra_columns else None)
    log.debug("read %d rows x %d columns from %s", len(frame), frame.shape[1], path)
    return frame


def iter_delimited(
    path: Location,
    cols: Sequence[Col],
    *,
    sep: str = ",",
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    quoting: bool = True,
    what: str = "import",
    batch_rows: int = 1_000_000,
) -> Iterator[pd.DataFrame]:
    """:func:`read_delimited` in frames of ``batch_rows`` rows, read as a stream.

    The file is never held in memory as a whole: pyarrow's streaming CSV reader
    parses it block by block. Each frame has the columns of ``cols`` (absent optional
    ones all-null, listed in ``frame.attrs["absent"]``) and an index that continues the
    previous frame's, so index label ``i`` is the file's ``i``-th data row (0-based),
    as in the frame :func:`read_delimited` returns.

    Raises
    ------
    DataImportError
        The errors of :func:`read_delimited`, with the same messages: a bad line or
        value is found (and named, with its line number) by a pass over the whole
        file, whichever batch the stream stopped at. Rows before the failing batch
        have been yielded by then.
    """
    if len(sep) != 1:
        raise DataImportError(f"{what}: separator {sep!r} must be a single character")
    if batch_rows < 1:
        raise DataImportError(f"{what}: batch_rows must be at least 1, got {batch_rows}")
    check_text_file(path, encoding)
    plan = _plan(path, cols, sep=sep, encoding=encoding, quoting=quoting, names=names, what=what)
    by_name = {c.name: c for c in cols}
    types = {plan.source[n]: _ARROW_TYPES[by_name[n].kind] for n in plan.source}
    include = list(dict.fromkeys(plan.source.values()))
    read_opts = _read_options(plan, encoding)
    parse_opts = _parse_options(sep, quoting)
    done = 0  # rows yielded so far (a retry skips them)
    retried = False
    while True:
        try:
            with _arrow_input(path) as source:
                reader = pacsv.open_csv(
                    source, read_opts, parse_opts, _convert_options(types, include)
                )
                skip = done
                for table in _rebatch(reader, batch_rows):
                    if skip >= table.num_rows:
                        skip -= table.num_rows
                        continue
                    if skip:
                        table, skip = table.slice(skip), 0
                    frame = _to_frame(table, plan, cols, None)
                    frame.index = pd.RangeIndex(done, done + len(frame))
                    done += len(frame)
                    yield frame
            break
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            message = str(exc)
        parse_opts = _diagnose(
            path,
            plan,
            include,
            message,
            read_opts=read_opts,
            parse_opts=parse_opts,
            sep=sep,
            encoding=encoding,
            quoting=quoting,
            what=what,
            cols=cols,
            can_retry=not retried,
        )
        retried = True
    if done == 0:
        _raise_no_rows(path, plan, what)


@contextlib.contextmanager
def _arrow_input(path: Location) -> Iterator[Any]:
    """What pyarrow's CSV readers read: a local path as it is, a URL's open fsspec file."""
    if not is_url(path):
        yield path
        return
    with open_file(path, "rb") as fh:
        yield fh


def _rebatch(reader: Iterable[pa.RecordBatch], batch_rows: int) -> Iterator[pa.Table]:
    """Tables of exactly ``batch_rows`` rows (the last one: the rest) from record batches."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in reader:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        rows += batch.num_rows
        if rows < batch_rows:
            continue
        table = pa.Table.from_batches(pending)
        start = 0
        while rows - start >= batch_rows:
            yield table.slice(start, batch_rows)
            start += batch_rows
        rest = table.slice(start)
        pending = rest.to_batches() if rest.num_rows else []
        rows = rest.num_rows
    if rows:
        yield pa.Table.from_batches(pending)


def _raise_no_rows(path: Location, plan: _Plan, what: str) -> None:
    raise DataImportError(
        f"{what}: file {str(path)!r} has no data rows"
        + (" (only a header)" if plan.header_lines else "")
    )


def _to_frame(
    table: pa.Table, plan: _Plan, cols: Sequence[Col], extra: list[str] | None
) -> pd.DataFrame:
    """The frame of one table read by the plan (``extra``: also every column listed)."""
    by_name = {c.name: c for c in cols}
    arrays: dict[str, pd.Series] = {}
    for name, src in plan.source.items():
        column = table.column(src)
        if by_name[name].kind == "int_id":
            column = pc.cast(column, pa.string())
        arrays[name] = column.to_pandas(types_mapper=_types_mapper)
    for col in plan.absent:
        arrays[col.name] = pa.nulls(table.num_rows, _ARROW_TYPES[col.kind]).to_pandas(
            types_mapper=_types_mapper
        )
        if col.kind == "int_id":
            arrays[col.name] = arrays[col.name].astype("string")
    if extra is not None:
        for src in extra:
            if src not in plan.source.values():
                arrays[src] = table.column(src).to_pandas(types_mapper=_types_mapper)
    frame = pd.DataFrame(arrays)
    frame.attrs["absent"] = [c.name for c in plan.absent]
    return frame


def _read_options(plan: _Plan, encoding: str) -> pacsv.ReadOptions:
    return pacsv.ReadOptions(
        encoding=encoding,
        column_names=plan.file_columns if plan.header_lines == 0 else None,
        block_size=1 << 24,
    )


def _parse_options(sep: str, quoting: bool, newlines: bool = False) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(
        delimiter=sep, quote_char='"' if quoting else False, newlines_in_values=newlines
    )


def _convert_options(
    column_types: dict[str, pa.DataType], include: list[str]
) -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(
        column_types=column_types,
        include_columns=include,
        null_values=NULL_VALUES,
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )


def _read_arrow(
    path: Location,
    plan: _Plan,
    types: dict[str, pa.DataType],
    include: list[str],
    *,
    sep: str,
    encoding: str,
    quoting: bool,
    what: str,
    cols: Sequence[Col],
) -> pa.Table:
    read_opts = _read_options(plan, encoding)
    parse_opts = _parse_options(sep, quoting)
    for can_retry in (True, False):
        try:
            with _arrow_input(path) as source:
                return pacsv.read_csv(
                    source, read_opts, parse_opts, _convert_options(types, include)
                )
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            message = str(exc)
        # ---- slow path: find out where and why, then raise a helpful error ----
        parse_opts = _diagnose(
            path,
            plan,
            include,
            message,
            read_opts=read_opts,
            parse_opts=parse_opts,
            sep=sep,
            encoding=encoding,
            quoting=quoting,
            what=what,
            cols=cols,
            can_retry=can_retry,
        )
    raise AssertionError("unreachable: the second _diagnose raises")  # pragma: no cover


def _diagnose(
    path: Location,
    plan: _Plan,
    include: list[str],
    message: str,
    *,
    read_opts: pacsv.ReadOptions,
    parse_opts: pacsv.ParseOptions,
    sep: str,
    encoding: str,
    quoting: bool,
    what: str,
    cols: Sequence[Col],
    can_retry: bool,
) -> pacsv.ParseOptions:
    """Raise the located error for a failed read, or return parse options to retry with.

    A parse error with every line of the right field count (and quoting on) means
    quoted fields hold line breaks: the caller retries once with the options returned.
    Conversion errors are located by a streamed pass over the file read as text.
    """
    if "UTF8" in message or "utf-8" in message.lower() or "codec" in message:
        raise DataImportError(
            f"{what}: file {str(path)!r} is not valid {encoding} text ({message.strip()}); "
            f"expected {encoding} -- convert the file first"
        )
    if can_retry and ("parse error" in message.lower() or "columns" in message):
        _raise_field_count(path, plan, sep=sep, encoding=encoding, quoting=quoting, what=what)
        if quoting:  # every row has the right fields: quoted fields hold line breaks
            return _parse_options(sep, quoting, newlines=True)
    if "conversion error" in message.lower():
        as_text = dict.fromkeys(include, pa.string())
        try:
            with _arrow_input(path) as source:
                reader = pacsv.open_csv(
                    source, read_opts, parse_opts, _convert_options(as_text, include)
                )
                _raise_bad_values(path, plan, reader, cols, encoding=encoding, what=what)
        except pa.ArrowInvalid:  # pragma: no cover - text reading cannot fail on conversion
            pass
    raise DataImportError(f"{what}: cannot read {str(path)!r}: {message.strip()}")


def _raise_field_count(
    path: Location, plan: _Plan, *, sep: str, encoding: str, quoting: bool, what: str
) -> None:
    expected = len(plan.file_columns)
    bad: list[tuple[int, int, str]] = []
    n_bad = 0
    last_line = 0
    csv.field_size_limit(1 << 30)
    with open_file(path, "rt", encoding=encoding, newline="", errors="replace") as fh:
        reader = csv.reader(
            fh, delimiter=sep, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE
        )
        for row in reader:
            last_line = reader.line_num
            if not row:
                continue
            if len(row) != expected:
                n_bad += 1
                if len(bad) < 3:
                    bad.append((reader.line_num, len(row), sep.join(row)))
    if not bad:
        return
    sep_name = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}.get(sep, repr(sep))
    line, got, text = bad[0]
    truncated = " -- the last line looks truncated" if n_bad == 1 and line == last_line else ""
    others = ""
    if n_bad > 1:
        others = f"; {n_bad} bad line(s) in all, e.g. " + ", ".join(
            f"line {ln} ({n} fields)" for ln, n, _ in bad[1:]
        )
    raise DataImportError(
        f"{what}: file {str(path)!r} line {line} has {got} field(s), expected {expected} "
        f"{sep_name}-separated fields ({plan.file_columns}): {text[:120]!r}{truncated}{others}"
    )


def physical_lines(
    path: Location, rows: Iterable[int], header_lines: int, encoding: str
) -> dict[int, int]:
    """Map 0-based data-row indices to 1-based file line numbers (blank lines skipped)."""
    wanted = sorted(set(rows))
    out: dict[int, int] = {}
    if not wanted:
        return out
    target = iter(wanted)
    nxt = next(target)
    row = -header_lines
    with open_file(path, "rt", encoding=encoding, newline="", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip("\r\n"):
                continue
            if row == nxt:
                out[nxt] = lineno
                nxt = next(target, None)
                if nxt is None:
                    break
            row += 1
    return out


def _raise_bad_values(
    path: Location,
    plan: _Plan,
    batches: Iterable[pa.RecordBatch],
    cols: Sequence[Col],
    *,
    encoding: str,
    what: str,
) -> None:
    """Raise for the first column (in ``cols`` order) holding values not of its kind.

    ``batches`` is the whole file read as text, in order (a stream): counts and the
    first five examples are over the whole file.
    """
    checked = [col for col in cols if col.kind in _EXPECTED and col.name in plan.source]
    counts = {col.name: 0 for col in checked}
    examples: dict[str, list[tuple[int, str]]] = {col.name: [] for col in checked}
    offset = 0
    for batch in batches:
        for col in checked:
            text = batch.column(plan.source[col.name]).to_pandas(types_mapper=_types_mapper)
            bad = _bad_values(text, col.kind)
            n_bad = int(bad.sum())
            if not n_bad:
                continue
            counts[col.name] += n_bad
            room = 5 - len(examples[col.name])
            for r in np.flatnonzero(bad)[:room]:
                examples[col.name].append((offset + int(r), text.iloc[int(r)]))
        offset += batch.num_rows
    for col in checked:
        if not counts[col.name]:
            continue
        src = plan.source[col.name]
        rows = [r for r, _ in examples[col.name]]
        lines = physical_lines(path, rows, plan.header_lines, encoding)
        listed = ", ".join(
            f"line {lines.get(r, r + 1 + plan.header_lines)}: {v!r}" for r, v in examples[col.name]
        )
        raise DataImportError(
            f"{what}: file {str(path)!r} column {src!r} has {counts[col.name]} value(s) that "
            f"are not {_EXPECTED[col.kind]}; expected {_EXPECTED[col.kind]}; examples: {listed}"
        )


def _bad_values(text: pd.Series, kind: ColumnKind) -> np.ndarray:
    """Which present values of a text column are not of ``kind`` (``int*`` or ``float``)."""
    present = text.notna()
    trimmed = (text == text.str.strip()).fillna(True).astype(bool)
    if kind == "float":
        ok = pd.to_numeric(text, errors="coerce").notna() & trimmed
    else:
        ok = text.str.fullmatch(_INT_PATTERN).fillna(False).astype(bool)
        # int64 overflow: digits, but too many of them
        ok &= text.str.len().fillna(0).astype(int) <= 19
    return (present & ~ok).to_numpy(dtype=bool)


# --------------------------------------------------------------- conversions ---


def null_strings(n: int) -> pd.Series:
    """An all-null string column of length ``n`` (cheap: no Python objects)."""
    return pa.nulls(n, pa.string()).to_pandas(types_mapper=_types_mapper)


def constant(value: str | float, n: int) -> pd.Series:
    """A column of ``n`` copies of ``value`` (string or float), built without Python lists."""
    if isinstance(value, str):
        return pa.repeat(pa.scalar(value, pa.string()), n).to_pandas(types_mapper=_types_mapper)
    return pd.Series(np.full(n, float(value), dtype="float64"))


def build_events(
    user_id: pd.Series | None,
    item_id: pd.Series,
    timestamp: pd.Series,
    event_type: pd.Series | str,
    value: pd.Series | float = 1.0,
    session_id: pd.Series | None = None,
) -> pd.DataFrame:
    """:func:`schema.make_events` with cheap broadcasting of scalars (and ``None`` = null ids)."""
    n = len(timestamp)

    def column(v: pd.Series | str | float | None) -> pd.Series:
        if isinstance(v, pd.Series):
            return v
        return null_strings(n) if v is None else constant(v, n)

    return make_events(
        column(user_id),
        item_id,
        timestamp,
        column(event_type),
        column(value),
        column(session_id),
    )


def epoch_to_utc(
    values: pd.Series, unit: str, *, column: str = "timestamp", where: str = ""
) -> pd.Series:
    """Epoch numbers in ``unit`` to UTC, exact to the microsecond for fractional seconds.

    Floats in seconds or milliseconds are rounded to whole microseconds first, so
    that ``1396860669.277`` becomes ``.277000`` rather than ``.276999950``. A time
    beyond 1677..2262 becomes null, with a warning prefixed by ``where``
    (:func:`schema.to_utc`).
    """
    raw = values
    if pd.api.types.is_float_dtype(values) and unit in ("s", "ms", "us"):
        factor = {"s": 1e6, "ms": 1e3, "us": 1.0}[unit]
        values = (values.astype("float64") * factor).round()
        unit = "us"
    return to_utc(values, unit, column=column, where=where, raw=raw)


def iso_to_utc(values: pd.Series, *, column: str = "timestamp", where: str = "") -> pd.Series:
    """ISO 8601 strings to UTC (naive times are UTC), like :func:`schema.to_utc` but fast.

    pyarrow's vectorised ISO parser handles the common cases (with a zone offset,
    or all naive); anything else falls back to :func:`schema.to_utc`, which
    accepts mixed formats and raises with counts and examples for bad values.
    """
    try:
        arr = pa.array(values.astype("string").array)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # pragma: no cover - defensive
        return to_utc(values, None, column=column, where=where)
    for tz in ("UTC", None):
        try:
            parsed = pc.cast(arr, pa.timestamp("ns", tz=tz))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        out = parsed.to_pandas()
        if tz is None:
            out = out.dt.tz_localize("UTC")
        # by position: ``values`` may have any index (a batch of a file, say)
        return pd.Series(out.array, index=values.index, name=values.name).astype(
            "datetime64[ns, UTC]"
        )
    return to_utc(values, None, column=column, where=where)


def timestamps(values: pd.Series, unit: str | None, *, column: str, where: str) -> pd.Series:
    """Epoch numbers (``unit``) or ISO strings (``unit=None``) to UTC with a located error."""
    try:
        if unit is None:
            if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
                raise DataImportError(
                    f"column {column!r} holds numbers but no timestamp unit is set; "
                    "expected ISO 8601 date-times (or set data.timestamp_unit to s/ms/us/ns)"
                )
            return iso_to_utc(values, column=column, where=where)
        return epoch_to_utc(values, unit, column=column, where=where)
    except DataImportError as exc:
        hint = ""
        if unit is None and pd.api.types.is_string_dtype(values):
            sample = values.dropna().head(20).astype("string")
            if len(sample) and sample.str.fullmatch(r"\s*\d+(\.\d+)?\s*").all():
                hint = " (the values look like epoch numbers: set data.timestamp_unit)"
        raise DataImportError(f"{where}: {exc}{hint}") from None


def event_types(raw: pd.Series, extra_aliases: dict[str, str] | None = None) -> pd.Series:
    """:func:`schema.normalise_event_types` applied to the distinct values only (fast).

    Unknown spellings are kept (lower-cased) for validation to report.
    """
    arr = pa.array(raw.astype("string").array)
    uniques = pc.unique(arr)
    mapped = normalise_event_types(uniques.to_pandas(types_mapper=_types_mapper), extra_aliases)
    index = pc.index_in(arr, value_set=uniques, skip_nulls=False)
    out = pa.array(mapped.array).take(index)
    # by position: ``raw`` may have any index (a batch of a file, say)
    return pd.Series(
        out.to_pandas(types_mapper=_types_mapper).array, index=raw.index, dtype="string"
    )


def to_float(values: pd.Series, *, column: str, where: str) -> pd.Series:
    """Numbers to ``float64``; a non-numeric value raises naming count and examples."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    out = pd.to_numeric(values, errors="coerce")
    bad = out.isna() & values.notna()
    if bad.any():
        examples = ", ".join(
            f"row {values.index[i]}: {values.iloc[i]!r}" for i in np.flatnonzero(bad.to_numpy())[:5]
        )
        raise DataImportError(
            f"{where}: column {column!r} has {int(bad.sum())} non-numeric value(s); "
            f"expected numbers; examples: {examples}"
        )
    return out.astype("float64")


def split_list(values: pd.Series, sep: str, *, empty: Sequence[str] = ()) -> list[list[str]]:
    """Split ``"A|B"`` strings into lists; nulls and ``empty`` markers become ``[]``."""
    skip = set(empty)
    out: list[list[str]] = []
    for v in values.tolist():
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) or v in skip:
            out.append([])
        else:
            out.append([p for p in str(v).split(sep) if p and p not in skip])
    return out


def read_text_lines(path: Path, encoding: str = "utf-8") -> list[str]:
    """Non-empty lines of a small text file (after the usual sniff)."""
    check_text_file(path, encoding)
    with open(path, encoding=encoding, errors="strict") as fh:
        return [line.rstrip("\r\n") for line in fh if line.strip()]
