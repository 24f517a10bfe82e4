"""Model artifacts: the directory a :class:`~recpipe.models.base.Recommender` saves, and
the file helpers models store their state with.

Artifact layout (a directory; ``meta.json`` is written last, so its presence marks a
complete artifact, and a save replaces an older artifact only once the new one is
complete)::

    config.json          the model config (``Config.model_dump(mode="json")``)
    data.npz             DataMeta.item_counts
    item_map.parquet     the split's item / user id maps, when DataMeta carries them
    user_map.parquet
    item_categories.npz  the items' multi-hot categories, when DataMeta carries them
    item_content/        the items' encoded content (ItemContent.save) and the fitted
    item_encoder/        ContentEncoder (ContentEncoder.save), for models whose class
                         sets ``uses_content`` and when DataMeta carries them
    ...                  the model's state, written by ``_save_state`` (npz files read
                         with ``allow_pickle=False``, or torch state dicts)
    meta.json            format, recpipe version, model name, DataMeta sizes, created_at,
                         the list of files

:func:`write_artifact` and :func:`read_artifact` are the bodies of
:meth:`Recommender.save <recpipe.models.base.Recommender.save>` and
:meth:`Recommender.load <recpipe.models.base.Recommender.load>` (a known model class);
:func:`read_artifact_meta` checks an artifact and returns its ``meta.json``, which is
how :func:`recpipe.models.registry.load_model` finds the class of whatever model an
artifact holds.

Model authors store arrays with :func:`save_arrays` / :func:`load_arrays` and sparse
matrices with :func:`csr_to_arrays` / :func:`csr_from_arrays`; these raise
:class:`~recpipe.errors.ArtifactError` with the file and key on any problem.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import uuid
import zipfile
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from recpipe import __version__
from recpipe.errors import ArtifactError, ConfigError
from recpipe.features.idmap import IdMap
from recpipe.models.data import ITEM_MAP_FILE, USER_MAP_FILE, DataMeta, read_json

if TYPE_CHECKING:
    from recpipe.features.content import ContentEncoder, ItemContent
    from recpipe.models.base import Recommender

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = "recpipe.model"
ARTIFACT_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
META_FILE = "meta.json"
DATA_FILE = "data.npz"
CATEGORIES_FILE = "item_categories.npz"
ITEM_CONTENT_DIR = "item_content"
ITEM_ENCODER_DIR = "item_encoder"

#: What reading a damaged state file raises (numpy, zip, torch.load), turned into ArtifactError.
_STATE_ERRORS = (
    OSError,
    EOFError,
    KeyError,
    ValueError,
    TypeError,
    RuntimeError,
    zipfile.BadZipFile,
    pickle.UnpicklingError,
)


# ---------------------------------------------------------------------- model artifacts
def write_artifact(model: Recommender, path: Path | str) -> Path:
    """Write ``model``'s self-contained artifact directory, replacing an older artifact.

    The artifact is assembled in a temporary sibling folder and moved into place
    when complete, so a reader never sees half an artifact. The caller checks that
    the model is fitted (:meth:`Recommender.save <recpipe.models.base.Recommender.save>`).

    Parameters
    ----------
    model : Recommender
        A fitted model.
    path : pathlib.Path or str
        The artifact directory (e.g. ``models/<name>``); parents are created.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ArtifactError
        ``path`` exists and is not a recpipe model artifact (it is never replaced).
    """
    path = Path(path)
    foreign = path.is_file() or (
        path.is_dir() and not (path / META_FILE).is_file() and any(path.iterdir())
    )
    if foreign:
        raise ArtifactError(
            f"{str(path)!r} exists and is not a recpipe model artifact; refusing to replace it"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique sibling (same file system, so the final move is a rename); mkdir
    # rather than mkdtemp so that the artifact gets the umask's permissions, not 0700
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    tmp.mkdir()
    try:
        _write_files(model, tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("saved %s artifact to %s", model.name, path)
    return path


def _write_files(model: Recommender, tmp: Path) -> None:
    """Every file of the artifact into the empty folder ``tmp``, ``meta.json`` last."""
    data_meta = model.meta
    (tmp / CONFIG_FILE).write_text(
        json.dumps(model.config.model_dump(mode="json"), indent=2) + "\n"
    )
    save_arrays(tmp / DATA_FILE, item_counts=data_meta.item_counts)
    if data_meta.item_map is not None:
        data_meta.item_map.save(tmp / ITEM_MAP_FILE)
    if data_meta.user_map is not None:
        data_meta.user_map.save(tmp / USER_MAP_FILE)
    if data_meta.item_categories is not None:
        save_arrays(tmp / CATEGORIES_FILE, **csr_to_arrays("categories", data_meta.item_categories))
    if type(model).uses_content:
        if data_meta.item_content is not None:
            data_meta.item_content.save(tmp / ITEM_CONTENT_DIR)
        if data_meta.item_encoder is not None:
            data_meta.item_encoder.save(tmp / ITEM_ENCODER_DIR)
    model._save_state(tmp)
    files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    meta = {
        "format": ARTIFACT_FORMAT,
        "format_version": ARTIFACT_FORMAT_VERSION,
        "model": model.name,
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "recpipe_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "query_kinds": sorted(model.query_kinds),
        "data": data_meta.sizes(),
        # the preprocessing the model's inputs were encoded with (serving re-encodes so)
        "preprocessing": {"gap_buckets": data_meta.gap_buckets},
        "files": [*files, META_FILE],
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def read_artifact_meta(path: Path | str) -> dict[str, Any]:
    """The ``meta.json`` of a complete artifact of this format version.

    Raises
    ------
    ArtifactError
        The directory is missing, or incomplete (a listed file is absent), or its
        ``meta.json`` is missing, corrupt, or of another format or format version.
    """
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(
            f"model artifact {str(path)!r} does not exist; expected a directory "
            "written by Recommender.save"
        )
    meta = read_json(path / META_FILE, "model artifact meta")
    if meta.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(
            f"{str(path)!r} is not a recpipe model artifact (format "
            f"{meta.get('format')!r}, expected {ARTIFACT_FORMAT!r})"
        )
    version = meta.get("format_version")
    if version != ARTIFACT_FORMAT_VERSION:
        raise ArtifactError(
            f"model artifact {str(path)!r} has format version {version!r}; this recpipe "
            f"({__version__}) reads version {ARTIFACT_FORMAT_VERSION}"
        )
    files = meta.get("files")
    if not isinstance(files, list):
        raise ArtifactError(f"model artifact {str(path)!r}: meta.json lacks the file list")
    missing = [f for f in files if not (path / str(f)).is_file()]
    if missing:
        raise ArtifactError(f"model artifact {str(path)!r} is incomplete: missing {missing}")
    return meta


def read_artifact(path: Path | str, cls: type[Recommender]) -> Recommender:
    """Read an artifact written by :func:`write_artifact` that holds a ``cls`` model.

    Parameters
    ----------
    path : pathlib.Path or str
        The artifact directory.
    cls : type[Recommender]
        A concrete model class; the artifact must hold that model or a subclass of
        it (found among ``cls``'s subclasses by the model name the artifact records).

    Returns
    -------
    Recommender
        The fitted model.

    Raises
    ------
    ArtifactError
        The directory is missing, incomplete, corrupt, of another format version,
        or holds another model.
    """
    path = Path(path)
    meta = read_artifact_meta(path)
    name = meta.get("model")
    model_cls = _model_class(cls, name)
    if model_cls is None:
        raise ArtifactError(
            f"model artifact {str(path)!r} holds a {name!r} model, not a {cls.__name__}"
        )
    if meta.get("recpipe_version") != __version__:
        log.warning(
            "model artifact %s was written by recpipe %s; this is %s",
            path,
            meta.get("recpipe_version"),
            __version__,
        )
    try:
        config = model_cls.parse_config(read_json(path / CONFIG_FILE, "model config"))
    except ConfigError as err:  # names the bad key
        raise ArtifactError(f"model artifact {str(path)!r}: {err}") from None
    data_meta = _load_data_meta(path, meta)
    model = model_cls(config, data_meta)
    try:
        model._load_state(path)
    except ArtifactError:
        raise
    except _STATE_ERRORS as exc:
        raise ArtifactError(
            f"model artifact {str(path)!r}: cannot load the {name} state: {exc}"
        ) from exc
    model._fitted = True
    log.info("loaded %s artifact from %s", name, path)
    return model


def _model_class(cls: type[Recommender], name: Any) -> type[Recommender] | None:
    """``cls`` or its subclass named ``name`` (breadth first), or None."""
    queue = [cls]
    while queue:
        candidate = queue.pop(0)
        if getattr(candidate, "name", None) == name:
            return candidate
        queue.extend(candidate.__subclasses__())
    return None


def _load_data_meta(path: Path, meta: Mapping[str, Any]) -> DataMeta:
    data = meta.get("data")
    if not isinstance(data, Mapping):
        raise ArtifactError(f"model artifact {str(path)!r}: meta.json lacks the data sizes")
    counts = load_arrays(path / DATA_FILE, ["item_counts"])["item_counts"]
    item_map = IdMap.load(path / ITEM_MAP_FILE) if (path / ITEM_MAP_FILE).is_file() else None
    user_map = IdMap.load(path / USER_MAP_FILE) if (path / USER_MAP_FILE).is_file() else None
    categories = None
    if (path / CATEGORIES_FILE).is_file():
        arrays = load_arrays(path / CATEGORIES_FILE, csr_keys("categories"))
        shape = tuple(int(x) for x in arrays["categories_shape"])
        categories = csr_from_arrays(arrays, "categories", (shape[0], shape[1]))
    content, encoder = _load_content(path)
    try:
        return DataMeta(
            n_items=int(data["n_items"]),
            n_users=int(data["n_users"]),
            item_counts=counts,
            split=str(data.get("split", "")),
            item_map=item_map,
            user_map=user_map,
            item_categories=categories,
            item_content=content,
            item_encoder=encoder,
            gap_buckets=(meta.get("preprocessing") or {}).get("gap_buckets"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"model artifact {str(path)!r}: inconsistent data meta: {exc}") from exc


def _load_content(path: Path) -> tuple[ItemContent | None, ContentEncoder | None]:
    """The item content and encoder an artifact holds (None for what it lacks)."""
    content_dir, encoder_dir = path / ITEM_CONTENT_DIR, path / ITEM_ENCODER_DIR
    if not (content_dir.is_dir() or encoder_dir.is_dir()):
        return None, None
    from recpipe.features.content import ContentEncoder, ItemContent

    try:
        content = ItemContent.load(content_dir) if content_dir.is_dir() else None
        encoder = ContentEncoder.load(encoder_dir) if encoder_dir.is_dir() else None
    except ArtifactError as exc:
        raise ArtifactError(f"model artifact {str(path)!r}: {exc}") from exc
    except _STATE_ERRORS as exc:
        raise ArtifactError(
            f"model artifact {str(path)!r}: cannot read the item content: {exc}"
        ) from exc
    return content, encoder


def save_arrays(path: Path, **arrays: np.ndarray) -> Path:
    """Write named arrays to an ``.npz`` file (no pickled objects).

    Parameters
    ----------
    path : pathlib.Path
        The file to write.
    **arrays : numpy.ndarray
        Numeric or fixed-width string arrays (object arrays are refused).
    """
    for key, arr in arrays.items():
        if np.asarray(arr).dtype == object:
            raise TypeError(f"array {key!r} has dtype object, which cannot be saved without pickle")
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def load_arrays(path: Path, keys: Collection[str]) -> dict[str, np.ndarray]:
    """Read the ``keys`` of an ``.npz`` file written by :func:`save_arrays`.

    Raises
    ------
    ArtifactError
        The file is missing or corrupt, or lacks a key.
    """
    if not path.is_file():
        raise ArtifactError(f"artifact file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = sorted(set(keys) - set(npz.files))
            if missing:
                raise ArtifactError(
                    f"artifact file {str(path)!r} lacks array(s) {missing}; it holds {npz.files}"
                )
            return {k: npz[k] for k in keys}
    except ArtifactError:
        raise
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"artifact file {str(path)!r} is corrupt: {exc}") from exc


def csr_to_arrays(prefix: str, matrix: sp.spmatrix | sp.sparray) -> dict[str, np.ndarray]:
    """A sparse matrix as ``{prefix_data, prefix_indices, prefix_indptr, prefix_shape}``."""
    m = sp.csr_matrix(matrix)
    return {
        f"{prefix}_data": m.data,
        f"{prefix}_indices": m.indices,
        f"{prefix}_indptr": m.indptr,
        f"{prefix}_shape": np.asarray(m.shape, dtype=np.int64),
    }


def csr_keys(prefix: str) -> list[str]:
    """The keys :func:`csr_to_arrays` writes for ``prefix``."""
    return [f"{prefix}_{k}" for k in ("data", "indices", "indptr", "shape")]


def csr_from_arrays(
    arrays: Mapping[str, np.ndarray], prefix: str, shape: tuple[int, int]
) -> sp.csr_matrix:
    """Rebuild the matrix written by :func:`csr_to_arrays`, checking its structure.

    Raises
    ------
    ArtifactError
        The arrays do not form a valid CSR matrix of ``shape``.
    """
    stored = tuple(int(s) for s in arrays[f"{prefix}_shape"])
    if stored != tuple(shape):
        raise ArtifactError(f"sparse matrix {prefix!r} has shape {stored}, expected {shape}")
    try:
        m = sp.csr_matrix(
            (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
            shape=shape,
        )
        m.check_format(full_check=True)
    except (ValueError, TypeError, IndexError) as exc:
        raise ArtifactError(f"sparse matrix {prefix!r} is corrupt: {exc}") from exc
    return m


def expect_shape(arr: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Return ``arr`` if it has ``shape``; otherwise raise :class:`ArtifactError`."""
    if arr.shape != shape:
        raise ArtifactError(f"{what} has shape {arr.shape}, expected {shape}")
    return arr
