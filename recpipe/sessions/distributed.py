"""The sessions stage on a Dask cluster (``prep.engine: dask``).

The arrow engine's algorithm (:mod:`recpipe.sessions.scaled`) with its per-partition
steps run as Dask tasks (:mod:`recpipe.sessions.partition_tasks`):

1. shuffle by user: one task per input piece (whole row groups, about ``batch_rows``
   rows) writes its rows of each user-hash bucket into the work folder
   (:func:`~recpipe.data.partitions.partition_in_pieces`);
2. one task per partition selects event types, sessionizes and counts items; the
   global item dictionary and support counts are reduced here, then one task per
   partition filters by support and writes the partition's integer columns;
3. per split, the cut-offs, draws and other global quantities come from the
   partitions' integer columns here, and one task per partition writes its rows of
   train/valid/test and summarises them, then one task per part appends the pieces.

The outputs equal the arrow engine's (the same rows in the same order). Workers read
and write the work folder (beside the outputs, or under ``prep.work_url``): on several
machines a filesystem every worker mounts, or a folder of an object store
(``s3://bucket/prefix``) that every worker reaches.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from recpipe.config import SessionsParams
from recpipe.data.cluster import dask_client, dask_mapper
from recpipe.data.partitions import partition_in_pieces
from recpipe.data.workfs import WorkPath
from recpipe.sessions.scaled import prepare_sessions_arrow

__all__ = ["prepare_sessions_dask"]


def prepare_sessions_dask(
    source: str | Path,
    events_out: str | Path,
    splits_out: str | Path,
    work_dir: WorkPath,
    params: SessionsParams,
    n_partitions: int = 16,
    batch_rows: int = 1_000_000,
    *,
    address: str | None = None,
    workers: int = 2,
    client: Any = None,
    copy_source: bool = False,
    local_dir: Path | None = None,
) -> dict[str, Any]:
    """:func:`~recpipe.sessions.scaled.prepare_sessions_arrow` with its per-partition
    work as tasks on ``client``, else on the scheduler at ``address``, else on a
    temporary local cluster of ``workers`` processes. Same arguments, outputs, report
    and errors as the arrow engine. ``copy_source``: the tasks read a copy of
    ``source`` in ``work_dir``, so that workers on other machines need no access to it;
    ``work_dir`` may be the URL of a store (:mod:`recpipe.data.workfs`)."""
    if client is None:
        with dask_client(address, workers) as own:
            return prepare_sessions_dask(
                source,
                events_out,
                splits_out,
                work_dir,
                params,
                n_partitions,
                batch_rows,
                client=own,
                copy_source=copy_source,
                local_dir=local_dir,
            )
    mapper = dask_mapper(client)
    return prepare_sessions_arrow(
        source,
        events_out,
        splits_out,
        work_dir,
        params,
        n_partitions,
        batch_rows,
        mapper=mapper,
        partitioner=partial(partition_in_pieces, mapper=mapper),
        copy_source=copy_source,
        local_dir=local_dir,
    )
