"""A SIGTERM never cuts a database call in the middle (recpipe.tracking, recpipe.recovery).

The case behind it: SIGTERM landed while MLflow's SQLite store was reading; the
half-read cursor kept SQLite's lock, and every clean-up write after it (ending the MLflow
runs as KILLED) waited out the busy timeout and failed, so a stopped run exited 1 after
a minute instead of 143 at once (tests/pipeline/test_faults.py, one run in three).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from recpipe.errors import Terminated
from recpipe.recovery import sigterm_as_exit

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("create table runs (id integer primary key, status text)"))
        conn.execute(sa.text("insert into runs (status) values ('RUNNING'), ('RUNNING')"))
    yield engine
    engine.dispose()


def _sigterm_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)  # the handler would run here, were it not held


def _write_now(path: str) -> None:
    """What the clean-up does: a write, from a connection of its own, that must not wait
    for a lock the interrupted read still holds."""
    with sqlite3.connect(path, timeout=0.2) as db:
        db.execute("update runs set status = 'KILLED'")


def test_a_sigterm_during_a_read_is_acted_on_once_the_connection_is_back(
    engine: sa.Engine,
) -> None:
    reached = []
    with pytest.raises(Terminated), sigterm_as_exit():
        with engine.connect() as conn:
            rows = conn.execute(sa.text("select id from runs"))
            rows.fetchone()  # half read: SQLite holds its shared lock
            _sigterm_self()  # (unheld, it raised here and the read never ended)
            rows.fetchall()  # the read ends, and with it the lock
            reached.append("after the signal")
        reached.append("after the connection went back")  # the signal acts here
    assert reached == ["after the signal"]
    _write_now(str(engine.url.database))  # no lock left behind: no wait, no error


def test_a_sigterm_with_no_connection_out_is_acted_on_at_once(engine: sa.Engine) -> None:
    with sigterm_as_exit():
        with engine.connect() as conn:  # the hold is on from the first checkout
            conn.execute(sa.text("select 1"))
        with pytest.raises(Terminated):
            _sigterm_self()
            pytest.fail("the SIGTERM was held with no connection out")


def test_a_second_sigterm_while_held_is_acted_on_at_once(engine: sa.Engine) -> None:
    with pytest.raises(Terminated), sigterm_as_exit(), engine.connect() as conn:
        conn.execute(sa.text("select 1"))
        _sigterm_self()  # held
        _sigterm_self()  # a user who means it: a connection that never came back
        pytest.fail("the second SIGTERM was held too")


def test_nested_connections_hold_until_the_last_is_back(engine: sa.Engine) -> None:
    reached = []
    with pytest.raises(Terminated), sigterm_as_exit():
        with engine.connect() as outer:
            outer.execute(sa.text("select 1"))
            with engine.connect() as inner:
                inner.execute(sa.text("select 1"))
                _sigterm_self()
            reached.append("inner back, outer still out")
        reached.append("both back")
    assert reached == ["inner back, outer still out"]


def test_a_connection_closed_by_another_thread_passes_the_signal_to_the_main_one(
    engine: sa.Engine,
) -> None:
    with pytest.raises(Terminated), sigterm_as_exit():
        conn = engine.connect()
        conn.execute(sa.text("select 1"))
        _sigterm_self()
        closer = threading.Thread(target=conn.close)
        closer.start()
        closer.join()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.01)  # the main thread acts on it at its next step
        pytest.fail("the held SIGTERM was lost when another thread closed the connection")


def test_outside_sigterm_as_exit_the_previous_handler_is_back(engine: sa.Engine) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_exit(), engine.connect() as conn:
        conn.execute(sa.text("select 1"))
        assert signal.getsignal(signal.SIGTERM) != before  # held
    assert signal.getsignal(signal.SIGTERM) == before
    with engine.connect() as conn:  # the hold stays installed, passing signals through
        conn.execute(sa.text("select 1"))
    assert signal.getsignal(signal.SIGTERM) == before


class _SigtermWhenPickled:
    """Sends SIGTERM to this process while torch's zip writer pickles it."""

    def __reduce__(self) -> tuple:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler would run here, were it not held
        return (dict, ())


def test_a_sigterm_during_a_checkpoint_write_is_acted_on_once_the_file_is_whole(
    tmp_path: Path,
) -> None:
    """The second way CI saw a stopped run exit 1: the signal's exception raised inside
    torch.save broke its zip writer, whose own RuntimeError replaced it."""
    import torch

    from recpipe.train.loop import save_file

    path = tmp_path / "checkpoint.pt"
    with pytest.raises(Terminated), sigterm_as_exit():
        save_file({"epoch": 3, "weights": torch.arange(4), "x": _SigtermWhenPickled()}, path)
    saved = torch.load(path, weights_only=False)
    assert saved["epoch"] == 3 and saved["weights"].tolist() == [0, 1, 2, 3]


def test_sigterm_held_nests_and_acts_when_the_outer_block_ends() -> None:
    from recpipe.workspace import sigterm_held

    reached = []
    with pytest.raises(Terminated), sigterm_as_exit():
        with sigterm_held():
            with sigterm_held():
                _sigterm_self()
            reached.append("inner done, outer still held")
        reached.append("after")
    assert reached == ["inner done, outer still held"]
