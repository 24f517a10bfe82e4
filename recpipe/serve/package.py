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

:func:`choose_bento` finds the Bento that ``recpipe serve`` serves (the one the
workspace's last package stage built, imported from the archive when the local store
lacks it, e.g. after ``dvc pull`` on another machine; else the store's latest, with a
warning that names it and where it was built), :func:`check_bento` loads its model with
the Bento's own code in a subprocess (a corrupt or incomplete model stops ``recpipe
serve`` with one line, instead of workers that fail and restart forever) and
:func:`serve_command` is the ``bentoml serve`` command line of the Bento's directory,
always on a loopback host by default. The directory, not the tag: ``bentoml serve
recpipe:TAG`` first tries the tag as a module path, imports the ``recpipe`` package
found on ``sys.path`` (the current directory's or the installed one) and then serves
that code instead of the Bento's.

The store is BentoML's (``$BENTOML_HOME``, default ``~/bentoml``); keep
``BENTOML_HOME`` outside the build context (the repository), or the build copies the
store into the Bento.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import BentoMLException, NotFound

from recpipe.errors import ArtifactError, ConfigError, StageError
from recpipe.serve.bundle import BENTO_NAME, MODEL_STORE_NAME

__all__ = [
    "BENTOFILE",
    "ServedBento",
    "build_context",
    "check_bento",
    "choose_bento",
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
        _unpin_latest_model()
        bento = bentoml.bentos.build_bentofile(
            str(ctx / BENTOFILE),
            build_ctx=str(ctx),
            # where it is exported names the workspace that built it (for `recpipe serve`)
            labels={**tags, "model_tag": model_tag, "archive": str(archive.resolve())},
        )
        bento_tag = str(bento.tag)
        if not any(m.tag.name == MODEL_STORE_NAME for m in bento.info.all_models):
            bentoml.bentos.delete(bento_tag)
            raise StageError(
                f"the Bento references no {MODEL_STORE_NAME} model: RECPIPE_BUNDLE was set "
                "when recpipe.serve.service was imported (it makes the service serve that "
                "directory instead of the store's model); unset it and package again"
            )
        referenced = [str(m.tag) for m in bento.info.all_models]
        if model_tag not in referenced:
            bentoml.bentos.delete(bento_tag)
            raise StageError(
                f"the Bento references {referenced}, not the model {model_tag} just stored; "
                "package again in a fresh process"
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


def _unpin_latest_model() -> None:
    """Let the service's ``recpipe-champion:latest`` reference resolve afresh.

    BentoML resolves a ``name:latest`` reference by writing the version it found into
    the reference's own tag (``Store.get`` sets ``tag.version``), so a service module
    imported earlier in this process (an earlier package, a test, a long-lived worker)
    would have every later Bento reference the first model it saw, not the one just
    stored. The reference is set back to ``latest`` before each build.
    """
    service = getattr(sys.modules.get("recpipe.serve.service"), "RecpipeService", None)
    for model in getattr(service, "models", None) or []:
        tag = getattr(model, "tag", None)
        if tag is not None and tag.name == MODEL_STORE_NAME:
            tag.version = "latest"


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
    # a truncated or corrupt archive raises EOFError, tarfile or OS errors (EOFError
    # reached the CLI as a bare "Aborted.")
    except (BentoMLException, EOFError, OSError, tarfile.TarError, ValueError) as exc:
        raise ArtifactError(
            f"cannot import the Bento archive {archive}: {type(exc).__name__}: {exc} (a "
            "truncated or corrupt file?); restore it (`dvc pull`, `dvc checkout`) or package "
            "again (`recpipe stage package`)"
        ) from exc
    log.info("imported %s from %s", imported.tag, archive)
    if tag is not None and str(imported.tag) != tag:
        log.warning("the archive %s holds %s, not %s; serving it", archive, imported.tag, tag)
    return str(imported.tag)


@dataclass(frozen=True)
class ServedBento:
    """The Bento that ``recpipe serve`` serves, and where it comes from."""

    tag: str
    #: The Bento's directory in the store (its code is ``path/src``).
    path: str
    #: The serving bundle the Bento was built with (a BentoML model).
    model_tag: str
    model_path: str
    #: How it was chosen (``--bento``, the workspace's package report, the store's latest).
    origin: str
    labels: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: the Bento, its model and lineage, where it and its code lie."""
        lineage = ", ".join(
            f"{k} {self.labels[k]}"
            for k in ("registry_version", "git_commit", "data_hash")
            if self.labels.get(k) not in (None, "", "none")
        )
        return (
            f"Bento {self.tag} ({self.origin}; model {self.model_tag}"
            + (f", {lineage}" if lineage else "")
            + f") from {self.path}, with the code packaged in it"
        )


def _report_bento(report: Path) -> str | None:
    """The Bento tag a package report names (None: no report)."""
    if not report.is_file():
        return None
    try:
        tag = json.loads(report.read_text()).get("bento_tag")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ArtifactError(
            f"{report} is not a package report ({exc}); run the package stage again "
            "(`recpipe stage package`)"
        ) from exc
    return str(tag) if tag else None


def choose_bento(
    tag: str | None, report: Path | str, archive: Path | str
) -> tuple[ServedBento, str | None]:
    """The Bento to serve, and a warning when it may not be this workspace's.

    Parameters
    ----------
    tag : str, optional
        A Bento tag given by the user (``--bento``).
    report : pathlib.Path or str
        The workspace's package report (``reports/package.json``): names its Bento.
    archive : pathlib.Path or str
        The workspace's exported Bento, imported when the store lacks the Bento.

    Raises
    ------
    ArtifactError
        No Bento to serve, an unreadable archive or report, or a Bento whose model the
        store lacks.
    """
    report = Path(report)
    origin = "given with --bento"
    if tag is None:
        tag = _report_bento(report)
        origin = f"built by this workspace: {report}"
    warning = None
    resolved = resolve_bento(tag, archive)
    bento = bentoml.bentos.get(resolved)
    labels = {str(k): str(v) for k, v in (bento.info.labels or {}).items()}
    if tag is None:
        built_by = labels.get("archive", "an unknown workspace")
        origin = f"the BentoML store's latest, exported to {built_by}"
        warning = (
            f"{report.parent.parent} has packaged nothing (no {report}); serving the BentoML "
            f"store's ({bentoml_home()}) latest Bento, {resolved}, built "
            f"{bento.info.creation_time:%Y-%m-%d %H:%M} and exported to {built_by}, which may "
            "be another workspace's (run `make run` here, or pass --bento TAG)"
        )
    models = [m.tag for m in bento.info.all_models if m.tag.name == MODEL_STORE_NAME]
    if not models:
        raise ArtifactError(
            f"the Bento {resolved} references no {MODEL_STORE_NAME} model: it was not built by "
            "the package stage; package again (`recpipe stage package`) or pass --bento TAG"
        )
    try:
        model = bentoml.models.get(models[0])
    except (BentoMLException, OSError, ValueError) as exc:
        raise ArtifactError(
            f"the model {models[0]} of the Bento {resolved} is not in the BentoML store "
            f"({bentoml_home()}) or cannot be read ({exc}); import the Bento's archive again "
            f"(bentoml import {archive}) or package again (`recpipe stage package`)"
        ) from exc
    served = ServedBento(
        tag=resolved,
        path=str(bento.path),
        model_tag=str(model.tag),
        model_path=str(model.path),
        origin=origin,
        labels=labels,
    )
    return served, warning


#: Loads a bundle with the code on sys.argv[1] (a Bento's src); the error's last line.
_CHECK_SCRIPT = (
    "import sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "from recpipe.serve.predictor import Predictor\n"
    "try:\n"
    "    Predictor.from_artifact(sys.argv[2])\n"
    "except Exception as exc:\n"
    "    print(f'{type(exc).__name__}: {exc}'.splitlines()[0][:500], file=sys.stderr)\n"
    "    sys.exit(1)\n"
)


def check_bento(served: ServedBento, timeout: float = 600.0) -> None:
    """Load the Bento's model with the Bento's own code, in a subprocess (the memory of
    the model is not kept by the ``recpipe serve`` process).

    Raises
    ------
    ArtifactError
        The model cannot be loaded (corrupt or incomplete files, an incompatible bundle),
        with the loader's one-line reason.
    """
    src = str(Path(served.path) / "src")
    env = serve_env(1)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHECK_SCRIPT, src, served.model_path],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ArtifactError(
            f"loading the model {served.model_tag} of the Bento {served.tag} took over "
            f"{timeout:.0f} s; check {served.model_path}"
        ) from exc
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        raise ArtifactError(
            f"the model {served.model_tag} of the Bento {served.tag} cannot be loaded: "
            f"{reason.rstrip('.')}. It is corrupt or incomplete ({served.model_path}): "
            "package again (`recpipe stage package`), or delete it (`bentoml models delete "
            f"{served.model_tag}`) and import a good archive (`bentoml import ...`)"
        )


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


def serve_command(bento: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """The ``bentoml serve`` command line of a Bento (this interpreter's BentoML).

    ``bento`` is best the Bento's directory (:attr:`ServedBento.path`): given a tag such
    as ``recpipe:abc``, BentoML first imports ``recpipe`` as a module path, and then the
    ``recpipe`` code found on ``sys.path`` is served instead of the Bento's own.
    """
    return [sys.executable, "-m", "bentoml", "serve", bento, "--host", host, "--port", str(port)]


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
