"""RetailRocket e-commerce data set importer.

``path`` is ``events.csv`` itself or a folder holding it (plus, optionally,
``item_properties*.csv``):

* ``events.csv``: ``timestamp,visitorid,event,itemid,transactionid`` with
  ``timestamp`` in epoch milliseconds and ``event`` one of ``view``, ``addtocart``,
  ``transaction`` -> ``view`` / ``cart`` / ``purchase`` events (value 1.0,
  ``user_id`` = visitor id, no session id: sessions are built later). Other event
  spellings are kept for validation to report.
* ``item_properties_part1.csv``, ``item_properties_part2.csv`` (optional):
  ``timestamp,itemid,property,value`` snapshots. Rows with property ``categoryid``
  give each item's ``categories`` = ``[latest category id]``. The items table lists
  only items with a category (the property files do not cover every event item).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from recpipe.config import DataParams
from recpipe.data._io import (
    Col,
    build_events,
    event_types,
    find_file,
    read_delimited,
    require_dir,
    timestamps,
)
from recpipe.data.schema import CanonicalTables, empty_items
from recpipe.errors import DataImportError

log = logging.getLogger(__name__)

_EXPECTED = "events.csv (required) and item_properties*.csv (optional), comma-separated"


def import_retailrocket(path: Path, options: DataParams) -> CanonicalTables:
    """Import RetailRocket ``events.csv`` (and item categories); see the module docstring."""
    what = "retailrocket"
    path = Path(path)
    if path.is_file():
        events_path, folder = path, path.parent
        prop_paths: list[Path] = []
    else:
        folder = require_dir(path, what, _EXPECTED)
        found = find_file(folder, ["events.csv"])
        if found is None:
            raise DataImportError(
                f"{what}: no 'events.csv' in folder {str(folder)!r}; expected {_EXPECTED}; "
                f"the folder holds {sorted(p.name for p in folder.iterdir())[:20]}"
            )
        events_path = found
        prop_paths = sorted(p for p in folder.glob("item_properties*.csv") if p.is_file())

    raw = read_delimited(
        events_path,
        [
            Col("timestamp", "int"),
            Col("user_id", "int_id", aliases=("visitorid",)),
            Col("event_type", "str", aliases=("event",)),
            Col("item_id", "int_id", aliases=("itemid",)),
        ],
        what=what,
    )
    ts = timestamps(raw["timestamp"], "ms", column="timestamp", where=f"{what} {events_path}")
    events = build_events(
        raw["user_id"],
        raw["item_id"],
        ts,
        event_types(raw["event_type"], options.event_type_map),
        1.0,
        None,
    )
    files = [events_path]
    log.info("%s: %d events from %s", what, len(events), events_path)

    items = empty_items()
    if prop_paths:
        items = _category_items(prop_paths, what)
        files.extend(prop_paths)
    return CanonicalTables(events=events, items=items, source=what, input_files=files)


def _category_items(paths: list[Path], what: str) -> pd.DataFrame:
    """Latest ``categoryid`` per item across the property snapshot files."""
    frames = []
    for p in paths:
        props = read_delimited(
            p,
            [
                Col("timestamp", "int"),
                Col("item_id", "int_id", aliases=("itemid",)),
                Col("property", "str"),
                Col("value", "str"),
            ],
            what=what,
            allow_no_rows=True,
        )
        frames.append(props[props["property"] == "categoryid"])
    cats = pd.concat(frames, ignore_index=True).sort_values("timestamp", kind="stable")
    latest = cats.drop_duplicates(subset=["item_id"], keep="last")
    log.info("%s: categories of %d items from %s", what, len(latest), [p.name for p in paths])
    return pd.DataFrame(
        {
            "item_id": latest["item_id"].reset_index(drop=True),
            "categories": [[v] if isinstance(v, str) else [] for v in latest["value"].tolist()],
        }
    )
