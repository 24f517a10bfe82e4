"""The arrow and dask engines through the real stages, ingest to features, against the
pandas engine (dask: on a 2-worker local cluster, at orchestration.dask_address).

The per-stage equality tests are in tests/unit/test_prep_arrow_*.py; this runs the
chain as `recpipe run` does, on a CSV drop with a few bad rows (quarantined: unknown event
types, and times before 1677 or after 2262, which no timestamp holds), and checks what the
next stages see: identical interim and validated files, equal reports, equal
sessions and splits up to row order, and a features stage that builds identical id maps
and encoded tables equal up to row order.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from recpipe.config import load_params
from recpipe.data.synth import generate
from recpipe.paths import Paths
from recpipe.pipeline import run_stage
from tests.pipeline.conftest import SMALL

STAGES = ("ingest", "validate", "sessions", "features")
ENGINES = ("pandas", "arrow", "dask")


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in frame.columns if frame[c].map(lambda v: not isinstance(v, list)).all()]
    return frame.sort_values(cols, kind="stable").reset_index(drop=True)


def _report(path: Path) -> dict:
    report = json.loads(path.read_text())
    report.pop("timings_s", None)
    return report


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Paths]:
    tmp = tmp_path_factory.mktemp("engines")
    events = generate(load_params(None, SMALL).synth).events
    events.loc[events.index[::97], "event_type"] = "teleport"  # ~1%: quarantined
    # times no timestamp can hold (issue 24): bad rows, quarantined, not a crash
    events["timestamp"] = events["timestamp"].astype(str).astype(object)
    events.loc[events.index[[5, 50]], "timestamp"] = ["1500-01-01 00:00:00+00:00", "2300-06-01"]
    raw = tmp / "events.csv"
    events.to_csv(raw, index=False)
    out = {}
    with pytest.MonkeyPatch.context() as mp, _cluster() as address:
        _pin_now(mp)  # the reports name the same "now" (the future-timestamp bound)
        for engine in ENGINES:
            out[engine] = _run(tmp, raw, engine, address)
    return out


@contextlib.contextmanager
def _cluster() -> Iterator[str | None]:
    """A 2-worker local Dask cluster's scheduler address (None without distributed)."""
    try:
        from distributed import LocalCluster
    except ImportError:  # pragma: no cover - dask is a dev dependency
        yield None
        return
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


def _pin_now(mp: pytest.MonkeyPatch) -> None:
    from recpipe.validation import partitioned, runner, suites

    now = suites.resolve_now(None)
    mp.setattr(runner, "resolve_now", lambda value=None: now if value is None else value)
    mp.setattr(partitioned, "resolve_now", lambda value=None: now if value is None else value)


def _run(tmp: Path, raw: Path, engine: str, address: str | None) -> Paths | None:
    """Ingest to features on ``raw`` with ``engine``; the workspace."""
    if engine == "dask" and address is None:
        return None
    params = load_params(
        None,
        [
            *SMALL,
            "data.source=csv",
            f"data.path={raw}",
            "validate.on_failure=quarantine",
            "validate.max_bad_fraction=0.02",
            f"prep.engine={engine}",
            "prep.partitions=3",
            "prep.batch_rows=500",
            *([f"orchestration.dask_address={address}"] if address else []),
        ],
    )
    paths = Paths.at(tmp / engine)
    for stage in STAGES:
        run_stage(stage, params, paths)
    return paths


def _other(workspaces: dict, engine: str) -> Paths:
    if workspaces[engine] is None:
        pytest.skip(f"{engine} engine not available")
    return workspaces[engine]


@pytest.mark.parametrize("engine", ["arrow", "dask"])
def test_interim_and_validated_files_are_identical(workspaces, engine):
    a, b = workspaces["pandas"], _other(workspaces, engine)
    for folder in ("interim_dir", "validated_dir", "quarantine_dir"):
        left, right = getattr(a, folder), getattr(b, folder)
        names = sorted(p.name for p in left.iterdir())
        assert names == sorted(p.name for p in right.iterdir())
        for name in names:
            assert (left / name).read_bytes() == (right / name).read_bytes(), (folder, name)
    assert _report(a.validation_json) == _report(b.validation_json)
    assert _report(a.validation_json)["counts"]["quarantined"] > 0
    for paths in (a, b):  # the two rows out of 1677..2262, as null timestamps, on both engines
        report = _report(paths.validation_json)
        assert report["reasons"]["timestamp_not_null"] == 2
        [failure] = [f for f in report["failures"] if f["rule"] == "timestamp_not_null"]
        assert "after 2262-04-11" in failure["description"]
        assert [r["row"] for r in failure["example_rows"]] == [5, 50]
        quarantined = pd.read_parquet(paths.quarantine_dir / "events.parquet")
        assert quarantined["timestamp"].isna().sum() == 2


@pytest.mark.parametrize("engine", ["arrow", "dask"])
def test_sessions_splits_and_features_are_equal_up_to_row_order(workspaces, engine):
    a, b = workspaces["pandas"], _other(workspaces, engine)
    assert json.loads(a.splits_json.read_text()) == json.loads(b.splits_json.read_text())
    compared = 0
    for root_a, root_b in ((a.sessions_dir, b.sessions_dir), (a.splits_dir, b.splits_dir)):
        for left in sorted(root_a.rglob("*.parquet")):
            right = root_b / left.relative_to(root_a)
            pd.testing.assert_frame_equal(
                _sorted(pd.read_parquet(left)), _sorted(pd.read_parquet(right))
            )
            compared += 1
    identical = 0
    for left in sorted(a.features_dir.rglob("*")):
        if not left.is_file():
            continue
        right = b.features_dir / left.relative_to(a.features_dir)
        if left.read_bytes() == right.read_bytes():
            identical += 1  # id maps, encoders, metadata
            continue
        assert left.suffix == ".parquet", left  # only row order may differ
        pd.testing.assert_frame_equal(
            _sorted(pd.read_parquet(left)), _sorted(pd.read_parquet(right))
        )
    assert compared >= 10 and identical > 0
