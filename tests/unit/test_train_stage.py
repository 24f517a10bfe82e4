"""The train stage writes each candidate beside ``models/<name>/`` and swaps it in only
once complete: a failed (or killed) run leaves every previous artifact whole, the failing
candidate's included, and the candidates that finished before the failure are in place."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from recpipe import stages
from recpipe.models import fitting
from tests.unit.gate_workspace import SPLIT, build_workspace, small_params


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_failing_candidate_leaves_its_previous_artifact_and_the_others_whole(
    tmp_path, monkeypatch
) -> None:
    paths = build_workspace(tmp_path)  # holds models/markov/session from an earlier run
    earlier = paths.model_dir("markov") / SPLIT / "meta.json"
    assert earlier.is_file()
    params = small_params(
        tmp_path, "train.candidates=[sr, markov]", "train.model_splits={}", "train.splits=[session]"
    )
    stages.train(params, paths)  # the previous run: both candidates
    before = {name: _digest(paths.model_dir(name)) for name in ("sr", "markov")}
    assert "session/meta.json" in before["sr"] and "training.json" in before["sr"]
    real = fitting.fit_candidate

    def failing(candidate, *args, **kwargs):
        if candidate.name == "sr":
            raise RuntimeError("sr broke")
        return real(candidate, *args, **kwargs)

    monkeypatch.setattr(fitting, "fit_candidate", failing)
    with pytest.raises(RuntimeError, match="sr broke"):
        stages.train(params, paths)
    # sr failed mid-training: its previous artifact is whole (before: an empty folder)
    assert _digest(paths.model_dir("sr")) == before["sr"]
    assert _digest(paths.model_dir("markov")) == before["markov"]  # it had not started
    assert sorted(p.name for p in paths.models_dir.iterdir()) == ["markov", "sr"]  # no staging

    later = small_params(
        tmp_path, "train.candidates=[markov, sr]", "train.model_splits={}", "train.splits=[session]"
    )
    with pytest.raises(RuntimeError, match="sr broke"):
        stages.train(later, paths)  # markov completes first, then sr fails
    assert _digest(paths.model_dir("sr")) == before["sr"]
    trained = json.loads((paths.model_dir("markov") / "training.json").read_text())
    assert trained["splits"][SPLIT]["artifact"] == f"models/markov/{SPLIT}"
    assert (paths.model_dir("markov") / SPLIT / "meta.json").is_file()
    assert sorted(p.name for p in paths.models_dir.iterdir()) == ["markov", "sr"]

    monkeypatch.setattr(fitting, "fit_candidate", real)
    stages.train(params, paths)
    assert (paths.model_dir("sr") / SPLIT / "meta.json").is_file() and earlier.is_file()


def test_the_train_and_tune_stages_never_read_the_test_part(tmp_path, monkeypatch) -> None:
    """A model is fitted and tuned on the train and valid parts only: the test part (the
    evaluate stage's, possibly larger than memory) is never read before evaluation."""
    pytest.importorskip("optuna")
    import mlflow

    from recpipe.models.dataset import clear_cache

    paths = build_workspace(tmp_path)
    test_part = paths.features_dir / SPLIT / "test.parquet"
    test_part.write_bytes(b"not parquet: reading it fails")
    clear_cache()
    params = small_params(
        tmp_path,
        "train.candidates=[markov, sr]",
        "train.model_splits={}",
        "evaluate.models=[pop]",
        "tune.models=[sr]",
        "tune.trials=1",
    )
    before = mlflow.get_tracking_uri()
    try:
        tuned = stages.tune(params, paths)
        stages.train(params, paths)
    finally:
        mlflow.set_tracking_uri(before)
        clear_cache()
    assert tuned["tuned"] == ["sr"]
    for name in ("markov", "sr"):
        assert (paths.model_dir(name) / SPLIT / "meta.json").is_file()
    # and the evaluate stage is the one that reads it
    with pytest.raises(Exception, match=r"(?i)parquet|magic"):
        stages.evaluate(params, paths)
