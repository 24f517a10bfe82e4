"""Sessionization and the GRU4Rec frequency filter, vectorised over sorted arrays.

:func:`sessionize` gives every event a session id: the source's own id where the
source has one (and ``use_source_sessions`` is on), otherwise the user's event
stream cut wherever the inactivity gap exceeds ``gap_minutes`` -- the 30-minute
rule of web analytics that session-based recommendation adopted (Hidasi et al.,
"Session-based Recommendations with Recurrent Neural Networks", ICLR 2016;
Ludewig & Jannach, "Evaluation of Session-based Recommendation Algorithms",
UMUAI 28, 2018). :func:`filter_support` is GRU4Rec's preprocessing: drop rare
items, then short sessions.

Everything runs on integer arrays (see :mod:`recpipe.sessions._arrays`): ids are
dictionary-encoded once, timestamps are ``int64`` nanoseconds, orderings are
stable counting sorts; no Python loop runs per event or per session. Both
functions return new frames; the input is never modified.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recpipe.config import SessionsParams
from recpipe.data.schema import EVENT_TYPES
from recpipe.errors import SplitError
from recpipe.sessions._arrays import (
    NS_PER_MINUTE,
    Codes,
    encode,
    group_time_order,
    large,
    parallel_map,
    remember_codes,
    string_array,
    take_rows,
    take_strings,
    timestamps_ns,
)

log = logging.getLogger(__name__)

__all__ = ["SESSION_SEPARATOR", "filter_support", "sessionize"]

#: Separator of generated session ids ``"<user_id>#<n>"``.
SESSION_SEPARATOR = "#"
_FALLBACK_MARK = "~"

# session kinds
_SOURCE, _USER, _RECUT, _LONE = 0, 1, 2, 3


def sessionize(events: pd.DataFrame, params: SessionsParams) -> pd.DataFrame:
    """Give every event a session id and order the events session by session.

    Parameters
    ----------
    events : pandas.DataFrame
        Canonical events (:data:`recpipe.data.schema.EVENT_COLUMNS`); not modified.
    params : SessionsParams
        ``use_source_sessions`` keeps the source's session ids where present;
        ``gap_minutes`` is the inactivity gap that ends a session (a gap strictly
        greater than it starts a new one); ``collapse_repeats``: see Notes.

    Returns
    -------
    pandas.DataFrame
        A new frame with the input's columns, ``session_id`` filled on every row
        and a fresh ``RangeIndex``. Rows are sorted by session -- sessions in
        order of their first event, ties by that event's input position -- and
        within a session by timestamp, ties in input order.

    Notes
    -----
    Session of a row:

    1. With ``use_source_sessions`` and a source ``session_id``: that id, as is
       (a source session is never cut, whatever its gaps).
    2. Otherwise the row belongs to a *stream* -- its user's events without a
       kept source id; for an anonymous row (null ``user_id``), the events of
       its source session (re-cut by gaps); a row with neither id is a stream
       of its own -- and each stream, sorted by time, is cut wherever the gap
       between consecutive events exceeds ``gap_minutes``. Generated ids are
       ``"<user_id>#<n>"`` (``n`` = 0, 1, ... in time order within the user's
       stream), ``"<session_id>#<n>"`` for re-cut anonymous source sessions and
       ``"#<row>"`` (``row``: input position) for rows with neither id.

    Generated ids never collide with each other (the digits after the last
    ``#`` tell them apart) unless a user id equals a re-cut source session id or
    is the empty string; if that happens, or a generated id equals a kept
    source id, all generated ids become ``"~g<k>"`` (``k``: the session's rank
    in the output; the ``~`` run is made longer than any source id's leading
    ``~`` run) and a warning is logged. Ids are deterministic either way.

    ``collapse_repeats`` (repeated clicks, as discussed for GRU4Rec): a run of
    consecutive events on the same item within a session becomes one row -- the
    run's first row (its timestamp, value and position) -- whose ``event_type``
    is the strongest in the run in funnel order
    :data:`~recpipe.data.schema.EVENT_TYPES` (``view`` < ``click`` < ``cart`` <
    ``purchase`` < ``rating``; unknown types rank below ``view``). A view
    followed by a cart and a purchase of the same item is one ``purchase`` row:
    the conversion is kept for purchase slices, and the item is not its own
    next-item target. The number of collapsed rows is logged.
    """
    t0 = time.perf_counter()
    n = len(events)
    if n == 0:
        out = events.reset_index(drop=True)
        return out.assign(session_id=out["session_id"].astype("string"))
    ts = timestamps_ns(events["timestamp"])
    gap_ns = round(params.gap_minutes * NS_PER_MINUTE)

    src_present = events["session_id"].notna().to_numpy()
    keep_src = src_present if params.use_source_sessions else np.zeros(n, bool)
    all_src = bool(keep_src.all())
    position = events.columns.get_loc("session_id")
    with ThreadPoolExecutor(1, thread_name_prefix="recpipe-sessions") as pool:
        # id columns are hashed once: the source sessions and the users, which cut the
        # streams, then the items on the second thread while this one orders the rows
        # (not two hashes at once: on a busy 2-core machine that was slower than one
        # after the other). The user and item codes gather the output's columns from
        # their dictionaries (a fraction of the time of gathering the strings), and the
        # output's codes are remembered for the filter and the splits
        src = encode(events["session_id"]) if src_present.any() else None
        coded = {"user_id": encode(events["user_id"])}
        user = None if all_src else coded["user_id"]
        items = None
        if "item_id" in events and isinstance(events["item_id"].array, pd.arrays.ArrowStringArray):
            items = pool.submit(encode, events["item_id"])
        kind, stream, n_streams = _streams(n, src, user, keep_src, src_present)
        final, first_row, lengths, n_in_stream = _session_order(
            stream, n_streams, kind, ts, None if all_src else gap_ns
        )
        n_sessions = len(lengths)
        session_kind = (
            np.full(n_sessions, _SOURCE if all_src else _USER, np.int8)
            if kind is None
            else kind[first_row]
        )
        names = _session_names(session_kind, first_row, n_in_stream, src, user, keep_src)
        session_of_row = np.repeat(np.arange(n_sessions, dtype=np.int32), lengths)
        if items is not None:
            coded["item_id"] = items.result()
        # the session ids (an Arrow take of runs) on the second thread, beside the column
        # gathers of take_rows (NumPy and Arrow release the GIL)
        ids = pool.submit(lambda: string_array(names.take(pa.array(session_of_row))))
        out = take_rows(events.drop(columns="session_id"), final, coded)
        out.insert(position, "session_id", ids.result())
    remember_codes(out["session_id"], Codes(session_of_row, large(names)))
    if params.collapse_repeats:
        out = _collapse_repeats(out, session_of_row)
    log.info(
        "sessionize: %d events -> %d sessions (%d from the source; gap %g min) in %.2f s",
        len(out),
        n_sessions,
        int(np.count_nonzero(session_kind == _SOURCE)),
        params.gap_minutes,
        time.perf_counter() - t0,
    )
    return out


def _session_order(
    stream: np.ndarray,
    n_streams: int,
    kind: np.ndarray | None,
    ts: np.ndarray,
    gap_ns: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The output's rows and sessions: ``(final, first_row, lengths, n_in_stream)``.

    Rows are ordered by (stream, time, row) and cut into sessions at a stream change
    or (``gap_ns`` not ``None``; not within kept source sessions) a gap longer than
    ``gap_ns``; sessions are then ordered by start (see :func:`_by_start`).
    ``final``: the input row of each output row; per session in output order, the
    input row of its first event, its length and its number within its stream."""
    n = len(ts)
    order = group_time_order(stream, n_streams, ts)
    ts_sorted = ts[order]
    # sorted by stream, each stream's rows start where the streams before it end
    counts = np.bincount(stream, minlength=n_streams)
    new_stream = np.zeros(n, bool)
    new_stream[(np.cumsum(counts) - counts)[counts > 0]] = True
    del counts
    cut = new_stream.copy()
    if gap_ns is not None:
        gap_cut = np.diff(ts_sorted) > gap_ns
        if kind is not None:
            gap_cut &= kind[order[1:]] != _SOURCE
        cut[1:] |= gap_cut
    first = np.flatnonzero(cut)  # sorted position of each session's first event
    del cut
    n_sessions = len(first)
    lengths = np.diff(first, append=n)
    stream_start = np.flatnonzero(new_stream[first])
    n_in_stream = np.arange(n_sessions) - np.repeat(
        stream_start, np.diff(stream_start, append=n_sessions)
    )
    # sessions by (start time, input position of their first event)
    first_row = order[first]
    by_start = _by_start(first_row, ts_sorted[first], ts, n)
    del ts_sorted
    lengths = lengths[by_start]
    new_first = np.cumsum(lengths) - lengths
    final = order[np.arange(n) + np.repeat(first[by_start] - new_first, lengths)]
    return final, first_row[by_start], lengths, n_in_stream[by_start]


def _by_start(first_row: np.ndarray, first_ts: np.ndarray, ts: np.ndarray, n: int) -> np.ndarray:
    """Sessions (given by the input position and the time of their first event) in
    order of start time, ties by that position.

    On a log sorted by time (the usual case) that is the order of the positions: a
    scatter over the rows instead of a sort of the sessions."""
    if bool((ts[1:] >= ts[:-1]).all()):
        rank = np.empty(n, np.intp)
        rank[first_row] = np.arange(len(first_row))
        is_first = np.zeros(n, bool)
        is_first[first_row] = True
        return rank[is_first]
    return np.lexsort((first_row, first_ts))


def _streams(
    n: int,
    src: Codes | None,
    user: Codes | None,
    keep_src: np.ndarray,
    src_present: np.ndarray,
) -> tuple[np.ndarray | None, np.ndarray, int]:
    """Per row: session kind (``None`` when all rows share one), stream code, and #codes.

    Codes: kept source sessions ``[0, S)``, users ``[S, S+U)``, re-cut
    anonymous source sessions ``[S+U, 2S+U)``, then one code per lone row.
    """
    n_src = src.n_uniques if src is not None else 0
    if user is None:  # every row keeps its source session
        assert src is not None
        return None, src.codes, n_src
    n_users = user.n_uniques
    has_user = user.codes >= 0
    if not keep_src.any() and bool(has_user.all()):  # the common gap-only case
        return None, user.codes, n_users
    stream = np.empty(n, np.int64)
    kind = np.full(n, _USER, np.int8)
    free = ~keep_src
    if src is not None:
        stream[keep_src] = src.codes[keep_src]
        kind[keep_src] = _SOURCE
    with_user = free & has_user
    stream[with_user] = n_src + user.codes[with_user]
    anon = free & ~has_user
    if src is not None:
        recut = anon & src_present
        stream[recut] = n_src + n_users + src.codes[recut]
        kind[recut] = _RECUT
        anon &= ~src_present
    lone = np.flatnonzero(anon)
    stream[lone] = 2 * n_src + n_users + np.arange(len(lone))
    kind[lone] = _LONE
    return kind, stream, 2 * n_src + n_users + len(lone)


def _session_names(
    kind: np.ndarray,
    first_row: np.ndarray,
    n_in_stream: np.ndarray,
    src: Codes | None,
    user: Codes | None,
    keep_src: np.ndarray,
) -> pa.Array:
    """The id of each session (output order); generated ids checked for collisions."""
    pieces: list[tuple[np.ndarray, pa.Array]] = []
    kept = np.flatnonzero(kind == _SOURCE)
    if len(kept):
        assert src is not None
        pieces.append((kept, take_strings(src.uniques, src.codes[first_row[kept]])))
    generated = np.flatnonzero(kind != _SOURCE)
    if len(generated):
        g_kind, g_row = kind[generated], first_row[generated]
        names = _generated_names(g_kind, g_row, n_in_stream[generated], src, user)
        if _names_clash(names, g_kind, g_row, src, user, keep_src):
            kept_ids = _kept_source_ids(src, keep_src)
            mark = _FALLBACK_MARK
            while len(kept_ids) and bool(pc.any(pc.starts_with(kept_ids, mark)).as_py()):
                mark += _FALLBACK_MARK
            log.warning(
                "sessionize: generated session ids '<user>#<n>' would collide with source "
                "ids or with each other; using '%sg<k>' instead",
                mark,
            )
            names = pc.binary_join_element_wise(
                pa.scalar(mark + "g", pa.large_string()),
                pa.array(np.arange(len(generated))).cast(pa.large_string()),
                pa.scalar("", pa.large_string()),
            )
        pieces.append((generated, large(names)))
    return _scatter(len(kind), pieces)


def _generated_names(
    kind: np.ndarray,
    first_row: np.ndarray,
    n_in_stream: np.ndarray,
    src: Codes | None,
    user: Codes | None,
) -> pa.Array:
    """``"<user_id>#<n>"``, ``"<session_id>#<n>"`` or ``"#<row>"`` per generated session."""
    pieces: list[tuple[np.ndarray, pa.Array]] = []
    for k, codes in ((_USER, user), (_RECUT, src)):
        sel = np.flatnonzero(kind == k)
        if len(sel):
            assert codes is not None
            pieces.append((sel, take_strings(codes.uniques, codes.codes[first_row[sel]])))
    lone = np.flatnonzero(kind == _LONE)
    if len(lone):
        pieces.append((lone, pa.array([""] * len(lone), pa.large_string())))
    prefix = _scatter(len(kind), pieces)
    tail = np.where(kind == _LONE, first_row, n_in_stream)
    return pc.binary_join_element_wise(
        prefix,
        pa.array(tail).cast(pa.large_string()),
        pa.scalar(SESSION_SEPARATOR, pa.large_string()),
    )


def _kept_source_ids(src: Codes | None, keep_src: np.ndarray) -> pa.Array:
    if src is None or not keep_src.any():
        return pa.array([], pa.large_string())
    return large(src.uniques.take(pa.array(np.unique(src.codes[keep_src]))))


def _names_clash(
    names: pa.Array,
    kind: np.ndarray,
    first_row: np.ndarray,
    src: Codes | None,
    user: Codes | None,
    keep_src: np.ndarray,
) -> bool:
    """Whether generated ids repeat each other or a kept source id.

    ``"<a>#<digits>"`` determines ``a`` and the digits, so two generated ids can
    only be equal when their prefixes are: a user id equal to a re-cut source
    session id, or an empty user/session id next to a lone row's ``"#<row>"``.
    """
    lone = bool((kind == _LONE).any())
    has_recut = bool((kind == _RECUT).any())
    if lone or has_recut:  # rare: anonymous rows; compare the prefixes actually used
        prefixes: dict[int, pa.Array] = {}
        for k, codes in ((_USER, user), (_RECUT, src)):
            sel = kind == k
            if sel.any():
                assert codes is not None
                used = np.unique(codes.codes[first_row[sel]])
                prefixes[k] = large(codes.uniques.take(pa.array(used)))
        if (
            _USER in prefixes
            and _RECUT in prefixes
            and bool(pc.any(pc.is_in(prefixes[_USER], value_set=prefixes[_RECUT])).as_py())
        ):
            return True
        if lone and any(bool(pc.any(pc.equal(v, "")).as_py()) for v in prefixes.values()):
            return True
    kept_ids = _kept_source_ids(src, keep_src)
    return bool(len(kept_ids)) and bool(pc.any(pc.is_in(names, value_set=kept_ids)).as_py())


def _scatter(n: int, pieces: list[tuple[np.ndarray, pa.Array]]) -> pa.Array:
    """An array of length ``n`` from ``(positions, values)`` pieces that cover it."""
    if len(pieces) == 1:
        return pieces[0][1]
    positions = np.concatenate([p for p, _ in pieces])
    values = pa.concat_arrays([v for _, v in pieces])
    inverse = np.empty(n, np.int64)
    inverse[positions] = np.arange(n)
    return values.take(pa.array(inverse))


def _collapse_repeats(frame: pd.DataFrame, session_of_row: np.ndarray) -> pd.DataFrame:
    """Merge runs of the same item within a session (see :func:`sessionize`)."""
    n = len(frame)
    item = encode(frame["item_id"]).codes
    run_start = np.empty(n, bool)
    run_start[0] = True
    run_start[1:] = (item[1:] != item[:-1]) | (session_of_row[1:] != session_of_row[:-1])
    if run_start.all():
        return frame
    starts = np.flatnonzero(run_start)
    etype = encode(frame["event_type"])
    rank_of_code = np.array(
        [EVENT_TYPES.index(v) if v in EVENT_TYPES else -1 for v in etype.uniques.to_pylist()]
        + [-1],  # code -1: a null event type
        dtype=np.int64,
    )
    rank = rank_of_code[etype.codes]
    best = np.maximum.reduceat(rank, starts)
    run_of_row = np.cumsum(run_start) - 1
    strongest = np.flatnonzero(rank == best[run_of_row])  # rows holding their run's best
    _, first_strongest = np.unique(run_of_row[strongest], return_index=True)
    type_codes = etype.codes[strongest[first_strongest]]
    out = take_rows(frame, starts)
    mask = type_codes < 0
    indices = pa.array(type_codes, mask=mask) if mask.any() else pa.array(type_codes)
    out["event_type"] = string_array(etype.uniques.take(indices))
    log.info("sessionize: collapsed %d repeated events", n - len(starts))
    return out


# --------------------------------------------------------------------------- filter
def filter_support(
    events: pd.DataFrame, min_item_support: int, min_session_length: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """GRU4Rec's frequency filter: drop rare items, then short sessions.

    Parameters
    ----------
    events : pandas.DataFrame
        Canonical events; ``session_id`` must be filled on every row when
        ``min_session_length > 1`` (run :func:`sessionize` first).
    min_item_support : int
        Items with fewer events (counted over the whole table) are dropped first.
    min_session_length : int
        Then sessions with fewer remaining events are dropped.

    Returns
    -------
    (pandas.DataFrame, dict)
        The kept rows in input order (fresh ``RangeIndex``) and JSON-able stats:
        ``rows_in``, ``rows``, ``items``, ``sessions``, the two thresholds,
        ``dropped`` (rows by reason: ``item_support``, ``session_length``),
        ``items_dropped`` and ``sessions_dropped`` (distinct ids that vanished).

    Raises
    ------
    SplitError
        ``min_session_length > 1`` and some events have no session id.

    Notes
    -----
    The order is that of the GRU4Rec preprocessing of YOOCHOOSE (Hidasi et al.,
    ICLR 2016), also used by session-rec (Ludewig et al., "Empirical analysis of
    session-based recommendation algorithms", UMUAI 31, 2021): item support is
    counted once on the whole table and not recounted after the session
    filter, so a kept item can end with fewer than ``min_item_support`` events.
    (GRU4Rec's script additionally drops length-1 sessions once before the item
    filter; that pass only changes which items reach the support threshold.)
    A null ``item_id`` counts as an unsupported item.
    """
    columns = ["item_id", "session_id"] if min_session_length > 1 else ["item_id"]
    codes = parallel_map(encode, [events[c] for c in columns])
    mask, stats = support_mask(
        codes[0], codes[1] if len(codes) > 1 else None, min_item_support, min_session_length
    )
    # the kept rows' item (and session) codes are remembered for the splits that follow
    return take_rows(events, mask, dict(zip(columns, codes, strict=True))), stats


def support_mask(
    item: Codes, session: Codes | None, min_item_support: int, min_session_length: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """The rows :func:`filter_support` keeps, as a mask over codes, and its stats."""
    n = len(item.codes)
    if item.has_null:  # a null item is an item without support
        valid_item = item.codes >= 0
        counts = np.bincount(item.codes[valid_item], minlength=item.n_uniques)
        keep = valid_item.copy()
        keep[valid_item] = counts[item.codes[valid_item]] >= min_item_support
    else:
        counts = np.bincount(item.codes, minlength=item.n_uniques)
        keep = (counts >= min_item_support)[item.codes]
    after_items = int(np.count_nonzero(keep))
    sessions_in = sessions_out = None
    if session is not None:
        if min_session_length > 1 and session.has_null:
            raise SplitError(
                f"{int(np.count_nonzero(session.codes < 0))} event(s) have no session_id; "
                f"min_session_length={min_session_length} needs sessions: run sessionize first"
            )
        if session.has_null:
            with_session = session.codes >= 0
            sessions_in = session.n_distinct(with_session)
            lengths = np.bincount(session.codes[keep & with_session], minlength=session.n_uniques)
        else:
            sessions_in = session.n_distinct()
            lengths = np.bincount(session.codes[keep], minlength=session.n_uniques)
        if min_session_length > 1:
            keep &= lengths[session.codes] >= min_session_length
            sessions_out = int(np.count_nonzero(lengths >= min_session_length))
        else:
            sessions_out = int(np.count_nonzero(lengths))
    elif min_session_length > 1:
        raise SplitError(f"min_session_length={min_session_length} needs session ids")
    stats = support_stats(
        min_item_support,
        min_session_length,
        n,
        after_items,
        int(np.count_nonzero(keep)),
        int(np.count_nonzero(counts)),
        item.n_distinct(keep),
        sessions_in,
        sessions_out,
    )
    return keep, stats


def support_stats(
    min_item_support: int,
    min_session_length: int,
    n: int,
    after_items: int,
    kept: int,
    items_in: int,
    items_out: int,
    sessions_in: int | None,
    sessions_out: int | None,
) -> dict[str, Any]:
    """:func:`filter_support`'s stats (logged) from its counts: rows in, after the item
    filter and kept; distinct items in and kept; distinct sessions in and kept (``None``
    when sessions were not looked at)."""
    stats: dict[str, Any] = {
        "min_item_support": int(min_item_support),
        "min_session_length": int(min_session_length),
        "rows_in": n,
        "rows": kept,
        "items": items_out,
        "sessions": sessions_out,
        "dropped": {"item_support": n - after_items, "session_length": after_items - kept},
        "items_dropped": items_in - items_out,
        "sessions_dropped": None if sessions_in is None else sessions_in - sessions_out,
    }
    log.info(
        "filter_support: kept %d of %d events (dropped %d rare-item, %d short-session)",
        kept,
        n,
        stats["dropped"]["item_support"],
        stats["dropped"]["session_length"],
    )
    return stats


def select_event_types(
    events: pd.DataFrame, event_types: list[str] | None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Keep only events of ``event_types`` (all when None); report how many were dropped.

    Session models are often trained on one event type (e.g. the views of the
    DIGINETICA protocol); the dropped count goes into the split report.
    """
    stats: dict[str, Any] = {"kept": event_types, "dropped": 0}
    if event_types is None:
        return events, stats
    keep = events["event_type"].isin(event_types).to_numpy()
    stats["dropped"] = int((~keep).sum())
    return events[keep].reset_index(drop=True), stats
