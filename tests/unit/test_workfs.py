"""recpipe.data.workfs: the work folders' file operations, on a local path and on a store
(fsspec's ``memory://`` filesystem here; ``s3://`` in tests/pipeline/test_prep_urls.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recpipe.data import workfs
from recpipe.errors import ConfigError


@pytest.fixture(params=["path", "url"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[workfs.WorkPath]:
    """An empty work folder: a local path, or a folder of fsspec's memory filesystem."""
    if request.param == "path":
        yield tmp_path / "work"
        return
    url = f"memory://recpipe-tests/{uuid.uuid4().hex}/work"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url.removeprefix("memory://")):
        fs.rm(url.removeprefix("memory://"), recursive=True)


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)  # a process that has ended


def test_work_path_keeps_a_store_url_and_makes_paths_of_the_rest(tmp_path: Path) -> None:
    assert workfs.work_path(str(tmp_path)) == tmp_path
    assert workfs.work_path(tmp_path.as_uri()) == tmp_path  # file:// is a local folder
    assert workfs.work_path("s3://bucket/prefix") == "s3://bucket/prefix"
    assert workfs.join("s3://bucket/prefix/", "a", "b.npy") == "s3://bucket/prefix/a/b.npy"
    assert workfs.join(tmp_path, "a", "b.npy") == tmp_path / "a" / "b.npy"
    assert workfs.name_of("s3://bucket/prefix/a.npy") == "a.npy"
    assert workfs.with_suffix_name("s3://b/file-00001", "-000002.arrow") == (
        "s3://b/file-00001-000002.arrow"
    )
    assert workfs.with_suffix_name(tmp_path / "file-00001", "-000002.arrow") == (
        tmp_path / "file-00001-000002.arrow"
    )


def test_files_round_trip_alike_on_a_path_and_a_store(root: workfs.WorkPath) -> None:
    folder = workfs.join(root, "sub")
    workfs.make_dir(folder)
    array = np.arange(7, dtype=np.int32)
    workfs.save_npy(workfs.join(folder, "a.npy"), array)
    np.testing.assert_array_equal(workfs.load_npy(workfs.join(folder, "a.npy")), array)
    workfs.save_npz(workfs.join(folder, "b.npz"), ts=array.astype(np.int64), item=array[::-1])
    arrays = workfs.load_npz(workfs.join(folder, "b.npz"))
    assert sorted(arrays) == ["item", "ts"] and arrays["item"].tolist() == [6, 5, 4, 3, 2, 1, 0]
    table = pa.table({"user_id": ["u1", "u2", None], "n": [1, 2, 3]})
    workfs.write_ipc(workfs.join(folder, "p.arrow"), table)
    assert workfs.read_ipc(workfs.join(folder, "p.arrow")).equals(table)
    parts = workfs.join(folder, "parts")
    workfs.make_dir(parts)
    workfs.write_table(workfs.join(parts, "piece-000000.parquet"), table.slice(0, 2))
    with workfs.parquet_writer(workfs.join(parts, "piece-000001.parquet"), table.schema) as w:
        w.write_table(table.slice(2))
    assert workfs.read_table(parts).equals(table)  # a folder of pieces, in name order
    assert workfs.is_dir(parts) and workfs.exists(workfs.join(parts, "piece-000001.parquet"))
    files = workfs.dataset_files(parts)
    assert [workfs.name_of(f) for f in files] == ["piece-000000.parquet", "piece-000001.parquet"]
    assert all(type(f) is type(root) for f in files)  # a path stays a path, a URL a URL
    frame = pd.DataFrame({"session_id": ["s1", "s2"], "ts": [3, 4]})
    workfs.write_pandas(workfs.join(folder, "f.parquet"), frame)
    pd.testing.assert_frame_equal(workfs.read_pandas(workfs.join(folder, "f.parquet")), frame)
    pd.testing.assert_frame_equal(workfs.read_pandas(parts), table.to_pandas())  # a folder
    piece = workfs.join(parts, "piece-000001.parquet")
    assert workfs.read_table(piece).equals(table.slice(2))  # a file (a store's: one request)
    assert workfs.parquet_file(piece).metadata.num_rows == 1
    workfs.consumed(piece)  # removed from a disk at once; a store's, with its folder
    assert workfs.exists(piece) is not isinstance(root, Path)
    workfs.remove(workfs.join(folder, "a.npy"))
    assert not workfs.exists(workfs.join(folder, "a.npy"))
    workfs.remove(workfs.join(folder, "a.npy"))  # nothing there: nothing to do
    workfs.remove(folder)
    assert not workfs.exists(folder) and not workfs.exists(workfs.join(parts, "p.arrow"))


def test_copy_into_and_move_out(root: workfs.WorkPath, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "parts").mkdir(parents=True)
    (src / "parts" / "p-0.parquet").write_bytes(b"0")
    (src / "parts" / "p-1.parquet").write_bytes(b"1")
    (src / "one.parquet").write_bytes(b"one")
    copy = workfs.copy_into(src / "one.parquet", workfs.join(root, "input"))
    assert copy == workfs.join(root, "input", "one.parquet")
    folder = workfs.copy_into(src / "parts", workfs.join(root, "input"))
    assert folder == workfs.join(root, "input", "parts")
    out = tmp_path / "out"
    out.mkdir()
    workfs.move_out(workfs.join(folder, "p-1.parquet"), out / "moved.parquet")
    assert (out / "moved.parquet").read_bytes() == b"1"
    assert not workfs.exists(workfs.join(folder, "p-1.parquet"))
    assert workfs.exists(workfs.join(folder, "p-0.parquet"))
    workfs.move_out(copy, out / "one.parquet")
    assert (out / "one.parquet").read_bytes() == b"one"


def test_scratch_is_removed_after_the_block_and_a_dead_runs_folder_by_the_sweep(
    root: workfs.WorkPath,
) -> None:
    with workfs.scratch(root, "sessions-scratch") as folder:
        assert workfs.name_of(folder) == f".sessions-scratch.new-{os.getpid()}"
        workfs.save_npy(workfs.join(folder, "x.npy"), np.zeros(3))
        assert workfs.sweep_root(root) == []  # this process's: kept
        assert workfs.exists(workfs.join(folder, "x.npy"))
    assert not workfs.exists(folder)
    dead = workfs.join(root, f".validate-partitions.new-{_dead_pid()}")
    other = workfs.join(root, "keep-me")  # not a staging name
    for f in (dead, other):
        workfs.make_dir(f)
        workfs.save_npy(workfs.join(f, "x.npy"), np.zeros(3))
    assert workfs.sweep_root(root) == [dead]
    assert not workfs.exists(dead) and workfs.exists(workfs.join(other, "x.npy"))
    assert workfs.sweep_root(workfs.join(root, "no-such-folder")) == []


def test_the_work_root_is_this_hosts_folder(tmp_path: Path) -> None:
    host = socket.gethostname()
    assert workfs.work_root(None, tmp_path / "data") == tmp_path / "data"
    assert workfs.work_root(str(tmp_path / "w"), tmp_path) == tmp_path / "w" / host
    assert workfs.work_root((tmp_path / "w").as_uri(), tmp_path) == tmp_path / "w" / host
    with pytest.raises(ConfigError, match=r"prep.work_url 'memory://w': a memory:// store") as e:
        workfs.work_root("memory://w", tmp_path)
    assert "s3://bucket/prefix" in str(e.value)  # the forms expected
    with pytest.raises(ConfigError, match=r"prep.work_url 'nosuch://w': unknown protocol"):
        workfs.work_root("nosuch://w", tmp_path)
