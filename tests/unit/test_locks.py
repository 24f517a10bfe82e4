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
