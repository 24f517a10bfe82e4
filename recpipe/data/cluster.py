"""The Dask cluster of ``prep.engine: dask``: a client and a mapper of tasks on it.

:func:`dask_client` connects to the scheduler at ``orchestration.dask_address`` or starts
a temporary local cluster of worker processes; :func:`dask_mapper` turns a client into
the ``mapper(fn, [args, ...])`` the partitioned stages take, one Dask future per call.
A worker that dies mid-task has its tasks rescheduled by Dask on the others (up to the
scheduler's ``distributed.scheduler.allowed-failures``, 3 by default); an exception
raised by a task is not retried (the inputs are the same on a rerun) and cancels the
other tasks of the same map.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from recpipe.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["Mapper", "dask_client", "dask_mapper", "serial_map"]

R = TypeVar("R")

#: ``mapper(fn, [args, ...])`` -> ``[fn(*args), ...]`` in the order of the arguments: how
#: the partitioned stages run their per-partition steps.
Mapper = Callable[[Callable[..., Any], Sequence[tuple[Any, ...]]], list[Any]]


def serial_map(fn: Callable[..., R], args: Sequence[tuple[Any, ...]]) -> list[R]:
    """``[fn(*a) for a in args]`` in this process: the arrow engine's mapper."""
    return [fn(*a) for a in args]


@contextlib.contextmanager
def dask_client(address: str | None, workers: int) -> Iterator[Any]:
    """A ``distributed.Client`` of the scheduler at ``address``, else of a temporary
    local cluster of ``workers`` single-threaded processes (closed on exit).

    Raises
    ------
    ConfigError
        dask.distributed is not installed, or ``workers`` is below 1.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError(
            "prep.engine='dask' needs dask[distributed] (pip install 'recpipe[scale]')"
        ) from None
    if address:
        log.info("prep on the Dask scheduler at %s", address)
        with Client(address) as client:
            yield client
        return
    if workers < 1:
        raise ConfigError(f"prep.workers must be at least 1, got {workers}")
    log.info("prep on a local Dask cluster of %d worker processes", workers)
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def dask_mapper(client: Any) -> Mapper:
    """``mapper(fn, [args, ...])`` -> ``[fn(*args), ...]``, each call a task on
    ``client``'s cluster; the first task error is raised here (the others cancelled)."""

    def run(fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> list:
        futures = [client.submit(fn, *a, pure=False) for a in args]
        try:
            return list(client.gather(futures))
        except BaseException:
            client.cancel(futures)
            raise

    return run
