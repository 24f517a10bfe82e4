"""Package a serving bundle as a Bento, and serve the latest Bento (imports BentoML).

:func:`package_bundle` is the BentoML half of the ``package`` stage
(:func:`recpipe.stages.package`, through :func:`recpipe.serve.packaging.package_model`):

1. the bundle directory goes into the BentoML model store as ``recpipe-champion``, with
   labels (registry version, git commit, data hash, metrics) and metadata;
2. the Bento is built from ``bentofile.yaml`` through the Python API, offline: the
   bentofile sets ``python: lock_packages: false``, so nothing is resolved against a
   package index at build time;
3. the Bento, with the model it references, is exported to one archive
   (``bentos/recpipe.bento``), which DVC tracks, so every served model is versioned
   with the data and params that made it.

:func:`resolve_bento` finds the Bento that ``recpipe serve`` serves (the one the last
package stage built, imported from the archive when the local store lacks it, e.g.
after ``dvc pull`` on another machine) and :func:`serve_command` the ``bentoml serve``
command line, always on a loopback host by default.

The store is BentoML's (``$BENTOML_HOME``, default ``~/bentoml``); keep
``BENTOML_HOME`` outside the build context (the repository), or the build copies the
store into the Bento.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import BentoMLException, NotFound

from recpipe.errors import ArtifactError, ConfigError, StageError
from recpipe.serve.bundle import BENTO_NAME, MODEL_STORE_NAME

__all__ = [
    "BENTOFILE",
    "build_context",
    "package_bundle",
    "resolve_bento",
    "serve_command",
    "serve_env",
    "serve_workers",
]

log = logging.getLogger(__name__)

BENTOFILE = "bentofile.yaml"


def build_context() -> Path:
    """The directory holding ``bentofile.yaml`` and the ``recpipe`` sources (the repository).

    Raises
    ------
    StageError
        recpipe is not installed from a source tree with a bentofile.
    """
    import recpipe

    root = Path(recpipe.__file__).resolve().parents[1]
    if not (root / BENTOFILE).is_file():
        raise StageError(
            f"no {BENTOFILE} at {root}: packaging needs the recpipe source tree (an editable "
            "install, `pip install -e .`)"
        )
    return root


def _labels(values: Mapping[str, Any]) -> dict[str, str]:
    """String labels (BentoML accepts only strings); None becomes ``none``."""
    return {str(k): "none" if v is None else str(v) for k, v in values.items()}


def _metadata(value: Any) -> Any:
    """JSON-able metadata without None (BentoML refuses None entries)."""
    if isinstance(value, Mapping):
        return {str(k): _metadata(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_metadata(v) for v in value if v is not None]
    return value


def package_bundle(
    bundle: Path | str,
    archive: Path | str,
    *,
    labels: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
    build_ctx: Path | str | None = None,
) -> dict[str, Any]:
    """Save a bundle in the model store, build the Bento, export it to ``archive``.

    Parameters
    ----------
    bundle : pathlib.Path or str
        A serving bundle (:mod:`recpipe.serve.bundle`).
    archive : pathlib.Path or str
        Where the exported Bento goes (replaced atomically).
    labels : mapping
        Labels of the stored model and the Bento (values turned into strings).
    metadata : mapping, optional
        JSON-able metadata of the stored model (metrics, index report, ...).
    build_ctx : pathlib.Path or str, optional
        Directory with ``bentofile.yaml`` (default :func:`build_context`).

    Returns
    -------
    dict
        ``model_tag``, ``bento_tag``, ``archive``, ``archive_mb``.

    Raises
    ------
    StageError
        BentoML refused to store, build or export (the message says which).
    """
    bundle, archive = Path(bundle), Path(archive)
    ctx = Path(build_ctx) if build_ctx is not None else build_context()
    tags = _labels(labels)
    try:
        with bentoml.models.create(
            MODEL_STORE_NAME, labels=tags, metadata=_metadata(dict(metadata or {}))
        ) as stored:
            shutil.copytree(bundle, stored.path, dirs_exist_ok=True)
        model_tag = str(stored.tag)
        log.info("saved the bundle as %s in the BentoML model store", model_tag)
        bento = bentoml.bentos.build_bentofile(
            str(ctx / BENTOFILE), build_ctx=str(ctx), labels={**tags, "model_tag": model_tag}
        )
        bento_tag = str(bento.tag)
        if not any(m.tag.name == MODEL_STORE_NAME for m in bento.info.all_models):
            bentoml.bentos.delete(bento_tag)
            raise StageError(
                f"the Bento references no {MODEL_STORE_NAME} model: RECPIPE_BUNDLE was set "
                "when recpipe.serve.service was imported (it makes the service serve that "
                "directory instead of the store's model); unset it and package again"
            )
        log.info("built Bento %s", bento_tag)
        archive.parent.mkdir(parents=True, exist_ok=True)
        # BentoML appends ".bento" to a path without it: name the temporary file so
        tmp = archive.with_name(f".{uuid.uuid4().hex[:8]}.{archive.name}.tmp.bento")
        try:
            written = Path(bentoml.bentos.export_bento(bento_tag, str(tmp)))
            os.replace(written, archive)
        finally:
            if tmp.exists():
                tmp.unlink()
    except BentoMLException as exc:
        raise StageError(f"BentoML could not package the bundle: {exc}") from exc
    log.info("exported %s to %s", bento_tag, archive)
    return {
        "model_tag": model_tag,
        "bento_tag": bento_tag,
        "archive": str(archive),
        "archive_mb": round(archive.stat().st_size / 2**20, 3),
    }


def resolve_bento(tag: str | None = None, archive: Path | str | None = None) -> str:
    """The Bento to serve, in the local store (imported from ``archive`` if need be).

    Parameters
    ----------
    tag : str, optional
        A Bento tag (e.g. the one the last package stage recorded); default the latest
        ``recpipe`` Bento.
    archive : pathlib.Path or str, optional
        An exported Bento to import when the store lacks ``tag`` (or has no Bento).

    Raises
    ------
    ArtifactError
        No such Bento in the store and no archive to import it from.
    """
    wanted = tag or f"{BENTO_NAME}:latest"
    try:
        return str(bentoml.bentos.get(wanted).tag)
    except (NotFound, BentoMLException) as missing:
        if archive is None or not Path(archive).is_file():
            raise ArtifactError(
                f"no Bento {wanted} in the BentoML store ({bentoml_home()}) and no archive to "
                "import; build one with `recpipe run` or `recpipe stage package`"
            ) from missing
    try:
        imported = bentoml.bentos.import_bento(str(archive))
    except BentoMLException as exc:
        raise ArtifactError(f"cannot import the Bento archive {archive}: {exc}") from exc
    log.info("imported %s from %s", imported.tag, archive)
    if tag is not None and str(imported.tag) != tag:
        log.warning("the archive %s holds %s, not %s; serving it", archive, imported.tag, tag)
    return str(imported.tag)


def bentoml_home() -> str:
    """The BentoML store directory in use."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return str(BentoMLContainer.bentoml_home.get())


def require_free_port(host: str, port: int) -> None:
    """A one-line error when ``host:port`` is taken (before the server starts and fails
    with a long traceback)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"port {port} on {host} is in use ({exc.strerror}); stop what listens there "
                "or pick another with --port N"
            ) from None


def serve_command(tag: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """The ``bentoml serve`` command line of a Bento (this interpreter's BentoML)."""
    return [sys.executable, "-m", "bentoml", "serve", tag, "--host", host, "--port", str(port)]


def serve_workers(workers: int) -> int:
    """Worker processes for ``serve.workers``: 0 means one per CPU core."""
    return workers if workers > 0 else max(1, os.cpu_count() or 1)


def serve_env(workers: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of ``bentoml serve``: ``workers`` service processes, telemetry off.

    One Python process answers HTTP on about one core (the GIL), so on a multi-core
    machine the service runs one worker per core (``serve.workers: 0``); each worker's
    BLAS and torch then use their share of the cores, not all of them, which would
    oversubscribe the CPU. Variables already set in ``base`` (default: this process's
    environment) win, including ``BENTOML_CONFIG_OPTIONS``.
    """
    env = dict(os.environ if base is None else base)
    n = serve_workers(workers)
    threads = str(max(1, (os.cpu_count() or 1) // n))
    env.setdefault("BENTOML_CONFIG_OPTIONS", f"services.{BENTO_NAME}.workers={n}")
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(key, threads)
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    return env
