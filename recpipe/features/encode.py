"""Encode split events into the integer tables every model trains on.

One function turns canonical events (sorted by session and time, as the sessions
stage writes them) into index columns through the split's id maps plus the per-event
context features, so that training, evaluation and serving share one mapping.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from recpipe.features.context import context_features
from recpipe.features.idmap import UNK, IdMap

#: Columns of an encoded events table, in order.
ENCODED_COLUMNS: tuple[str, ...] = (
    "session_id",
    "user_idx",
    "item_idx",
    "timestamp",
    "value",
    "event_type_idx",
    "gap_bucket",
    "hour",
    "dow",
)


def encode_events(
    events: pd.DataFrame, items: IdMap, users: IdMap, gap_buckets: int
) -> pd.DataFrame:
    """Map ids to indices (unknown -> :data:`UNK`) and add context features.

    Parameters
    ----------
    events
        Canonical events sorted by (session_id, timestamp).
    items, users
        Id maps fitted on the split's training part.
    gap_buckets
        Number of log2 buckets of the time since the previous event in the session.

    Returns
    -------
    pandas.DataFrame
        :data:`ENCODED_COLUMNS`, one row per input event, in input order.
    """
    context = context_features(events, gap_buckets)
    # explicit dtypes: an empty part (e.g. valid with sessions.valid_days 0) must keep
    # them too, or joining it to another part breaks (object timestamps)
    return pd.DataFrame(
        {
            "session_id": pd.Series(events["session_id"].to_numpy(), dtype="str"),
            "user_idx": users.encode(events["user_id"]).astype(np.int32),
            "item_idx": items.encode(events["item_id"]).astype(np.int32),
            "timestamp": pd.Series(events["timestamp"].array).astype("datetime64[ns, UTC]"),
            "value": events["value"].to_numpy(dtype=np.float32),
            **{col: context[col].to_numpy() for col in context.columns},
        }
    )


def encoding_stats(encoded: pd.DataFrame) -> dict[str, Any]:
    """Rows, and the share of events whose user or item maps to the unknown slot."""
    n = len(encoded)
    return {
        "rows": n,
        "sessions": int(encoded["session_id"].nunique()),
        "unknown_item_share": float((encoded["item_idx"] == UNK).mean()) if n else 0.0,
        "unknown_user_share": float((encoded["user_idx"] == UNK).mean()) if n else 0.0,
    }
