"""The validate stage on a Dask cluster (``prep.engine: dask``).

The arrow engine's :func:`~recpipe.validation.partitioned.validate_partitioned` with its
per-partition work as Dask tasks: one task per piece of the events file (whole row
groups, about ``batch_rows`` rows) writes its rows of each user-hash bucket with their
row numbers (a shuffle by user through the work folder), then one task per bucket runs
the Great Expectations suites with the worker's own GX context
(:func:`~recpipe.validation.partitioned.check_partition`). The report, the bad rows and
the pass/fail decision are aggregated here exactly as the arrow engine does, so the
report, quarantine and clean tables are the arrow (and pandas) engine's. The quarantine
and clean tables are then streamed from the input here.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recpipe.data.cluster import dask_client, dask_mapper
from recpipe.data.workfs import WorkPath
from recpipe.validation.partitioned import PartitionedOutcome, validate_partitioned

if TYPE_CHECKING:
    from recpipe.config import ValidateParams

__all__ = ["validate_dask"]


def validate_dask(
    in_dir: str | Path,
    params: ValidateParams,
    work_dir: WorkPath,
    *,
    partitions: int = 16,
    batch_rows: int = 1_000_000,
    now: dt.datetime | None = None,
    address: str | None = None,
    workers: int = 2,
    client: Any = None,
    copy_input: bool = False,
) -> PartitionedOutcome:
    """:func:`~recpipe.validation.partitioned.validate_partitioned` with its partitions
    checked as tasks on ``client``, else on the scheduler at ``address``, else on a
    temporary local cluster of ``workers`` processes. ``work_dir`` must be a folder
    every worker reaches (a mount, or the URL of a store: :mod:`recpipe.data.workfs`);
    with ``copy_input`` the tasks read a copy of the events file there, so that workers
    on other machines need no access to ``in_dir``."""
    if client is None:
        with dask_client(address, workers) as own:
            return validate_dask(
                in_dir,
                params,
                work_dir,
                partitions=partitions,
                batch_rows=batch_rows,
                now=now,
                client=own,
                copy_input=copy_input,
            )
    return validate_partitioned(
        in_dir,
        params,
        work_dir,
        partitions=partitions,
        batch_rows=batch_rows,
        now=now,
        mapper=dask_mapper(client),
        copy_input=copy_input,
    )
