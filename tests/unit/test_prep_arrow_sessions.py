"""The sessions stage on the arrow engine writes the pandas engine's tables and report.

Equality of tables: the arrow engine writes rows grouped by user-hash partition, so
both tables are sorted by all their columns (and the index reset) before comparing;
dtypes must be equal. The report (``reports/splits.json``: filter stats, each split's
stats and leakage checks, skipped reasons) must be equal as is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from recpipe.config import Params, load_params
from recpipe.errors import SplitError
from recpipe.paths import Paths
from recpipe.stages import sessions

SMALL = ["synth.n_users=60", "synth.n_items=40", "synth.n_sessions=300", "synth.days=6"]


def _synthetic() -> pd.DataFrame:
    from recpipe.data.synth import generate

    return generate(load_params(None, SMALL).synth).events


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    columns = list(frame.columns)
    return frame.sort_values(columns, kind="stable", na_position="first").reset_index(drop=True)


def _run(events: pd.DataFrame, root: Path, overrides: list[str]) -> tuple[Paths, dict]:
    paths = Paths.at(root)
    paths.validated_dir.mkdir(parents=True, exist_ok=True)
    events.to_parquet(paths.validated_dir / "events.parquet", index=False)
    params: Params = load_params(None, overrides)
    report = sessions(params, paths)
    return paths, json.loads(paths.splits_json.read_text()) | {"_returned": report}


def _files(paths: Paths) -> list[Path]:
    root = paths.root
    found = [paths.sessions_dir / "events.parquet", *sorted(paths.splits_dir.rglob("*.parquet"))]
    return [p.relative_to(root) for p in found]


def _compare(
    events: pd.DataFrame,
    tmp_path: Path,
    overrides: list[str],
    partitions: list[int],
    batch_rows: int = 97,
) -> dict:
    """Run both engines; assert equal files and report; return the pandas report.

    ``batch_rows`` is small so that the partitioning reads many record batches.
    """
    expected_paths, expected = _run(events, tmp_path / "pandas", overrides)
    expected.pop("_returned")
    for n in partitions:
        root = tmp_path / f"arrow{n}"
        arrow = [
            *overrides,
            "prep.engine=arrow",
            f"prep.partitions={n}",
            f"prep.batch_rows={batch_rows}",
        ]
        got_paths, got = _run(events, root, arrow)
        assert got.pop("_returned") == got
        assert got == expected, f"report differs with {n} partitions"
        assert _files(got_paths) == _files(expected_paths)
        for rel in _files(expected_paths):
            want = pd.read_parquet(expected_paths.root / rel)
            have = pd.read_parquet(got_paths.root / rel)
            pd.testing.assert_frame_equal(_canonical(have), _canonical(want), obj=str(rel))
        assert not (root / "data" / "_sessions_work").exists()
        shutil.rmtree(root)
    return expected


@pytest.mark.parametrize("partitions", [[1, 7], [3]])
def test_synthetic_default_params(tmp_path: Path, partitions: list[int]) -> None:
    report = _compare(_synthetic(), tmp_path, [*SMALL, "sessions.min_item_support=2"], partitions)
    assert all("stats" in v for v in report["splits"].values()), report["splits"]


def test_test_items_seen_in_train_valid(tmp_path: Path) -> None:
    overrides = [*SMALL, "sessions.min_item_support=3", "sessions.test_items_seen_in=train_valid"]
    report = _compare(_synthetic(), tmp_path, overrides, [1, 7])
    leakage = report["splits"]["session"]["leakage"]
    assert all(leakage.values()) and "test_items_in_train" not in leakage


def test_event_type_filter_and_collapse(tmp_path: Path) -> None:
    overrides = [
        "sessions.event_types=[view,cart]",
        "sessions.collapse_repeats=true",
        "sessions.use_source_sessions=false",
        "sessions.gap_minutes=5",
        "sessions.min_session_length=3",
    ]
    report = _compare(_synthetic(), tmp_path, overrides, [1, 7])
    assert report["event_type_filter"]["dropped"] > 0


@pytest.mark.parametrize("anonymous", ["session", "drop"])
def test_anonymous_rows_with_source_sessions(tmp_path: Path, anonymous: str) -> None:
    events = _synthetic()
    events.loc[events.index[::5], "user_id"] = None  # anonymous rows, with source sessions
    overrides = [f"sessions.cold_anonymous={anonymous}", "sessions.cold_user_fraction=0.3"]
    report = _compare(events, tmp_path, overrides, [1, 7])
    assert "stats" in report["splits"]["cold_start"]


def test_session_only_data_skips_user_splits(tmp_path: Path) -> None:
    events = _synthetic().assign(user_id=pd.Series(None, dtype="string"))
    report = _compare(events, tmp_path, [], [1, 4])
    for kind in ("global_temporal", "user_temporal", "leave_last_out"):
        assert "skipped" in report["splits"][kind]
    assert "stats" in report["splits"]["session"]


def test_cold_start_skipped_with_the_same_reason(tmp_path: Path) -> None:
    overrides = ["sessions.cold_item_fraction=0.0001", "sessions.cold_user_fraction=0.0001"]
    report = _compare(_synthetic(), tmp_path, overrides, [1, 7])
    assert "too few events" in report["splits"]["cold_start"]["skipped"]


def test_rows_without_any_id_are_refused_and_nothing_is_lost(tmp_path: Path) -> None:
    paths, _ = _run(_synthetic(), tmp_path, ["prep.engine=arrow", "prep.partitions=2"])
    before = (paths.sessions_dir / "events.parquet").read_bytes()
    events = _synthetic()
    events.loc[events.index[0], ["user_id", "session_id"]] = None
    with pytest.raises(SplitError, match="neither user_id nor session_id"):
        _run(events, tmp_path, ["prep.engine=arrow", "prep.partitions=2"])
    assert (paths.sessions_dir / "events.parquet").read_bytes() == before  # outputs kept
    assert not (tmp_path / "data" / "_sessions_work").exists()


# --------------------------------------------------------------------------- real data
def _real(root: Path, kind: str, path: str) -> pd.DataFrame:
    from recpipe.data.sources import import_source

    if not (root / path).exists():
        pytest.skip(f"{root / path} not present")
    return import_source(kind, root / path).events


@pytest.mark.slow
@pytest.mark.realdata
def test_movielens_100k(real_data: Path, tmp_path: Path) -> None:
    events = _real(real_data, "movielens-100k", "ml-100k")
    report = _compare(events, tmp_path, [], [1, 7], batch_rows=9_973)
    assert "stats" in report["splits"]["leave_last_out"]


@pytest.mark.slow
@pytest.mark.realdata
def test_diginetica_sample(real_data: Path, tmp_path: Path) -> None:
    events = _real(real_data, "diginetica", "diginetica")  # mostly anonymous sessions
    report = _compare(events, tmp_path, ["sessions.event_types=[view]"], [1, 7])
    assert "stats" in report["splits"]["session"]
