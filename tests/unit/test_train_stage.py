"""The train stage clears a candidate's folder only when that candidate trains: a failed
run leaves the later candidates' previous artifacts whole."""

from __future__ import annotations

import pytest

from recpipe import stages
from recpipe.models import fitting
from tests.unit.gate_workspace import SPLIT, build_workspace, small_params


def test_a_failing_candidate_leaves_the_later_ones_whole(tmp_path, monkeypatch) -> None:
    paths = build_workspace(tmp_path)  # holds models/markov/session from an earlier run
    earlier = paths.model_dir("markov") / SPLIT / "meta.json"
    assert earlier.is_file()
    real = fitting.fit_candidate

    def failing(candidate, *args, **kwargs):
        if candidate.name == "sr":
            raise RuntimeError("sr broke")
        return real(candidate, *args, **kwargs)

    monkeypatch.setattr(fitting, "fit_candidate", failing)
    params = small_params(
        tmp_path, "train.candidates=[sr, markov]", "train.model_splits={}", "train.splits=[session]"
    )
    with pytest.raises(RuntimeError, match="sr broke"):
        stages.train(params, paths)
    assert earlier.is_file()  # markov had not started: its last artifact is still there
    monkeypatch.setattr(fitting, "fit_candidate", real)
    stages.train(params, paths)
    assert (paths.model_dir("sr") / SPLIT / "meta.json").is_file() and earlier.is_file()
