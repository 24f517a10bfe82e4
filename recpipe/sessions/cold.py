"""The cold-start split: a global cut-off that also holds out whole items and users.

See :func:`cold_start_split` and :mod:`recpipe.sessions.splits` for the protocol.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recpipe.config import SessionsParams
from recpipe.errors import SplitError
from recpipe.sessions._arrays import Codes, iso, round_half_up
from recpipe.sessions.parts import (
    DROPPED,
    TEST,
    TRAIN,
    VALID,
    SplitResult,
    Table,
    finish,
    table_not_applicable,
)
from recpipe.sessions.temporal import cut_cutoffs, global_cut

__all__ = ["cold_start_split"]


# --------------------------------------------------------------------------- cold start
def cold_start_split(events: pd.DataFrame, params: SessionsParams) -> SplitResult:
    """A global cut-off that also holds out whole items and whole users (cold start).

    Parameters
    ----------
    events : pandas.DataFrame
        Canonical events with user ids (events without a user are dropped, counted
        as ``null_user``).
    params : SessionsParams
        ``global_test_fraction``, ``global_valid_fraction`` (the cut-off, as in
        :func:`~recpipe.sessions.temporal.global_temporal_split`), ``cold_item_fraction``,
        ``cold_user_fraction`` and ``cold_seed``.

    Returns
    -------
    SplitResult
        ``tables["cold_items"]`` / ``tables["cold_users"]``: one row per cold
        item / user (columns ``item_id`` / ``user_id`` (string), ``held_out``
        (bool: drawn by the seed; else the id has test events but no train
        event anyway: first seen after the train part, or only with held-out ids) and
        ``test_rows`` (int64: its test events)), sorted by id;
        ``stats["cold"]``: for ``items`` and ``users``, ``candidates`` (ids with
        test events), ``held_out``, ``new``, ``cold`` (held out + new) and
        ``test_rows`` (test events of cold ids), and ``test_rows_cold_item_or_user``;
        ``stats["dropped"]``: ``null_user``, ``cold_item`` (train / valid events of
        held-out items) and ``cold_user`` (those of held-out users, on warm items).

    Raises
    ------
    SplitError
        No user ids; the test or train part is empty; or the fractions hold out no
        item and no user (too few events after the cut-off).
        :func:`~recpipe.sessions.splits.build_splits` reports each of these as a
        :class:`~recpipe.sessions.splits.SkippedSplit` with the message.

    Notes
    -----
    1. The global cut-off of :func:`~recpipe.sessions.temporal.global_temporal_split`:
       events strictly after ``test_after`` are test, those after ``valid_after``
       valid, the rest train.
    2. Candidates: the items, and the users, with at least one test event. Sorted
       by id, ``round(n * cold_item_fraction)`` items and ``round(n *
       cold_user_fraction)`` users (halves up) are drawn without replacement by
       ``numpy.random.default_rng([cold_seed, 0])`` (items) and ``[cold_seed, 1]``
       (users): the draw depends on the ids and the seed only, not the row order.
    3. Every train and valid event of a held-out item or user is dropped; test
       keeps every event after the cut-off, of warm and cold items and users
       alike. No held-out item or user appears in train or valid; items and users
       first seen after the train part are cold too (``held_out`` false).
    4. With ``cold_anonymous="session"`` (the default) an event without a user but
       with a session gets the user id ``session:<session_id>`` first: on click logs
       where most visitors are anonymous (DIGINETICA), each anonymous session is a
       user, and a held-out or new one is a cold user.
    """
    return cold_start_split_table(Table(anonymous_as_users(events, params)), params)


def anonymous_as_users(events: pd.DataFrame, params: SessionsParams) -> pd.DataFrame:
    """``events`` with anonymous sessions' user ids set to ``session:<session_id>`` when
    ``params.cold_anonymous == "session"`` (a copy; ``events`` itself when unchanged)."""
    if params.cold_anonymous != "session" or "session_id" not in events:
        return events
    anonymous = (events["user_id"].isna() & events["session_id"].notna()).to_numpy()
    if not anonymous.any():
        return events
    events = events.copy()
    users = events["user_id"].astype("string")
    users[anonymous] = "session:" + events.loc[anonymous, "session_id"].astype("string")
    events["user_id"] = users
    return events


def _draw(
    codes: Codes, candidates: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """``round(len(candidates) * fraction)`` of ``candidates`` (codes), drawn in id order."""
    return np.sort(candidates[draw_ids(codes.uniques.take(pa.array(candidates)), fraction, rng)])


def draw_ids(ids: pa.Array, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Positions in ``ids`` (distinct) of ``round(len(ids) * fraction)`` ids drawn in id order."""
    n = int(round_half_up(len(ids) * fraction))
    if n == 0:
        return np.zeros(0, np.int64)
    order = pc.sort_indices(ids).to_numpy()
    return order[rng.permutation(len(order))[:n]]


def _cold_table(
    column: str, codes: Codes, part: np.ndarray, held: np.ndarray
) -> tuple[pd.DataFrame, dict[str, int], np.ndarray]:
    """The cold ids of one id column: held out, or with test but no train events.

    Returns the table (``column``, ``held_out``, ``test_rows``; sorted by id), the
    counts of ``stats["cold"]`` and a ``(max(n_uniques, 1),)`` bool mask of the cold codes.
    """
    k = max(codes.n_uniques, 1)
    c = codes.codes
    test, train = part == TEST, part == TRAIN
    if codes.has_null:
        ok = c >= 0
        test &= ok
        train &= ok
    test_rows = np.bincount(c[test], minlength=k)
    in_train = np.zeros(k, bool)
    in_train[c[train]] = True
    return cold_frame(column, codes.uniques, test_rows, in_train, held)


def cold_frame(
    column: str, uniques: pa.Array, test_rows: np.ndarray, in_train: np.ndarray, held: np.ndarray
) -> tuple[pd.DataFrame, dict[str, int], np.ndarray]:
    """:func:`_cold_table` from per-id summaries: test rows and train presence per code
    (arrays of ``max(len(uniques), 1)``), and the held-out codes."""
    k = max(len(uniques), 1)
    is_held = np.zeros(k, bool)
    is_held[held] = True
    is_cold = is_held | ((test_rows > 0) & ~in_train)
    cold = np.flatnonzero(is_cold)
    ids = pd.Series(uniques.take(pa.array(cold)).to_pylist(), dtype="string")
    frame = pd.DataFrame(
        {column: ids, "held_out": is_held[cold], "test_rows": test_rows[cold].astype(np.int64)}
    )
    frame = frame.sort_values(column, kind="stable", ignore_index=True)
    counts = {
        "candidates": int(np.count_nonzero(test_rows)),
        "held_out": len(held),
        "new": int(len(cold) - len(held)),
        "cold": len(cold),
        "test_rows": int(test_rows[cold].sum()),
    }
    return frame, counts, is_cold


def nothing_held(test_after: int, items: int, users: int, params: SessionsParams) -> SplitError:
    """The cold-start error for a draw that holds out nothing (``items``/``users``: candidates)."""
    return SplitError(
        f"cold_start split: too few events after the cut-off {iso(test_after)} to hold out "
        f"anything: round({items} items x cold_item_fraction="
        f"{params.cold_item_fraction}) = 0 and round({users} users x "
        f"cold_user_fraction={params.cold_user_fraction}) = 0; increase "
        "sessions.cold_item_fraction or sessions.cold_user_fraction"
    )


def cold_train_empty(params: SessionsParams) -> SplitError:
    """The cold-start error for a train part emptied by the held-out ids."""
    return SplitError(
        "cold_start split: the train part is empty once the held-out items and users are "
        f"removed; lower sessions.cold_item_fraction={params.cold_item_fraction} or "
        f"sessions.cold_user_fraction={params.cold_user_fraction}"
    )


def mask_rows(codes: np.ndarray, mask: np.ndarray, *, has_null: bool = True) -> np.ndarray:
    """(n,) bool: the row's code is marked in ``mask`` (null codes never are);
    ``has_null=False`` (no code is ``-1``) skips the null handling."""
    if not has_null:
        return mask[codes]
    return (codes >= 0) & mask[np.maximum(codes, 0)]


def _present(codes: Codes, rows: np.ndarray) -> np.ndarray:
    """The distinct non-null codes of ``rows`` (a mask), sorted, as ``int64``
    (``np.unique`` of them, by flags instead of a sort)."""
    picked = codes.codes[rows]
    seen = np.zeros(max(codes.n_uniques, 1), bool)
    seen[picked[picked >= 0] if codes.has_null else picked] = True
    return np.flatnonzero(seen).astype(np.int64)


def cold_start_split_table(table: Table, params: SessionsParams) -> SplitResult:
    t0 = time.perf_counter()
    kind = "cold_start"
    reason = table_not_applicable(kind, table)
    if reason:
        raise SplitError(f"{kind} split: {reason}")
    table.prefetch("user", "item", "session")
    part, test_after, valid_after = global_cut(table, params, kind)
    item, user = table.item.codes, table.user.codes
    test = part == TEST
    cand_items = _present(table.item, test)
    cand_users = _present(table.user, test)  # test rows all have a user
    held_items = _draw(
        table.item,
        cand_items,
        params.cold_item_fraction,
        np.random.default_rng([params.cold_seed, 0]),
    )
    held_users = _draw(
        table.user,
        cand_users,
        params.cold_user_fraction,
        np.random.default_rng([params.cold_seed, 1]),
    )
    if not len(held_items) and not len(held_users):
        raise nothing_held(test_after, len(cand_items), len(cand_users), params)
    item_held = np.zeros(max(table.item.n_uniques, 1), bool)
    item_held[held_items] = True
    user_held = np.zeros(max(table.user.n_uniques, 1), bool)
    user_held[held_users] = True
    earlier = (part == TRAIN) | (part == VALID)
    item_null, user_null = table.item.has_null, table.user.has_null
    cold_item_rows = earlier & mask_rows(item, item_held, has_null=item_null)
    cold_user_rows = earlier & ~cold_item_rows & mask_rows(user, user_held, has_null=user_null)
    part[cold_item_rows | cold_user_rows] = DROPPED
    if not (part == TRAIN).any():
        raise cold_train_empty(params)
    items_frame, item_counts, cold_items = _cold_table("item_id", table.item, part, held_items)
    users_frame, user_counts, cold_users = _cold_table("user_id", table.user, part, held_users)
    either = (part == TEST) & (
        mask_rows(item, cold_items, has_null=item_null)
        | mask_rows(user, cold_users, has_null=user_null)
    )
    m = int(np.count_nonzero(table.has_user))
    cutoffs, used = cut_cutoffs(kind, test_after, valid_after, params)
    extra = {
        "cold": {
            "items": item_counts,
            "users": user_counts,
            "test_rows_cold_item_or_user": int(np.count_nonzero(either)),
        }
    }
    dropped = {
        "null_user": int(table.n - m),
        "cold_item": int(np.count_nonzero(cold_item_rows)),
        "cold_user": int(np.count_nonzero(cold_user_rows)),
    }
    tables = {"cold_items": items_frame, "cold_users": users_frame}
    return finish(kind, table, part, used, cutoffs, dropped, extra, t0, tables)
