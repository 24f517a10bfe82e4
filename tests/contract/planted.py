"""Tiny encoded data sets with planted answers, built directly (no pipeline run).

Layout of :func:`planted` (indices; 0 = PAD and 1 = UNK are reserved):

- ``POPULAR`` (2) opens every session: the most popular item by far.
- Users 2..7 like ``BLOCK_A`` (4..7), users 8..13 like ``BLOCK_B`` (8..11); each
  session holds a few items of its user's block. ``HELD_OUT_USER`` (2) never sees
  ``HELD_OUT_ITEM`` (7), which its block-mates do.
- Every other session ends with ``A`` (12) then ``B`` (13): A is always followed by B.
- Items 14..17 never occur in train.
- Item content (:func:`planted_content`, in ``meta.item_content``): the items of a
  block share their block's category, title and price, A and B share theirs ("a pair
  of matching socks"), POPULAR has its own; items 3 and 14..17 have no content. The
  meta carries no ``item_categories``, so only models that read item content see it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from recpipe.features.content import ContentEncoder, ItemContent, align
from recpipe.features.idmap import N_RESERVED, IdMap
from recpipe.models.data import DataMeta, Interactions

POPULAR = 2
BLOCK_A = (4, 5, 6, 7)
BLOCK_B = (8, 9, 10, 11)
A, B = 12, 13
N_ITEMS = 18
N_USERS = 14
HELD_OUT_USER, HELD_OUT_ITEM = 2, 7
_T0 = pd.Timestamp("2024-03-01", tz="UTC").value
_HOUR = 3_600 * 10**9


def encoded_frame(
    sessions: Sequence[Sequence[int]],
    users: Sequence[int] | None = None,
    *,
    start_ns: Sequence[int] | None = None,
    step_ns: int = 60 * 10**9,
    values: Sequence[Sequence[float]] | None = None,
) -> pd.DataFrame:
    """An encoded events frame (the features stage's columns) from item lists.

    Session s starts at ``start_ns[s]`` (default: one hour apart) and its events are
    ``step_ns`` apart; the user of session s is ``users[s]`` (default 2).
    """
    n = len(sessions)
    users = list(users) if users is not None else [2] * n
    starts = list(start_ns) if start_ns is not None else [_T0 + s * _HOUR for s in range(n)]
    rows = []
    for s, items in enumerate(sessions):
        for j, item in enumerate(items):
            rows.append(
                {
                    "session_id": f"s{s:04d}",
                    "user_idx": users[s],
                    "item_idx": item,
                    "timestamp": pd.Timestamp(starts[s] + j * step_ns, unit="ns", tz="UTC"),
                    "value": float(values[s][j]) if values is not None else 1.0,
                    "event_type_idx": 1,
                    "gap_bucket": 0 if j == 0 else 5,
                    "hour": 0,
                    "dow": 4,
                }
            )
    frame = pd.DataFrame(rows)
    return frame.astype(
        {
            "session_id": "string",
            "user_idx": "int32",
            "item_idx": "int32",
            "value": "float32",
            "event_type_idx": "int8",
            "gap_bucket": "int8",
            "hour": "int8",
            "dow": "int8",
        }
    )


def interactions(sessions: Sequence[Sequence[int]], **kwargs) -> Interactions:
    """:func:`encoded_frame` as :class:`Interactions`."""
    return Interactions.from_frame(encoded_frame(sessions, **kwargs))


def _planted_sessions(seed: int, sessions_per_user: int) -> tuple[list[list[int]], list[int]]:
    rng = np.random.default_rng(seed)
    sessions, users = [], []
    for s in range(sessions_per_user):
        for user in range(2, N_USERS):
            block = BLOCK_A if user < 8 else BLOCK_B
            if user == HELD_OUT_USER:
                block = tuple(i for i in block if i != HELD_OUT_ITEM)
            chosen = rng.choice(block, size=2, replace=False).tolist()
            tail = [A, B] if (s + user) % 2 == 0 else []
            sessions.append([POPULAR, *chosen, *tail])
            users.append(user)
    return sessions, users


#: Content of the planted items: (items, category, title, price).
PLANTED_CONTENT = (
    ((POPULAR,), "bestsellers", "famous bestseller", 5.0),
    (BLOCK_A, "kitchen", "steel kitchen pan", 30.0),
    (BLOCK_B, "garden", "green garden hose", 12.0),
    ((A, B), "socks", "matching pair of socks", 8.0),
)


def planted_content(
    counts: np.ndarray, *, text_buckets: int = 256
) -> tuple[ItemContent, ContentEncoder]:
    """(item content aligned to the planted item indices, its fitted encoder).

    Item ``i`` has the id ``str(i)``; ``counts`` are the train counts by index.
    """
    rows = [
        {"item_id": str(i), "categories": [cat], "title": title, "price": price}
        for items, cat, title, price in PLANTED_CONTENT
        for i in items
    ]
    frame = pd.DataFrame(rows)
    encoder = ContentEncoder(text_buckets=text_buckets, word_ngrams=(1,), char_ngrams=()).fit(frame)
    ids = np.array([str(i) for i in range(N_RESERVED, len(counts))], dtype=object)
    idmap = IdMap(ids=ids, id_counts=np.asarray(counts)[N_RESERVED:])
    content = align(encoder.transform(frame), idmap)
    assert isinstance(content, ItemContent)
    return content, encoder


def planted(seed: int = 0) -> tuple[Interactions, Interactions, DataMeta]:
    """(train, valid, meta) of the planted data set."""
    train_sessions, train_users = _planted_sessions(seed, sessions_per_user=4)
    valid_sessions, valid_users = _planted_sessions(seed + 1, sessions_per_user=1)
    start = _T0 + len(train_sessions) * _HOUR
    train = interactions(train_sessions, users=train_users)
    valid = interactions(
        valid_sessions,
        users=valid_users,
        start_ns=[start + s * _HOUR for s in range(len(valid_sessions))],
    )
    meta = DataMeta.from_interactions(train, n_items=N_ITEMS, n_users=N_USERS, split="planted")
    content, encoder = planted_content(meta.item_counts)
    meta = replace(meta, item_content=content, item_encoder=encoder)
    return train, valid, meta
