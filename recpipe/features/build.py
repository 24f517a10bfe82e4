"""The body of the ``features`` stage: id maps, encoded parts and content encoders.

:func:`split_features` fits a split's id maps on its training part and encodes its
parts; :func:`content_features` fits the item and user content encoders. Both are pure
(frames in, objects out); the stage function (:func:`recpipe.stages.features`) reads
the splits and writes what these return.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recpipe.config import FeaturesParams
from recpipe.features.idmap import N_RESERVED, PAD, UNK, IdMap

log = logging.getLogger(__name__)

#: The ``cold_start`` split's extra tables (``cold_<name>.parquet``) and their id column.
COLD_TABLES: dict[str, str] = {"items": "item_id", "users": "user_id"}


@dataclass
class SplitFeatures:
    """One split's id maps, encoded parts and ``meta.json``."""

    item_map: IdMap
    user_map: IdMap
    parts: dict[str, pd.DataFrame]
    meta: dict[str, Any] = field(default_factory=dict)


def items_with_content(items: pd.DataFrame) -> pd.Series:
    """Ids of the items-table rows with any non-empty content value (besides ``item_id``).

    Parameters
    ----------
    items : pandas.DataFrame
        The canonical items table.

    Returns
    -------
    pandas.Series
        The ``item_id`` values (nulls dropped) of rows where some other column holds
        a value that is not null and, for strings and lists, not empty.
    """
    columns = [c for c in items.columns if c != "item_id"]
    has = np.zeros(len(items), dtype=bool)
    for column in columns:
        values = items[column]
        if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
            has |= np.fromiter(
                (
                    not (v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)))
                    and (not hasattr(v, "__len__") or len(v) > 0)
                    for v in values
                ),
                dtype=bool,
                count=len(values),
            )
        else:
            has |= values.notna().to_numpy()
    return items["item_id"][has].dropna()


def cold_counts(
    cold: dict[str, pd.Series | None], items: IdMap, n_trained: int, split: str = "cold_start"
) -> dict[str, int]:
    """The cold-start entries of a split's meta.json.

    Parameters
    ----------
    cold : dict
        ``{"items": cold item ids, "users": cold user ids}``; None for a table the
        sessions stage did not write (a warning says so; counted as 0).
    items : IdMap
        The split's item map (extended with the catalogue items).
    n_trained : int
        Ids in the item map before the extension.
    """
    out = {}
    for name in COLD_TABLES:
        ids = cold.get(name)
        if ids is None:
            log.warning("split %s has no cold_%s table; re-run the sessions stage", split, name)
        out[f"n_cold_{name}"] = 0 if ids is None else len(ids)
        if name == "items":
            indexed = 0 if ids is None else int((items.encode(ids) >= N_RESERVED).sum())
            out["n_cold_items_indexed"] = indexed
    out["n_catalogue_items_added"] = items.n_ids - n_trained
    return out


def split_features(
    kind: str,
    parts: dict[str, pd.DataFrame],
    fp: FeaturesParams,
    *,
    items: pd.DataFrame | None = None,
    cold: dict[str, pd.Series | None] | None = None,
) -> SplitFeatures:
    """Fit id maps on a split's training part and encode every part.

    The ``cold_start`` split differs in three ways. Its item map also indexes every
    item of the items table that has content and no train event (count 0, after the
    trained ids; :meth:`~recpipe.features.idmap.IdMap.extend`), so that cold items are
    in the catalogue; cold users stay unknown (``UNK``). Its encoded test part keeps the
    raw ``user_id`` column, by which the ``cold_users`` protocol groups the events of
    unknown users. Its meta adds ``n_cold_items`` and ``n_cold_users`` (the split's cold
    ids), ``n_cold_items_indexed`` (cold items the item map holds: rankable) and
    ``n_catalogue_items_added``.

    Parameters
    ----------
    kind : str
        The split's name.
    parts : dict[str, pandas.DataFrame]
        ``train``, ``valid`` and ``test`` as the sessions stage wrote them.
    fp : FeaturesParams
        Minimum counts and ``gap_buckets`` (recorded in the meta, and from there in
        every model artifact trained on the split).
    items : pandas.DataFrame, optional
        The items table (the ``cold_start`` split's catalogue).
    cold : dict, optional
        The ``cold_start`` split's cold item and user ids (:func:`cold_counts`).
    """
    from recpipe.features.encode import encode_events, encoding_stats

    item_map = IdMap.fit(parts["train"]["item_id"], fp.min_item_count)
    user_map = IdMap.fit(parts["train"]["user_id"], fp.min_user_count)
    extra: dict[str, int] = {}
    if kind == "cold_start":
        n_trained = item_map.n_ids
        if items is not None:
            item_map = item_map.extend(items_with_content(items))
        extra = cold_counts(cold or {}, item_map, n_trained, kind)
    encoded: dict[str, pd.DataFrame] = {}
    stats = {}
    for part, frame in parts.items():
        out = encode_events(frame, item_map, user_map, fp.gap_buckets)
        if kind == "cold_start" and part == "test":
            out["user_id"] = frame["user_id"].reset_index(drop=True)
        encoded[part] = out
        stats[part] = encoding_stats(out)
    meta = {
        "split": kind,
        "n_items": len(item_map),
        "n_users": len(user_map),
        "reserved": {"pad": PAD, "unk": UNK, "n_reserved": N_RESERVED},
        "gap_buckets": fp.gap_buckets,
        "parts": stats,
        **extra,
    }
    return SplitFeatures(item_map, user_map, encoded, meta)


def content_features(
    items: pd.DataFrame, users: pd.DataFrame, fp: FeaturesParams
) -> tuple[Any, Any, Any]:
    """The item content encoder fitted on ``items``, the encoded items, and the user
    encoder fitted on ``users``: ``(item_encoder, item_content, user_encoder)``."""
    from recpipe.features.content import ContentEncoder, UserEncoder

    item_encoder = ContentEncoder.from_params(fp).fit(items)
    return item_encoder, item_encoder.transform(items), UserEncoder().fit(users)
