"""Leaving a workspace whole when a run or stage is stopped, and tidying after a kill.

- :func:`holding_workspace`: the workspace lock (:func:`recpipe.locks.workspace_lock`)
  for a run or a ``recpipe stage``; once it holds the lock it removes what a killed
  process left (:func:`tidy_workspace`).
- :func:`tidy_workspace`: staging folders (``.<name>.new-<pid>``, ``.<name>.old-<pid>``)
  of processes that no longer run, and, given params, the MLflow runs such a process
  left RUNNING (marked KILLED, :func:`recpipe.tracking.end_stale_runs`).
- :func:`sigterm_as_exit`: SIGTERM raises :class:`Terminated` in the main thread, so the
  ``finally`` and ``with`` blocks that remove staging folders, end MLflow runs and
  release the lock run before the process exits (Python's default is to die at once).
  Within it a SIGTERM that arrives during a database call or a checkpoint write is
  acted on once that is done (:func:`recpipe.workspace.sigterm_held`).

Nothing here imports prefect; the CLI starts the retraining flow's temporary Prefect
server with :func:`start_temporary_server`, in a session of its own (a SIGTERM to the
run's process group does not stop it before the flow has reported its end) that ends
with the run, also when the run is killed (Linux: the parent-death signal).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from recpipe.config import Params
from recpipe.errors import ConfigError, SchedulerError, Terminated
from recpipe.locks import WorkspaceLock, workspace_lock
from recpipe.paths import Paths
from recpipe.workspace import sweep_stale

log = logging.getLogger(__name__)


def tidy_workspace(paths: Paths, params: Params | None = None) -> dict[str, list[str]]:
    """Remove what killed processes left in the workspace at ``paths``: their staging
    folders (and half-written reports) under ``data/``, ``models/`` and ``reports/``
    and, with ``params``, their work folders under ``prep.work_url`` (this machine's, on
    a disk or in an object store) and their MLflow runs still RUNNING (marked KILLED).
    Returns what was tidied: ``staging`` (paths or URLs) and ``mlflow_runs`` (ids). Call
    it holding the workspace lock."""
    folders = [paths.data_dir, paths.models_dir, paths.reports_dir]
    removed: list[Path | str] = [*sweep_stale(folders)]
    if params is not None and params.prep.work_url is not None:
        from recpipe.data.workfs import sweep_root, work_root

        # a bad value (or a store out of reach) is reported, naming it, by the stage
        # that uses it
        with contextlib.suppress(ConfigError):
            removed += sweep_root(work_root(params.prep.work_url, paths.data_dir))
    runs: list[str] = []
    if params is not None:
        from recpipe import tracking

        runs = tracking.end_stale_runs(params, paths)
    shown = [
        paths.rel(p) if isinstance(p, Path) and p.is_relative_to(paths.root) else str(p)
        for p in removed
    ]
    return {"staging": shown, "mlflow_runs": runs}


@contextlib.contextmanager
def holding_workspace(
    paths: Paths, timeout: float = 0.0, purpose: str = "", params: Params | None = None
) -> Iterator[WorkspaceLock | None]:
    """Hold the workspace lock for the block (waiting ``timeout`` seconds for a busy one;
    negative: as long as it takes), and first :func:`tidy_workspace`. Under a lock its
    parent process holds (torchrun ranks) it neither locks nor tidies.

    Raises
    ------
    WorkspaceLockedError
        The lock is still busy after ``timeout``; the message names the holder and
        ``--lock-timeout``.
    """
    with workspace_lock(paths.root, timeout=timeout, purpose=purpose) as lock:
        if lock is not None:
            tidy_workspace(paths, params)
        yield lock


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """In the block, SIGTERM raises :class:`Terminated` in the main thread (once; a
    second SIGTERM while cleaning up is ignored), so clean-up code runs; the previous
    handler is restored after. Outside the main thread it changes nothing."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # clean up once, undisturbed
        raise Terminated(signum)

    try:
        previous: Any = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    from recpipe.tracking import hold_sigterm_in_database_work

    hold_sigterm_in_database_work()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------- temporary Prefect server ---

#: The ASGI app of Prefect's API, as ``prefect server start`` and Prefect's own
#: temporary server serve it.
PREFECT_APP = "prefect.server.api.server:create_app"


#: Runs uvicorn (the arguments after ``-c``) with, on Linux, the parent-death signal
#: set: the server gets SIGTERM when the run that started it dies, even by SIGKILL.
_LAUNCH = """
import ctypes, runpy, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
sys.argv = ["uvicorn", *sys.argv[1:]]
runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def start_temporary_server(log_file: Path, timeout: float = 90.0) -> Iterator[str]:
    """A Prefect API on a free loopback port for the block; yields its URL (``.../api``).

    What Prefect's own temporary server runs (the same app and database; its output
    goes to ``log_file``), but in a session of its own, so that a SIGTERM to the run's process
    group reaches the run only: the flow reports its end to a live API and the block's
    exit stops the server (before: the server died first and the flow retried for
    minutes). On Linux it also ends when this process dies by SIGKILL.

    Raises
    ------
    SchedulerError
        The server did not answer within ``timeout`` seconds (its output in the message).
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    server_log = log_file
    server_env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    server_env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-c", _LAUNCH, "--factory", PREFECT_APP, "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "error", "--lifespan", "on"]  # fmt: skip
    with open(server_log, "ab") as sink:
        process = subprocess.Popen(
            cmd,
            env=server_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    log.info("temporary Prefect server (pid %d) at %s", process.pid, url)
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = server_log.read_text(errors="replace")[-2000:]
                raise SchedulerError(
                    f"the temporary Prefect server did not start within {timeout:g} s "
                    f"(exit code {process.poll()}); its log {server_log} ends:\n{tail}"
                )
            time.sleep(0.2)
        yield url
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM ``process``; SIGKILL it after ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    # debug: the run's records went to the API, which is gone now
    log.debug("stopped the temporary Prefect server (pid %d)", process.pid)
