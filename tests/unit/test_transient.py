"""Which failures the flow's I/O steps retry: transient I/O faults only."""

from __future__ import annotations

import errno
import urllib.error

import pytest

from recpipe.errors import ConfigError, DataValidationError, StageError, WorkspaceLockedError
from recpipe.transient import is_transient


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError("read timed out"),
        ConnectionResetError(errno.ECONNRESET, "connection reset by peer"),
        ConnectionRefusedError(errno.ECONNREFUSED, "connection refused"),
        BrokenPipeError(errno.EPIPE, "broken pipe"),
        OSError(errno.EIO, "input/output error"),
        OSError(errno.ESTALE, "stale file handle"),
        OSError(errno.EAGAIN, "resource temporarily unavailable"),
        OSError(errno.EBUSY, "device or resource busy"),
        urllib.error.URLError(ConnectionRefusedError(errno.ECONNREFUSED, "refused")),
    ],
    ids=repr,
)
def test_transient_io_faults_are_retried(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        PermissionError(errno.EACCES, "permission denied"),
        OSError(errno.EACCES, "permission denied"),
        OSError(errno.ENOSPC, "no space left on device"),
        OSError(errno.EDQUOT, "disk quota exceeded"),
        OSError(errno.EROFS, "read-only file system"),
        FileNotFoundError(errno.ENOENT, "no such file"),
        IsADirectoryError(errno.EISDIR, "is a directory"),
        NotADirectoryError(errno.ENOTDIR, "not a directory"),
        FileExistsError(errno.EEXIST, "exists"),
        OSError("Couldn't deserialize thrift: TProtocolException"),  # no errno: a broken file
        ConfigError("data.path is not set"),
        DataValidationError("3 expectations failed"),
        StageError("no data/sessions/events.parquet"),
        WorkspaceLockedError("lock held by pid 1"),
        ValueError("bad value"),
        KeyError("user_id"),
        RuntimeError("boom"),
        None,
    ],
    ids=repr,
)
def test_permanent_failures_are_not_retried(exc: BaseException | None) -> None:
    assert not is_transient(exc)


def test_wrappers_follow_their_explicit_cause() -> None:
    try:
        try:
            raise TimeoutError("socket timed out")
        except TimeoutError as inner:
            raise RuntimeError("download failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)
    try:
        try:
            raise TimeoutError("socket timed out")
        except TimeoutError as inner:
            raise ConfigError("gave up") from inner  # recpipe's own errors: never
    except ConfigError as outer:
        assert not is_transient(outer)
    try:
        try:
            raise PermissionError(errno.EACCES, "denied")
        except PermissionError as inner:
            raise RuntimeError("write failed") from inner
    except RuntimeError as outer:
        assert not is_transient(outer)
