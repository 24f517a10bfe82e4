"""The sessions stage on the dask engine (``prep.engine: dask``) on a 2-worker local cluster.

Against the pandas engine: the same report and the same tables up to row order (as the
arrow engine, tests/unit/test_prep_arrow_sessions.py); against the arrow engine: the
same files row for row (the dask engine runs the arrow engine's per-partition steps as
tasks). The validated events are written in row groups of ``batch_rows`` rows, so the
shuffle by user reads several pieces. A worker killed mid-task is survived.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recpipe.config import Params, load_params
from recpipe.errors import SplitError
from recpipe.paths import Paths
from recpipe.stages import sessions
from tests.unit.test_prep_arrow_sessions import SMALL, _canonical, _files, _synthetic

pytest.importorskip("distributed")

BATCH = 97


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """The scheduler of a 2-worker local cluster (one per module: ~3 s to start)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


def _run(events: pd.DataFrame, root: Path, overrides: list[str]) -> tuple[Paths, dict]:
    paths = Paths.at(root)
    paths.validated_dir.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(events, preserve_index=False)
    pq.write_table(table, paths.validated_dir / "events.parquet", row_group_size=BATCH)
    params: Params = load_params(None, overrides)
    sessions(params, paths)
    return paths, json.loads(paths.splits_json.read_text())


def _engine(name: str, address: str, partitions: int = 3) -> list[str]:
    return [
        f"prep.engine={name}",
        f"prep.partitions={partitions}",
        f"prep.batch_rows={BATCH}",
        f"orchestration.dask_address={address}",
    ]


def _compare(events: pd.DataFrame, tmp: Path, overrides: list[str], address: str) -> dict:
    """Run pandas, arrow and dask; assert the dask outputs equal both; the report."""
    want_paths, want = _run(events, tmp / "pandas", overrides)
    arrow_paths, arrow = _run(events, tmp / "arrow", [*overrides, *_engine("arrow", address)])
    got_paths, got = _run(events, tmp / "dask", [*overrides, *_engine("dask", address)])
    assert got == want == arrow
    assert _files(got_paths) == _files(want_paths) == _files(arrow_paths)
    for rel in _files(want_paths):
        have = pd.read_parquet(got_paths.root / rel)
        pd.testing.assert_frame_equal(have, pd.read_parquet(arrow_paths.root / rel), obj=str(rel))
        want_frame = pd.read_parquet(want_paths.root / rel)
        pd.testing.assert_frame_equal(_canonical(have), _canonical(want_frame), obj=str(rel))
    assert not (tmp / "dask" / "data" / "_sessions_work").exists()
    return got


def test_synthetic_equals_pandas_and_arrow(tmp_path: Path, address: str) -> None:
    from distributed import Client

    report = _compare(_synthetic(), tmp_path, [*SMALL, "sessions.min_item_support=2"], address)
    assert all("stats" in v for v in report["splits"].values()), report["splits"]
    assert report["events"] > 0
    with Client(address) as client:  # the per-partition steps ran as tasks there
        prefixes = client.run_on_scheduler(
            lambda dask_scheduler: list(dask_scheduler.task_prefixes)
        )
    for step in ("bucket_pieces", "sessionize_bucket", "filter_partition", "write_partition"):
        assert step in prefixes, prefixes


def test_dirty_events_anonymous_rows_and_type_filter(tmp_path: Path, address: str) -> None:
    events = _synthetic()
    events.loc[events.index[::5], "user_id"] = None  # anonymous rows, with source sessions
    events.loc[events.index[::7], "event_type"] = "view"
    overrides = [
        "sessions.cold_anonymous=session",
        "sessions.cold_user_fraction=0.3",
        "sessions.event_types=[click,purchase,cart]",
    ]
    report = _compare(events, tmp_path, overrides, address)
    assert report["event_type_filter"]["dropped"] > 0
    assert "stats" in report["splits"]["cold_start"]


def test_a_failed_run_keeps_the_previous_outputs(tmp_path: Path, address: str) -> None:
    paths, _ = _run(_synthetic(), tmp_path, _engine("dask", address))
    before = (paths.sessions_dir / "events.parquet").read_bytes()
    events = _synthetic()
    events.loc[events.index[0], ["user_id", "session_id"]] = None
    with pytest.raises(SplitError, match="neither user_id nor session_id"):
        _run(events, tmp_path, _engine("dask", address))
    assert (paths.sessions_dir / "events.parquet").read_bytes() == before
    assert not (tmp_path / "data" / "_sessions_work").exists()


# --------------------------------------------------------------------------- a dying worker
def die_once(marker: Path, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, but the first call (over all processes) kills its worker process."""
    try:
        marker.open("x").close()  # atomic: only one caller creates it
    except FileExistsError:
        return fn(*args)
    os._exit(1)


def test_a_killed_worker_is_retried_by_dask(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    from recpipe.data.cluster import dask_mapper
    from recpipe.data.partitions import partition_in_pieces
    from recpipe.sessions.scaled import prepare_sessions_arrow

    events = _synthetic()
    want_paths, _ = _run(events, tmp_path / "arrow", ["prep.engine=arrow", "prep.partitions=3"])
    want = json.loads(want_paths.splits_json.read_text())
    source = want_paths.validated_dir / "events.parquet"
    params = load_params(None, []).sessions.model_copy(
        update={"min_item_support": 5, "test_items_seen_in": "train"}
    )
    marker = tmp_path / "died"
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        inner = dask_mapper(client)

        def mapper(fn: Any, args: list[tuple]) -> list:
            if fn.__name__ == "sessionize_bucket":  # one of these tasks kills its worker
                return inner(partial(die_once, marker, fn), args)
            return inner(fn, args)

        out = tmp_path / "dask"
        report = prepare_sessions_arrow(
            source,
            out / "events.parquet",
            out / "splits",
            out / "work",
            params,
            3,
            BATCH,
            mapper=mapper,
            partitioner=partial(partition_in_pieces, mapper=mapper),
        )
    assert marker.exists()  # a worker did die
    assert report == want
    for rel in ("events.parquet", "splits/session/train.parquet"):
        left = want_paths.sessions_dir / rel if rel == "events.parquet" else None
        left = left or want_paths.splits_dir / rel.removeprefix("splits/")
        pd.testing.assert_frame_equal(pd.read_parquet(out / rel), pd.read_parquet(left))


# --------------------------------------------------------------------------- ingest
def _ingest(raw: Path, root: Path, kind: str, overrides: list[str]) -> Paths:
    from recpipe.stages import ingest

    paths = Paths.at(root)
    params = load_params(None, [f"data.source={kind}", f"data.path={raw}", *overrides])
    ingest(params, paths)
    return paths


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_ingest_writes_the_pandas_engines_files(tmp_path: Path, address: str, kind: str) -> None:
    events = _synthetic()
    if kind == "parquet":
        raw = tmp_path / "raw"
        raw.mkdir()
        half = len(events) // 2  # a folder of two files, in row groups of BATCH rows
        for i, part in enumerate((events.iloc[:half], events.iloc[half:])):
            table = pa.Table.from_pandas(part, preserve_index=False)
            pq.write_table(table, raw / f"part-{i}.parquet", row_group_size=BATCH)
    else:
        raw = tmp_path / "events.csv"
        events.to_csv(raw, index=False)
    want = _ingest(raw, tmp_path / "pandas", kind, [])
    got = _ingest(raw, tmp_path / "dask", kind, _engine("dask", address))
    names = sorted(p.name for p in want.interim_dir.iterdir())
    assert names == sorted(p.name for p in got.interim_dir.iterdir())  # no pieces left
    for name in names:
        assert (want.interim_dir / name).read_bytes() == (got.interim_dir / name).read_bytes(), name


def test_ingest_bad_value_is_a_clear_error_and_keeps_the_previous_import(
    tmp_path: Path, address: str
) -> None:
    from recpipe.errors import DataImportError

    events = _synthetic()
    raw = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pandas(events, preserve_index=False), raw, row_group_size=BATCH)
    paths = _ingest(raw, tmp_path, "parquet", _engine("dask", address))
    before = (paths.interim_dir / "events.parquet").read_bytes()
    bad = events.astype({"value": "string"})  # numbers as text, one not a number
    bad.loc[bad.index[150], "value"] = "lots"
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), raw, row_group_size=BATCH)
    with pytest.raises(DataImportError, match="lots"):
        _ingest(raw, tmp_path, "parquet", _engine("dask", address))
    assert (paths.interim_dir / "events.parquet").read_bytes() == before


# --------------------------------------------------------------------------- real data
@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize(
    ("kind", "folder", "overrides"),
    [
        ("movielens-100k", "ml-100k", []),
        ("diginetica", "diginetica", ["sessions.event_types=[view]"]),  # anonymous sessions
    ],
)
def test_real_data_equals_pandas_and_arrow(
    real_data: Path, tmp_path: Path, address: str, kind: str, folder: str, overrides: list[str]
) -> None:
    from recpipe.data.sources import import_source

    if not (real_data / folder).exists():
        pytest.skip(f"{real_data / folder} not present")
    events = import_source(kind, real_data / folder).events
    report = _compare(events, tmp_path, overrides, address)
    assert any("stats" in v for v in report["splits"].values())
