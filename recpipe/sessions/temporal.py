"""Temporal splits of users' events: one global cut-off, or per user.

``global_temporal`` (one cut-off time for everybody), ``user_temporal`` (per user, the
last share of the user's events) and ``leave_last_out`` (per user, the last event); see
:mod:`recpipe.sessions.splits` for the protocols. The global cut-off is shared with the
cold-start split (:mod:`recpipe.sessions.cold`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

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
    empty_test,
    finish,
    part_counts,
    table_not_applicable,
    user_rank,
)

__all__ = ["global_temporal_split", "leave_last_out_split", "user_temporal_split"]


# --------------------------------------------------------------------------- global temporal
def global_temporal_split(events: pd.DataFrame, params: SessionsParams) -> SplitResult:
    """One cut-off time for all users: the last events in time are test.

    Parameters
    ----------
    events : pandas.DataFrame
        Canonical events with user ids (events without a user are dropped, counted
        as ``null_user``).
    params : SessionsParams
        ``global_test_fraction``, ``global_valid_fraction``.

    Returns
    -------
    SplitResult
        ``stats["cutoffs"]``: ``test_after`` (test = events strictly after it)
        and ``valid_after`` (valid = events after it and at or before
        ``test_after``); ``stats["fractions"]``: the shares achieved;
        ``stats["test_users"]`` and ``stats["test_users_with_train"]`` (the
        users a user model can be evaluated on); ``stats["cold_start"]``: users
        and items of valid/test with no train event (kept; evaluation slices
        them). The per-user splits report the same user and cold-start counts.

    Raises
    ------
    SplitError
        No user ids, or the test or train part is empty.

    Notes
    -----
    With ``m`` events sorted by time, ``test_after`` is the timestamp of event
    number ``m - round(m * global_test_fraction)`` (1-based, round half up), and
    ``valid_after`` that of ``m - round(m * (global_test_fraction +
    global_valid_fraction))``. Events *at* a cut-off go to the earlier part,
    so every test timestamp is strictly greater than every valid and train
    timestamp and every valid timestamp strictly greater than every train one;
    with ties at a cut-off the test share comes out a little below the target
    (the achieved shares are in ``stats["fractions"]``). Cold-start users and
    items are kept in test (Campos et al., UMUAI 2014).
    """
    return global_temporal_split_table(Table(events), params)


def global_cut(table: Table, params: SessionsParams, kind: str) -> tuple[np.ndarray, int, int]:
    """Per-row part codes of the global cut-off (null users dropped) and the two cut-offs.

    Returns
    -------
    part : numpy.ndarray
        (n,) int8 part code of each row.
    test_after, valid_after : int
        The cut-off timestamps (ns): test is strictly after ``test_after``, valid
        after ``valid_after`` and at or before ``test_after``.

    Raises
    ------
    SplitError
        The test or train part comes out empty; the message names the param to change.
    """
    key = f"global_cut:{params.global_test_fraction!r}:{params.global_valid_fraction!r}"
    part, test_after, valid_after = table.cached(key, lambda: _global_cut(table, params, kind))
    return part.copy(), test_after, valid_after  # a copy: cold start changes its own


def _global_cut(table: Table, params: SessionsParams, kind: str) -> tuple[np.ndarray, int, int]:
    has_user = table.has_user
    ts_u = table.ts if bool(has_user.all()) else table.ts[has_user]  # partition copies

    def kth(ks: list[int]) -> list[int]:
        values = np.partition(ts_u, sorted(set(ks)))
        return [int(values[k]) for k in ks]

    lo, hi = (int(ts_u.min()), int(ts_u.max())) if len(ts_u) else (0, 0)
    test_after, valid_after = global_cutoffs(len(ts_u), kth, lo, hi, params, kind)
    return cut_parts(table.ts, has_user, test_after, valid_after), test_after, valid_after


def cut_parts(
    ts: np.ndarray, has_user: np.ndarray, test_after: int, valid_after: int
) -> np.ndarray:
    """Per-row part codes of the global cut-off: rows without a user are dropped."""
    part = np.full(len(ts), TRAIN, np.int8)
    part[ts > valid_after] = VALID
    part[ts > test_after] = TEST
    part[~has_user] = DROPPED
    return part


def global_cutoffs(
    m: int,
    kth: Callable[[list[int]], list[int]],
    ts_min: int,
    ts_max: int,
    params: SessionsParams,
    kind: str,
) -> tuple[int, int]:
    """``(test_after, valid_after)`` of the global cut-off over ``m`` events with a user.

    ``kth(ks)``: the 0-based order statistics ``ks`` of those events' timestamps;
    ``ts_min`` / ``ts_max``: their least and greatest timestamp. Raises
    :class:`SplitError` when the test or train part would be empty.
    """
    n_test = int(round_half_up(m * params.global_test_fraction))
    n_held = int(round_half_up(m * (params.global_test_fraction + params.global_valid_fraction)))
    if n_test == 0:
        raise empty_test(
            kind,
            f"round({m} events x global_test_fraction={params.global_test_fraction}) = 0",
            "increase sessions.global_test_fraction",
        )
    if n_held >= m:
        raise SplitError(
            f"{kind} split: the train part is empty (global_test_fraction + "
            f"global_valid_fraction = {params.global_test_fraction + params.global_valid_fraction} "
            f"of {m} events); lower sessions.global_valid_fraction or global_test_fraction"
        )
    k_test, k_valid = m - n_test - 1, m - n_held - 1  # 0-based order statistics
    test_after, valid_after = kth([k_test, k_valid])
    if not ts_max > test_after:  # no test row
        raise empty_test(
            kind,
            f"every event is at or before the cut-off {iso(test_after)}: the last "
            f"{n_test} events share the last timestamp",
            "increase sessions.global_test_fraction",
        )
    if not ts_min <= valid_after:  # no train row
        raise SplitError(
            f"{kind} split: the train part is empty (all events share the first timestamp "
            f"{iso(valid_after)}); lower sessions.global_valid_fraction"
        )
    return test_after, valid_after


def global_temporal_split_table(table: Table, params: SessionsParams) -> SplitResult:
    t0 = time.perf_counter()
    kind = "global_temporal"
    reason = table_not_applicable(kind, table)
    if reason:
        raise SplitError(f"{kind} split: {reason}")
    table.prefetch("user", "item", "session")
    part, test_after, valid_after = global_cut(table, params, kind)
    m = int(np.count_nonzero(table.has_user))
    counts = part_counts(part)
    cutoffs, used = cut_cutoffs(kind, test_after, valid_after, params)
    extra = {"fractions": cut_fractions(counts, m)}
    dropped = {"null_user": int(table.n - m)}
    return finish(kind, table, part, used, cutoffs, dropped, extra, t0)


def cut_fractions(counts: np.ndarray, m: int) -> dict[str, float]:
    """``stats["fractions"]`` of the global temporal split (``counts``: rows per part code)."""
    return {
        name: round(float(counts[code]) / m, 6)
        for name, code in (("train", TRAIN), ("valid", VALID), ("test", TEST))
    }


def cut_cutoffs(
    kind: str, test_after: int, valid_after: int, params: SessionsParams
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``stats["cutoffs"]`` and ``stats["params"]`` of the global temporal / cold-start split."""
    rule = "train <= valid_after < valid <= test_after < test"
    used = {
        "global_test_fraction": params.global_test_fraction,
        "global_valid_fraction": params.global_valid_fraction,
    }
    if kind == "cold_start":
        rule += "; train and valid lose every event of a held-out item or user"
        used |= {
            "cold_item_fraction": params.cold_item_fraction,
            "cold_user_fraction": params.cold_user_fraction,
            "cold_seed": params.cold_seed,
        }
    cutoffs = {"valid_after": iso(valid_after), "test_after": iso(test_after), "rule": rule}
    return cutoffs, used


# --------------------------------------------------------------------------- per-user splits
def user_temporal_split(events: pd.DataFrame, params: SessionsParams) -> SplitResult:
    """Per user, the last share of the user's events (in time) is test.

    Parameters
    ----------
    events : pandas.DataFrame
        Canonical events with user ids (events without a user are dropped, counted
        as ``null_user``).
    params : SessionsParams
        ``user_test_fraction``, ``user_valid_fraction``.

    Returns
    -------
    SplitResult
        ``stats["users_by_events"]`` counts users with 1, 2 and 3+ events;
        ``stats["cold_start"]`` counts valid/test items with no train event.

    Raises
    ------
    SplitError
        No user ids, or no user has two events (empty test part).

    Notes
    -----
    A user with ``c >= 2`` events, ordered by time (ties in input order), has
    ``n_test = min(max(round(c * user_test_fraction), 1), c - 1)`` test events
    (the last ones) and ``n_valid = min(round(c * user_valid_fraction), c - 1 -
    n_test)`` validation events just before them, rounding halves up; so each
    such user has at least one train and one test event, and every test
    timestamp is >= every train timestamp of the same user. A user with one
    event stays in train. This is the per-user "last N%" protocol of Campos et
    al., UMUAI 2014; unlike a global cut-off it evaluates every user.
    """
    return per_user_split(Table(events), params, "user_temporal")


def leave_last_out_split(events: pd.DataFrame, params: SessionsParams) -> SplitResult:
    """Per user, the last event is test and the one before it validation.

    Parameters
    ----------
    events : pandas.DataFrame
        Canonical events with user ids (events without a user are dropped, counted
        as ``null_user``).
    params : SessionsParams
        Unused (the protocol has no knobs); kept for a uniform signature.

    Returns
    -------
    SplitResult

    Raises
    ------
    SplitError
        No user ids, or no user has two events.

    Notes
    -----
    Users with 3+ events: last -> test, second last -> valid, the rest train;
    with 2 events: last -> test, first -> train; with 1 event: train. "Last"
    is by timestamp, ties in input order. The leave-one-out protocol of He et
    al. (WWW 2017) and Kang & McAuley (ICDM 2018), without sampled negatives
    (evaluation ranks all items).
    """
    return per_user_split(Table(events), params, "leave_last_out")


def per_user_split(table: Table, params: SessionsParams, kind: str) -> SplitResult:
    t0 = time.perf_counter()
    reason = table_not_applicable(kind, table)
    if reason:
        raise SplitError(f"{kind} split: {reason}")
    table.prefetch("user", "item", "session")
    part, count, used, rule = per_user_parts(
        table.user, table.ts, params, kind, rank=table.user_rank()
    )
    if not np.any(count >= 2):
        raise per_user_no_test(kind)
    extra = {"users_by_events": users_by_events(count)}
    dropped = {"null_user": int(np.count_nonzero(part == DROPPED))}
    return finish(kind, table, part, used, {"rule": rule}, dropped, extra, t0)


def per_user_no_test(kind: str) -> SplitError:
    """The per-user splits' error when no user has two events."""
    return empty_test(
        kind,
        "no user has 2 or more events",
        "use data with repeat users, or the session split (sessions.splits)",
    )


def users_by_events(count: np.ndarray) -> dict[str, int]:
    """``stats["users_by_events"]`` of the per-user splits from per-user event counts."""
    return {
        "1": int(np.count_nonzero(count == 1)),
        "2": int(np.count_nonzero(count == 2)),
        "3+": int(np.count_nonzero(count >= 3)),
    }


def per_user_parts(
    user: Codes,
    ts: np.ndarray,
    params: SessionsParams,
    kind: str,
    rank: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any], str]:
    """Per-row part codes of a per-user split, events per user, the params used and the rule.

    Rows without a user are dropped. Per user only: a table holding whole users
    (e.g. one user-hash partition) gives the rows of the whole table's result.
    ``rank``: :func:`~recpipe.sessions.parts.user_rank` of ``user`` and ``ts`` when
    already computed (both per-user splits share :meth:`Table.user_rank`).
    """
    after, count = user_rank(user, ts) if rank is None else rank  # per row; per user
    if kind == "user_temporal":
        n_test = np.maximum(round_half_up(count * params.user_test_fraction), 1)
        n_test = np.minimum(n_test, count - 1)
        n_valid = np.minimum(round_half_up(count * params.user_valid_fraction), count - 1 - n_test)
        n_valid = np.maximum(n_valid, 0)
        used: dict[str, Any] = {
            "user_test_fraction": params.user_test_fraction,
            "user_valid_fraction": params.user_valid_fraction,
        }
        rule = (
            "per user with c >= 2 events: last min(max(round(c * user_test_fraction), 1), c - 1) "
            "test, the round(c * user_valid_fraction) before valid (train keeps >= 1); "
            "round half up; 1 event: train"
        )
    else:
        n_test = (count >= 2).astype(np.int64)
        n_valid = (count >= 3).astype(np.int64)
        used = {}
        rule = "per user: last event test (2+ events), the one before valid (3+ events)"
    # per user: test if after < n_test, valid if after < n_test + n_valid; as
    # TRAIN, VALID, TEST = 0, 1, 2 and n_test <= n_test + n_valid, the code is the sum
    # of the two comparisons
    test_end = n_test.astype(np.int32)
    valid_end = (n_test + n_valid).astype(np.int32)
    codes = user.codes
    has = after >= 0
    if bool(has.all()):
        part = (after < valid_end[codes]).view(np.int8)
        part += (after < test_end[codes]).view(np.int8)
    else:
        part = np.full(len(codes), DROPPED, np.int8)
        row_user, pos = codes[has], after[has]
        part[has] = (pos < valid_end[row_user]).view(np.int8) + (pos < test_end[row_user])
    return part, count, used, rule
