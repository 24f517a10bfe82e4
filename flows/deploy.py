"""The retraining deployment: the flow served on a schedule by ``recpipe schedule``.

The deployment's definition (name, entrypoint, default cron, concurrency limit, work
pool) lives in :mod:`recpipe.scheduling`; ``prefect.yaml`` repeats it for ``prefect
deploy`` and a test keeps the two in step. ``flow.serve`` registers the deployment
with the Prefect server that ``PREFECT_API_URL`` names and runs its scheduled runs
in subprocesses until SIGTERM or SIGINT (the schedule is paused on the way out).
"""

from __future__ import annotations

import datetime
from typing import Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.schedules import Cron, Interval, Schedule

from flows.retrain import retrain
from recpipe.errors import SchedulerError
from recpipe.scheduling import (
    COLLISION_STRATEGY,
    CONCURRENCY_LIMIT,
    DEFAULT_TIMEZONE,
    DEPLOYMENT_NAME,
    DEPLOYMENT_TAGS,
    DESCRIPTION,
)


def concurrency_limit() -> ConcurrencyLimitConfig:
    """One run at a time; a run due while another runs waits for it (ENQUEUE)."""
    return ConcurrencyLimitConfig(
        limit=CONCURRENCY_LIMIT,
        collision_strategy=ConcurrencyLimitStrategy(COLLISION_STRATEGY),
    )


def make_schedule(
    cron: str | None = None, interval: float | None = None, timezone: str | None = None
) -> Schedule:
    """A cron or an interval (seconds) schedule, checked the way the server will.

    Raises
    ------
    SchedulerError
        Both or neither of ``cron`` and ``interval``, an invalid cron string or
        timezone, or a non-positive interval.
    """
    timezone = timezone or DEFAULT_TIMEZONE
    if (cron is None) == (interval is None):
        raise SchedulerError(
            f"give exactly one of a cron string and an interval, got cron={cron!r} and "
            f"interval={interval!r}"
        )
    try:
        if cron is not None:
            CronSchedule(cron=cron, timezone=timezone)  # validates both
            return Cron(cron, timezone=timezone)
        assert interval is not None
        if interval <= 0:
            raise ValueError("the interval must be positive")
        IntervalSchedule(interval=datetime.timedelta(seconds=interval), timezone=timezone)
        return Interval(datetime.timedelta(seconds=interval), timezone=timezone)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        what = f"cron {cron!r}" if cron is not None else f"interval {interval!r} s"
        first = str(exc).strip().splitlines()
        raise SchedulerError(
            f"invalid schedule: {what} with timezone {timezone!r} ({first[-1] if first else exc}); "
            "expected a 5-field cron string such as '0 3 * * *', a positive number of "
            "seconds, and an IANA timezone such as 'UTC' or 'Europe/Paris'"
        ) from None


def serve(
    schedule: Schedule,
    name: str = DEPLOYMENT_NAME,
    parameters: dict[str, Any] | None = None,
) -> None:
    """Serve the retraining flow as deployment ``recpipe-retrain/<name>`` on ``schedule``
    with the flow ``parameters``; blocks until SIGTERM or SIGINT."""
    retrain.serve(
        name=name,
        schedules=[schedule],
        global_limit=concurrency_limit(),
        parameters=parameters or {},
        description=DESCRIPTION,
        tags=list(DEPLOYMENT_TAGS),
        paused=False,
        pause_on_shutdown=True,
    )
