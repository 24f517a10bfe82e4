"""A workspace lock, so that two retraining runs never work on one workspace at once.

The lock is an advisory ``fcntl.flock`` on ``<workspace>/.recpipe/retrain.lock``; the
file holds the holder's pid, host, start time and purpose as JSON so that a run that
finds the workspace busy can say who holds it. The kernel drops a ``flock`` when its
process dies, so the lock of a crashed or killed run never blocks the next one: the
next run takes it over (and logs whose it was). Locks are per open file, so two
threads of one process exclude each other too.

``flock`` is reliable on local file systems; on NFS it depends on the server (put the
workspace on a local disk, or give each host its own workspace).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from recpipe.errors import WorkspaceLockedError

log = logging.getLogger(__name__)

#: Folder of recpipe's own run-time state inside a workspace (not versioned).
STATE_DIR = ".recpipe"
#: The lock the retraining flow holds for its whole run.
RETRAIN_LOCK = "retrain.lock"
#: Seconds between two tries while waiting for a lock.
POLL_SECONDS = 0.2
#: ``<pid>:<lock file>`` of the lock this process (or its parent) holds; inherited by
#: the processes it starts.
HELD_ENV = "RECPIPE_WORKSPACE_LOCK_HELD"


def retrain_lock_path(root: str | Path) -> Path:
    """``<root>/.recpipe/retrain.lock``: the retraining lock of a workspace."""
    return Path(root) / STATE_DIR / RETRAIN_LOCK


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a lock, as written into the lock file."""

    pid: int
    host: str
    started: str
    purpose: str = ""

    def describe(self) -> str:
        """``pid 123 on host h since 2026-01-01T03:00:00+00:00 (retrain)``."""
        text = f"pid {self.pid} on host {self.host} since {self.started}"
        return f"{text} ({self.purpose})" if self.purpose else text

    def is_alive_here(self) -> bool | None:
        """Whether the holder process still runs: None when it ran on another host."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True


def read_holder(path: str | Path) -> LockHolder | None:
    """The holder recorded in a lock file; None when the file is absent, empty or unreadable."""
    try:
        data = json.loads(Path(path).read_text() or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        return LockHolder(
            pid=int(data["pid"]),
            host=str(data["host"]),
            started=str(data["started"]),
            purpose=str(data.get("purpose", "")),
        )
    except (KeyError, TypeError, ValueError):
        return None


class WorkspaceLock:
    """An exclusive, non-reentrant lock on one file; use it as a context manager.

    Parameters
    ----------
    path : path-like
        The lock file (its folder is created).
    timeout : float, default 0
        Seconds to wait for a busy lock: 0 fails at once, a negative value waits forever.
    purpose : str
        Recorded in the file for whoever finds the lock busy (e.g. ``"retrain"``).

    Raises
    ------
    WorkspaceLockedError
        On :meth:`acquire`, when the lock is still held after ``timeout`` seconds; the
        message names the lock file and the holder.
    """

    def __init__(self, path: str | Path, timeout: float = 0.0, purpose: str = "") -> None:
        self.path = Path(path)
        self.timeout = float(timeout)
        self.purpose = purpose
        self._file: IO[str] | None = None
        self.holder: LockHolder | None = None
        self.previous: LockHolder | None = None
        self._env_before: str | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._file is not None

    def acquire(self) -> LockHolder:
        """Take the lock (waiting up to ``timeout``); record this process as the holder."""
        if self._file is not None:
            raise WorkspaceLockedError(f"lock {self.path} is already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = None if self.timeout < 0 else time.monotonic() + self.timeout
        handle = open(self.path, "a+")  # noqa: SIM115 - kept open while the lock is held
        try:
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                if deadline is not None and time.monotonic() >= deadline:
                    raise WorkspaceLockedError(self._busy_message())
                time.sleep(POLL_SECONDS)
        except BaseException:
            handle.close()
            raise
        self.previous = read_holder(self.path)
        if self.previous is not None:  # the kernel released it: its process is gone
            log.warning(
                "taking over the stale lock %s of %s (that process no longer holds it)",
                self.path,
                self.previous.describe(),
            )
        self.holder = LockHolder(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            purpose=self.purpose,
        )
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(self.holder.__dict__))
        handle.flush()
        self._file = handle
        # the processes this one starts (torchrun ranks, `recpipe stage` under a run)
        # work under this lock: :func:`workspace_lock` lets them in
        self._env_before = os.environ.get(HELD_ENV)
        os.environ[HELD_ENV] = f"{os.getpid()}:{self.path.resolve()}"
        log.debug("acquired %s", self.path)
        return self.holder

    def release(self) -> None:
        """Empty the file (the holder is gone) and drop the lock; a no-op when not held."""
        handle, self._file = self._file, None
        if handle is None:
            return
        if self._env_before is None:
            os.environ.pop(HELD_ENV, None)
        else:
            os.environ[HELD_ENV] = self._env_before
        try:
            handle.seek(0)
            handle.truncate()
            handle.flush()
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()
        log.debug("released %s", self.path)

    def _busy_message(self) -> str:
        holder = read_holder(self.path)
        who = holder.describe() if holder is not None else "another process (no holder recorded)"
        waited = f" after waiting {self.timeout:g} s" if self.timeout > 0 else ""
        return (
            f"the workspace is busy: lock {self.path} is held by {who}{waited}; "
            "another run or stage is using this workspace. Wait for it to finish, or "
            "pass --lock-timeout SECONDS (recpipe run, retrain, stage; the flow's "
            "lock_timeout parameter; negative: wait as long as it takes) to wait for it"
        )

    def __enter__(self) -> WorkspaceLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


@contextlib.contextmanager
def retrain_lock(
    root: str | Path, timeout: float = 0.0, purpose: str = "retrain"
) -> Iterator[WorkspaceLock]:
    """Hold the retraining lock of the workspace at ``root`` for the ``with`` body.

    Fails at once when another run holds it (``timeout=0``, the default), or waits
    ``timeout`` seconds (negative: forever); see :class:`WorkspaceLock`.
    """
    with WorkspaceLock(retrain_lock_path(root), timeout=timeout, purpose=purpose) as lock:
        yield lock


def held_by_parent(path: str | Path) -> LockHolder | None:
    """The holder of the lock at ``path`` when this process runs under it: a process that
    holds it (and is still alive here) named it in :data:`HELD_ENV`, which this process
    inherited, and the lock file still records that process. None otherwise."""
    pid, _, held = os.environ.get(HELD_ENV, "").partition(":")
    if not held or Path(held) != Path(path).resolve() or not pid.isdigit():
        return None
    holder = read_holder(path)
    if holder is None or holder.pid != int(pid) or holder.pid == os.getpid():
        return None
    return holder if holder.is_alive_here() else None


@contextlib.contextmanager
def workspace_lock(
    root: str | Path, timeout: float = 0.0, purpose: str = ""
) -> Iterator[WorkspaceLock | None]:
    """Hold the workspace's lock (:func:`retrain_lock`) for the block, as a run or a
    ``recpipe stage`` does; yields None without locking in a process started under the
    lock by its holder (:func:`held_by_parent`: torchrun ranks of the train stage, a
    stage the retraining flow runs as a command), which would otherwise wait for itself.
    """
    parent = held_by_parent(retrain_lock_path(root))
    if parent is not None:
        log.debug("working under the lock of %s", parent.describe())
        yield None
        return
    with retrain_lock(root, timeout=timeout, purpose=purpose) as lock:
        yield lock
