"""YOOCHOOSE (RecSys Challenge 2015) raw files and the prepared session TSV format.

``yoochoose``
    The raw challenge files. ``path`` is either the clicks file itself or a folder
    holding ``yoochoose-clicks.dat`` (or another ``*clicks*.dat``) and, optionally,
    ``yoochoose-buys.dat`` (``*buys*.dat``); buys are only read from a folder.
    Clicks: comma-separated, no header, ``session_id,timestamp,item_id,category``
    with ISO timestamps such as ``2014-04-07T10:51:09.277Z`` -> ``click`` events.
    Buys: ``session_id,timestamp,item_id,price,quantity`` -> ``purchase`` events with
    ``value`` = quantity (the price is not kept). ``user_id`` is null (the data set
    is anonymous). The items table lists every item of the events; ``categories``
    holds the distinct category values seen in the clicks other than ``0``
    (= unknown): ``S`` (special offer), ``1``-``12`` (categories) or a brand id.

``session-tsv``
    The tab-separated format of GRU4Rec / session-rec prepared data: header
    ``SessionId  ItemId  Time`` (``Time`` = unix seconds with a fraction) -> ``click``
    events; optional ``UserId`` and ``EventType`` columns are used when present.
    ``path`` is a file or a folder. Folder rule: every ``*.txt`` / ``*.tsv`` file
    is imported, except that where a ``<prefix>_train_full.txt`` exists,
    ``<prefix>_train_tr.txt`` and ``<prefix>_train_valid.txt`` are skipped -- they
    are a re-split of ``train_full`` and would count its events twice. For the
    YOOCHOOSE 100k sample that imports ``train_full`` + ``test`` (disjoint sessions).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
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
from recpipe.data.schema import CanonicalTables
from recpipe.errors import DataImportError

log = logging.getLogger(__name__)

_YC_EXPECTED = "yoochoose-clicks.dat (required) and yoochoose-buys.dat (optional)"
_CLICK_NAMES = ["session_id", "timestamp", "item_id", "category"]
_BUY_NAMES = ["session_id", "timestamp", "item_id", "price", "quantity"]


def import_yoochoose(path: Path, options: DataParams) -> CanonicalTables:
    """Import raw YOOCHOOSE clicks (and buys from a folder); see the module docstring."""
    what = "yoochoose"
    path = Path(path)
    buys_path: Path | None = None
    if path.is_file():
        clicks_path = path
    else:
        folder = require_dir(path, what, _YC_EXPECTED)
        found = find_file(folder, ["yoochoose-clicks.dat", "*clicks*.dat"])
        if found is None:
            raise DataImportError(
                f"{what}: no 'yoochoose-clicks.dat' (or '*clicks*.dat') in folder "
                f"{str(folder)!r}; expected {_YC_EXPECTED}; the folder holds "
                f"{sorted(p.name for p in folder.iterdir())[:20]}"
            )
        clicks_path = found
        buys_path = find_file(folder, ["yoochoose-buys.dat", "*buys*.dat"])

    clicks = read_delimited(
        clicks_path,
        [
            Col("session_id", "int_id"),
            Col("timestamp", "str"),
            Col("item_id", "int_id"),
            Col("category", "str"),
        ],
        names=_CLICK_NAMES,
        quoting=False,
        what=what,
    )
    ts = timestamps(clicks["timestamp"], None, column="timestamp", where=f"{what} {clicks_path}")
    parts = [build_events(None, clicks["item_id"], ts, "click", 1.0, clicks["session_id"])]
    files = [clicks_path]

    if buys_path is not None:
        buys = read_delimited(
            buys_path,
            [
                Col("session_id", "int_id"),
                Col("timestamp", "str"),
                Col("item_id", "int_id"),
                Col("price", "float"),
                Col("quantity", "float"),
            ],
            names=_BUY_NAMES,
            quoting=False,
            what=what,
            allow_no_rows=True,
        )
        bts = timestamps(buys["timestamp"], None, column="timestamp", where=f"{what} {buys_path}")
        parts.append(
            build_events(
                None,
                buys["item_id"],
                bts,
                "purchase",
                buys["quantity"],
                buys["session_id"],
            )
        )
        files.append(buys_path)

    events = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    items = _items_with_categories(events["item_id"], clicks[["item_id", "category"]])
    log.info(
        "%s: %d events (%d clicks), %d items from %s",
        what,
        len(events),
        len(clicks),
        len(items),
        [str(f) for f in files],
    )
    return CanonicalTables(events=events, items=items, source=what, input_files=files)


def _items_with_categories(event_items: pd.Series, pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct event item; categories = sorted distinct non-``0`` click categories."""
    items = pd.Series(event_items.dropna().unique(), dtype="string")
    item_codes, item_uniques = pd.factorize(pairs["item_id"])
    cat_codes, cat_uniques = pd.factorize(pairs["category"])
    cat_names = np.asarray(cat_uniques, dtype=object)
    keep = (item_codes >= 0) & (cat_codes >= 0)
    zero = np.flatnonzero(cat_names == "0")
    if len(zero):
        keep &= cat_codes != zero[0]
    # distinct (item, category) pairs, grouped by item, via one sorted integer key
    key = np.sort(item_codes[keep].astype(np.int64) * max(len(cat_names), 1) + cat_codes[keep])
    if not len(key):
        return pd.DataFrame({"item_id": items, "categories": [[] for _ in range(len(items))]})
    key = key[np.concatenate([[True], key[1:] != key[:-1]])]
    item_of, cat_of = np.divmod(key, max(len(cat_names), 1))
    starts = np.flatnonzero(np.concatenate([[True], item_of[1:] != item_of[:-1]]))
    ends = np.append(starts[1:], len(key))
    names = cat_names[cat_of].tolist()
    item_names = np.asarray(item_uniques, dtype=object)[item_of[starts]].tolist()
    lookup = {i: sorted(names[a:b]) for i, a, b in zip(item_names, starts, ends, strict=True)}
    return pd.DataFrame(
        {"item_id": items, "categories": [lookup.get(i, []) for i in items.tolist()]}
    )


# --------------------------------------------------------------- session TSV ---

_SPLIT_RE = re.compile(r"^(?P<prefix>.*?)_(?P<part>train_full|train_tr|train_valid|test)$")
_TSV_EXPECTED = "tab-separated file(s) with header 'SessionId<TAB>ItemId<TAB>Time' (*.txt or *.tsv)"


_PART_ORDER = {"train_full": 0, "train_tr": 1, "train_valid": 2, "test": 3}


def _file_order(path: Path) -> tuple[str, int, str]:
    """Sort by prefix, then train parts before test (chronological for split files)."""
    m = _SPLIT_RE.match(path.stem)
    if m is None:
        return (path.stem, -1, path.name)
    return (m["prefix"], _PART_ORDER[m["part"]], path.name)


def session_tsv_files(folder: Path) -> list[Path]:
    """The files of a prepared-session folder that :func:`import_session_tsv` reads.

    All ``*.txt`` / ``*.tsv`` files (by name; ``train`` parts before ``test``),
    minus ``<prefix>_train_tr`` and ``<prefix>_train_valid`` when
    ``<prefix>_train_full`` is present.
    """
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".txt", ".tsv")),
        key=_file_order,
    )
    full_prefixes = {
        m["prefix"] for p in files if (m := _SPLIT_RE.match(p.stem)) and m["part"] == "train_full"
    }
    chosen, skipped = [], []
    for p in files:
        m = _SPLIT_RE.match(p.stem)
        if m and m["part"] in ("train_tr", "train_valid") and m["prefix"] in full_prefixes:
            skipped.append(p)
        else:
            chosen.append(p)
    if skipped:
        log.info(
            "session-tsv: skipping %s (re-splits of the *_train_full file, which is imported)",
            [p.name for p in skipped],
        )
    return chosen


def import_session_tsv(path: Path, options: DataParams) -> CanonicalTables:
    """Import prepared session clicks (``SessionId ItemId Time``); see the module docstring."""
    what = "session-tsv"
    path = Path(path)
    if path.is_file():
        files = [path]
    else:
        folder = require_dir(path, what, _TSV_EXPECTED)
        files = session_tsv_files(folder)
        if not files:
            raise DataImportError(
                f"{what}: no *.txt or *.tsv file in folder {str(folder)!r}; expected "
                f"{_TSV_EXPECTED}; the folder holds {sorted(p.name for p in folder.iterdir())[:20]}"
            )
    parts = []
    for file in files:
        frame = read_delimited(
            file,
            [
                Col("session_id", "id", aliases=("SessionId",)),
                Col("item_id", "id", aliases=("ItemId",)),
                Col("time", "float", aliases=("Time",)),
                Col("user_id", "id", aliases=("UserId",), required=False),
                Col("event_type", "str", aliases=("EventType",), required=False),
            ],
            sep="\t",
            quoting=False,
            what=what,
        )
        ts = timestamps(frame["time"], "s", column="Time", where=f"{what} {file}")
        if "event_type" in frame.attrs["absent"]:
            etype: pd.Series | str = "click"
        else:
            etype = event_types(frame["event_type"], options.event_type_map)
        parts.append(
            build_events(frame["user_id"], frame["item_id"], ts, etype, 1.0, frame["session_id"])
        )
        log.info("%s: %d events from %s", what, len(frame), file)
    events = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return CanonicalTables(events=events, source=what, input_files=files)
