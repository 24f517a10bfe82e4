"""The body of the ``features`` stage: id maps, encoded parts and content encoders.

:func:`split_features` fits a split's id maps on its training part and encodes its
parts; :func:`content_features` fits the item and user content encoders. Both are pure
(frames in, objects out). :func:`stream_split_features` gives :func:`split_features`'s
results from the split's part files, batch by batch, writing the encoded parts itself:
what the stage function (:func:`recpipe.stages.features`) runs, so no part is held
whole.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recpipe.config import FeaturesParams
from recpipe.features.idmap import N_RESERVED, PAD, UNK, IdMap

log = logging.getLogger(__name__)

#: The ``cold_start`` split's extra tables (``cold_<name>.parquet``) and their id column.
COLD_TABLES: dict[str, str] = {"items": "item_id", "users": "user_id"}


def read_cold(split_dir: Path) -> dict[str, pd.Series | None]:
    """A split's cold-start ids, ``{name: ids}`` for each of :data:`COLD_TABLES`: the
    column of ``split_dir/cold_<name>.parquet``, or None where the split has no such
    file (only the ``cold_start`` split has them)."""
    return {
        name: pd.read_parquet(f, columns=[column])[column]
        if (f := split_dir / f"cold_{name}.parquet").is_file()
        else None
        for name, column in COLD_TABLES.items()
    }


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

    item_map, user_map, extra = _fit_maps(
        kind,
        IdMap.fit(parts["train"]["item_id"], fp.min_item_count),
        IdMap.fit(parts["train"]["user_id"], fp.min_user_count),
        items,
        cold,
    )
    encoded: dict[str, pd.DataFrame] = {}
    stats = {}
    for part, frame in parts.items():
        out = encode_events(frame, item_map, user_map, fp.gap_buckets)
        if kind == "cold_start" and part == "test":
            out["user_id"] = frame["user_id"].reset_index(drop=True)
        encoded[part] = out
        stats[part] = encoding_stats(out)
    return SplitFeatures(
        item_map, user_map, encoded, _meta(kind, item_map, user_map, fp, stats, extra)
    )


def _fit_maps(
    kind: str,
    item_map: IdMap,
    user_map: IdMap,
    items: pd.DataFrame | None,
    cold: dict[str, pd.Series | None] | None,
) -> tuple[IdMap, IdMap, dict[str, int]]:
    """The maps fitted on the train part, the ``cold_start`` catalogue added; its meta extras."""
    extra: dict[str, int] = {}
    if kind == "cold_start":
        n_trained = item_map.n_ids
        if items is not None:
            item_map = item_map.extend(items_with_content(items))
        extra = cold_counts(cold or {}, item_map, n_trained, kind)
    return item_map, user_map, extra


def _meta(
    kind: str,
    item_map: IdMap,
    user_map: IdMap,
    fp: FeaturesParams,
    stats: dict[str, Any],
    extra: dict[str, int],
) -> dict[str, Any]:
    return {
        "split": kind,
        "n_items": len(item_map),
        "n_users": len(user_map),
        "reserved": {"pad": PAD, "unk": UNK, "n_reserved": N_RESERVED},
        "gap_buckets": fp.gap_buckets,
        "parts": stats,
        **extra,
    }


def stream_split_features(
    kind: str,
    split_dir: Path,
    out: Path,
    fp: FeaturesParams,
    part_names: Sequence[str],
    *,
    items: pd.DataFrame | None = None,
    cold: dict[str, pd.Series | None] | None = None,
    batch_rows: int | None = None,
    stream: bool | None = None,
) -> SplitFeatures:
    """:func:`split_features` on the part files of ``split_dir``, streamed: what the
    features stage runs, so that no part is held whole in memory.

    A split whose parts hold fewer than ``fp.stream_min_rows`` rows together (counted
    from the Parquet footers) is read whole and encoded by :func:`split_features`
    instead: the same files, about a third faster, with the whole parts in memory.
    ``stream`` forces the choice (True: batches, False: whole).

    The id maps come from a first pass over the train part's ``item_id`` and
    ``user_id`` columns that keeps only the counts of each id
    (:func:`~recpipe.features.stream.count_ids`); each part is then encoded batch by
    batch into ``out/<part>.parquet``
    (:func:`~recpipe.features.stream.encode_part_file`). The maps, the written frames
    and the meta equal :func:`split_features`'s on the whole parts.

    Parameters
    ----------
    kind : str
        The split's name.
    split_dir : pathlib.Path
        The sessions stage's folder of the split (``<part>.parquet`` for each of
        ``part_names``).
    out : pathlib.Path
        An existing folder that gets the encoded ``<part>.parquet`` files.
    fp : FeaturesParams
        As for :func:`split_features`.
    part_names : sequence of str
        The parts, ``train`` among them.
    items, cold
        As for :func:`split_features`.
    batch_rows : int, optional
        Rows read at a time (default :data:`~recpipe.features.stream.BATCH_ROWS`).
    stream : bool, optional
        Batch by batch (True) or whole (False); None: by ``fp.stream_min_rows``.

    Returns
    -------
    SplitFeatures
        The maps and the meta; ``parts`` is empty (the parts are in ``out``).
    """
    from recpipe.features.stream import BATCH_ROWS, count_ids, encode_part_file

    files = {part: split_dir / f"{part}.parquet" for part in part_names}
    if stream is None:
        import pyarrow.parquet as pq

        n_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files.values())
        stream = n_rows >= fp.stream_min_rows
        log.info(
            "features %s: %d part rows, %s (features.stream_min_rows %d)",
            kind,
            n_rows,
            "encoded batch by batch" if stream else "read whole",
            fp.stream_min_rows,
        )
    if not stream:
        parts = {part: pd.read_parquet(f) for part, f in files.items()}
        built = split_features(kind, parts, fp, items=items, cold=cold)
        del parts
        for part, frame in built.parts.items():
            frame.to_parquet(out / f"{part}.parquet", index=False)
        return SplitFeatures(built.item_map, built.user_map, {}, built.meta)
    rows = BATCH_ROWS if batch_rows is None else batch_rows
    train = split_dir / "train.parquet"
    counts = count_ids(train, ["item_id", "user_id"], rows)
    item_counts, user_counts = counts.pop("item_id"), counts.pop("user_id")
    item_map, user_map, extra = _fit_maps(
        kind,
        IdMap.from_counts(item_counts["id"], item_counts["count"], fp.min_item_count),
        IdMap.from_counts(user_counts["id"], user_counts["count"], fp.min_user_count),
        items,
        cold,
    )
    del item_counts, user_counts
    stats = {
        part: encode_part_file(
            split_dir / f"{part}.parquet",
            out / f"{part}.parquet",
            item_map,
            user_map,
            fp.gap_buckets,
            keep_user_id=kind == "cold_start" and part == "test",
            batch_rows=rows,
        )
        for part in part_names
    }
    return SplitFeatures(item_map, user_map, {}, _meta(kind, item_map, user_map, fp, stats, extra))


def content_features(
    items: pd.DataFrame, users: pd.DataFrame, fp: FeaturesParams
) -> tuple[Any, Any, Any]:
    """The item content encoder fitted on ``items``, the encoded items, and the user
    encoder fitted on ``users``: ``(item_encoder, item_content, user_encoder)``."""
    from recpipe.features.content import ContentEncoder, UserEncoder

    item_encoder = ContentEncoder.from_params(fp).fit(items)
    return item_encoder, item_encoder.transform(items), UserEncoder().fit(users)
