"""Fixtures for pipeline tests: a small synthetic workspace."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from recpipe.config import Params, load_params
from recpipe.paths import Paths

#: The project's checkout (what a clone of it holds is copied by :func:`copy_project`).
REPO = Path(__file__).resolve().parents[2]


def copy_project(dest: Path) -> None:
    """The project's files as a clone would hold them, with their working-tree content
    (tracked files and untracked ones git does not ignore)."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for rel in files:
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


#: Overrides that make the synthetic data small enough for fast tests.
SMALL = [
    "synth.n_users=60",
    "synth.n_items=50",
    "synth.n_categories=5",
    "synth.n_sessions=300",
    "synth.days=5",
    "train.max_epochs=2",
]


@pytest.fixture
def small_params() -> Params:
    return load_params(None, SMALL)


@pytest.fixture
def workspace(tmp_path: Path) -> Paths:
    return Paths.at(tmp_path)


#: Small overrides plus one cheap candidate and one baseline on one split: a whole
#: retraining run in a few seconds of pipeline work (scheduled-run tests).
CHEAP = [
    *SMALL,
    "sessions.splits=[user_temporal]",
    "train.splits=[user_temporal]",
    "train.model_splits={}",
    "train.candidates=[mf_bpr, mf_wals]",
    "evaluate.splits=[user_temporal]",
    "evaluate.models=[pop]",
    "gate.latency_requests=20",
]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server (``recpipe server``) on a free loopback port; yields its API URL.

    Schedules need a real server (the ephemeral API cannot run them). Its PREFECT_HOME
    (database, logs in ``server.log``) is a temporary folder and analytics are off; the
    URL is only ever given to subprocesses or clients, never set in this process, so
    the tests on the ``prefect_harness`` API are unaffected. Terminated at the end.
    """
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    from recpipe.errors import SchedulerError
    from recpipe.scheduling import api_url, check_api, server_env

    home = tmp_path_factory.mktemp("prefect-server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = server_env()
    env.pop("PREFECT_API_URL", None)
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_UI_ENABLED": "false",
            # create the scheduled runs of a new deployment within seconds
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        }
    )
    url = api_url(port)
    with open(home / "server.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "recpipe.cli", "server", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the server goes with it
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    check_api(url, timeout=2)
                    break
                except SchedulerError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(
                            f"no Prefect server at {url}:\n{(home / 'server.log').read_text()}"
                        )
                    time.sleep(0.5)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the whole session (about 12 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield
