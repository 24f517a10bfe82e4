"""DIGINETICA (CIKM Cup 2016, track 2) importer.

A folder with ``;``-separated files with a header row (``NA`` = missing):

* ``train-item-views.csv`` (the official file) or ``sample_train-item-views.csv``
  (the SR-GNN sample, whose header is renamed to snake case): ``sessionId;userId;
  itemId;timeframe;eventdate`` or ``session_id;user_id;item_id;timeframe;eventdate``
  -> ``view`` events. When both files are present the full one is read.
* ``train-purchases.csv`` (optional): ``sessionId;userId;timeframe;eventdate;
  ordernumber;itemId`` -> ``purchase`` events (value 1.0).
* ``product-categories.csv`` (optional): ``itemId;categoryId`` -> items ``categories``.
* ``products.csv`` (optional): ``itemId;pricelog2;product.name.tokens`` -> items
  ``price_log2`` and ``text`` (the comma-separated name token ids).

At least one of the views or purchases files must be present. The timestamp
is ``eventdate`` (UTC midnight) plus ``timeframe`` milliseconds; ``userId`` ``NA``
becomes a null user. Ids must be integers. Views come first, then purchases,
each in file order.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from recpipe.config import DataParams
from recpipe.data._io import (
    Col,
    ColumnKind,
    build_events,
    find_file,
    read_delimited,
    require_dir,
    timestamps,
)
from recpipe.data.schema import CanonicalTables, empty_items
from recpipe.errors import DataImportError

log = logging.getLogger(__name__)

_EXPECTED = (
    "train-item-views.csv or sample_train-item-views.csv and/or train-purchases.csv "
    "(optional: product-categories.csv, products.csv); ';'-separated with a header row"
)
_VIEW_FILES = ["train-item-views.csv", "sample_train-item-views.csv"]
_PURCHASE_FILES = ["train-purchases.csv"]


def _col(name: str, kind: ColumnKind, camel: str, required: bool = True) -> Col:
    return Col(name, kind, aliases=(camel,), required=required)


def _timestamps(frame: pd.DataFrame, where: str) -> pd.Series:
    day = timestamps(frame["eventdate"], None, column="eventdate", where=where)
    offset = pd.to_timedelta(frame["timeframe"].astype("float64"), unit="ms")
    return (day + offset.to_numpy()).astype("datetime64[ns, UTC]")


def import_diginetica(path: Path, options: DataParams) -> CanonicalTables:
    """Import a DIGINETICA folder (see the module docstring).

    Returns
    -------
    CanonicalTables
        ``view`` and ``purchase`` events with session and (possibly null) user ids,
        and items with ``categories`` (and ``price_log2`` / ``text`` from products.csv).
    """
    what = "diginetica"
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    require_dir(folder, what, _EXPECTED)
    views_path = find_file(folder, _VIEW_FILES)
    purchases_path = find_file(folder, _PURCHASE_FILES)
    if views_path is None and purchases_path is None:
        raise DataImportError(
            f"{what}: neither {_VIEW_FILES} nor {_PURCHASE_FILES[0]!r} in folder "
            f"{str(folder)!r}; expected {_EXPECTED}; the folder holds "
            f"{sorted(p.name for p in folder.iterdir())[:20]}"
        )
    if (
        views_path is not None
        and (folder / _VIEW_FILES[1]).exists()
        and (views_path.name == _VIEW_FILES[0])
    ):
        log.info("%s: reading %s; ignoring the sample %s", what, views_path.name, _VIEW_FILES[1])

    parts: list[pd.DataFrame] = []
    files: list[Path] = []
    if views_path is not None:
        views = read_delimited(
            views_path,
            [
                _col("session_id", "int_id", "sessionId"),
                _col("user_id", "int_id", "userId"),
                _col("item_id", "int_id", "itemId"),
                _col("timeframe", "int", "timeFrame"),
                _col("eventdate", "str", "eventDate"),
            ],
            sep=";",
            quoting=False,
            what=what,
        )
        ts = _timestamps(views, f"{what} {views_path}")
        parts.append(
            build_events(views["user_id"], views["item_id"], ts, "view", 1.0, views["session_id"])
        )
        files.append(views_path)
        log.info("%s: %d views from %s", what, len(views), views_path)
    if purchases_path is not None:
        buys = read_delimited(
            purchases_path,
            [
                _col("session_id", "int_id", "sessionId"),
                _col("user_id", "int_id", "userId"),
                _col("timeframe", "int", "timeFrame"),
                _col("eventdate", "str", "eventDate"),
                _col("item_id", "int_id", "itemId"),
            ],
            sep=";",
            quoting=False,
            what=what,
            allow_no_rows=views_path is not None,
        )
        ts = _timestamps(buys, f"{what} {purchases_path}")
        parts.append(
            build_events(buys["user_id"], buys["item_id"], ts, "purchase", 1.0, buys["session_id"])
        )
        files.append(purchases_path)
        log.info("%s: %d purchases from %s", what, len(buys), purchases_path)
    events = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    items = _items(folder, files, what)
    return CanonicalTables(events=events, items=items, source=what, input_files=files)


def _items(folder: Path, files: list[Path], what: str) -> pd.DataFrame:
    items = empty_items()
    cat_path = find_file(folder, ["product-categories.csv"])
    if cat_path is not None:
        cats = read_delimited(
            cat_path,
            [_col("item_id", "int_id", "itemId"), _col("category_id", "int_id", "categoryId")],
            sep=";",
            quoting=False,
            what=what,
            allow_no_rows=True,
        )
        files.append(cat_path)
        if cats["item_id"].is_unique:
            items = pd.DataFrame(
                {
                    "item_id": cats["item_id"],
                    "categories": [
                        [] if c is None else [c]
                        for c in cats["category_id"].to_numpy(dtype=object, na_value=None)
                    ],
                }
            )
        else:
            grouped = cats.dropna(subset=["category_id"]).groupby("item_id", sort=False)
            per_item = grouped["category_id"].agg(lambda s: list(dict.fromkeys(s)))
            all_items = pd.Series(cats["item_id"].unique(), dtype="string")
            lookup = per_item.to_dict()
            items = pd.DataFrame(
                {
                    "item_id": all_items,
                    "categories": [lookup.get(i, []) for i in all_items.tolist()],
                }
            )
        log.info("%s: %d item->category rows from %s", what, len(cats), cat_path)
    products_path = find_file(folder, ["products.csv"])
    if products_path is not None:
        products = read_delimited(
            products_path,
            [
                _col("item_id", "int_id", "itemId"),
                _col("price_log2", "float", "pricelog2", required=False),
                _col("text", "str", "product.name.tokens", required=False),
            ],
            sep=";",
            quoting=False,
            what=what,
            allow_no_rows=True,
        )
        files.append(products_path)
        if len(items.columns) == 1:
            items = products
        else:
            items = items.merge(products, on="item_id", how="outer", sort=False)
        if "categories" in items:
            items["categories"] = [c if isinstance(c, list) else [] for c in items["categories"]]
    return items
