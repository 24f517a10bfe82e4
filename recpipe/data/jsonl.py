"""``jsonl``: JSON-lines event logs, flat or one session a line (OTTO's format).

Each line is a JSON object. A line with a list field named ``data.jsonl_events``
(default ``events``) holds one session: every element of the list is an event, and the
line's other fields (e.g. the session id) are copied into each of its events; a line
without it is one event. The event fields are then mapped to canonical columns by
``data.columns`` exactly as for ``csv`` (:func:`recpipe.data.generic.resolve_mapping`),
with ``data.timestamp_unit`` for epoch numbers.

OTTO (Kaggle's "OTTO - Multi-Objective Recommender System", 2022) writes
``{"session": 12899779, "events": [{"aid": 59625, "ts": 1661724000278, "type":
"clicks"}, ...]}``; read it with::

    recpipe run --set data.source=jsonl --set data.path=otto/train.jsonl \\
        --set data.columns.session_id=session --set data.columns.item_id=aid \\
        --set data.columns.timestamp=ts --set data.columns.event_type=type \\
        --set data.columns.user_id=null --set data.columns.value=null \\
        --set data.timestamp_unit=ms

(``clicks``, ``carts`` and ``orders`` are known event type spellings.) ``path`` is a
file, or a folder of ``*.jsonl`` / ``*.json`` files read in name order.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from recpipe.config import DataParams
from recpipe.data.generic import _assemble, resolve_mapping
from recpipe.data.schema import CanonicalTables
from recpipe.errors import DataImportError

log = logging.getLogger(__name__)

__all__ = ["import_jsonl"]


def import_jsonl(path: Path, options: DataParams) -> CanonicalTables:
    """Import a JSON-lines event log (see the module docstring).

    Raises
    ------
    DataImportError
        No such file or no ``*.jsonl`` in the folder, a line that is not a JSON object,
        or a mapped field that no event has (the message names the mapping to set).
    """
    from recpipe.data._io import timestamps

    files = _files(Path(path))
    mapping, required = resolve_mapping(options.columns)
    parts = []
    for file in files:
        raw = _read(file, options.jsonl_events)
        where = f"jsonl {file}"
        missing = sorted(name for name in required if mapping[name] not in raw.columns)
        if missing:
            fields = sorted(str(c) for c in raw.columns)
            raise DataImportError(
                f"{where}: no event field {[mapping[n] for n in missing]} for {missing}; the "
                f"events have {fields}: map them with data.columns.<column>=FIELD (e.g. "
                "OTTO: data.columns.item_id=aid, timestamp=ts, event_type=type, "
                "session_id=session), or set an optional one to null"
            )
        present = {name for name, src in mapping.items() if src in raw.columns}
        frame = pd.DataFrame({name: raw[mapping[name]] for name in present})
        for name in ("user_id", "item_id", "session_id"):
            if name in frame:  # ids as written: 59625 -> "59625", never 59625.0
                frame[name] = _ids(frame[name])
        ts = timestamps(
            frame["timestamp"], options.timestamp_unit, column=mapping["timestamp"], where=where
        )
        parts.append(_assemble(frame, present, ts, options, where))
        log.info("jsonl: %d events from %s", len(frame), file)
    events = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return CanonicalTables(events=events, source="jsonl", input_files=files)


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".json"))
        if files:
            return files
        raise DataImportError(
            f"jsonl: no *.jsonl or *.json file in folder {str(path)!r}; expected JSON lines"
        )
    raise DataImportError(f"jsonl: {str(path)!r} does not exist; expected a JSON-lines file")


def _read(file: Path, events_field: str) -> pd.DataFrame:
    """The file's events, one row each, with the session lines' fields copied in."""
    rows: list[dict] = []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataImportError(
                    f"jsonl {file}: line {number} is not valid JSON ({exc.msg}); expected one "
                    "JSON object a line"
                ) from None
            if not isinstance(record, dict):
                raise DataImportError(
                    f"jsonl {file}: line {number} holds a {type(record).__name__}, expected "
                    "a JSON object"
                )
            events = record.pop(events_field, None)
            if events is None:
                rows.append(record)
                continue
            if not isinstance(events, list):
                raise DataImportError(
                    f"jsonl {file}: line {number}: {events_field!r} is a "
                    f"{type(events).__name__}, expected a list of event objects"
                )
            rows.extend({**record, **event} for event in events if isinstance(event, dict))
    if not rows:
        raise DataImportError(f"jsonl {file}: no event in the file")
    return pd.DataFrame.from_records(rows)


def _ids(values: pd.Series) -> pd.Series:
    """Id values as strings (integers without a decimal point; missing stay missing)."""
    if pd.api.types.is_float_dtype(values) and values.dropna().mod(1).eq(0).all():
        values = values.astype("Int64")
    return values.astype("string")
