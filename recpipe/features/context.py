"""Per-event context features: event type, time since the previous event, hour and weekday.

These are the context inputs of the contextual session RNN (Smirnova & Vasile 2017,
"Contextual Sequence Modeling for Recommendation with Recurrent Neural Networks") and
of the CTR models, as small integer codes for embedding tables:

================  ======  ===============================================================
column            dtype   meaning
================  ======  ===============================================================
event_type_idx    int8    0 = padding / unknown type, then :data:`EVENT_TYPES` in order
                          (see :data:`EVENT_TYPE_INDEX`)
gap_bucket        int8    0 = first event of its session; otherwise
                          ``1 + floor(log2(1 + seconds since the previous event of the
                          session))``, capped at ``gap_buckets - 1``
hour              int8    hour of day, 0-23, in UTC
dow               int8    day of week, 0 = Monday, in UTC
================  ======  ===============================================================

(``gap_bucket`` is int16 when ``gap_buckets > 127``.) The same bucketing is available
for serving as :func:`gap_bucket_of`, and its edges as :func:`gap_bucket_edges`.
Everything is vectorised; no Python code runs per event.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recpipe.data.schema import EVENT_TYPES
from recpipe.features.idmap import as_arrow_strings

log = logging.getLogger(__name__)

#: Event type -> index; 0 is padding / unknown.
EVENT_TYPE_INDEX: dict[str, int] = {t: i + 1 for i, t in enumerate(EVENT_TYPES)}

#: Columns of :func:`context_features`, in order.
CONTEXT_COLUMNS: tuple[str, ...] = ("event_type_idx", "gap_bucket", "hour", "dow")

_NS_PER_S = 1_000_000_000
_NS_PER_HOUR = 3600 * _NS_PER_S
_NS_PER_DAY = 24 * _NS_PER_HOUR
_EPOCH_DOW = 3  # 1970-01-01 was a Thursday (Monday = 0)
_MAX_GAP_BUCKETS = 32767


def _check_gap_buckets(gap_buckets: int) -> int:
    if int(gap_buckets) != gap_buckets or not 2 <= gap_buckets <= _MAX_GAP_BUCKETS:
        raise ValueError(
            f"gap_buckets must be an integer in [2, {_MAX_GAP_BUCKETS}], got {gap_buckets!r}"
        )
    return int(gap_buckets)


def context_cardinalities(gap_buckets: int) -> dict[str, int]:
    """Embedding table size of each context column (codes lie in ``[0, size)``)."""
    return {
        "event_type_idx": len(EVENT_TYPES) + 1,
        "gap_bucket": _check_gap_buckets(gap_buckets),
        "hour": 24,
        "dow": 7,
    }


def gap_bucket_edges(gap_buckets: int) -> np.ndarray:
    """Lower edges, in seconds, of the gap buckets ``1 .. gap_buckets - 1``.

    Bucket ``b >= 1`` holds gaps ``s`` with ``edges[b - 1] <= s < edges[b]`` (the last
    bucket is open-ended); bucket 0 is the first event of a session, which has no gap.
    ``edges[b - 1] = 2 ** (b - 1) - 1``, i.e. ``b = 1 + floor(log2(1 + s))``.

    Returns
    -------
    numpy.ndarray
        (gap_buckets - 1,) float64 seconds: ``[0, 1, 3, 7, 15, ...]``.

    Examples
    --------
    >>> gap_bucket_edges(6).tolist()
    [0.0, 1.0, 3.0, 7.0, 15.0]
    """
    g = _check_gap_buckets(gap_buckets)
    return np.exp2(np.arange(g - 1, dtype=np.float64)) - 1.0


def _bucket_dtype(gap_buckets: int) -> type[np.integer]:
    return np.int8 if gap_buckets <= 127 else np.int16


def gap_bucket_of(seconds: np.ndarray | float, gap_buckets: int) -> np.ndarray:
    """Gap bucket of given gaps: NaN (no previous event) -> 0, else ``1 + floor(log2(1 + s))``.

    The serving-time twin of ``context_features(...)["gap_bucket"]``. Negative gaps
    (clock skew) count as 0 seconds.

    Parameters
    ----------
    seconds : array-like of float
        Any shape; seconds since the previous event of the session, NaN for none.
    gap_buckets : int
        Number of buckets including bucket 0.

    Returns
    -------
    numpy.ndarray
        Same shape, int8 (int16 when ``gap_buckets > 127``), in ``[0, gap_buckets)``.
    """
    g = _check_gap_buckets(gap_buckets)
    s = np.asarray(seconds, dtype=np.float64)
    inner = gap_bucket_edges(g)[1:]  # (g - 2,) upper edges of buckets 1 .. g - 2
    bucket = 1 + np.searchsorted(inner, np.maximum(s, 0.0), side="right")
    return np.where(np.isnan(s), 0, bucket).astype(_bucket_dtype(g))


def _utc_nanoseconds(timestamps: pd.Series) -> np.ndarray:
    """(N,) int64 nanoseconds since the epoch, UTC (naive times are taken as UTC)."""
    ts = timestamps
    if not pd.api.types.is_datetime64_any_dtype(ts.dtype):
        raise ValueError(f"column 'timestamp' must hold date-times, got dtype {ts.dtype}")
    n_null = int(ts.isna().sum())
    if n_null:
        raise ValueError(f"column 'timestamp' holds {n_null} null(s); context needs every time")
    ts = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    return ts.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").view(np.int64)


def _session_order(sessions: pa.Array, ns: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """Order by (session, time) and "same session as the previous row" in that order.

    Returns ``(order, same)``: ``order`` is None when the input is already grouped by
    session with non-decreasing times (the sessions stage writes it so), else the
    stable (N,) sort permutation; ``same`` is (N - 1,) bool over consecutive rows of
    the ordered events. Null sessions never match (each such event stands alone).
    """
    n = len(ns)
    if n < 2:
        return None, np.zeros(max(n - 1, 0), dtype=bool)
    same = pc.fill_null(pc.equal(sessions[1:], sessions[:-1]), False)
    same = same.to_numpy(zero_copy_only=False)
    sorted_times = not bool(np.any(ns[1:][same] < ns[:-1][same]))
    if sorted_times:
        # grouped iff no session id reappears after its run: one run per distinct id
        starts = np.flatnonzero(np.r_[True, ~same])
        run_ids = sessions.take(pa.array(starts)).drop_null()
        if len(run_ids) == len(pc.unique(run_ids)):
            return None, same
    log.debug("context_features: events not grouped by (session_id, timestamp); sorting")
    encoded = pc.dictionary_encode(sessions)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.lexsort((ns, codes))  # stable: ties keep input order
    sorted_codes = codes[order]
    same = (sorted_codes[1:] == sorted_codes[:-1]) & (sorted_codes[1:] >= 0)
    return order, same


def context_features(events: pd.DataFrame, gap_buckets: int) -> pd.DataFrame:
    """Context codes of every event (see the module docstring for the columns).

    Parameters
    ----------
    events : pandas.DataFrame
        (N, ...) with ``event_type``, ``timestamp`` and ``session_id``; normally
        sorted by (session_id, timestamp). Other orders give the same result
        (an extra sort); the previous event of a session is the one before in
        time, ties in input order. Null sessions count as one-event sessions.
    gap_buckets : int
        Number of gap buckets including bucket 0 (``FeaturesParams.gap_buckets``).

    Returns
    -------
    pandas.DataFrame
        (N, 4) :data:`CONTEXT_COLUMNS`, aligned to ``events.index``.
    """
    g = _check_gap_buckets(gap_buckets)
    missing = [c for c in ("event_type", "timestamp", "session_id") if c not in events.columns]
    if missing:
        raise ValueError(
            f"events lack column(s) {missing}; context needs event_type, timestamp, session_id"
        )
    ns = _utc_nanoseconds(events["timestamp"])
    n = len(ns)

    types = pa.array(list(EVENT_TYPES), type=pa.large_string())
    type_pos = pc.index_in(as_arrow_strings(events["event_type"]), value_set=types)
    if isinstance(type_pos, pa.ChunkedArray):
        type_pos = type_pos.combine_chunks()
    event_type_idx = type_pos.fill_null(-1).to_numpy(zero_copy_only=False) + 1

    sessions = as_arrow_strings(events["session_id"])
    if isinstance(sessions, pa.ChunkedArray):
        sessions = sessions.combine_chunks()
    order, same = _session_order(sessions, ns)
    ordered_ns = ns if order is None else ns[order]
    seconds = np.full(n, np.nan)
    if n > 1:
        seconds[1:][same] = (ordered_ns[1:][same] - ordered_ns[:-1][same]) / _NS_PER_S
    buckets = gap_bucket_of(seconds, g)
    if order is not None:
        unsorted = np.empty_like(buckets)
        unsorted[order] = buckets
        buckets = unsorted

    return pd.DataFrame(
        {
            "event_type_idx": event_type_idx.astype(np.int8),
            "gap_bucket": buckets,
            "hour": ((ns // _NS_PER_HOUR) % 24).astype(np.int8),
            "dow": ((ns // _NS_PER_DAY + _EPOCH_DOW) % 7).astype(np.int8),
        },
        index=events.index,
    )
