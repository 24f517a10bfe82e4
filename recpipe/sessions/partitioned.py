"""Sessionization of an events table larger than memory: user-hash partitions, one at a time.

:func:`sessionize_partitioned` streams a canonical events Parquet file (or folder of
parts) in record batches, writes each row to one of ``n_partitions`` bucket files by a
hash of its ``user_id`` (null user ids: by ``session_id``), then runs the in-memory
:func:`recpipe.sessions.sessionize.sessionize` on one bucket at a time and writes
``part-<k>.parquet``. Peak memory is one batch plus one bucket, not the whole log.

Every session of the in-memory path lies within one bucket (a user's stream, or an
anonymous source session, hashes to one bucket), and generated ids ``"<user>#<n>"``
count within a user's stream, so the parts hold exactly the rows and session ids of
the in-memory path; each part is in that path's order restricted to its rows. One
case cannot be partitioned and is refused with :class:`~recpipe.errors.SplitError`:
rows with neither a user nor a session id (their ids ``"#<row>"`` name a global row
position). Not detected: generated ids that collide with source ids only across
buckets (the in-memory path then renames all generated ids ``"~g<k>"``); a kept
source session shared by several users is one session there and one per bucket
here (same rows, same ids).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from recpipe.config import SessionsParams
from recpipe.data.partitions import partition_by_user

log = logging.getLogger(__name__)

__all__ = ["partition_by_user", "sessionize_partitioned"]  # partition_by_user: re-exported


def sessionize_partitioned(
    source: str | Path,
    out_dir: str | Path,
    params: SessionsParams,
    n_partitions: int = 16,
    batch_rows: int = 1_000_000,
) -> dict[str, Any]:
    """Sessionize a large events table partition by partition (see the module notes).

    Parameters
    ----------
    source : path
        Canonical events Parquet file or folder of Parquet parts.
    out_dir : path
        Emptied, then gets ``part-<k>.parquet`` (sessionized rows of bucket ``k``).
    params : SessionsParams
        As for :func:`~recpipe.sessions.sessionize.sessionize`.
    n_partitions : int
        User-hash buckets; memory is about one bucket's share of the log.
    batch_rows : int
        Rows read at a time while bucketing.

    Returns
    -------
    dict
        ``rows``, ``sessions``, ``partitions`` (files written) and ``seconds``.
    """
    from recpipe.sessions.sessionize import sessionize

    t0 = time.perf_counter()
    out = Path(out_dir)
    buckets = partition_by_user(source, out / "_buckets", n_partitions, batch_rows)
    rows = sessions = 0
    parts = []
    for bucket in buckets:
        frame = pd.read_parquet(bucket)
        done = sessionize(frame, params)
        del frame
        ids = done["session_id"]
        part = out / bucket.name.replace("bucket-", "part-")
        done.to_parquet(part, index=False)
        rows += len(done)
        sessions += int(ids.nunique())
        parts.append(part)
        bucket.unlink()
    shutil.rmtree(out / "_buckets", ignore_errors=True)
    seconds = time.perf_counter() - t0
    log.info(
        "sessionize_partitioned: %d events -> %d sessions in %d partitions in %.2f s",
        rows,
        sessions,
        len(parts),
        seconds,
    )
    return {"rows": rows, "sessions": sessions, "partitions": len(parts), "seconds": seconds}
