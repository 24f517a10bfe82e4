"""The workspace's MLflow store follows the workspace when it is moved or copied
(:func:`recpipe.tracking.relocate_store`, run by :func:`recpipe.tracking.tracking_uri`)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from recpipe.config import load_params
from recpipe.errors import WorkspaceError
from recpipe.paths import Paths
from recpipe.tracking import relocate_store, tracking_uri


@pytest.fixture(autouse=True)
def _global_tracking_uri():
    import mlflow

    before = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(before)


def _log_run(paths: Paths, text: str) -> str:
    """One run in the workspace experiment with one artifact; its run id."""
    import mlflow

    from recpipe.tracking import stage_run

    with stage_run(load_params(None, []), paths, "test") as run_id:
        mlflow.log_text(text, "note.txt")
    return run_id


def _locations(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [
            value
            for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri"))
            for (value,) in conn.execute(f"SELECT {column} FROM {table}")
        ]


@pytest.mark.parametrize("how", ["move", "copy"])
def test_a_moved_or_copied_store_reads_and_writes_under_its_new_folder(tmp_path, how) -> None:
    import mlflow

    old, new = Paths.at(tmp_path / "a"), Paths.at(tmp_path / "b")
    first = _log_run(old, "before the move")
    (shutil.move if how == "move" else shutil.copytree)(old.root, new.root)
    before = {p: p.stat().st_mtime_ns for p in old.root.rglob("*")} if how == "copy" else {}

    second = _log_run(new, "after the move")

    root = new.mlflow_artifacts.resolve()
    locations = [loc for loc in _locations(new.mlflow_db) if "mlruns" in loc]
    assert locations and all(str(root) in loc for loc in locations), locations
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(load_params(None, []), new))
    for run_id, text in ((first, "before the move"), (second, "after the move")):
        local = client.download_artifacts(run_id, "note.txt", str(tmp_path / run_id))
        assert Path(local).read_text() == text
    written = Path(client.get_run(second).info.artifact_uri.removeprefix("file://"))
    assert written.is_dir() and written.is_relative_to(root)
    if how == "move":
        assert not old.root.exists()  # nothing written at the original location
    else:  # the original is untouched and still works on its own
        assert {p: p.stat().st_mtime_ns for p in old.root.rglob("*")} == before
        assert relocate_store(old) is None


def test_nothing_to_do_without_a_store_or_with_a_server(tmp_path) -> None:
    paths = Paths.at(tmp_path)
    assert relocate_store(paths) is None and not paths.mlflow_db.exists()
    server = load_params(None, ["tracking.tracking_uri=http://127.0.0.1:5000"])
    assert tracking_uri(server, paths) == "http://127.0.0.1:5000"
    paths.mlflow_db.write_text("not a database")
    with pytest.raises(WorkspaceError, match="cannot update the MLflow store"):
        relocate_store(paths)
