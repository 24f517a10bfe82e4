"""File operations in the dask engine's work folders, on a local path or an object store.

A work folder (``prep.work_url``, :func:`work_root`) is a :data:`WorkPath`: a local
:class:`~pathlib.Path` (a folder under ``data/``, a mounted path or a ``file://`` URL),
or the URL string of a folder in a store of another fsspec protocol (``s3://bucket/prefix``,
``gs://...``) that workers on other machines reach. Every function here takes either:
a path keeps the local code path unchanged (:mod:`pathlib`, :mod:`shutil`, memory-mapped
Arrow and NumPy files), a URL goes through fsspec (``url_to_fs``; pyarrow and pandas
given the fsspec filesystem). Object stores have no folders and no rename: a folder is
a key prefix (:func:`make_dir` makes nothing there), and moving a file out of the store
is a download and a delete (:func:`move_out`).

The store's filesystem is opened without a listings cache: the files of a work folder
are written by other processes (the workers), so a cached listing would be stale.

Credentials and endpoints come from the protocol's standard environment (for ``s3://``:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``,
``AWS_DEFAULT_REGION``, or ``~/.aws``), never from params.yaml (which DVC and MLflow
record). The worker processes of a local cluster inherit this process's environment;
workers on other machines need their own.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import posixpath
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from recpipe.data.storage import check_url, is_url, local_folder
from recpipe.errors import ConfigError
from recpipe.workspace import pid_alive, staging_path, staging_pid, sweep_stale

log = logging.getLogger(__name__)

__all__ = [
    "WorkPath",
    "consumed",
    "copy_into",
    "dataset",
    "dataset_files",
    "exists",
    "fetch",
    "is_dir",
    "join",
    "load_npy",
    "load_npz",
    "make_dir",
    "move_out",
    "name_of",
    "parquet_file",
    "parquet_writer",
    "put",
    "read_ipc",
    "read_pandas",
    "read_table",
    "remove",
    "save_npy",
    "save_npz",
    "scratch",
    "staging",
    "sweep_root",
    "with_suffix_name",
    "work_path",
    "work_root",
    "write_ipc",
    "write_pandas",
    "write_table",
]

#: A local folder or file, or the URL of one in a store (``s3://bucket/key``).
WorkPath = Path | str

#: Protocols of this machine's own files: a ``file://`` work folder is a local path.
_LOCAL = ("file", "local")

#: Object stores: no folders (a key's prefix exists when a key is under it), so
#: :func:`make_dir` makes nothing (s3fs would list the bucket each time to check it).
_FLAT = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss"})


def work_path(value: str | Path) -> WorkPath:
    """``value`` as a :data:`WorkPath`: a URL of a store kept as a string, anything else
    (a path, a ``file://`` URL) a local :class:`~pathlib.Path`."""
    if is_url(value) and str(value).partition("://")[0] not in _LOCAL:
        return str(value)
    return local_folder(value) if is_url(value) else Path(value)


def _fs(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` (no listings cache) and the path within it."""
    from fsspec.core import url_to_fs

    return url_to_fs(url, use_listings_cache=False)


def join(loc: WorkPath, *names: str) -> WorkPath:
    """``loc / name / ...``."""
    if isinstance(loc, Path):
        return loc.joinpath(*names)
    return posixpath.join(loc.rstrip("/"), *names)


def name_of(loc: WorkPath) -> str:
    """The last component of ``loc``."""
    return loc.name if isinstance(loc, Path) else posixpath.basename(loc.rstrip("/"))


def with_suffix_name(loc: WorkPath, suffix: str) -> WorkPath:
    """``loc`` with ``suffix`` appended to its name (``piece`` -> ``piece-000001.arrow``)."""
    return loc.with_name(loc.name + suffix) if isinstance(loc, Path) else loc + suffix


def exists(loc: WorkPath) -> bool:
    """Whether a file or folder (on a store: a key, or a prefix with keys) is at ``loc``."""
    if isinstance(loc, Path):
        return loc.exists()
    fs, path = _fs(loc)
    return bool(fs.exists(path))


def is_dir(loc: WorkPath) -> bool:
    """Whether ``loc`` is a folder (on a store: a prefix with keys under it)."""
    if isinstance(loc, Path):
        return loc.is_dir()
    fs, path = _fs(loc)
    return bool(fs.isdir(path))


def make_dir(loc: WorkPath) -> None:
    """Make the folder ``loc`` and its parents if missing (on an object store: nothing)."""
    if isinstance(loc, Path):
        loc.mkdir(parents=True, exist_ok=True)
        return
    if loc.partition("://")[0] in _FLAT:
        return
    fs, path = _fs(loc)
    fs.makedirs(path, exist_ok=True)


def remove(loc: WorkPath) -> None:
    """Remove the file or folder (with all in it) at ``loc``; nothing when there is none."""
    if isinstance(loc, Path):
        if loc.is_dir() and not loc.is_symlink():
            shutil.rmtree(loc, ignore_errors=True)
        else:
            loc.unlink(missing_ok=True)
        return
    fs, path = _fs(loc)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)


def consumed(loc: WorkPath) -> None:
    """The file or folder ``loc`` has been read for the last time: removed at once on a
    disk (its space goes to the next files); in a store, left to the removal of the
    whole work folder (one listing and bulk deletes rather than requests per file)."""
    if isinstance(loc, Path):
        remove(loc)


def move_out(loc: WorkPath, to: Path) -> None:
    """Move the file ``loc`` to the local path ``to``: a rename on one filesystem, else a
    copy and a delete (a store's file: a download, then the key removed)."""
    if isinstance(loc, Path):
        shutil.move(loc, to)
        return
    fs, path = _fs(loc)
    fs.get_file(path, str(to))
    fs.rm_file(path)


def fetch(loc: WorkPath, to: Path) -> None:
    """Copy the file ``loc`` to the local path ``to`` (a store's file: a download)."""
    if isinstance(loc, Path):
        shutil.copyfile(loc, to)
        return
    fs, path = _fs(loc)
    fs.get_file(path, str(to))


def put(source: Path, loc: WorkPath) -> None:
    """Copy the local file ``source`` to ``loc`` (in a store: an upload)."""
    if isinstance(loc, Path):
        shutil.copyfile(source, loc)
        return
    fs, path = _fs(loc)
    fs.put_file(str(source), path)


def copy_into(source: Path, folder: WorkPath) -> WorkPath:
    """Copy the local file or folder ``source`` into ``folder``; the copy.

    How the dask engine gives its workers the one events file they read when the work
    folders live in a shared store (``prep.work_url``): workers on other machines then
    need no access to the workspace."""
    started = time.perf_counter()
    copy = join(folder, source.name)
    if isinstance(folder, Path):
        folder.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, copy)
        else:
            shutil.copy2(source, copy)
    else:
        fs, path = _fs(str(copy))
        if source.is_dir():
            for file in sorted(p for p in source.rglob("*") if p.is_file()):
                fs.put_file(str(file), posixpath.join(path, *file.relative_to(source).parts))
        else:
            fs.put_file(str(source), path)
    log.info("copied %s to %s in %.1f s", source, copy, time.perf_counter() - started)
    return copy


# ------------------------------------------------------------------------ arrays ---
def save_npy(loc: WorkPath, array: np.ndarray) -> None:
    """``np.save`` to ``loc``."""
    if isinstance(loc, Path):
        np.save(loc, array)
        return
    fs, path = _fs(loc)
    with fs.open(path, "wb") as fh:
        np.save(fh, array)


def load_npy(loc: WorkPath) -> np.ndarray:
    """``np.load`` of the ``.npy`` file at ``loc``."""
    if isinstance(loc, Path):
        return np.load(loc)
    fs, path = _fs(loc)
    return np.load(io.BytesIO(fs.cat_file(path)))


def save_npz(loc: WorkPath, **arrays: np.ndarray) -> None:
    """``np.savez`` of ``arrays`` to ``loc``."""
    if isinstance(loc, Path):
        np.savez(loc, **arrays)
        return
    fs, path = _fs(loc)
    with fs.open(path, "wb") as fh:
        np.savez(fh, **arrays)


def load_npz(loc: WorkPath) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` file at ``loc``, by name."""
    source: Any = loc
    if not isinstance(loc, Path):
        fs, path = _fs(loc)
        source = io.BytesIO(fs.cat_file(path))
    with np.load(source) as z:
        return {name: z[name] for name in z.files}


# ------------------------------------------------------------------------- Arrow ---
def _arrow(loc: WorkPath) -> tuple[str, Any]:
    """``(path, filesystem)`` for pyarrow: ``(str(path), None)`` for a local path."""
    if isinstance(loc, Path):
        return str(loc), None
    fs, path = _fs(loc)
    return path, fs


def write_ipc(loc: WorkPath, table: pa.Table) -> None:
    """Write ``table`` as an Arrow IPC file at ``loc``."""
    if isinstance(loc, Path):
        with pa.ipc.new_file(loc, table.schema) as writer:
            writer.write_table(table)
        return
    fs, path = _fs(loc)
    with fs.open(path, "wb") as fh, pa.ipc.new_file(fh, table.schema) as writer:
        writer.write_table(table)


def read_ipc(loc: WorkPath) -> pa.Table:
    """The table of the Arrow IPC file at ``loc`` (a local one memory-mapped)."""
    if isinstance(loc, Path):
        with pa.memory_map(str(loc)) as source:
            return pa.ipc.open_file(source).read_all()
    fs, path = _fs(loc)
    return pa.ipc.open_file(pa.BufferReader(fs.cat_file(path))).read_all()


def write_table(loc: WorkPath, table: pa.Table) -> None:
    """``pq.write_table(table, loc)``."""
    path, fs = _arrow(loc)
    pq.write_table(table, path, filesystem=fs)


def parquet_file(loc: WorkPath) -> pq.ParquetFile:
    """``pq.ParquetFile`` of the file at ``loc``."""
    path, fs = _arrow(loc)
    return pq.ParquetFile(path, filesystem=fs) if fs is not None else pq.ParquetFile(loc)


def parquet_writer(loc: WorkPath, schema: pa.Schema) -> pq.ParquetWriter:
    """A ``pq.ParquetWriter`` of ``schema`` at ``loc``."""
    path, fs = _arrow(loc)
    return pq.ParquetWriter(path, schema, filesystem=fs)


def _whole_file(loc: str) -> Any:
    """A store's Parquet file (a name ending ``.parquet``) read in one request, as a
    file object; None for a folder of pieces (read through the filesystem). pyarrow
    reading through fsspec asks for the footer and each column chunk apart."""
    if not loc.endswith(".parquet"):
        return None
    fs, path = _fs(loc)
    return pa.BufferReader(fs.cat_file(path))


def read_table(loc: WorkPath, **kwargs: Any) -> pa.Table:
    """``pq.read_table`` of the Parquet file or folder (of pieces) at ``loc``."""
    if not isinstance(loc, Path) and (whole := _whole_file(loc)) is not None:
        return pq.read_table(whole, **kwargs)
    path, fs = _arrow(loc)
    return pq.read_table(path, filesystem=fs, **kwargs)


def read_pandas(loc: WorkPath) -> pd.DataFrame:
    """``pd.read_parquet`` of the Parquet file or folder (of pieces) at ``loc``."""
    if isinstance(loc, Path):
        return pd.read_parquet(loc)
    if (whole := _whole_file(loc)) is not None:
        return pd.read_parquet(whole)
    fs, path = _fs(loc)
    return pd.read_parquet(path, filesystem=fs)


def write_pandas(loc: WorkPath, frame: pd.DataFrame) -> None:
    """``frame.to_parquet(loc, index=False)``."""
    if isinstance(loc, Path):
        frame.to_parquet(loc, index=False)
        return
    fs, path = _fs(loc)
    frame.to_parquet(path, index=False, filesystem=fs)


def dataset(loc: WorkPath) -> ds.Dataset:
    """The Parquet dataset (a file or a folder of parts) at ``loc``."""
    path, fs = _arrow(loc)
    return ds.dataset(path, format="parquet", filesystem=fs)


def dataset_files(loc: WorkPath) -> list[WorkPath]:
    """The files of the Parquet dataset at ``loc``, as :data:`WorkPath` s, in order."""
    files = dataset(loc).files
    if isinstance(loc, Path):
        return [Path(f) for f in files]
    fs, _ = _fs(loc)
    return [str(fs.unstrip_protocol(f)) for f in files]


# ------------------------------------------------------------- folders of a run ---
def work_root(work_url: str | None, default: Path) -> WorkPath:
    """The folder of this machine's per-partition work folders (``prep.work_url``):
    ``default`` (the workspace's ``data/``) when ``work_url`` is None, else ``work_url``
    / this host's name: a local path (a path, a ``file://`` URL) or the URL of a folder
    in a store (``s3://bucket/prefix``), which is checked with a write and a delete.

    Several machines may share ``work_url``; the host's subfolder keeps each one's work
    folders (named by process id, as the workspace's staging folders) apart, so that
    tidying after a kill (:func:`sweep_root`) only judges this machine's processes.

    Raises
    ------
    ConfigError
        A malformed URL, a ``memory://`` one (the worker processes cannot see this
        process's memory), or a store that cannot be reached or written (no such
        bucket, no credentials, no permission, no server): named with the cause.
    """
    if work_url is None:
        return default
    host = socket.gethostname()
    root = work_path(check_url(work_url, "prep.work_url") if is_url(work_url) else work_url)
    if isinstance(root, Path):
        return root / host
    protocol = root.partition("://")[0]
    if protocol == "memory":
        raise ConfigError(
            f"prep.work_url {work_url!r}: a memory:// store cannot hold it (the worker "
            "processes do not see this process's memory); expected a folder every worker "
            "reaches: /abs/path or file:///abs/path (e.g. an NFS mount), or an object "
            "store such as s3://bucket/prefix"
        )
    folder = join(root, host)
    assert isinstance(folder, str)
    _probe(folder, work_url)
    return folder


def _probe(folder: str, work_url: str) -> None:
    """Write and delete a small file in ``folder``: a clear error now rather than one
    from a worker's first write."""
    probe = join(folder, f".recpipe-probe-{os.getpid()}")
    assert isinstance(probe, str)
    try:
        fs, path = _fs(probe)
        fs.pipe_file(path, b"recpipe")
        fs.rm_file(path)
    except Exception as exc:  # each fsspec backend raises its own errors (botocore, ...)
        raise ConfigError(
            f"prep.work_url {work_url!r}: cannot write to the store ({type(exc).__name__}: "
            f"{exc}); expected a folder the workers can write: an existing bucket, "
            "credentials and endpoint in the environment (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ... for s3://)"
        ) from exc


def staging(root: WorkPath, name: str) -> WorkPath:
    """``<root>/.<name>.new-<pid>``: this process's work folder ``name`` in ``root``
    (:func:`~recpipe.workspace.staging_path`), removed by :func:`sweep_root` once the
    process is gone."""
    if isinstance(root, Path):
        return staging_path(root / name)
    return join(root, f".{name}.new-{os.getpid()}")


@contextlib.contextmanager
def scratch(root: WorkPath, name: str) -> Iterator[WorkPath]:
    """A fresh work folder :func:`staging` ``(root, name)`` for the block, removed after it
    (also on error; after a kill :func:`sweep_root` removes it)."""
    folder = staging(root, name)
    remove(folder)
    make_dir(folder)
    try:
        yield folder
    finally:
        remove(folder)


def sweep_root(root: WorkPath) -> list[WorkPath]:
    """:func:`~recpipe.workspace.sweep_stale` of ``root``: remove the work folders
    (``.<name>.new-<pid>``) there whose process no longer runs on this machine; the
    removed ones. On a store each is listed, judged and removed as on a disk."""
    if isinstance(root, Path):
        return list(sweep_stale([root]))
    fs, path = _fs(root)
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    removed: list[WorkPath] = []
    for entry in sorted(entries):
        name = posixpath.basename(entry.rstrip("/"))
        pid = staging_pid(name)
        if pid is None or pid_alive(pid):
            continue
        url = join(root, name)
        try:
            fs.rm(entry, recursive=True)
        except OSError as exc:
            log.warning("cannot remove the stale work folder %s: %s", url, exc)
            continue
        log.info("removed %s, left by process %s, which no longer runs", url, pid)
        removed.append(url)
    return removed
