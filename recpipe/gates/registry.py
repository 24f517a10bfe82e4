"""Candidates as MLflow registered model versions; promotion and rollback by aliases.

Layout
    One registered model (``gate.registered_model``, default ``recpipe``) holds every
    candidate the train stage produced, one version per ``(model, split)`` per
    registration, whatever its architecture. A version is an MLflow pyfunc model logged
    as code (MLflow's "models from code", never pickled), with a signature, an input
    example of real ids and explicit requirements (:func:`pip_requirements`, never
    inferred). What answers is given by the caller as a :class:`PyfuncCode`: the
    register stage logs the service's own predictor over a serving bundle (under
    ``artifacts/recpipe_bundle/``, the recpipe artifact in its ``model/``), so that the
    pyfunc answers as the HTTP service does (:mod:`recpipe.serve.pyfunc`). Without one,
    the version is the bare model (:class:`RecpipePyfunc`, the artifact under
    ``artifacts/recpipe_model/``: the model's own scores, nothing excluded).

Version tags and record
    Few tags, so that the registry's version list stays readable: ``recpipe.model``,
    ``recpipe.split``, ``gate.decision`` (``passed``, ``failed`` or ``not_judged`` for a
    candidate the gate did not pick) and the gate metric (``metric.recall_at_20``);
    the lineage step adds ``git.commit``, ``git.dirty``, ``dvc.lock.sha256``,
    ``lineage.dvc`` and ``lineage.push``. Everything else is the version's record,
    ``artifacts/recpipe.json`` in the logged model (:meth:`Registry.details`): every
    metric on its split, the lineage at registration (:func:`lineage_tags`: Git commit,
    dvc.lock and data manifest hashes, the data's content hash, recpipe's version),
    the pipeline run and the gate's reasons. Each version has a one-line description
    (model, split, gate outcome, gate metric).

Aliases
    ``champion``: the version served. ``previous``: the champion it replaced, for
    :meth:`Registry.rollback`. A promotion (the gate's, or ``recpipe promote``) moves
    ``previous`` to the old champion, then ``champion`` to the new version, and tags
    the new champion ``promotion.{kind,by,reason,at}`` and ``lineage.previous`` (the
    version it replaced) and the old one ``demotion.{kind,by,reason,at}``; ``kind`` is
    ``gate``, ``manual`` or ``rollback``, ``by`` the OS user. A rollback makes
    ``previous`` the champion again (tagged ``promotion.kind: rollback``; the
    rolled-back version gets ``demotion.*``) and points ``previous`` at the version
    the restored champion had replaced (its ``lineage.previous``), so rollbacks can
    be chained; without one the alias is removed. A failed gate changes no alias.

Concurrency
    Each read-modify-write of the aliases holds an exclusive file lock
    (:mod:`filelock`; ``<db>.lock`` beside a SQLite store, else a file in the temp
    folder named after the store's URI), so two promotions at once are serialised:
    the second sees the first's champion and moves it to ``previous``. The gate's
    own promotion is conditional: when the champion changed since the gate compared
    against it, nothing moves. The lock covers processes on one machine; with a
    shared MLflow server, run promotions from one place.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

from recpipe import __version__
from recpipe.errors import ArtifactError, RegistryError
from recpipe.features.idmap import N_RESERVED
from recpipe.models.base import Recommender
from recpipe.models.data import Queries
from recpipe.models.registry import load_model
from recpipe.paths import Paths

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
#: Name of the recpipe artifact inside a logged pyfunc model (``artifacts/<this>/``).
ARTIFACT_KEY = "recpipe_model"
#: Name of a serving bundle inside a logged pyfunc model; the recpipe artifact is its
#: ``model/`` folder (the layout of :mod:`recpipe.serve.bundle`).
BUNDLE_KEY = "recpipe_bundle"
#: The version's record (every metric, the lineage) inside a logged model: ``artifacts/<file>``.
DETAILS_KEY = "recpipe_details"
DETAILS_FILE = "recpipe.json"
#: Where a logged pyfunc model keeps its recpipe artifact, in the order looked for.
ARTIFACT_PATHS = (f"artifacts/{ARTIFACT_KEY}", f"artifacts/{BUNDLE_KEY}/model")
#: Longest tag value written (MLflow limits model version tag values).
_MAX_TAG = 4000
#: Packages an artifact needs to load and score (pinned to this environment's versions).
_REQUIREMENTS = ("mlflow", "numpy", "pandas", "pyarrow", "scipy", "pydantic", "torch")

SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            ColSpec("string", "user_id", required=False),
            ColSpec(Array("string"), "items", required=False),
        ]
    ),
    outputs=Schema([ColSpec(Array("string"), "items"), ColSpec(Array("double"), "scores")]),
    params=ParamSchema([ParamSpec("k", "long", 20)]),
)


# ---------------------------------------------------------------------- pyfunc
@dataclass(frozen=True)
class PyfuncCode:
    """What a registered version runs when MLflow loads it (see the module docstring).

    Attributes
    ----------
    python_model : pathlib.Path
        The "models from code" file MLflow copies into the model and runs at load
        (it calls ``mlflow.models.set_model``).
    artifacts : dict
        ``{key: local path}`` copied into the model's ``artifacts/<key>``; either
        :data:`ARTIFACT_KEY` (the recpipe artifact) or :data:`BUNDLE_KEY` (a serving
        bundle with the artifact in ``model/``) must be among them.
    signature : mlflow.models.ModelSignature
        The input, output and params schema of ``predict``.
    """

    python_model: Path
    artifacts: dict[str, Path]
    signature: ModelSignature


def _present(value: Any) -> bool:
    if value is None or value is pd.NA:
        return False
    return not (isinstance(value, float) and np.isnan(value))


def _query(model: Recommender, user: Any, items: list[str], row: int) -> Queries:
    """The query one input row asks: a session of ``items``, a user, or the last item."""
    meta = model.meta
    assert meta.item_map is not None and meta.user_map is not None
    kinds = model.query_kinds
    if items and "session" in kinds:
        return Queries.from_item_lists([meta.item_map.encode(items).tolist()])
    if _present(user) and "user" in kinds:
        return Queries.for_users(meta.user_map.encode([str(user)]))
    if items and "item" in kinds:
        return Queries.for_items(meta.item_map.encode(items[-1:]))
    if "session" in kinds:  # an empty session: the model's fallback
        return Queries.from_item_lists([[]])
    raise ValueError(
        f"row {row}: model {model.name!r} answers {sorted(kinds)} queries; give "
        + ("a user_id" if "user" in kinds else "items")
        + f" (got user_id={user!r}, items={items!r})"
    )


def recommend_frame(model: Recommender, frame: pd.DataFrame, k: int = 20) -> pd.DataFrame:
    """Top-``k`` raw item ids for each row of ``frame`` (the pyfunc's ``predict``).

    Parameters
    ----------
    model : Recommender
        A loaded model whose meta carries its id maps.
    frame : pandas.DataFrame
        Columns ``user_id`` (str, optional) and ``items`` (list of item ids, oldest
        first, optional). A row with items is a session (or item) query for models
        that score those, else a user query; unknown ids map to the unknown slot.
    k : int, default 20
        Length of each list (fewer when fewer items can be ranked).

    Returns
    -------
    pandas.DataFrame
        One row per input row: ``items`` (list of str) and ``scores`` (list of float).
    """
    if model.meta.item_map is None or model.meta.user_map is None:
        raise ArtifactError(f"the {model.name} artifact carries no id maps; it cannot serve ids")
    n = len(frame)
    users = frame["user_id"].tolist() if "user_id" in frame else [None] * n
    lists = frame["items"].tolist() if "items" in frame else [None] * n
    out_items, out_scores = [], []
    for row, (user, items) in enumerate(zip(users, lists, strict=True)):
        ids = [str(i) for i in items] if items is not None and not np.isscalar(items) else []
        scores = model.score(_query(model, user, ids, row))[0]  # (n_items,)
        finite = np.flatnonzero(np.isfinite(scores))
        kk = min(int(k), len(finite))
        top = finite[np.argpartition(-scores[finite], kk - 1)[:kk]] if kk else finite[:0]
        top = top[np.argsort(-scores[top], kind="stable")]
        out_items.append([str(i) for i in model.meta.item_map.decode(top)])
        out_scores.append([float(s) for s in scores[top]])
    return pd.DataFrame({"items": out_items, "scores": out_scores})


class RecpipePyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper of a recpipe artifact: raw ids in, top-k item ids out.

    ``load_context`` reads the artifact with :meth:`Recommender.load`; ``predict``
    is :func:`recommend_frame` with the ``k`` param (default 20).
    """

    def load_context(self, context: Any) -> None:
        self.model = load_model(context.artifacts[ARTIFACT_KEY])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Top-k item ids and scores per row (:func:`recommend_frame`); param ``k``."""
        k = int((params or {}).get("k", 20))
        return recommend_frame(self.model, pd.DataFrame(model_input), k)


def input_example(model: Recommender) -> pd.DataFrame:
    """One request of real ids: the most frequent user and the two most frequent items."""
    meta = model.meta
    if meta.item_map is None or meta.user_map is None:
        raise ArtifactError(f"the {model.name} artifact carries no id maps; it cannot serve ids")
    user = meta.user_map.decode([N_RESERVED])[0] if len(meta.user_map) > N_RESERVED else None
    last = min(len(meta.item_map), N_RESERVED + 2)
    items = [str(i) for i in meta.item_map.decode(np.arange(N_RESERVED, last))]
    return pd.DataFrame({"user_id": [None if user is None else str(user)], "items": [items]})


def pip_requirements() -> list[str]:
    """The explicit requirements of a logged model: recpipe and its runtime, pinned."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = [f"recpipe=={__version__}"]
    for dist in _REQUIREMENTS:
        try:
            reqs.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            continue
    return reqs


# ---------------------------------------------------------------------- lineage
def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def lineage_tags(paths: Paths) -> dict[str, str]:
    """Git commit of the code, dvc.lock and data manifest hashes (``unknown``/``none`` if absent).

    The commit is the workspace's when it is a Git repository, else that of the
    repository recpipe was installed from.
    """
    import json

    import recpipe

    commit, dirty = None, None
    for where in (paths.root, Path(recpipe.__file__).resolve().parents[1]):
        if where.is_dir() and (commit := _git(["rev-parse", "HEAD"], where)):
            status = _git(["status", "--porcelain", "--untracked-files=no"], where)
            dirty = None if status is None else str(bool(status)).lower()
            break
    manifest = paths.manifest_json
    content_hash = None
    if manifest.is_file():
        try:
            content_hash = json.loads(manifest.read_text()).get("content_hash")
        except (OSError, ValueError):
            content_hash = None
    return {
        "git.commit": commit or "unknown",
        "git.dirty": dirty or "unknown",
        "dvc.lock.sha256": _sha256(paths.dvc_lock) or "none",
        "data.manifest_sha256": _sha256(manifest) or "none",
        "data.content_hash": str(content_hash or "none"),
        "recpipe.version": __version__,
    }


def metric_tags(metrics: dict[str, Any]) -> dict[str, str]:
    """``{"metric.recall_at_20": "0.8123", ...}`` for the numeric metrics."""
    return {
        f"metric.{key.replace('@', '_at_').replace('/', '.')}": f"{float(value):.6g}"
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


# ---------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Promotion:
    """What a promotion or rollback did.

    Attributes
    ----------
    changed : bool
        Whether any alias moved.
    champion, previous : str or None
        The versions holding the aliases afterwards.
    message : str
        One readable sentence.
    """

    changed: bool
    champion: str | None
    previous: str | None
    message: str


class _Unset:
    pass


_UNSET = _Unset()


def _who() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextmanager
def _mlflow_errors(what: str) -> Iterator[None]:
    """Turn MLflow's exceptions into a :class:`RegistryError` saying what failed."""
    try:
        yield
    except MlflowException as exc:
        raise RegistryError(f"{what}: {exc.message}") from exc


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, None for any other store."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    return Path(unquote(parsed.path))


class Registry:
    """One registered model in an MLflow model registry, with locked alias moves.

    Parameters
    ----------
    tracking_uri : str
        The MLflow tracking (and registry) URI.
    name : str
        The registered model's name.
    lock_timeout : float, default 120
        Seconds to wait for another promotion before giving up.
    """

    def __init__(self, tracking_uri: str, name: str, *, lock_timeout: float = 120.0) -> None:
        self.tracking_uri = tracking_uri
        self.name = name
        self.lock_timeout = lock_timeout
        self._client: Any = None

    @classmethod
    def for_workspace(cls, params: Any, paths: Paths) -> Registry:
        """The registry of a workspace's params (``tracking``, ``gate.registered_model``)."""
        from recpipe.tracking import tracking_uri

        return cls(tracking_uri(params, paths), params.gate.registered_model)

    # store ------------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        """The file lock serialising alias moves on this store."""
        db = _sqlite_path(self.tracking_uri)
        if db is not None:
            return db.with_name(db.name + ".lock")
        digest = hashlib.sha256(self.tracking_uri.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"recpipe-registry-{digest}.lock"

    def exists(self) -> bool:
        """Whether the store can hold versions: a SQLite file that exists, or any server.

        Checked before connecting, since connecting creates an empty SQLite store.
        """
        db = _sqlite_path(self.tracking_uri)
        return db is None or db.is_file()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = mlflow.MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    def _require_store(self) -> None:
        if not self.exists():
            raise RegistryError(
                f"no MLflow registry at {self.tracking_uri}; run `recpipe run` first "
                "(it registers every candidate)"
            )

    # reading ----------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        """``{alias: version}`` of the registered model ({} when it does not exist)."""
        if not self.exists():
            return {}
        try:
            model = self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise RegistryError(f"cannot read model {self.name!r}: {exc.message}") from exc
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def champion(self) -> Any | None:
        """The ``champion`` model version, None when no version holds the alias."""
        version = self.aliases().get(CHAMPION)
        return None if version is None else self.get_version(version)

    def versions(self) -> list[str]:
        """Every version number of the registered model, ascending."""
        if not self.exists():
            return []
        with _mlflow_errors(f"cannot list the versions of {self.name!r}"):
            found = self.client.search_model_versions(f"name = '{self.name}'")
        return sorted((str(v.version) for v in found), key=int)

    def get_version(self, version: str | int) -> Any:
        """A model version, or :class:`RegistryError` naming the known ones."""
        self._require_store()
        try:
            return self.client.get_model_version(self.name, str(version))
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise RegistryError(
                    f"cannot read version {version} of {self.name!r}: {exc.message}"
                ) from exc
            known = self.versions()
            raise RegistryError(
                f"model {self.name!r} has no version {str(version)!r}; its versions: "
                + (", ".join(known) if known else "none (nothing registered yet)")
            ) from None

    def download(self, version: str | int, dst: Path | str) -> Path:
        """Download a version's recpipe artifact under ``dst``; returns its directory.

        Sets the global tracking URI to this registry's (MLflow reads the version's
        files through it).

        Raises
        ------
        RegistryError
            The version's files cannot be downloaded.
        ArtifactError
            The version holds no recpipe artifact.
        """
        uri = f"models:/{self.name}/{version}"
        # MLflow resolves a version's logged model through the global store, whatever
        # URIs are passed: point it at this registry (as register does)
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri,
                dst_path=str(dst),
                tracking_uri=self.tracking_uri,
                registry_uri=self.tracking_uri,
            )
        except (MlflowException, OSError) as exc:
            raise RegistryError(f"cannot download {uri}: {exc}") from exc
        for rel in ARTIFACT_PATHS:
            if (Path(local) / rel).is_dir():
                return Path(local) / rel
        raise ArtifactError(
            f"{uri} holds no recpipe artifact (expected {' or '.join(ARTIFACT_PATHS)}/)"
        )

    def details(self, version: str | int) -> dict[str, Any]:
        """The record logged with a version (``artifacts/recpipe.json``: every metric, the
        lineage, the gate's reasons), or {} for a version registered without one.

        Raises
        ------
        RegistryError
            No such version, or its record cannot be read.
        """
        import json

        mv = self.get_version(version)
        uri = f"models:/{self.name}/{mv.version}/artifacts/{DETAILS_FILE}"
        mlflow.set_tracking_uri(self.tracking_uri)  # see download
        with tempfile.TemporaryDirectory(prefix="recpipe-details-") as tmp:
            try:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=uri,
                    dst_path=tmp,
                    tracking_uri=self.tracking_uri,
                    registry_uri=self.tracking_uri,
                )
            except (MlflowException, OSError) as exc:
                log.debug("no %s: %s", uri, exc)
                return {}
            try:
                found = json.loads(Path(local).read_text())
            except (OSError, ValueError) as exc:
                raise RegistryError(f"cannot read {uri}: {exc}") from exc
        return found if isinstance(found, dict) else {}

    # writing ----------------------------------------------------------------
    def register(
        self,
        artifact: Path | str,
        tags: dict[str, str],
        description: str | None = None,
        *,
        code: PyfuncCode | None = None,
        details: dict[str, Any] | None = None,
    ) -> str:
        """Log an artifact as a pyfunc model and register it as a new version.

        Uses the active MLflow run when there is one (the pipeline run). Sets the
        global tracking URI to this registry's.

        Parameters
        ----------
        artifact : pathlib.Path or str
            A recpipe model artifact directory (loaded first: a broken one raises).
        tags : dict
            Version tags (values are cut to 4000 characters).
        description : str, optional
            The version's description (what the registry UI lists beside it).
        code : PyfuncCode, optional
            What the version runs (the register stage: the service's predictor over a
            serving bundle); default the bare model (:class:`RecpipePyfunc`).
        details : dict, optional
            A JSON-able record logged with the version as ``artifacts/recpipe.json``
            (every metric and the lineage: :func:`version_details` reads it back), so
            that the version's tags stay few.

        Returns
        -------
        str
            The new version number.
        """
        import json

        artifact = Path(artifact)
        model = load_model(artifact)
        mlflow.set_tracking_uri(self.tracking_uri)
        with (
            _mlflow_errors(f"cannot register {artifact} in {self.name!r}"),
            tempfile.TemporaryDirectory(prefix="recpipe-register-") as tmp,
        ):
            if code is None:
                # MLflow names a logged artifact after its file: stage it under the key
                staged = Path(tmp) / ARTIFACT_KEY
                shutil.copytree(artifact, staged)
                code = PyfuncCode(
                    python_model=Path(__file__).with_name("_pyfunc_entry.py"),
                    artifacts={ARTIFACT_KEY: staged},
                    signature=SIGNATURE,
                )
            if not {ARTIFACT_KEY, BUNDLE_KEY} & set(code.artifacts):
                raise ArtifactError(
                    f"a registered version needs the artifact {ARTIFACT_KEY!r} or the bundle "
                    f"{BUNDLE_KEY!r}; got {sorted(code.artifacts)}"
                )
            artifacts = {key: str(path) for key, path in code.artifacts.items()}
            if details is not None:
                record = Path(tmp) / DETAILS_FILE
                record.write_text(json.dumps(details, indent=2, default=str) + "\n")
                artifacts[DETAILS_KEY] = str(record)
            split = model.meta.split or artifact.name
            info = mlflow.pyfunc.log_model(
                name=f"{model.name}-{split}",
                python_model=str(code.python_model),
                artifacts=artifacts,
                signature=code.signature,
                input_example=input_example(model),
                pip_requirements=pip_requirements(),
            )
        clean = {k: str(v)[:_MAX_TAG] for k, v in tags.items()}
        clean.setdefault("recpipe.model", model.name)
        clean.setdefault("recpipe.split", split)
        with _mlflow_errors(f"cannot register {info.model_uri} as a version of {self.name!r}"):
            version = mlflow.register_model(info.model_uri, self.name, tags=clean)
            if description:
                self.client.update_model_version(
                    self.name, str(version.version), description=description
                )
        log.info(
            "registered %s (%s) as %s version %s", model.name, split, self.name, version.version
        )
        return str(version.version)

    def set_tags(self, version: str, tags: dict[str, str]) -> None:
        """Set tags on a version."""
        with _mlflow_errors(f"cannot tag version {version} of {self.name!r}"):
            for key, value in tags.items():
                self.client.set_model_version_tag(
                    self.name, str(version), key, str(value)[:_MAX_TAG]
                )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the registry's file lock (see the module docstring), or RegistryError."""
        from filelock import FileLock, Timeout

        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.lock_path))
        try:
            lock.acquire(timeout=self.lock_timeout)
        except Timeout:
            raise RegistryError(
                f"another promotion has held the registry lock {self.lock_path} for over "
                f"{self.lock_timeout:g} s; try again when it is done"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def _move(self, version: str, current: str | None, kind: str, reason: str, who: str) -> None:
        """Under the lock: ``previous`` to ``current``, ``champion`` to ``version``, tags."""
        at = _now()
        if current is not None:
            self.client.set_registered_model_alias(self.name, PREVIOUS, current)
            self.set_tags(
                current,
                {
                    "demotion.kind": kind,
                    "demotion.by": who,
                    "demotion.reason": reason,
                    "demotion.at": at,
                },
            )
        self.client.set_registered_model_alias(self.name, CHAMPION, version)
        tags = {
            "promotion.kind": kind,
            "promotion.by": who,
            "promotion.reason": reason,
            "promotion.at": at,
        }
        if kind != "rollback":
            tags["lineage.previous"] = current or ""
        self.set_tags(version, tags)

    def promote(
        self,
        version: str | int,
        *,
        reason: str,
        kind: str = "manual",
        who: str | None = None,
        expect_champion: str | _Unset | None = _UNSET,
    ) -> Promotion:
        """Make ``version`` the champion; the old champion becomes ``previous``.

        Parameters
        ----------
        version : str or int
            An existing version.
        reason : str
            Why (recorded as a tag).
        kind : str, default "manual"
            ``gate`` or ``manual`` (recorded).
        who : str, optional
            Who (default: the OS user).
        expect_champion : str or None, optional
            Promote only if the champion is still this version (None: no champion);
            the gate passes the champion it compared against.

        Returns
        -------
        Promotion
            ``changed`` False when the version already is the champion or the champion
            moved since ``expect_champion``.
        """
        version = str(self.get_version(version).version)
        who = who or _who()
        with self._locked(), _mlflow_errors(f"cannot promote v{version} of {self.name!r}"):
            aliases = self.aliases()
            current = aliases.get(CHAMPION)
            if not isinstance(expect_champion, _Unset) and current != expect_champion:
                return Promotion(
                    False,
                    current,
                    aliases.get(PREVIOUS),
                    f"not promoted: the champion moved from "
                    f"{_v(expect_champion)} to {_v(current)} since the gate compared against "
                    "it; re-run the gate",
                )
            if current == version:
                return Promotion(
                    False, current, aliases.get(PREVIOUS), f"v{version} already is the champion"
                )
            self._move(version, current, kind, reason, who)
            previous = current if current is not None else aliases.get(PREVIOUS)
        message = f"v{version} is the champion" + (
            f"; v{current} is previous" if current else " (there was none)"
        )
        log.info("%s (%s promotion by %s)", message, kind, who)
        return Promotion(True, version, previous, message)

    def rollback(self, *, reason: str, who: str | None = None) -> Promotion:
        """Make ``previous`` the champion again.

        The rolled-back champion gets ``demotion.*`` tags; ``previous`` then points at
        the version the restored champion had replaced (its ``lineage.previous``), or
        is removed, so a second rollback goes one step further back.

        Raises
        ------
        RegistryError
            There is no ``previous`` version to roll back to.
        """
        self._require_store()
        who = who or _who()
        with self._locked(), _mlflow_errors(f"cannot roll back {self.name!r}"):
            aliases = self.aliases()
            current, previous = aliases.get(CHAMPION), aliases.get(PREVIOUS)
            if previous is None:
                raise RegistryError(
                    f"model {self.name!r} has no {PREVIOUS!r} alias, so there is nothing to roll "
                    f"back to (champion: {_v(current)}); promote a version with "
                    "`recpipe promote --version N --reason TEXT`"
                )
            at = _now()
            if current is not None:
                self.set_tags(
                    current,
                    {
                        "demotion.kind": "rollback",
                        "demotion.by": who,
                        "demotion.reason": reason,
                        "demotion.at": at,
                    },
                )
            self.client.set_registered_model_alias(self.name, CHAMPION, previous)
            self.set_tags(
                previous,
                {
                    "promotion.kind": "rollback",
                    "promotion.by": who,
                    "promotion.reason": reason,
                    "promotion.at": at,
                },
            )
            before = self.get_version(previous).tags.get("lineage.previous") or None
            if before is not None and before not in (previous, current):
                self.client.set_registered_model_alias(self.name, PREVIOUS, before)
            else:
                before = None
                self.client.delete_registered_model_alias(self.name, PREVIOUS)
        message = f"rolled back: v{previous} is the champion again (v{current} demoted)" + (
            f"; v{before} is previous" if before else "; no earlier version to roll back to"
        )
        log.info("%s (by %s)", message, who)
        return Promotion(True, previous, before, message)


def _v(version: str | None) -> str:
    return "none" if version is None else f"v{version}"
