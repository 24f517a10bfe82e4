"""Workspace file helpers shared by the stage functions: readable file-system errors,
outputs replaced only when complete, and JSON reports.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recpipe.errors import WorkspaceError


@contextlib.contextmanager
def workspace_io(context: str) -> Iterator[None]:
    """Turn a file-system error inside into :class:`~recpipe.errors.WorkspaceError`.

    A permission denied, a read-only file system, a full disk, a file where a folder
    belongs (and the like) raised as ``OSError`` becomes one readable error that names
    the operation, the path and the fix, prefixed with ``context`` (e.g. ``"stage
    ingest"``); the ``OSError`` is its ``__cause__``. Other errors pass unchanged. Every
    stage function runs under it (it works as a decorator too), so the CLI, dvc.yaml,
    the Prefect flow and the Python API all see the same error.
    """
    try:
        yield
    except OSError as exc:
        if not WorkspaceError.translates(exc):
            raise
        raise WorkspaceError.from_os_error(exc, context) from exc


@contextlib.contextmanager
def replacing_dir(path: Path) -> Iterator[Path]:
    """A fresh staging folder beside ``path`` that replaces ``path`` when the block
    succeeds; when it raises, ``path`` is left as it was and the staging folder removed."""
    staging = path.with_name(f".{path.name}.new-{os.getpid()}")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    for leftover in (staging, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if path.exists():
        path.rename(old)
    staging.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def reset_dir(path: Path) -> None:
    """Empty ``path`` (an output this stage owns) so no stale file survives a re-run."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when there is no such file."""
    return json.loads(path.read_text()) if path.is_file() else None
