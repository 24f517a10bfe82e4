"""The retraining flow's guards, under the Prefect test harness: the workspace lock
stops a second run at once, and the I/O steps retry transient faults only."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from recpipe.errors import WorkspaceLockedError
from recpipe.locks import retrain_lock, retrain_lock_path
from recpipe.paths import Paths
from tests.pipeline.conftest import SMALL

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_a_second_run_fails_fast_naming_the_lock_and_its_holder(workspace: Paths) -> None:
    from flows.retrain import retrain

    with (
        retrain_lock(workspace.root, purpose="another run"),
        pytest.raises(WorkspaceLockedError) as err,
    ):
        retrain(overrides=SMALL, root=str(workspace.root))
    message = str(err.value)
    assert str(retrain_lock_path(workspace.root)) in message
    assert f"pid {os.getpid()}" in message and "(another run)" in message
    assert not workspace.mlflow_db.exists()  # it stopped before any work


def test_bad_flow_parameters_fail_before_the_lock(workspace: Paths) -> None:
    from flows.retrain import retrain
    from recpipe.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown model\(s\) \['nope'\]"):
        retrain(overrides=SMALL, root=str(workspace.root), models=["nope"])
    assert not retrain_lock_path(workspace.root).exists()


@pytest.fixture
def flaky_ingest(monkeypatch: pytest.MonkeyPatch) -> list[BaseException | None]:
    """Make stages.ingest raise the queued errors in turn, then succeed; returns the queue
    (a test fills it) — each call pops one."""
    from flows import retrain as module

    queue: list[BaseException | None] = []
    calls: list[int] = []

    def ingest(params: Any, paths: Any) -> dict[str, Any]:
        calls.append(1)
        error = queue.pop(0) if queue else None
        if error is not None:
            raise error
        return {"calls": len(calls)}

    monkeypatch.setattr(module.stages, "ingest", ingest)
    return queue


def _ingest_once(tmp_path: Path) -> dict[str, Any]:
    from prefect import flow

    from flows.retrain import ingest_task
    from recpipe.config import load_params

    @flow
    def just_ingest() -> dict[str, Any]:
        fast = ingest_task.with_options(retry_delay_seconds=0)
        return fast(load_params(None, SMALL), Paths.at(tmp_path))

    return just_ingest()


def test_io_steps_retry_transient_faults(
    flaky_ingest: list[BaseException | None], tmp_path: Path
) -> None:
    from flows.retrain import IO_RETRIES, ingest_task, package_task, retry_if_transient

    assert ingest_task.retries == package_task.retries == IO_RETRIES == 2
    assert ingest_task.retry_condition_fn is package_task.retry_condition_fn is retry_if_transient
    flaky_ingest.extend([TimeoutError("read timed out"), OSError(errno.EIO, "I/O error")])
    assert _ingest_once(tmp_path) == {"calls": 3}  # two faults, two retries


@pytest.mark.parametrize(
    "error",
    [PermissionError(errno.EACCES, "denied"), OSError(errno.ENOSPC, "no space left on device")],
    ids=["permission", "enospc"],
)
def test_io_steps_do_not_retry_permanent_faults(
    flaky_ingest: list[BaseException | None], tmp_path: Path, error: OSError
) -> None:
    flaky_ingest.extend([error, None])
    with pytest.raises(type(error)):
        _ingest_once(tmp_path)
    assert flaky_ingest == [None]  # called once: the success queued after it never came
