"""Fixtures for pipeline tests: a small synthetic workspace."""

from __future__ import annotations

from pathlib import Path

import pytest

from recpipe.config import Params, load_params
from recpipe.paths import Paths

#: Overrides that make the synthetic data small enough for fast tests.
SMALL = [
    "synth.n_users=60",
    "synth.n_items=50",
    "synth.n_categories=5",
    "synth.n_sessions=300",
    "synth.days=5",
    "train.max_epochs=2",
]


@pytest.fixture
def small_params() -> Params:
    return load_params(None, SMALL)


@pytest.fixture
def workspace(tmp_path: Path) -> Paths:
    return Paths.at(tmp_path)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the whole session (about 12 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield
