"""Data preparation with fsspec URLs (issue 25, item 2): the raw input given as a
``file://`` or ``memory://`` URL, and the dask engine's work files under ``prep.work_url``
on a 2-worker local cluster, against the same run on local paths.

The input is the dirty CSV drop of tests/pipeline/test_prep_engines.py (unknown event
types and times no timestamp holds, quarantined). What the stages write must equal the
local-path run's: the interim, validated and quarantine files byte for byte (the
manifests up to the names of the input files, which are the URLs), the reports, and the
sessions and splits up to row order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pytest
from typer.testing import CliRunner

from recpipe.cli import app
from recpipe.config import load_params
from recpipe.data.cluster import serial_map
from recpipe.data.distributed import import_in_pieces
from recpipe.data.partitions import partition_in_pieces
from recpipe.data.schema import events_file
from recpipe.data.synth import generate
from recpipe.errors import ConfigError, DataImportError
from recpipe.paths import Paths
from recpipe.pipeline import run_stage
from recpipe.recovery import tidy_workspace
from recpipe.retraining import run_overrides
from recpipe.sessions.scaled import prepare_sessions_arrow
from recpipe.validation.partitioned import validate_partitioned
from tests.pipeline.conftest import SMALL
from tests.pipeline.test_prep_engines import _cluster, _pin_now, _report, _sorted

STAGES = ("ingest", "validate", "sessions")


def _params(path: str, engine: str, *extra: str) -> object:
    return load_params(
        None,
        [
            *SMALL,
            "data.source=csv",
            f"data.path={path}",
            "validate.on_failure=quarantine",
            "validate.max_bad_fraction=0.02",
            f"prep.engine={engine}",
            "prep.partitions=3",
            "prep.batch_rows=500",
            *extra,
        ],
    )


def _run(root: Path, path: str, engine: str, *extra: str) -> Paths:
    params = _params(path, engine, *extra)
    paths = Paths.at(root)
    for stage in STAGES:
        run_stage(stage, params, paths)
    return paths


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dirty CSV drop, as a local file."""
    events = generate(load_params(None, SMALL).synth).events
    events.loc[events.index[::97], "event_type"] = "teleport"  # ~1%: quarantined
    events["timestamp"] = events["timestamp"].astype(str).astype(object)
    events.loc[events.index[[5, 50]], "timestamp"] = ["1500-01-01 00:00:00+00:00", "2300-06-01"]
    path = tmp_path_factory.mktemp("raw") / "events.csv"
    events.to_csv(path, index=False)
    return path


@pytest.fixture
def memory_csv(raw: Path) -> Iterator[str]:
    """The drop copied into fsspec's memory filesystem; its URL."""
    url = f"memory://recpipe-tests/{uuid.uuid4().hex}/events.csv"
    with fsspec.open(url, "wb") as fh:
        fh.write(raw.read_bytes())
    yield url
    fs = fsspec.filesystem("memory")
    fs.rm(url.removeprefix("memory://").rsplit("/", 1)[0], recursive=True)


@pytest.fixture(scope="module")
def pinned() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        _pin_now(mp)  # the reports name the same "now" (the future-timestamp bound)
        yield


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, raw: Path, pinned: None) -> Paths:
    """The arrow engine on the local path: what every URL run must give."""
    return _run(tmp_path_factory.mktemp("local"), str(raw), "arrow")


def _manifest(path: Path) -> dict:
    manifest = json.loads(path.read_text())
    # the input named as given (path or URL); its content hash must be the same
    manifest["input_files"] = {k.rsplit("/", 1)[-1]: v for k, v in manifest["input_files"].items()}
    return manifest


def _assert_same_outputs(a: Paths, b: Paths, *, input_url: str | None) -> None:
    for folder in ("interim_dir", "validated_dir", "quarantine_dir"):
        left, right = getattr(a, folder), getattr(b, folder)
        names = sorted(p.name for p in left.iterdir())
        assert names == sorted(p.name for p in right.iterdir()), folder
        for name in names:
            if name == "manifest.json":
                assert _manifest(left / name) == _manifest(right / name), folder
            else:
                assert (left / name).read_bytes() == (right / name).read_bytes(), (folder, name)
    if input_url is not None:  # the manifest names the input by its URL
        [named] = json.loads((b.interim_dir / "manifest.json").read_text())["input_files"]
        assert named == input_url
    report = _report(a.validation_json)
    assert report == _report(b.validation_json)
    assert report["counts"]["quarantined"] > 0
    assert json.loads(a.splits_json.read_text()) == json.loads(b.splits_json.read_text())
    compared = 0
    for root_a, root_b in ((a.sessions_dir, b.sessions_dir), (a.splits_dir, b.splits_dir)):
        lefts = sorted(p.relative_to(root_a) for p in root_a.rglob("*.parquet"))
        assert lefts == sorted(p.relative_to(root_b) for p in root_b.rglob("*.parquet"))
        for rel in lefts:
            pd.testing.assert_frame_equal(
                _sorted(pd.read_parquet(root_a / rel)), _sorted(pd.read_parquet(root_b / rel))
            )
            compared += 1
    assert compared >= 10


@pytest.mark.parametrize("engine", ["arrow", "pandas"])
def test_memory_url_input_gives_the_local_runs_outputs(
    tmp_path: Path, local: Paths, memory_csv: str, pinned: None, engine: str
) -> None:
    paths = _run(tmp_path, memory_csv, engine)
    _assert_same_outputs(local, paths, input_url=memory_csv)


def test_file_url_input_gives_the_local_runs_outputs(
    tmp_path: Path, local: Paths, raw: Path, pinned: None
) -> None:
    url = raw.as_uri()
    assert url.startswith("file:///")
    paths = _run(tmp_path, url, "arrow")
    _assert_same_outputs(local, paths, input_url=url)


@pytest.mark.slow  # 13-16 s quiet, 24 s at load 4 (a cluster's start included)
def test_dask_with_file_url_input_and_work_url_on_two_workers(
    tmp_path: Path,
    local: Paths,
    raw: Path,
    parquet_drop: Path,
    pinned: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = tmp_path / "shared-store"  # another folder than the workspace's data/
    caplog.set_level(logging.INFO, logger="recpipe.data.workfs")
    with _cluster() as address:
        if address is None:  # pragma: no cover - dask is a dev dependency
            pytest.skip("dask.distributed is not installed")
        paths = _run(
            tmp_path / "ws",
            raw.as_uri(),
            "dask",
            f"orchestration.dask_address={address}",
            f"prep.work_url={store.as_uri()}",
        )
        # a parquet folder by URL: the workers read its row groups through fsspec
        parquet = _ingest(
            tmp_path / "parquet",
            "parquet",
            (parquet_drop / "events").as_uri(),
            "dask",
            f"orchestration.dask_address={address}",
            f"prep.work_url={store.as_uri()}",
        )
    _assert_same_outputs(local, paths, input_url=raw.as_uri())
    _assert_same_interim(
        _ingest(tmp_path / "parquet-local", "parquet", str(parquet_drop / "events"), "arrow"),
        parquet,
    )
    # the work folders were made in this host's folder of the store, and removed after
    [host] = store.iterdir()
    assert host.name == socket.gethostname()
    assert list(host.iterdir()) == []
    assert not [p for p in paths.data_dir.iterdir() if p.name.startswith(".")]
    # validate and sessions gave the workers copies of their inputs in the store
    copied = [r.getMessage() for r in caplog.records if r.getMessage().startswith("copied")]
    assert len(copied) == 2, copied
    for message, name in zip(copied, ("interim", "validated"), strict=True):
        assert f"{paths.data_dir / name}/events.parquet to {host}/" in message, message


@pytest.fixture(scope="module")
def parquet_drop(tmp_path_factory: pytest.TempPathFactory, raw: Path) -> Path:
    """The drop as a folder of two Parquet parts, with an items table (CSV) beside it."""
    events = pd.read_csv(raw, dtype=str)
    root = tmp_path_factory.mktemp("parquet-drop")
    (root / "events").mkdir()
    half = len(events) // 2
    for i, part in enumerate((events.iloc[:half], events.iloc[half:])):
        part.to_parquet(root / "events" / f"part-{i}.parquet", index=False)
    items = pd.DataFrame({"item_id": sorted(events["item_id"].dropna().unique())})
    items["title"] = "item " + items["item_id"]
    items["categories"] = "A|B"
    items.to_csv(root / "items.csv", index=False)
    return root


def _ingest(root: Path, source: str, path: str, engine: str, *extra: str) -> Path:
    params = load_params(
        None,
        [
            *SMALL,
            f"data.source={source}",
            f"data.path={path}",
            f"prep.engine={engine}",
            "prep.batch_rows=700",
            *extra,
        ],
    )
    paths = Paths.at(root)
    run_stage("ingest", params, paths)
    return paths.interim_dir


def _assert_same_interim(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        if name == "manifest.json":
            assert _manifest(a / name) == _manifest(b / name)
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_parquet_dataset_and_items_by_memory_url_import_as_the_local_files(
    tmp_path: Path, parquet_drop: Path
) -> None:
    url = f"memory://recpipe-tests/{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    for file in sorted(parquet_drop.rglob("*.*")):
        rel = file.relative_to(parquet_drop).as_posix()
        with fsspec.open(f"{url}/{rel}", "wb") as fh:
            fh.write(file.read_bytes())
    try:
        local = _ingest(
            tmp_path / "local",
            "parquet",
            str(parquet_drop / "events"),
            "arrow",
            f"data.items_path={parquet_drop / 'items.csv'}",
        )
        by_url = _ingest(
            tmp_path / "url",
            "parquet",
            f"{url}/events",
            "arrow",
            f"data.items_path={url}/items.csv",
        )
        pandas = _ingest(
            tmp_path / "pandas",
            "parquet",
            f"{url}/events",
            "pandas",
            f"data.items_path={url}/items.csv",
        )
    finally:
        fs.rm(url.removeprefix("memory://"), recursive=True)
    _assert_same_interim(local, by_url)
    _assert_same_interim(local, pandas)
    assert len(pd.read_parquet(by_url / "items.parquet")) > 0
    named = json.loads((by_url / "manifest.json").read_text())["input_files"]
    assert sorted(named) == [
        f"{url}/events/part-0.parquet",
        f"{url}/events/part-1.parquet",
        f"{url}/items.csv",
    ]


def test_a_bad_line_in_a_url_input_is_named_by_the_url_and_line(tmp_path: Path, raw: Path) -> None:
    url = f"memory://recpipe-tests/{uuid.uuid4().hex}/events.csv"
    text = raw.read_text()
    with fsspec.open(url, "wt") as fh:
        fh.write(text + "u1,i1\n")  # a truncated last line
    lines = len(text.splitlines()) + 1
    try:
        for engine in ("arrow", "pandas"):
            with pytest.raises(DataImportError) as info:
                _ingest(tmp_path / engine, "csv", url, engine)
            message = str(info.value)
            assert repr(url) in message and f"line {lines} has 2 field(s)" in message, message
            assert "truncated" in message
    finally:
        fsspec.filesystem("memory").rm(url.removeprefix("memory://"))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("nosuch://bucket/events.csv", "unknown protocol 'nosuch'"),
        ("memory://", "has no path after 'memory://'"),
        ("file://relative/events.csv", "needs an absolute path"),
        ("://events.csv", "has no protocol"),
    ],
)
def test_a_bad_input_url_is_a_clear_error(tmp_path: Path, path: str, expected: str) -> None:
    params = _params(path, "arrow")
    with pytest.raises(ConfigError) as info:
        run_stage("ingest", params, Paths.at(tmp_path))
    message = str(info.value)
    assert expected in message
    assert repr(path) in message  # names the value
    assert "file:///abs/path" in message  # and the form expected
    assert not Paths.at(tmp_path).interim_dir.exists()


def test_a_missing_url_input_is_a_clear_error(tmp_path: Path) -> None:
    url = f"memory://recpipe-tests/{uuid.uuid4().hex}/events.csv"
    with pytest.raises(DataImportError, match="does not exist") as info:
        run_stage("ingest", _params(url, "arrow"), Paths.at(tmp_path))
    assert repr(url) in str(info.value)


def test_a_url_for_a_local_only_source_kind_is_refused(tmp_path: Path) -> None:
    params = load_params(None, ["data.source=movielens-100k", "data.path=s3://bucket/ml-100k"])
    with pytest.raises(ConfigError, match=r"reads local files only") as info:
        run_stage("ingest", params, Paths.at(tmp_path))
    assert "'s3://bucket/ml-100k'" in str(info.value)


def test_dask_refuses_a_memory_url_its_workers_cannot_read(tmp_path: Path, memory_csv: str) -> None:
    # refused before a cluster is started or contacted
    params = _params(memory_csv, "dask", "orchestration.dask_address=tcp://127.0.0.1:9")
    with pytest.raises(ConfigError, match="worker") as info:
        run_stage("ingest", params, Paths.at(tmp_path))
    assert repr(memory_csv) in str(info.value)


@pytest.mark.parametrize(
    ("work_url", "expected"),
    [
        ("memory://scratch", "a memory:// store cannot hold it"),
        ("file://scratch", "needs an absolute path"),
    ],
)
def test_a_bad_work_url_is_a_clear_error(
    tmp_path: Path, raw: Path, work_url: str, expected: str
) -> None:
    params = _params(str(raw), "arrow", f"prep.work_url={work_url}")
    paths = Paths.at(tmp_path)
    run_stage("ingest", params, paths)  # the arrow engine's ingest has no work files
    with pytest.raises(ConfigError) as info:
        run_stage("validate", params, paths)
    message = str(info.value)
    assert expected in message
    assert f"prep.work_url {work_url!r}" in message
    assert "file:///abs/path" in message


def test_a_data_drop_may_be_a_url(memory_csv: str) -> None:
    params = load_params(None, SMALL)
    applied = load_params(None, [*SMALL, *run_overrides(params, memory_csv, "csv")])
    assert (applied.data.source, applied.data.path) == ("csv", memory_csv)  # kept as given
    missing = memory_csv.replace("events.csv", "missing.csv")
    with pytest.raises(ConfigError, match="does not exist") as info:
        run_overrides(params, missing, "csv")
    assert repr(missing) in str(info.value)
    with pytest.raises(ConfigError, match="unknown protocol 'nosuch'"):
        run_overrides(params, "nosuch://drop.csv", "csv")


def test_a_killed_runs_work_folders_in_the_store_are_tidied(tmp_path: Path) -> None:
    store = tmp_path / "store"
    params = load_params(None, [f"prep.work_url={store.as_uri()}"])
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = int(done.stdout)  # a process that has ended
    host = store / socket.gethostname()
    left = host / f".sessions-scratch.new-{dead}"
    live = host / f".validate-partitions.new-{os.getpid()}"
    other = store / "another-host" / f".sessions-scratch.new-{dead}"  # not this machine's
    for folder in (left, live, other):
        (folder / "buckets").mkdir(parents=True)
    tidied = tidy_workspace(Paths.at(tmp_path / "ws"), params)
    assert tidied["staging"] == [str(left)]
    assert not left.exists() and live.exists() and other.exists()


def test_recpipe_data_import_reads_a_url(tmp_path: Path, memory_csv: str) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["data", "import", "csv", memory_csv, "--out", str(out)])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["input_files"]) == [memory_csv]
    assert manifest["rows"]["events"] == len(pd.read_parquet(out / "events.parquet")) > 0


def _paths_in(value: object) -> Iterator[str]:
    """Every path (Path, or str naming one) in a task's arguments, however nested."""
    if isinstance(value, Path):
        yield str(value)
    elif isinstance(value, str):
        if value.startswith("/") or "://" in value:
            yield value
    elif isinstance(value, list | tuple | set):
        for item in value:
            yield from _paths_in(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _paths_in(getattr(value, f.name))


def test_with_a_work_folder_the_tasks_touch_nothing_in_the_workspace(
    tmp_path: Path, raw: Path
) -> None:
    """What workers on other machines need: every path a task of ingest, validate or
    sessions is given lies in the work folder (or is the input), none in the workspace."""
    ws, store = Paths.at(tmp_path / "ws"), tmp_path / "store"
    params = _params(str(raw), "arrow")
    for stage in ("ingest", "validate"):
        run_stage(stage, params, ws)
    seen: list[str] = []

    def mapper(fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> list[Any]:
        seen.extend(p for a in args for p in _paths_in(a))
        return serial_map(fn, args)

    import_in_pieces(
        "csv", str(raw), params.data, tmp_path / "ws" / "data" / "interim2",
        batch_rows=500, mapper=mapper, work_dir=store / "ingest",
    )  # fmt: skip
    outcome = validate_partitioned(
        ws.interim_dir, params.validate_, store / "validate", partitions=3, batch_rows=500,
        mapper=mapper, copy_input=True,
    )  # fmt: skip
    sp = params.sessions.model_copy(update={"min_item_support": 1, "test_items_seen_in": "train"})
    report = prepare_sessions_arrow(
        events_file(ws.validated_dir), ws.sessions_dir / "events.parquet", ws.splits_dir,
        store / "sessions", sp, 3, 500, mapper=mapper,
        partitioner=partial(partition_in_pieces, mapper=mapper), copy_source=True,
    )  # fmt: skip
    assert outcome.report["counts"]["quarantined"] > 0 and report["events"] > 0
    assert seen and all(p.startswith((str(store), str(raw))) for p in seen), [
        p for p in seen if not p.startswith((str(store), str(raw)))
    ]
    assert any(p.startswith(str(store / "sessions")) for p in seen)


# ------------------------------------------------------------------ an object store ---
@pytest.fixture(scope="module")
def s3_bucket() -> Iterator[str]:
    """A bucket on a loopback S3 server (moto), its endpoint and credentials in the
    environment (which the dask workers started after inherit); the bucket's URL."""
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's request log
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in (
            ("AWS_ENDPOINT_URL", f"http://{host}:{port}"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ):
            mp.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()  # none made for another endpoint
        fsspec.filesystem("s3").mkdir("recpipe-work")
        try:
            yield "s3://recpipe-work"
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            server.stop()


def _keys(url: str) -> list[str]:
    fs = fsspec.filesystem("s3", use_listings_cache=False)
    return sorted(fs.find(url.removeprefix("s3://")))


@pytest.mark.slow  # 25-30 s at load 2 (a cluster's start, every file through the server)
def test_dask_with_the_work_folders_on_an_object_store(
    tmp_path: Path,
    local: Paths,
    raw: Path,
    s3_bucket: str,
    pinned: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    work_url = f"{s3_bucket}/runs"
    caplog.set_level(logging.INFO, logger="recpipe.data.workfs")
    with _cluster() as address:  # started with the store's environment
        if address is None:  # pragma: no cover - dask is a dev dependency
            pytest.skip("dask.distributed is not installed")
        paths = _run(
            tmp_path / "ws",
            str(raw),
            "dask",
            f"orchestration.dask_address={address}",
            f"prep.work_url={work_url}",
        )
    _assert_same_outputs(local, paths, input_url=None)
    # the workers read copies of the inputs in this host's folder of the store ...
    host = f"{work_url}/{socket.gethostname()}"
    copied = [r.getMessage() for r in caplog.records if r.getMessage().startswith("copied")]
    assert len(copied) == 2, copied
    for message, name in zip(copied, ("interim", "validated"), strict=True):
        assert f"{paths.data_dir / name}/events.parquet to {host}/." in message, message
    # ... and every work file was removed after: nothing is left in the bucket
    assert _keys(s3_bucket) == []
    assert not [p for p in paths.data_dir.iterdir() if p.name.startswith(".")]


def test_the_arrow_engine_with_the_work_folders_on_an_object_store(
    tmp_path: Path, local: Paths, raw: Path, s3_bucket: str, pinned: None
) -> None:
    paths = _run(tmp_path, str(raw), "arrow", f"prep.work_url={s3_bucket}/arrow")
    _assert_same_outputs(local, paths, input_url=None)
    assert _keys(s3_bucket) == []


def test_a_killed_runs_work_folders_on_an_object_store_are_tidied(
    tmp_path: Path, s3_bucket: str
) -> None:
    work_url = f"{s3_bucket}/tidy"
    params = load_params(None, [f"prep.work_url={work_url}"])
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = int(done.stdout)  # a process that has ended
    host = f"{work_url}/{socket.gethostname()}"
    left = f"{host}/.sessions-scratch.new-{dead}"
    live = f"{host}/.validate-partitions.new-{os.getpid()}"
    other = f"{work_url}/another-host/.sessions-scratch.new-{dead}"  # not this machine's
    for folder in (left, live, other):
        with fsspec.open(f"{folder}/buckets/bucket-00000/piece-000000.parquet", "wb") as fh:
            fh.write(b"x")
    tidied = tidy_workspace(Paths.at(tmp_path / "ws"), params)
    assert tidied["staging"] == [left]
    keys = _keys(work_url)
    assert not [k for k in keys if k.startswith(left.removeprefix("s3://"))]
    assert [k for k in keys if k.startswith(live.removeprefix("s3://"))]
    assert [k for k in keys if k.startswith(other.removeprefix("s3://"))]
    fsspec.filesystem("s3").rm(work_url.removeprefix("s3://"), recursive=True)


def test_a_store_out_of_reach_is_a_clear_error(
    tmp_path: Path, raw: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs

    paths = Paths.at(tmp_path)
    run_stage("ingest", _params(str(raw), "arrow"), paths)  # no work folder
    missing = "s3://no-such-bucket/work"
    with pytest.raises(ConfigError) as info:
        run_stage("validate", _params(str(raw), "dask", f"prep.work_url={missing}"), paths)
    message = str(info.value)
    assert f"prep.work_url {missing!r}: cannot write to the store" in message, message
    assert "bucket does not exist" in message and "an existing bucket" in message
    # no server at the endpoint (one try, not botocore's retries)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    work_url = f"{s3_bucket}/work"
    try:
        with pytest.raises(ConfigError) as info:
            run_stage("sessions", _params(str(raw), "dask", f"prep.work_url={work_url}"), paths)
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    message = str(info.value)
    assert f"prep.work_url {work_url!r}: cannot write to the store" in message, message
    assert "http://127.0.0.1:9" in message  # the endpoint it could not reach
    assert not paths.validated_dir.exists()  # validate failed before writing anything
