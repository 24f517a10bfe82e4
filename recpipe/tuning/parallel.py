"""Parallel trials on one study: worker processes on this machine, or a Dask cluster.

Every worker opens the same Optuna study in the shared RDB storage and runs its share of
the trials left (:func:`recpipe.tuning.trials.run_trials`), so the budget holds exactly;
TPE in each worker sees the trials the others finished. Optuna coordinates through the
storage: a SQLite file works for processes on one machine; workers on other machines
need a storage they all reach
(``tune.storage``, e.g. ``postgresql://...``) and the features folder on a shared path.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from recpipe.errors import ConfigError, RecpipeError

log = logging.getLogger(__name__)


def run_workers(
    job: Any, shares: list[int | None], parallel: str, dask_address: str | None
) -> list[int]:
    """Run one :func:`recpipe.tuning.trials.worker_main` per entry of ``shares`` (its
    number of trials; None: until the study's deadline) on ``job`` and wait for them;
    returns the trials each ran.

    ``parallel`` is ``processes`` (spawned processes here) or ``dask`` (tasks on the
    scheduler at ``dask_address``, else on a temporary local cluster of one process per
    worker).

    Raises
    ------
    ConfigError
        An unknown ``parallel``, or ``dask`` without dask.distributed installed.
    RecpipeError
        A worker failed outside a trial (a failing trial is recorded and does not stop
        its worker).
    """
    from recpipe.tuning.trials import worker_main

    if parallel == "processes":
        context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
        with ProcessPoolExecutor(max_workers=len(shares), mp_context=context) as pool:
            futures = [pool.submit(worker_main, job, i, n) for i, n in enumerate(shares)]
            return [_result(f.result, job, i) for i, f in enumerate(futures)]
    if parallel == "dask":
        return _on_dask(job, shares, dask_address)
    raise ConfigError(f"tune.parallel must be 'processes' or 'dask', got {parallel!r}")


def _result(get: Any, job: Any, worker: int) -> int:
    try:
        return int(get())
    except Exception as exc:
        raise RecpipeError(
            f"tuning worker {worker} of {job.model} on {job.split} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _on_dask(job: Any, shares: list[int | None], address: str | None) -> list[int]:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError(
            "tune.parallel='dask' needs dask[distributed] (pip install 'recpipe[scale]')"
        ) from None
    from recpipe.tuning.trials import worker_main

    cluster = None
    if address:
        client = Client(address)
    else:
        cluster = LocalCluster(
            n_workers=len(shares), threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    log.info(
        "tuning %s on Dask (%s): %d tasks", job.model, address or "a local cluster", len(shares)
    )
    try:
        futures = [client.submit(worker_main, job, i, n, pure=False) for i, n in enumerate(shares)]
        return [_result(f.result, job, i) for i, f in enumerate(futures)]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
