"""Same seed, same weights on the CPU, for every deep candidate, with two torch threads
(issue 24, case 11). The test session runs torch on one thread (OMP_NUM_THREADS=1), where
the thread order of a parallel backward cannot show; here each candidate trains twice
on the default synthetic data at two threads and its weights must match bit for bit."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from recpipe import stages
from recpipe.config import load_params
from recpipe.paths import Paths

pytestmark = pytest.mark.slow

#: The split each candidate trains on here (the session models need sessions).
SPLITS = {"gru4rec": "session", "gru4rec_ctx": "session", "sasrec": "session"}


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default data's features (every split), as the pipeline builds them."""
    paths = Paths.at(tmp_path_factory.mktemp("determinism"))
    params = load_params(None, [])
    for stage in (stages.ingest, stages.validate, stages.sessions, stages.features):
        stage(params, paths)
    return paths.features_dir


def _weights(model) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(model.module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("name", load_params(None, []).train.candidates)
def test_two_threads_train_the_same_weights_twice(features: Path, name: str) -> None:
    from recpipe.models.dataset import load_split
    from recpipe.models.registry import build_model

    data = load_split(features / SPLITS.get(name, "user_temporal"))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = {
            _weights(
                build_model(name, {"epochs": 1}, data.meta).fit(
                    data.parts["train"], data.parts["valid"]
                )
            )
            for _ in range(2)
        }
    finally:
        torch.set_num_threads(threads)
    assert len(runs) == 1, f"{name}: two runs with the same seed gave different weights"
