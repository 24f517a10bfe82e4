"""The canonical data contract: events, items and users tables, and their Parquet I/O.

Events (one row per interaction):

=============  ======================  =====================================================
column         dtype                   meaning
=============  ======================  =====================================================
user_id        string (nullable)       who; null for anonymous session-only sources
item_id        string                  what
timestamp      datetime64[ns, UTC]     when, always UTC
event_type     string                  one of :data:`EVENT_TYPES` after normalisation
value          float64                 the rating for ``rating`` events, else a weight (1.0)
session_id     string (nullable)       the source's session id, when it has one
=============  ======================  =====================================================

Items: ``item_id`` (string) plus optional ``title``, ``text`` (string), ``categories``
(list of strings) and numeric attributes. Users: ``user_id`` plus attributes.

Ids are strings so that every source fits one schema; importers never drop or
repair rows: content problems (null ids, unknown event types, ...) are left for
validation to report or quarantine.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from recpipe.data.storage import open_file
from recpipe.errors import DataImportError
from recpipe.workspace import shown

log = logging.getLogger(__name__)

#: Canonical event types, in funnel order.
EVENT_TYPES: tuple[str, ...] = ("view", "click", "cart", "purchase", "rating")

#: Raw spellings of event types seen in public data sets, mapped to canonical ones.
EVENT_TYPE_ALIASES: dict[str, str] = {
    "view": "view",
    "views": "view",
    "pageview": "view",
    "page_view": "view",
    "impression": "view",
    "click": "click",
    "clicks": "click",
    "cart": "cart",
    "carts": "cart",  # OTTO's spellings: clicks, carts, orders
    "addtocart": "cart",
    "add_to_cart": "cart",
    "add-to-cart": "cart",
    "basket": "cart",
    "purchase": "purchase",
    "purchases": "purchase",
    "buy": "purchase",
    "buys": "purchase",
    "order": "purchase",
    "orders": "purchase",
    "transaction": "purchase",
    "transactions": "purchase",
    "rating": "rating",
    "ratings": "rating",
    "rate": "rating",
}

EVENT_COLUMNS: tuple[str, ...] = (
    "user_id",
    "item_id",
    "timestamp",
    "event_type",
    "value",
    "session_id",
)
EVENT_DTYPES: dict[str, str] = {
    "user_id": "string",
    "item_id": "string",
    "timestamp": "datetime64[ns, UTC]",
    "event_type": "string",
    "value": "float64",
    "session_id": "string",
}

EVENTS_FILE = "events.parquet"
ITEMS_FILE = "items.parquet"
USERS_FILE = "users.parquet"
MANIFEST_FILE = "manifest.json"


def normalise_event_types(raw: pd.Series, extra_aliases: dict[str, str] | None = None) -> pd.Series:
    """Map raw event type spellings to canonical ones.

    Matching is case- and whitespace-insensitive. Unknown spellings are kept
    (lower-cased) so that validation can report them: nothing is dropped here.
    """
    aliases = dict(EVENT_TYPE_ALIASES)
    if extra_aliases:
        aliases.update({k.strip().lower(): v for k, v in extra_aliases.items()})
    key = raw.astype("string").str.strip().str.lower()
    # map over the (few) distinct values, not the rows
    uniques = key.dropna().unique()
    mapping = {u: aliases.get(u, u) for u in uniques}
    return key.map(mapping).astype("string")


#: The span a canonical ``datetime64[ns]`` timestamp can hold (1677-09-21 to 2262-04-11).
NS_SPAN: tuple[pd.Timestamp, pd.Timestamp] = (
    pd.Timestamp.min.tz_localize("UTC"),
    pd.Timestamp.max.tz_localize("UTC"),
)


def to_utc(
    values: pd.Series,
    unit: str | None = None,
    *,
    column: str = "timestamp",
    where: str = "",
    raw: pd.Series | None = None,
) -> pd.Series:
    """Parse timestamps to ``datetime64[ns, UTC]``.

    ``unit`` is ``"s"``, ``"ms"``, ``"us"`` or ``"ns"`` for epoch numbers; ``None``
    parses strings (ISO 8601; naive times are taken as UTC). An unparsable value
    raises :class:`DataImportError` naming how many rows failed and examples,
    rather than silently becoming a null. A valid time that the canonical dtype cannot
    hold (before 1677 or after 2262) is a bad row, not a crash: it becomes a null
    timestamp, with a warning, for validation to report or quarantine
    (:func:`to_nanoseconds`); ``where`` (a file, say) prefixes that warning, whose
    examples are ``raw``'s values (default ``values``: the source's spelling).
    """
    overflow = None
    if unit is not None:
        numeric = pd.to_numeric(values, errors="coerce")
        bad = numeric.isna() & values.notna()
        if bad.any():
            _raise_bad_timestamps(values, bad, column, f"epoch numbers in {unit!r}")
        # numbers beyond any datetime64 unit come back as NaT here
        parsed = pd.to_datetime(numeric, unit=unit, utc=True, errors="coerce")
        overflow = parsed.isna() & numeric.notna()
    else:
        parsed = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
        bad = parsed.isna() & values.notna()
        if bad.any():
            _raise_bad_timestamps(values, bad, column, "ISO 8601 date-times")
    shown = values if raw is None else raw
    return to_nanoseconds(parsed, shown, column=column, where=where, overflow=overflow)


def to_nanoseconds(
    parsed: pd.Series,
    raw: pd.Series | None = None,
    *,
    column: str = "timestamp",
    where: str = "",
    overflow: pd.Series | None = None,
) -> pd.Series:
    """UTC timestamps of any resolution as ``datetime64[ns, UTC]``; a value outside
    :data:`NS_SPAN` (and each row ``overflow`` marks) becomes null, with one warning
    naming the count and examples (``raw``'s values, the source's spelling), so that
    validation reports such rows with the other bad rows (``timestamp_not_null``)
    instead of the import failing with pandas' ``OutOfBoundsDatetime``."""
    lo, hi = NS_SPAN
    outside = (parsed.notna() & ((parsed < lo) | (parsed > hi))).to_numpy(dtype=bool)
    if overflow is not None:
        outside = outside | overflow.to_numpy(dtype=bool)
    if outside.any():
        shown = parsed if raw is None else raw
        examples = ", ".join(
            f"row {shown.index[i]}: {shown.iloc[i]!s}" for i in outside.nonzero()[0][:5]
        )
        log.warning(
            "%s%d value(s) in column %r lie outside %s .. %s, the span a timestamp can "
            "hold; expected times within it; kept as null timestamps, for validation to "
            "report or quarantine (rule timestamp_not_null); examples: %s",
            f"{where}: " if where else "",
            int(outside.sum()),
            column,
            lo.date(),
            hi.date(),
            examples,
        )
        parsed = parsed.mask(pd.Series(outside, index=parsed.index))
    return parsed.astype("datetime64[ns, UTC]")


def _raise_bad_timestamps(values: pd.Series, bad: pd.Series, column: str, expected: str) -> None:
    examples = [f"row {i}: {values[i]!r}" for i in values.index[bad][:5]]
    raise DataImportError(
        f"{int(bad.sum())} unparsable value(s) in column {column!r}; expected {expected}; "
        f"examples: {', '.join(examples)}"
    )


def make_events(
    user_id: Any,
    item_id: Any,
    timestamp: pd.Series,
    event_type: Any,
    value: Any = 1.0,
    session_id: Any = None,
) -> pd.DataFrame:
    """Assemble a canonical events frame from columns (scalars broadcast)."""
    n = len(timestamp)
    frame = pd.DataFrame(
        {
            "user_id": _col(user_id, n),
            "item_id": _col(item_id, n),
            "timestamp": timestamp.reset_index(drop=True),
            "event_type": _col(event_type, n),
            "value": _col(value, n),
            "session_id": _col(session_id, n),
        }
    )
    return coerce_events(frame)


def _col(value: Any, n: int) -> Any:
    if isinstance(value, pd.Series):
        return value.reset_index(drop=True)
    return pd.Series([value] * n) if n else pd.Series([], dtype="object")


def _id_to_string(series: pd.Series) -> pd.Series:
    """Ids to the string dtype; integral floats (from NA-holding int columns) lose '.0'."""
    if pd.api.types.is_float_dtype(series):
        return series.astype("Int64").astype("string")
    return series.astype("string")


def coerce_events(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with exactly the canonical event columns and dtypes."""
    missing = [c for c in EVENT_COLUMNS if c not in frame.columns]
    if missing:
        raise DataImportError(
            f"events table lacks column(s) {missing}; expected columns {list(EVENT_COLUMNS)}"
        )
    out = pd.DataFrame(
        {
            "user_id": _id_to_string(frame["user_id"]),
            "item_id": _id_to_string(frame["item_id"]),
            "timestamp": frame["timestamp"].astype("datetime64[ns, UTC]"),
            "event_type": frame["event_type"].astype("string"),
            "value": pd.to_numeric(frame["value"], errors="raise").astype("float64"),
            "session_id": _id_to_string(frame["session_id"]),
        }
    )
    return out


def empty_items() -> pd.DataFrame:
    return pd.DataFrame({"item_id": pd.Series([], dtype="string")})


def empty_users() -> pd.DataFrame:
    return pd.DataFrame({"user_id": pd.Series([], dtype="string")})


@dataclass
class CanonicalTables:
    """The three canonical tables of one data set, plus where they came from."""

    events: pd.DataFrame
    items: pd.DataFrame = field(default_factory=empty_items)
    users: pd.DataFrame = field(default_factory=empty_users)
    source: str = "unknown"
    input_files: list[Path | str] = field(default_factory=list)  # paths, or fsspec URLs

    def __post_init__(self) -> None:
        self.events = coerce_events(self.events)
        if "item_id" not in self.items.columns:
            raise DataImportError("items table lacks column 'item_id'")
        if "user_id" not in self.users.columns:
            raise DataImportError("users table lacks column 'user_id'")
        self.items = self.items.assign(item_id=_id_to_string(self.items["item_id"]))
        self.users = self.users.assign(user_id=_id_to_string(self.users["user_id"]))


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    """The SHA-256 hex digest of the file at ``path`` (a local path or an fsspec URL)."""
    digest = hashlib.sha256()
    with open_file(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def table_stats(tables: CanonicalTables) -> dict[str, Any]:
    """Row counts, distinct ids, event type counts and time range of the tables."""
    ev = tables.events
    ts = ev["timestamp"]
    return {
        "source": tables.source,
        "rows": {"events": len(ev), "items": len(tables.items), "users": len(tables.users)},
        "n_users": int(ev["user_id"].nunique()),
        "n_items": int(ev["item_id"].nunique()),
        "n_sessions": int(ev["session_id"].nunique()),
        "event_types": {str(k): int(v) for k, v in ev["event_type"].value_counts().items()},
        "time_range": {
            "min": ts.min().isoformat() if len(ts) else None,
            "max": ts.max().isoformat() if len(ts) else None,
        },
    }


def build_manifest(
    tables: CanonicalTables, written: list[Path], stats: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Source, input file hashes, table stats and the content hash of the written tables."""
    stats = stats if stats is not None else table_stats(tables)
    content = hashlib.sha256()
    for path in sorted(written):
        content.update(path.name.encode())
        content.update(sha256_file(path).encode())
    return {
        "source": stats["source"],
        "input_files": {str(p): sha256_file(p) for p in tables.input_files},
        **{k: v for k, v in stats.items() if k != "source"},
        "content_hash": content.hexdigest(),
    }


def write_tables(tables: CanonicalTables, out_dir: Path) -> dict[str, Any]:
    """Write the three tables as Parquet plus ``manifest.json``; return the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    # the table stats (distinct ids, time range) run beside the Parquet encoding:
    # both release the GIL in Arrow, so this nearly halves the time on two cores
    with ThreadPoolExecutor(max_workers=1) as pool:
        stats = pool.submit(table_stats, tables)
        for name, frame in (
            (EVENTS_FILE, tables.events),
            (ITEMS_FILE, tables.items),
            (USERS_FILE, tables.users),
        ):
            path = out_dir / name
            frame.to_parquet(path, index=False)
            written.append(path)
        manifest = build_manifest(tables, written, stats.result())
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    log.info(
        "wrote %d events, %d items, %d users to %s",
        manifest["rows"]["events"],
        manifest["rows"]["items"],
        manifest["rows"]["users"],
        shown(out_dir),
    )
    return manifest


def events_file(in_dir: str | Path) -> Path:
    """The canonical events file in ``in_dir`` (a Parquet file or a folder of parts).

    Raises
    ------
    DataImportError
        There is none.
    """
    events_path = Path(in_dir) / EVENTS_FILE
    if not events_path.exists():
        raise DataImportError(
            f"no canonical events at {events_path}; expected the output of "
            "`recpipe data import` or the ingest stage"
        )
    return events_path


def read_tables(in_dir: Path, *, events: bool = True) -> CanonicalTables:
    """Read canonical tables written by :func:`write_tables`.

    ``events=False`` reads the items and users tables and the source only: the events
    table is then empty (its file's schema checked), for readers that stream the events.
    """
    in_dir = Path(in_dir)
    events_path = events_file(in_dir)
    if events:
        frame = pd.read_parquet(events_path)
    else:  # the schema must be the canonical one, as reading it whole would check
        frame = coerce_events(pq.read_schema(events_path).empty_table().to_pandas())
    manifest_path = in_dir / MANIFEST_FILE
    source = "unknown"
    if manifest_path.exists():
        source = json.loads(manifest_path.read_text()).get("source", "unknown")
    items_path, users_path = in_dir / ITEMS_FILE, in_dir / USERS_FILE
    return CanonicalTables(
        events=frame,
        items=pd.read_parquet(items_path) if items_path.exists() else empty_items(),
        users=pd.read_parquet(users_path) if users_path.exists() else empty_users(),
        source=source,
    )
