"""A workspace moved to another folder works on its own: its MLflow store (absolute
artifact locations inside ``mlflow.db``) is rebased on the new folder, so a run there
writes its artifacts under the moved folder, nothing at the original location, and the
registry reads the versions of the runs before the move from the moved ``mlruns/``."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from recpipe.paths import Paths
from tests.pipeline.conftest import CHEAP

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _locations(db: Path) -> list[str]:
    """Every artifact location the store records."""
    with sqlite3.connect(db) as conn:
        return [
            value
            for table, column in (
                ("experiments", "artifact_location"),
                ("runs", "artifact_uri"),
                ("logged_models", "artifact_location"),
                ("model_versions", "storage_location"),
            )
            for (value,) in conn.execute(f"SELECT {column} FROM {table}")
            if value and value.startswith("file:")
        ]


def test_a_moved_workspace_tracks_and_registers_under_its_new_folder(tmp_path: Path) -> None:
    import mlflow

    from flows.retrain import retrain
    from recpipe.gates.registry import Registry
    from recpipe.models.registry import load_model
    from recpipe.pipeline import workspace_params

    before = mlflow.get_tracking_uri()
    old, new = tmp_path / "first", tmp_path / "moved" / "ws"
    try:
        first = retrain(overrides=CHEAP, root=str(old))
        old_versions = set(first["registry"]["versions"].values())
        assert old_versions
        new.parent.mkdir()
        shutil.move(old, new)

        second = retrain(overrides=CHEAP, root=str(new))
    finally:
        mlflow.set_tracking_uri(before)

    assert not old.exists()  # nothing was written at the original location
    paths = Paths.at(new)
    root = paths.mlflow_artifacts.resolve().as_uri()
    locations = _locations(paths.mlflow_db)
    assert locations and all(loc == root or loc.startswith(root + "/") for loc in locations)
    # the second run's own artifacts are in the moved folder
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{paths.mlflow_db}")
    run = client.get_run(second["mlflow_run_id"])
    assert run.info.artifact_uri.startswith(root + "/")
    assert (paths.mlflow_artifacts / run.info.artifact_uri.removeprefix(root + "/")).is_dir()
    new_versions = set(second["registry"]["versions"].values())
    assert new_versions and not new_versions & old_versions
    # the versions registered before the move are read from the moved mlruns/
    registry = Registry.for_workspace(workspace_params(paths, None, CHEAP), paths)
    try:
        for version in sorted(old_versions | new_versions, key=int):
            artifact = registry.download(version, tmp_path / "download" / version)
            assert load_model(artifact).meta.item_map is not None
        # the candidates' training runs stay nested in the pipeline runs, in `recpipe`
        runs = mlflow.search_runs(experiment_names=["recpipe"])
    finally:
        mlflow.set_tracking_uri(before)
    nested = runs[runs["tags.mlflow.parentRunId"] == second["mlflow_run_id"]]
    assert set(nested["tags.mlflow.runName"]) >= {"train-mf_bpr-user_temporal"}
