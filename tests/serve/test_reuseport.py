"""One SO_REUSEPORT listening socket per worker in place of BentoML's shared one: the
worker's descriptor found, the hand-over, the kernel spreading connections over them."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from recpipe.serve import reuseport
from recpipe.serve.reuseport import bentoml_worker_fd, own_listener, spread_connections

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux SO_REUSEPORT")
WORKER = "_bentoml_impl.worker.service"


def test_the_worker_descriptor_comes_from_bentomls_worker_command_line() -> None:
    argv = ["service.py", ".", "--fd", "7", "--service-name", "recpipe", "--backlog", "512"]
    assert bentoml_worker_fd(argv, WORKER) == (7, 512)
    assert bentoml_worker_fd(["service.py", "--fd=9"], WORKER) == (9, 2048)
    assert bentoml_worker_fd(argv, "pytest") is None  # not a BentoML worker
    assert bentoml_worker_fd(["service.py", "--fd", "x"], WORKER) is None
    assert bentoml_worker_fd(["service.py"], WORKER) is None
    assert bentoml_worker_fd() is None  # this process


def shared_listener() -> socket.socket:
    """A listening socket as BentoML's supervisor makes it (circus: SO_REUSEADDR only)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


@linux
def test_each_worker_gets_its_own_socket_and_connections_spread(monkeypatch) -> None:
    monkeypatch.setattr(reuseport, "_OWNED", set())
    shared = shared_listener()
    port = shared.getsockname()[1]
    # two "workers": each holds its own descriptor of the shared socket
    fds = [os.dup(shared.fileno()), os.dup(shared.fileno())]
    sockets = []
    try:
        assert own_listener(fds[0]) and own_listener(fds[1])
        assert own_listener(fds[0])  # again in the same process: nothing to do
        sockets = [socket.socket(fileno=fd) for fd in fds]
        for s in sockets:
            assert s.getsockname() == ("127.0.0.1", port)
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
            s.setblocking(False)
        # the supervisor's socket no longer listens: nothing can wait there unanswered
        assert shared.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
        accepted = [0, 0]
        for i, s in enumerate(sockets):
            while True:
                try:
                    conn, _ = s.accept()
                except BlockingIOError:
                    break
                conn.close()
                accepted[i] += 1
        for c in clients:
            c.close()
        assert sum(accepted) == 32
        assert min(accepted) >= 1  # all 32 on one socket: probability 2 / 2**32
    finally:
        for s in sockets:
            s.close()
        shared.close()


@linux
def test_anything_but_a_listening_tcp_socket_is_left_alone(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(reuseport, "_OWNED", set())
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(tmp_path / "s.sock"))
    unix.listen(4)
    with unix:
        assert not own_listener(unix.fileno())
        assert unix.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    assert not own_listener(10_000)  # not open at all


def test_spreading_is_only_for_bentoml_workers_and_can_be_turned_off(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(reuseport, "own_listener", lambda fd, backlog: calls.append(fd) or True)
    assert not spread_connections()  # pytest is no BentoML worker
    monkeypatch.setattr(reuseport, "bentoml_worker_fd", lambda: (7, 2048))
    assert spread_connections() and calls == [7]
    monkeypatch.setenv(reuseport.REUSEPORT_ENV, "0")
    assert not spread_connections() and calls == [7]
