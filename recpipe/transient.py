"""Which errors are worth retrying: transient I/O faults, and nothing else.

The retraining flow retries its I/O steps (reading a data drop, writing the Bento)
only when :func:`is_transient` says the failure may go away by itself: a timeout, a
dropped or refused connection, an I/O error of a network or overloaded disk, a busy
resource. Errors a retry cannot fix are never retried: recpipe's own errors (bad
params, failed validation, a workspace it cannot write), permission problems, a full
disk or quota, a read-only file system, a missing file, and every non-``OSError``.
"""

from __future__ import annotations

import errno

from recpipe.errors import RecpipeError

#: errno values of faults that may clear up on their own (network, busy or slow device).
TRANSIENT_ERRNOS: frozenset[int] = frozenset(
    getattr(errno, name)
    for name in (
        "EIO",
        "EAGAIN",
        "EWOULDBLOCK",
        "EBUSY",
        "EINTR",
        "ETIMEDOUT",
        "ECONNRESET",
        "ECONNABORTED",
        "ECONNREFUSED",
        "EPIPE",
        "ENETDOWN",
        "ENETUNREACH",
        "ENETRESET",
        "EHOSTDOWN",
        "EHOSTUNREACH",
        "ESTALE",
        "ENOBUFS",
        "EREMOTEIO",
    )
    if hasattr(errno, name)
)

#: errno values a retry cannot fix (permissions, space, missing or misplaced paths).
PERMANENT_ERRNOS: frozenset[int] = frozenset(
    getattr(errno, name)
    for name in (
        "EACCES",
        "EPERM",
        "EROFS",
        "ENOSPC",
        "EDQUOT",
        "EFBIG",
        "ENOENT",
        "ENOTDIR",
        "EISDIR",
        "EEXIST",
        "ENAMETOOLONG",
        "EINVAL",
        "ELOOP",
        "EXDEV",
    )
    if hasattr(errno, name)
)

#: ``OSError`` subclasses that are never transient, whatever their errno says.
_PERMANENT_TYPES: tuple[type[OSError], ...] = (
    PermissionError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
)
#: ``OSError`` subclasses that are transient even without an errno.
_TRANSIENT_TYPES: tuple[type[OSError], ...] = (
    TimeoutError,
    ConnectionError,
    InterruptedError,
    BlockingIOError,
)


def is_transient(exc: BaseException | None, *, _depth: int = 0) -> bool:
    """Whether ``exc`` is a transient I/O fault that a retry may get past.

    An ``OSError`` is transient when it is a timeout, connection, interrupted or
    would-block error, or when its errno is one of :data:`TRANSIENT_ERRNOS`; it never
    is when it is a permission / missing-file / exists / directory error or its errno
    is one of :data:`PERMANENT_ERRNOS` (``ENOSPC``, ``EROFS``, ...). An ``OSError``
    with no errno (pyarrow's "couldn't deserialize", say) is not: it is usually a
    broken file. A :class:`~recpipe.errors.RecpipeError` never is, nor is any other
    exception, except a wrapper whose explicit cause (``raise ... from err``, or
    ``urllib``'s ``reason``) is transient.
    """
    if exc is None or _depth > 8 or isinstance(exc, RecpipeError):
        return False
    if isinstance(exc, OSError):
        if isinstance(exc, _PERMANENT_TYPES) or exc.errno in PERMANENT_ERRNOS:
            return False
        if isinstance(exc, _TRANSIENT_TYPES) or exc.errno in TRANSIENT_ERRNOS:
            return True
        reason = getattr(exc, "reason", None)  # urllib.error.URLError wraps the socket error
        if isinstance(reason, BaseException):
            return is_transient(reason, _depth=_depth + 1)
        return exc.errno is None and is_transient(exc.__cause__, _depth=_depth + 1)
    return is_transient(exc.__cause__, _depth=_depth + 1)
