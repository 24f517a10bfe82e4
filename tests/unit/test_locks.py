"""The workspace's retraining lock: exclusive across threads and processes, names its
holder, waits when asked, and is taken over when its holder died."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from recpipe.errors import WorkspaceLockedError
from recpipe.locks import WorkspaceLock, read_holder, retrain_lock, retrain_lock_path


def test_lock_records_the_holder_and_excludes_a_second_holder(tmp_path: Path) -> None:
    path = retrain_lock_path(tmp_path)
    assert path == tmp_path / ".recpipe" / "retrain.lock"
    with retrain_lock(tmp_path) as lock:
        holder = read_holder(path)
        assert holder is not None and holder.pid == os.getpid() and holder.purpose == "retrain"
        assert lock.held
        with pytest.raises(WorkspaceLockedError) as err:
            WorkspaceLock(path).acquire()
        message = str(err.value)
        assert str(path) in message and f"pid {os.getpid()}" in message
    assert not lock.held and read_holder(path) is None  # released: no holder recorded
    with retrain_lock(tmp_path):  # free again
        pass


def test_threads_never_hold_the_lock_together(tmp_path: Path) -> None:
    inside, overlaps, failures = [], [], []

    def work() -> None:
        try:
            with retrain_lock(tmp_path, timeout=10):
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(1)
                time.sleep(0.05)
                inside.pop()
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures and not overlaps


def test_a_second_run_fails_fast_or_waits_for_the_first(tmp_path: Path) -> None:
    lock = WorkspaceLock(retrain_lock_path(tmp_path))
    lock.acquire()
    start = time.monotonic()
    with pytest.raises(WorkspaceLockedError, match=r"after waiting 0\.3 s"):
        WorkspaceLock(retrain_lock_path(tmp_path), timeout=0.3).acquire()
    assert 0.25 <= time.monotonic() - start < 3
    threading.Timer(0.3, lock.release).start()
    with retrain_lock(tmp_path, timeout=10) as second:  # waits until the first lets go
        assert second.held


_HOLD = """
import sys, time
from recpipe.locks import retrain_lock
with retrain_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_another_process_is_excluded_and_its_stale_lock_taken_over(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        with (
            pytest.raises(WorkspaceLockedError, match=rf"pid {child.pid} on host"),
            retrain_lock(tmp_path),
        ):
            pass
    finally:
        child.kill()  # dies holding the lock: its record stays in the file
        child.wait()
    stale = read_holder(retrain_lock_path(tmp_path))
    assert stale is not None and stale.pid == child.pid and stale.is_alive_here() is False
    with retrain_lock(tmp_path) as lock:  # the kernel released it: taken over at once
        assert lock.previous == stale
        assert json.loads(retrain_lock_path(tmp_path).read_text())["pid"] == os.getpid()


# --- recpipe stage takes the lock (issue 24, case 8) ------------------------------------

_HOLD_AND_START = """
import subprocess, sys
from recpipe.locks import held_by_parent, retrain_lock, retrain_lock_path
root = sys.argv[1]
with retrain_lock(root, purpose="retrain"):
    child = "from recpipe.locks import *; import sys; " \\
        "h = held_by_parent(retrain_lock_path(sys.argv[1])); print(h.pid if h else None)"
    print(subprocess.run([sys.executable, "-c", child, root], capture_output=True,
                         text=True, check=True).stdout.strip(), flush=True)
print(held_by_parent(retrain_lock_path(root)), flush=True)  # released: not inherited
"""


def test_recpipe_stage_waits_for_or_names_the_lock_and_its_timeout_option(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recpipe.cli import app

    runner = CliRunner()
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        res = runner.invoke(app, ["stage", "gate", "--root", str(tmp_path)])
        text = " ".join(res.output.split())
        assert res.exit_code == 1 and "Traceback" not in res.output, res.output
        assert f"the workspace is busy: lock {retrain_lock_path(tmp_path)}" in text
        assert f"held by pid {child.pid}" in text and "pass --lock-timeout SECONDS" in text
        started = time.monotonic()
        res = runner.invoke(app, ["stage", "gate", "--root", str(tmp_path), "--lock-timeout", "1"])
        assert res.exit_code == 1 and "after waiting 1 s" in " ".join(res.output.split())
        assert time.monotonic() - started >= 1
    finally:
        child.kill()
        child.wait()
    # free again: the stage runs (and fails on its own terms: no evaluation yet)
    res = runner.invoke(app, ["stage", "gate", "--root", str(tmp_path), "--lock-timeout", "5"])
    assert res.exit_code == 2 and "run the evaluate stage first" in res.output, res.output


def test_a_process_started_by_the_holder_works_under_its_lock(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _HOLD_AND_START, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    inherited, after = done.stdout.split()
    assert inherited.isdigit() and int(inherited) != os.getpid()  # the holder's pid
    assert after == "None"
