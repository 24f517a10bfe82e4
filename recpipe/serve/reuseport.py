"""Spread connections over the service's worker processes (Linux ``SO_REUSEPORT``).

``bentoml serve`` (1.4) binds one listening socket in its supervisor and hands the
same socket to every worker (``--fd N``). The workers then race to accept, and the
first to wake drains the whole queue: 16 keep-alive clients that connect at once
often all land on one worker (16/0 in 4 of 8 samples on a 2-core machine), which
then does all the work on one core while the other idles (BentoML issue #5426).

:func:`own_listener` gives a worker a listening socket of its own on the same
address, with ``SO_REUSEPORT``, in place of the shared one (the same descriptor
number, so the server started on it afterwards uses the new socket). The kernel then
assigns every new connection to one of the workers' sockets by a hash of its
addresses, so connections split about evenly (16 clients over 2 workers: 8/8 on
average, never all on one but with probability 2/65536). Steps, each safe to repeat
in every worker and in any order:

1. ``SO_REUSEPORT`` on the shared socket, so that sockets of the same user may bind
   its address beside it;
2. a new socket with ``SO_REUSEADDR`` and ``SO_REUSEPORT``, bound to that address
   and listening;
3. ``shutdown(SHUT_RD)`` of the shared socket: on Linux that stops it listening
   (for the supervisor and every worker: the later workers find it closed already),
   so no connection waits there for an accept that never comes;
4. ``dup2`` of the new socket onto the shared descriptor number.

Anything unexpected (not Linux, not a listening TCP socket, a bind refused) leaves
the shared socket as it was: serving works as before, only unbalanced.
:func:`bentoml_worker_fd` finds the descriptor in a BentoML HTTP worker process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Sequence

__all__ = ["REUSEPORT_ENV", "bentoml_worker_fd", "own_listener", "spread_connections"]

log = logging.getLogger(__name__)

#: ``0`` / ``false`` turns connection spreading off (default on, on Linux).
REUSEPORT_ENV = "RECPIPE_REUSEPORT"
#: The module BentoML runs (``python -m``) for each HTTP worker of a service.
_WORKER_MAIN = "_bentoml_impl.worker.service"
#: Descriptors that hold this process's own socket already.
_OWNED: set[int] = set()


def _option(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def bentoml_worker_fd(
    argv: Sequence[str] | None = None, main_module: str | None = None
) -> tuple[int, int] | None:
    """``(fd, backlog)`` of the listening socket of a BentoML HTTP worker, or None.

    A worker is ``python -m _bentoml_impl.worker.service BENTO --fd N [--backlog B]``.

    Parameters
    ----------
    argv : sequence of str, optional
        Default ``sys.argv``.
    main_module : str, optional
        Name of the ``__main__`` module (default: this process's).
    """
    if main_module is None:
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        main_module = getattr(spec, "name", None)
    if main_module != _WORKER_MAIN:
        return None
    args = list(sys.argv if argv is None else argv)
    fd, backlog = _option(args, "--fd"), _option(args, "--backlog")
    try:
        return int(fd or ""), int(backlog or 2048)
    except ValueError:
        return None


def own_listener(fd: int, backlog: int = 2048) -> bool:
    """Replace the listening TCP socket at ``fd`` by this process's own ``SO_REUSEPORT``
    socket on the same address (see the module docstring).

    Returns
    -------
    bool
        True when ``fd`` now holds this process's own socket; False when it was left
        as it was (not Linux, not a listening TCP socket, or the bind was refused).
    """
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        return False
    try:
        shared = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    with shared:
        try:
            if (
                shared.family not in (socket.AF_INET, socket.AF_INET6)
                or shared.type != socket.SOCK_STREAM
            ):
                return False
            if fd in _OWNED:
                return True  # this process did it already
            address = shared.getsockname()
            shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            own = socket.socket(shared.family, socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("keeping the shared listening socket: %s", exc)
            return False
        try:
            own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            own.bind(address)
            own.listen(backlog)
        except OSError as exc:
            own.close()
            log.warning("keeping the shared listening socket: cannot bind %s: %s", address, exc)
            return False
        # stops listening, for every process (ENOTCONN: another worker did it first)
        with contextlib.suppress(OSError):
            shared.shutdown(socket.SHUT_RD)
        os.dup2(own.fileno(), fd, inheritable=os.get_inheritable(fd))
        own.close()
    _OWNED.add(fd)
    log.info("worker %d listens on its own SO_REUSEPORT socket at %s", os.getpid(), address)
    return True


def spread_connections() -> bool:
    """In a BentoML HTTP worker, take an own ``SO_REUSEPORT`` listening socket
    (:func:`own_listener`) unless ``RECPIPE_REUSEPORT`` is ``0``; elsewhere nothing."""
    if os.environ.get(REUSEPORT_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    found = bentoml_worker_fd()
    return found is not None and own_listener(*found)
