"""Shared test set-up: telemetry off, real-data location, small helpers.

Telemetry variables are set before any tool is imported by a test module.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from recpipe.config import TELEMETRY_OFF

for _key, _value in {
    **TELEMETRY_OFF,
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "OPENBLAS_NUM_THREADS": "1",
    # torch's intra-op threads: the test models are tiny, and two threads that compete
    # with another process for two cores run many times slower than one
    "OMP_NUM_THREADS": "1",
    # hypothesis keeps its cache outside the working tree
    "HYPOTHESIS_STORAGE_DIRECTORY": os.path.join(tempfile.gettempdir(), "recpipe-hypothesis"),
}.items():
    os.environ.setdefault(_key, _value)

# Tests never write into a person's BentoML store: every test process gets its own,
# outside the working tree (a store inside the build context would end up in the Bento).
_BENTOML_HOME = tempfile.mkdtemp(prefix="recpipe-test-bentoml-")
os.environ["BENTOML_HOME"] = _BENTOML_HOME


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the test process's BentoML store."""
    import shutil

    shutil.rmtree(_BENTOML_HOME, ignore_errors=True)


REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Where the real data sets live: $RECPIPE_DATA_DIR, default ../shared/data."""
    return Path(os.environ.get("RECPIPE_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture
def real_data() -> Path:
    """The real data folder; skips the test cleanly when it is absent."""
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set RECPIPE_DATA_DIR)")
    return root
