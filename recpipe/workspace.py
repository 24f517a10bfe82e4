"""Workspace file helpers shared by the stage functions: readable file-system errors,
outputs replaced only when complete, JSON reports, and writes a SIGTERM does not cut
(:func:`sigterm_held`).
"""

from __future__ import annotations

import _thread
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from recpipe.errors import WorkspaceError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def workspace_io(context: str) -> Iterator[None]:
    """Turn a file-system error inside into :class:`~recpipe.errors.WorkspaceError`.

    A permission denied, a read-only file system, a full disk, a file where a folder
    belongs (and the like) raised as ``OSError`` becomes one readable error that names
    the operation, the path and the fix, prefixed with ``context`` (e.g. ``"stage
    ingest"``); the ``OSError`` is its ``__cause__``. Other errors pass unchanged. Every
    stage function runs under it (it works as a decorator too), so the CLI, dvc.yaml,
    the Prefect flow and the Python API all see the same error.
    """
    try:
        yield
    except OSError as exc:
        if not WorkspaceError.translates(exc):
            raise
        raise WorkspaceError.from_os_error(exc, context) from exc


def staging_path(path: Path, kind: str = "new", pid: int | None = None) -> Path:
    """``<parent>/.<name>.<kind>-<pid>``: the staging (``new``) or outgoing (``old``)
    sibling of ``path`` that a process writes; :func:`sweep_stale` removes those whose
    process is gone."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid() if pid is None else pid}")


@contextlib.contextmanager
def scratch_dir(parent: Path, name: str) -> Iterator[Path]:
    """A fresh work folder ``<parent>/.<name>.new-<pid>`` for the block, removed after it
    (also on error; after a kill the next run's :func:`sweep_stale` removes it)."""
    folder = staging_path(parent / name)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def replacing_dir(path: Path) -> Iterator[Path]:
    """A fresh staging folder beside ``path`` that replaces ``path`` when the block
    succeeds; when it raises, ``path`` is left as it was and the staging folder removed.

    The staging folder is ``.<name>.new-<pid>`` (:func:`staging_path`): one a killed
    process leaves behind is removed by the next run (:func:`sweep_stale`)."""
    staging = staging_path(path)
    old = staging_path(path, "old")
    for leftover in (staging, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    try:
        staging.mkdir(parents=True)
    except OSError as exc:  # named as the output it stands for, not the staging folder
        exc.filename = str(path)
        raise
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    swap_in(staging, path)


def swap_in(staging: Path, path: Path) -> None:
    """Replace ``path`` (if any) by the complete folder ``staging``: two renames on one
    file system, the outgoing folder (``.<name>.old-<pid>``) removed after."""
    old = staging_path(path, "old")
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        path.rename(old)
    staging.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def reset_dir(path: Path) -> None:
    """Empty ``path`` (an output this stage owns) so no stale file survives a re-run."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON (parents created), atomically: into a file beside
    ``path`` renamed over it, so a failure or a kill mid-write leaves the previous file
    whole, never a truncated one."""
    text = json.dumps(data, indent=2, default=str) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when there is no such file."""
    return json.loads(path.read_text()) if path.is_file() else None


#: ``.<name>.new-<pid>`` / ``.<name>.old-<pid>``: what :func:`staging_path` names.
_STAGING_NAME = re.compile(r"^\..+\.(new|old)-(\d+)$")


def staging_pid(name: str) -> int | None:
    """The process id in a staging name (``.<name>.new-<pid>``, ``.<name>.old-<pid>``);
    None for any other name."""
    match = _STAGING_NAME.match(name)
    return None if match is None else int(match.group(2))


_NEW_NAME = re.compile(r"^\.(.+)\.new-\d+$")


def shown(path: str | Path) -> Path:
    """``path`` as a log line should name it: a staging folder (``.<name>.new-<pid>``)
    anywhere in it is named as the output it will replace.

    >>> str(shown("/w/data/.interim.new-123/events.parquet"))
    '/w/data/interim/events.parquet'
    """
    parts = [(m.group(1) if (m := _NEW_NAME.match(part)) else part) for part in Path(path).parts]
    return Path(*parts)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_stale(folders: Iterable[Path]) -> list[Path]:
    """Remove the staging folders (``.<name>.new-<pid>``, ``.<name>.old-<pid>``) in
    ``folders`` whose process no longer runs: what a killed stage left behind.

    A folder of a live process (another run's work in progress, or this process's) is
    kept. Returns the removed paths (each logged); a folder that cannot be removed is
    logged and kept.
    """
    removed: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            match = _STAGING_NAME.match(entry.name)
            if match is None or pid_alive(int(match.group(2))):
                continue
            try:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except OSError as exc:
                log.warning("cannot remove the stale staging folder %s: %s", entry, exc)
                continue
            log.info("removed %s, left by process %s, which no longer runs", entry, match.group(2))
            removed.append(entry)
    return removed


# ------------------------------------------------------ work a SIGTERM must not cut ---


class _SigtermHold:
    """Holds SIGTERM while the main thread is inside work that must not be cut: a file
    write (:func:`sigterm_held`), a database call
    (:func:`recpipe.tracking.hold_sigterm_in_database_work`).

    Why: the SIGTERM handlers of a run raise (:func:`recpipe.recovery.sigterm_as_exit`'s,
    Prefect's inside a flow run), and an exception raised in the middle of a library's
    write leaves its state broken: torch's zip writer, cut, raised its own
    ``RuntimeError`` instead (the run failed, exit 1), and a cut SQLite read kept its
    lock for the clean-up's writes to wait on.

    How: at the first hold the SIGTERM handler is swapped for one that only notes the
    signal; when the last hold is released the handler is put back and a noted signal is
    passed to it (it raises there, after the work). A second SIGTERM while held is acted
    on at once, so a hold that is never released cannot make the process deaf. Holds
    are keyed (re-entrant, nested); only the main thread's count (signals run there).
    """

    def __init__(self) -> None:
        self.held: set[int] = set()  # the keys of the main thread's holds
        self.previous: Any = None  # the handler put back on release
        self.pending: int | None = None
        self.lock = threading.RLock()  # on_signal may run inside hold's block

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        with self.lock:
            previous, act = self.previous, not self.held or self.pending is not None
            if not act:
                self.pending = signum
                log.warning("SIGTERM during a write: acted on when it is done")
                return
            self.pending = None
        _deliver(previous, signum, frame)

    def hold(self, key: int) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        with self.lock:
            if not self.held:
                current = signal.getsignal(signal.SIGTERM)
                if current != self.on_signal:
                    self.previous = current
                    signal.signal(signal.SIGTERM, self.on_signal)
            self.held.add(key)

    def release(self, key: int) -> None:
        with self.lock:
            if key not in self.held:
                return
            self.held.discard(key)
            if self.held:
                return
            pending, self.pending = self.pending, None
            previous = self.previous
            if threading.current_thread() is threading.main_thread():
                if signal.getsignal(signal.SIGTERM) == self.on_signal:
                    signal.signal(signal.SIGTERM, previous)
            elif pending is not None:  # released by another thread (a gc'd connection)
                _thread.interrupt_main(pending)  # runs on_signal, which now passes it on
                return
        if pending is not None:
            _deliver(previous, pending, None)


def _deliver(handler: Any, signum: int, frame: FrameType | None) -> None:
    """Act on ``signum`` as ``handler`` (a callable, ``SIG_IGN`` or ``SIG_DFL``) would."""
    if callable(handler):
        handler(signum, frame)
    elif handler != signal.SIG_IGN:  # SIG_DFL (or unknown: None): the default, to die
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


_HOLD = _SigtermHold()


def hold_sigterm(key: int) -> None:
    """Hold SIGTERM (main thread only) until :func:`release_sigterm` of every key held;
    see :class:`_SigtermHold`. Prefer :func:`sigterm_held`."""
    _HOLD.hold(key)


def release_sigterm(key: int) -> None:
    """Release the hold ``key``; the last release passes a held SIGTERM on (it may raise
    here). An unknown key is ignored."""
    _HOLD.release(key)


@contextlib.contextmanager
def sigterm_held() -> Iterator[None]:
    """A SIGTERM that arrives in the block is acted on when the block is done (a write
    that must not be cut: a checkpoint, a database call); see :class:`_SigtermHold`."""
    token = object()
    hold_sigterm(id(token))
    try:
        yield
    finally:
        release_sigterm(id(token))
