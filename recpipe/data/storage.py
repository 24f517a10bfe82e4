"""Where data preparation reads and writes: a local path, or an fsspec URL.

A *location* is a local :class:`~pathlib.Path` or a URL ``protocol://path`` of any
filesystem `fsspec <https://filesystem-spec.readthedocs.io>`_ knows: ``file:///abs/path``
(a local or mounted folder), ``memory://name`` (this process's memory: tests),
``s3://bucket/key``, ``gs://...``, ``abfs://...`` (with the protocol's package installed,
e.g. ``s3fs``). A string without ``://`` is a local path, read as it always was; a URL
is never turned into a :class:`~pathlib.Path` (that would fold its ``//``).

:func:`location` turns a configured value into one and checks a URL's form
(:func:`check_url`); :func:`open_file`, :func:`exists`, :func:`is_file`, :func:`is_dir`
and :func:`glob` work on both kinds, and :func:`arrow_path` and :func:`parquet_file`
give what pyarrow's readers take. Paths take the local code path unchanged (``open``,
:mod:`pathlib`); URLs go through ``fsspec``.

The dask engine's work folders (``prep.work_url``) are handled by
:mod:`recpipe.data.workfs`: a local path, a ``file://`` URL (:func:`local_folder`) or
the URL of an object store.
"""

from __future__ import annotations

import logging
import posixpath
from pathlib import Path
from typing import IO, Any

from recpipe.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "Location",
    "arrow_path",
    "check_url",
    "exists",
    "filesystem",
    "glob",
    "is_dir",
    "is_file",
    "is_url",
    "local_folder",
    "location",
    "name_of",
    "open_file",
    "parquet_file",
    "url_under",
]

#: A local path, or an fsspec URL (``protocol://path``) kept as a string.
Location = Path | str

_EXPECTED = (
    "a local path or an fsspec URL such as file:///abs/path, memory://name or s3://bucket/key"
)


def is_url(value: object) -> bool:
    """Whether ``value`` is a URL (a string holding ``://``) rather than a local path."""
    return isinstance(value, str) and "://" in value


def location(value: str | Path, what: str = "path") -> Location:
    """``value`` as a location: a checked URL string (:func:`check_url`), else a Path.

    ``what`` names the setting in errors (e.g. ``data.path``).
    """
    if is_url(value):
        return check_url(str(value), what)
    return Path(value)


def check_url(url: str, what: str = "path") -> str:
    """``url`` itself when it is a usable fsspec URL; a clear error otherwise.

    Raises
    ------
    ConfigError
        No protocol before ``://``, a protocol fsspec does not know, one whose package
        is not installed, no path after the protocol, or a ``file://`` URL whose path
        is not absolute (``file:///abs/path``).
    """
    import fsspec
    from fsspec.registry import known_implementations, registry

    protocol, _, rest = url.partition("://")
    if not protocol:
        raise ConfigError(f"{what} {url!r} has no protocol before '://'; expected {_EXPECTED}")
    if protocol not in known_implementations and protocol not in registry:
        known = sorted({*known_implementations, *registry})
        raise ConfigError(
            f"{what} {url!r}: unknown protocol {protocol!r}; expected {_EXPECTED} "
            f"(protocols fsspec knows: {known})"
        )
    if not rest.strip("/"):
        raise ConfigError(f"{what} {url!r} has no path after '{protocol}://'; expected {_EXPECTED}")
    if protocol in ("file", "local") and not rest.startswith("/"):
        raise ConfigError(
            f"{what} {url!r}: a {protocol}:// URL needs an absolute path "
            f"({protocol}:///abs/path, three slashes); got the relative path {rest!r}"
        )
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        raise ConfigError(
            f"{what} {url!r}: the {protocol!r} filesystem is not installed ({exc}); "
            f"install its fsspec package or use {_EXPECTED}"
        ) from None
    return url


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path within it (``url_to_fs``)."""
    from fsspec.core import url_to_fs

    return url_to_fs(check_url(url))


def arrow_path(loc: Location) -> tuple[str, Any]:
    """``(path, filesystem)`` for pyarrow's readers and writers: ``(str(path), None)``
    for a local path (pyarrow's own local filesystem), the fsspec filesystem of a URL."""
    if not is_url(loc):
        return str(loc), None
    fs, path = filesystem(str(loc))
    return path, fs


def open_file(loc: Location, mode: str = "rb", **kwargs: Any) -> IO[Any]:
    """``open(loc, mode, **kwargs)`` for a local path, the fsspec file of a URL (text
    modes take ``encoding``, ``errors`` and ``newline`` alike)."""
    if not is_url(loc):
        return open(loc, mode, **kwargs)
    fs, path = filesystem(str(loc))
    return fs.open(path, mode, **kwargs)


def exists(loc: Location) -> bool:
    """Whether a file or folder is at ``loc``."""
    if not is_url(loc):
        return Path(loc).exists()
    fs, path = filesystem(str(loc))
    return bool(fs.exists(path))


def is_file(loc: Location) -> bool:
    """Whether ``loc`` is a file."""
    if not is_url(loc):
        return Path(loc).is_file()
    fs, path = filesystem(str(loc))
    return bool(fs.isfile(path))


def is_dir(loc: Location) -> bool:
    """Whether ``loc`` is a folder (on object stores: a key prefix with keys under it)."""
    if not is_url(loc):
        return Path(loc).is_dir()
    fs, path = filesystem(str(loc))
    return bool(fs.isdir(path))


def glob(folder: Location, pattern: str) -> list[Location]:
    """The files (not folders) in ``folder`` matching ``pattern``, sorted by name."""
    if not is_url(folder):
        return sorted(p for p in Path(folder).glob(pattern) if p.is_file())
    fs, path = filesystem(str(folder))
    found = [p for p in fs.glob(posixpath.join(path, pattern)) if fs.isfile(p)]
    return sorted(url_under(str(folder), path, p, fs) for p in found)


def url_under(url: str, root: str, path: str, fs: Any) -> str:
    """``path`` (a path within ``fs``) as a URL spelt like ``url``: ``url`` plus the part
    of ``path`` below ``root`` (``url``'s own path in ``fs``); a path outside ``root``:
    ``fs.unstrip_protocol(path)``. (fsspec's own spelling may differ from the user's,
    e.g. ``memory:///x`` for ``memory://x``: manifests name files as the user did.)"""
    root = root.rstrip("/")
    if path == root:
        return url
    if path.startswith(root + "/"):
        return url.rstrip("/") + path[len(root) :]
    return str(fs.unstrip_protocol(path))


def name_of(loc: Location) -> str:
    """The last component of ``loc`` (a file's name)."""
    if not is_url(loc):
        return Path(loc).name
    return posixpath.basename(str(loc).rstrip("/"))


def parquet_file(loc: Location) -> Any:
    """``pyarrow.parquet.ParquetFile`` of the file at ``loc`` (a local path or a URL)."""
    import pyarrow.parquet as pq

    path, fs = arrow_path(loc)
    return pq.ParquetFile(path, filesystem=fs) if fs is not None else pq.ParquetFile(loc)


def local_folder(value: str | Path, what: str = "path") -> Path:
    """The local (or mounted) folder that ``value`` names: a path, or a ``file://`` URL.

    Raises
    ------
    ConfigError
        A malformed URL (:func:`check_url`), or one of another protocol: ``what`` must
        be a folder this machine (and, for a cluster, every worker) opens as a file path.
    """
    if not is_url(value):
        return Path(value)
    url = str(value)
    protocol = url.partition("://")[0]
    if protocol not in ("file", "local"):
        raise ConfigError(
            f"{what} {url!r}: a {protocol}:// store cannot hold it; expected a local or "
            "mounted folder every worker reaches at the same path (/abs/path or "
            "file:///abs/path, e.g. an NFS mount)"
        )
    _, path = filesystem(check_url(url, what))
    return Path(path)
