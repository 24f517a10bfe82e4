"""`recpipe stage train --nproc 2`: the train stage launches a 2-process torchrun job.

The equality of 2 processes with 1 is tested in tests/unit/test_distributed.py; this
checks the stage's launch path (the one the CLI, DVC and the flow share): the job runs,
rank 0 alone writes each split's artifact and ``training.json`` (which records the
process count), and the artifact loads and scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recpipe.cli import app
from recpipe.config import load_params
from recpipe.features.idmap import N_RESERVED
from recpipe.paths import Paths
from recpipe.pipeline import run_stage
from tests.pipeline.conftest import SMALL

pytestmark = pytest.mark.slow

SPLIT = "user_temporal"


def test_stage_train_with_two_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = [*SMALL, f"sessions.splits=[{SPLIT}]", f"train.splits=[{SPLIT}]"]
    params = load_params(None, overrides)
    paths = Paths.at(tmp_path)
    for stage in ("ingest", "validate", "sessions", "features"):
        run_stage(stage, params, paths)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    sets = [arg for o in overrides for arg in ("--set", o)]
    res = CliRunner().invoke(
        app, ["stage", "train", "--model", "mf_bpr", "--nproc", "2", "--root", str(tmp_path), *sets]
    )
    assert res.exit_code == 0, res.output

    report = json.loads((paths.model_dir("mf_bpr") / "training.json").read_text())
    entry = report["splits"][SPLIT]
    assert entry["processes"] == 2
    assert len(entry["history"]) == 2  # train.max_epochs=2, both epochs recorded once

    from recpipe.models.data import Queries
    from recpipe.models.registry import load_model

    model = load_model(paths.model_dir("mf_bpr") / SPLIT)
    scores = model.score(Queries.for_users([0, 1]))
    assert scores.shape[0] == 2 and np.isfinite(scores[:, N_RESERVED:]).all()  # not PAD/UNK
    assert not (paths.root / "checkpoints" / "mf_bpr" / SPLIT).exists()  # removed once done
