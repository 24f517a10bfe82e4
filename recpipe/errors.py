"""The small error hierarchy of recpipe.

Every error message names the bad value and what was expected, so that a person
can fix the input without reading a traceback (entry points print only the message).
"""

from __future__ import annotations

import errno as _errno
import os as _os
import re as _re


class RecpipeError(Exception):
    """Base class of every error recpipe raises on purpose."""


class ConfigError(RecpipeError):
    """params.yaml or an override is invalid (unknown key, wrong type, bad value)."""


class MissingContentError(ConfigError, ValueError):
    """A content model was built on data without usable item content."""


class DataImportError(RecpipeError):
    """A raw data set cannot be read into the canonical tables (format problem)."""


class DataValidationError(RecpipeError):
    """Canonical tables failed validation; carries the report that names every failure."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class FetchError(RecpipeError):
    """A data set could not be downloaded or failed its checksum."""


class ArtifactError(RecpipeError):
    """An artifact directory is missing, incomplete or cannot be loaded."""


class StageError(RecpipeError):
    """A pipeline stage cannot run (missing inputs, unknown stage name)."""


class SplitError(RecpipeError):
    """Events cannot be split as asked (e.g. an empty test part); names the params to change."""


class SplitNotApplicable(SplitError):
    """The data do not support a split (e.g. no sequences to predict): the split is
    skipped, with this reason, and the run goes on."""


class TrainingError(RecpipeError):
    """Training cannot go on (a NaN or infinite loss, an unusable device); names where."""


class RegistryError(RecpipeError):
    """The MLflow model registry cannot do what was asked (unknown version, no alias to
    roll back to, an unreachable store, a promotion lock held too long); names the value."""


class WorkspaceLockedError(RecpipeError):
    """Another run holds the workspace's retraining lock; names the lock file and the
    holder (pid, host, start time)."""


class Terminated(BaseException):
    """SIGTERM arrived (:func:`recpipe.recovery.sigterm_as_exit`). A ``BaseException``,
    like ``KeyboardInterrupt``: ``except Exception`` blocks let it through, ``finally``
    and ``with`` blocks clean up; the CLI exits with 128 + the signal number."""

    def __init__(self, signum: int = 15) -> None:
        super().__init__(f"stopped by signal {signum} (SIGTERM)")
        self.signum = signum


class SchedulerError(RecpipeError):
    """Scheduled retraining cannot start: no Prefect server configured or reachable, or
    an invalid schedule; says how to start the server."""


class RequestError(RecpipeError, ValueError):
    """A serving request breaks a limit or is inconsistent (k above the limit, a session
    too long, lists of different lengths); ``field`` names the request field.

    The service answers it with HTTP 400 and the message; unknown ids are not errors
    (they take the cold-start path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


#: errno values that mean "this workspace path cannot be used as asked" (not a network
#: or device fault): what :meth:`WorkspaceError.from_os_error` translates.
_WORKSPACE_ERRNOS: dict[int, str] = {
    _errno.EACCES: "permission denied",
    _errno.EPERM: "operation not permitted",
    _errno.EROFS: "read-only file system",
    _errno.ENOSPC: "no space left on device",
    _errno.EDQUOT: "disk quota exceeded",
    _errno.EFBIG: "file too large for the file system",
    _errno.ENOTDIR: "a file is where a folder is expected",
    _errno.EEXIST: "something is already there",
    _errno.EISDIR: "a folder is where a file is expected",
    _errno.ENOENT: "no such file or folder",
}

#: Innermost function names of a traceback -> the operation they stand for.
_OPERATIONS: dict[str, str] = {
    "mkdir": "create the folder",
    "makedirs": "create the folder",
    "rmtree": "remove",
    "_rmtree_safe_fd": "remove",
    "_rmtree_unsafe": "remove",
    "rmdir": "remove",
    "unlink": "remove",
    "remove": "remove",
    "replace": "replace",
    "rename": "rename",
    "move": "move",
    "copyfile": "copy to",
    "copy2": "copy to",
    "copytree": "copy to",
    "read_text": "read",
    "read_bytes": "read",
    "read_table": "read",
    "read_parquet": "read",
    "write_text": "write",
    "write_bytes": "write",
    "write_table": "write",
    "to_parquet": "write",
    "save": "write",
    "open": "open",
}


class WorkspaceError(RecpipeError):
    """A workspace file or folder cannot be used: permission denied, a read-only file
    system, a full disk or quota, a file where a folder belongs (or the reverse), a
    missing input. ``path``, ``operation`` and ``errno`` name what failed; the message
    says what to do. Built from the ``OSError`` by :meth:`from_os_error`."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        operation: str | None = None,
        errno: int | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.operation = operation
        self.errno = errno

    @staticmethod
    def translates(exc: BaseException) -> bool:
        """Whether ``exc`` is a file-system error this class stands for (network and
        device errors, which are ``OSError`` too, are not)."""
        return (
            isinstance(exc, OSError)
            and not isinstance(exc, ConnectionError | TimeoutError)
            and exc.errno in _WORKSPACE_ERRNOS
        )

    @classmethod
    def from_os_error(cls, exc: OSError, context: str | None = None) -> WorkspaceError:
        """The error for ``exc``: one line naming the operation, the path, the cause
        and the fix, prefixed with ``context`` (e.g. ``"stage ingest"``)."""
        code = exc.errno
        path = _error_path(exc)
        operation = _operation(exc)
        name = _errno.errorcode.get(code, str(code)) if code is not None else "?"
        cause = _WORKSPACE_ERRNOS.get(code, exc.strerror or str(exc)) if code else str(exc)
        shown = path if path is not None else "a workspace path"
        if code in (_errno.ENOTDIR, _errno.EEXIST, _errno.EISDIR) and path is not None:
            blocker = _blocking_file(path) if code != _errno.EISDIR else None
            if blocker is not None:
                cause = f"{blocker} is a file where a folder is expected"
            elif code == _errno.EISDIR:
                blocker, cause = path, f"{path} is a folder where a file is expected"
            else:
                blocker, cause = path, f"{path} already exists"
            fix = f"remove or rename {blocker}, or use another workspace (--root DIR)"
        elif code in (_errno.ENOSPC, _errno.EDQUOT, _errno.EFBIG):
            fix = (
                "free space on that disk (old checkpoints/, mlruns/, bentos/ and the DVC "
                "cache can be large) or use a workspace on another disk (--root DIR)"
            )
        elif code == _errno.ENOENT:
            fix = "check the path, or run the stages before this one (recpipe run / dvc repro)"
        else:  # permission, read-only file system
            where = path if path is not None else "the workspace"
            fix = (
                f"make {where} writable by this user (e.g. chmod -R u+w on it) or use a "
                "workspace you can write to (--root DIR)"
            )
        prefix = f"{context}: " if context else ""
        message = f"{prefix}cannot {operation} {shown}: {cause} ({name}); {fix}"
        return cls(message, path=path, operation=operation, errno=code)


def _error_path(exc: OSError) -> str | None:
    """The path an OSError is about, made absolute (a bare ``data.npz`` names no place):
    its ``filename``, else a quoted path in its message (pyarrow: ``Failed to open local
    file '/x/y.parquet'``)."""
    if exc.filename is not None:
        return _os.path.abspath(_os.fsdecode(exc.filename))
    found = _re.search(r"'(/[^']+|[^']+/[^']*)'", str(exc))
    return _os.path.abspath(found.group(1)) if found else None


def _operation(exc: OSError) -> str:
    """What was being done, from the innermost known function of the traceback."""
    tb = exc.__traceback__
    names: list[str] = []
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    for name in reversed(names):
        if name in _OPERATIONS:
            return _OPERATIONS[name]
        if "writable" in name or name.startswith("write"):
            return "write"
    return "read" if exc.errno == _errno.ENOENT else "write"


def _blocking_file(path: str) -> str | None:
    """The nearest of ``path`` and its parents that exists as a non-folder, if any."""
    from pathlib import Path

    for candidate in (Path(path), *Path(path).parents):
        if candidate.exists() and not candidate.is_dir():
            return str(candidate)
    return None


class LineageError(RecpipeError):
    """Lineage cannot be read or restored (not a DVC repository, a run that recorded no
    dvc.lock, ``dvc checkout`` failed); names the workspace, version or run."""
