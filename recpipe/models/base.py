"""The model contract: the :class:`Recommender` base class and its :class:`ModelConfig`.

Every model and baseline in recpipe is a :class:`Recommender`, so that ``evaluate/``,
``gates/`` and ``serve/`` treat them all alike. The contract, in full:

- **Built from** ``(config, meta)``: ``config`` is the model's own pydantic
  :class:`ModelConfig` (unknown keys are errors), ``meta`` the
  :class:`~recpipe.models.data.DataMeta` of the split it is trained on (table sizes and
  train popularity). Sizes that come from data are never configured.
- **fit** ``(train: Interactions, valid: Interactions | None) -> self``. Same config,
  same data and same ``config.seed`` give the same scores.
- **score** ``(queries: Queries, candidates=None) -> ndarray``: one row of float32
  scores per query, higher is better. Without candidates the row covers the whole
  catalogue, ``(B, n_items)``, and the reserved slots (:data:`~recpipe.features.idmap.PAD`,
  :data:`~recpipe.features.idmap.UNK`) hold ``-inf``; with candidates ``(B, C)`` (or
  ``(C,)``, shared by every query) the result is ``(B, C)``. Every other score is
  finite. A model declares the query kinds it understands in :attr:`Recommender.query_kinds`;
  any other kind raises :class:`ValueError` naming the supported ones.
- **save** ``(path)`` writes a self-contained artifact directory
  (:mod:`recpipe.models.artifact`); ``SomeModel.load(path)`` reads one back without
  params.yaml, and :func:`recpipe.models.registry.load_model` reads whatever model an
  artifact holds (dispatching on the model name it records). A missing, incomplete or
  corrupt artifact raises :class:`~recpipe.errors.ArtifactError`.

The data containers (:class:`~recpipe.models.data.DataMeta`,
:class:`~recpipe.models.data.Interactions`, :class:`~recpipe.models.data.Queries`) live
in :mod:`recpipe.models.data`; the registry of model names in
:mod:`recpipe.models.registry`. B: batch of queries, C: candidates.

============================  ==============================================================
:class:`ModelConfig`          base of every model config (``seed``; extra keys forbidden)
:class:`Recommender`          the abstract model: subclasses implement ``_fit``, ``_score``,
                              ``_save_state`` and ``_load_state``
:class:`NotFittedError`       a model asked to score or save before ``fit``
============================  ==============================================================
"""

from __future__ import annotations

import inspect
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recpipe.errors import ConfigError, RecpipeError
from recpipe.features.idmap import N_RESERVED
from recpipe.models.artifact import read_artifact, write_artifact
from recpipe.models.data import QUERY_KINDS, DataMeta, Interactions, Queries, check_range, int_array
from recpipe.models.space import SearchSpace

log = logging.getLogger(__name__)


class NotFittedError(RecpipeError, RuntimeError):
    """A model was asked to score or save before :meth:`Recommender.fit`."""


# ---------------------------------------------------------------------- config
class ModelConfig(BaseModel):
    """Base of every model config: unknown keys are errors; values are frozen.

    Every field has a default, so ``Config()`` is a working model. Sizes that come
    from data (n_items, n_users) never appear here: they come from :class:`DataMeta`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(default=0, description="seed of every random choice in fit")


def _config_error(err: ValidationError, model: str) -> str:
    lines = [f"invalid config for model {model!r}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key (not an option of {model!r})")
        else:
            lines.append(f"  - {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


# ---------------------------------------------------------------------- Recommender
class Recommender(ABC):
    """A recommender model: built from ``(config, meta)``, fitted, scored, saved, loaded.

    Subclasses set the class attributes and implement four hooks:

    - ``_fit(train, valid)``: learn from the events (sizes from ``self.meta``).
    - ``_score(queries) -> (B, n_items)``: scores for every item, a new array the
      caller may modify (reserved slots may hold anything; :meth:`score` masks them).
      Override ``_score_candidates(queries, candidates)`` too when scoring a subset
      is cheaper than scoring everything.
    - ``_save_state(path)`` / ``_load_state(path)``: write / read the fitted state
      inside the artifact directory (use :func:`~recpipe.models.artifact.save_arrays` /
      :func:`~recpipe.models.artifact.load_arrays`).

    Class attributes
    ----------------
    name : str
        Registry name (:data:`recpipe.models.registry.MODELS` key), recorded in artifacts.
    Config : type[ModelConfig]
        The config class (pydantic, ``extra="forbid"``).
    query_kinds : frozenset[str]
        The :class:`Queries` kinds the model can score.
    uses_content : bool
        Whether the model reads ``meta.item_content`` (default False); if so,
        :meth:`save` copies the item content and its encoder into the artifact.

    Parameters
    ----------
    config : ModelConfig, mapping or None
        An instance of ``Config``, or a mapping validated into one (None: defaults).
    meta : DataMeta
        Sizes and popularity of the split.

    Raises
    ------
    ConfigError
        ``config`` has an unknown key or a bad value; the message names the key.

    Examples
    --------
    >>> import pandas as pd
    >>> from recpipe.models.data import DataMeta, Interactions, Queries
    >>> from recpipe.models.registry import build_model
    >>> frame = pd.DataFrame({"session_id": ["s1", "s1", "s2"], "user_idx": [2, 2, 3],
    ...                       "item_idx": [2, 3, 2], "timestamp": [0, 1, 2]})
    >>> train = Interactions.from_frame(frame)
    >>> model = build_model("pop", {}, DataMeta.from_interactions(train)).fit(train)
    >>> model.score(Queries.for_users([2])).tolist()
    [[-inf, -inf, 2.0, 1.0]]
    """

    name: ClassVar[str]
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    query_kinds: ClassVar[frozenset[str]]
    #: The options worth tuning (:mod:`recpipe.models.space`); empty: nothing to tune.
    search_space: ClassVar[SearchSpace] = {}
    #: Whether user scores are predicted ratings (evaluable by the ``rating`` protocol).
    predicts_ratings: ClassVar[bool] = False
    #: Whether the model reads ``meta.item_content``; its artifacts then carry the item
    #: content and encoder (other models' artifacts stay small).
    uses_content: ClassVar[bool] = False

    def __init__(self, config: ModelConfig | Mapping[str, Any] | None, meta: DataMeta) -> None:
        if not isinstance(meta, DataMeta):
            raise TypeError(f"meta must be a DataMeta, got {type(meta).__name__}")
        self.config = type(self).parse_config(config)
        self.meta = meta
        self._fitted = False

    # class-level checks -----------------------------------------------------
    @classmethod
    def parse_config(cls, config: ModelConfig | Mapping[str, Any] | None) -> ModelConfig:
        """Validate ``config`` into ``cls.Config``; :class:`ConfigError` names bad keys."""
        if isinstance(config, cls.Config):
            return config
        if isinstance(config, ModelConfig):
            raise ConfigError(
                f"model {cls.name!r} takes a {cls.Config.__name__}, got {type(config).__name__}"
            )
        if config is not None and not isinstance(config, Mapping):
            raise ConfigError(
                f"config of model {cls.name!r} must be a mapping, got {type(config).__name__}"
            )
        try:
            return cls.Config.model_validate(dict(config or {}))
        except ValidationError as err:
            raise ConfigError(_config_error(err, cls.name)) from None

    @classmethod
    def training_options(
        cls, options: Mapping[str, Any], *, device: str, max_epochs: int | None
    ) -> dict[str, Any]:
        """The options the ``train`` stage builds this model with: ``options`` (from
        ``train.model_configs``) with the stage-wide ``train.device`` and
        ``train.max_epochs`` applied where the model has such settings. A model without
        a training loop takes its options as they are; subclasses with one override
        this (so the stage needs no per-model cases)."""
        return dict(options)

    @classmethod
    def check_contract(cls) -> None:
        """Raise :class:`TypeError` if the class attributes break the contract (used by
        the registry, so that a broken model fails at registration, not at serving)."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__qualname__}.name must be a non-empty string")
        if not (isinstance(cls.Config, type) and issubclass(cls.Config, ModelConfig)):
            raise TypeError(f"{cls.__qualname__}.Config must subclass ModelConfig")
        if cls.Config.model_config.get("extra") != "forbid":
            raise TypeError(f"{cls.__qualname__}.Config must forbid extra keys")
        kinds = getattr(cls, "query_kinds", None)
        if not isinstance(kinds, frozenset) or not kinds or not kinds <= QUERY_KINDS:
            raise TypeError(
                f"{cls.__qualname__}.query_kinds must be a non-empty frozenset of "
                f"{sorted(QUERY_KINDS)}, got {kinds!r}"
            )
        if getattr(cls, "__abstractmethods__", None):
            raise TypeError(
                f"{cls.__qualname__} leaves {sorted(cls.__abstractmethods__)} unimplemented"
            )

    # fit / score ------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`load`) has run."""
        return self._fitted

    def fit(self, train: Interactions, valid: Interactions | None = None) -> Self:
        """Learn from ``train``; ``valid`` may drive early stopping.

        Parameters
        ----------
        train : Interactions
            Training events, indices within ``meta``'s sizes.
        valid : Interactions, optional
            Held-out events (indices within the same sizes).

        Returns
        -------
        Self
            The fitted model.
        """
        for what, data in (("train", train), ("valid", valid)):
            if data is None:
                continue
            check_range(data.item_idx, self.meta.n_items, f"{what} item_idx")
            check_range(data.user_idx, self.meta.n_users, f"{what} user_idx")
        start = time.perf_counter()
        self._fit(train, valid)
        self._fitted = True
        log.info(
            "fitted %s on %d events (%d sessions) in %.2f s",
            self.name,
            len(train),
            train.n_sessions,
            time.perf_counter() - start,
        )
        return self

    def score(self, queries: Queries, candidates: np.ndarray | None = None) -> np.ndarray:
        """Score items for each query; higher is better.

        Parameters
        ----------
        queries : Queries
            B queries of a kind in :attr:`query_kinds`.
        candidates : numpy.ndarray, optional
            (B, C) item indices to score per query, or (C,) for every query.

        Returns
        -------
        numpy.ndarray
            float32 (B, n_items) without candidates, else (B, C). Reserved slots
            (PAD, UNK) score ``-inf``; every other score is finite.

        Raises
        ------
        ValueError
            The query kind is not supported, or an index is out of range.
        NotFittedError
            The model is not fitted.
        """
        self._require_fitted()
        self._check_queries(queries)
        b = len(queries)
        if candidates is None:
            out = np.asarray(self._score(queries), dtype=np.float32)
            if out.shape != (b, self.meta.n_items):
                raise RuntimeError(
                    f"{self.name}._score returned shape {out.shape}, expected "
                    f"{(b, self.meta.n_items)}"
                )
            if not out.flags.writeable:
                out = out.copy()
            out[:, :N_RESERVED] = -np.inf
            return out
        cand = int_array(candidates, "candidates", np.ndim(candidates))
        if cand.ndim == 1:
            cand = np.broadcast_to(cand, (b, cand.shape[0]))
        if cand.ndim != 2 or cand.shape[0] != b:
            raise ValueError(f"candidates must be (C,) or ({b}, C), got shape {cand.shape}")
        check_range(cand, self.meta.n_items, "candidates")
        out = np.asarray(self._score_candidates(queries, cand), dtype=np.float32)
        if out.shape != cand.shape:
            raise RuntimeError(
                f"{self.name}._score_candidates returned shape {out.shape}, expected {cand.shape}"
            )
        if not out.flags.writeable:
            out = out.copy()
        out[cand < N_RESERVED] = -np.inf
        return out

    def item_vectors(self) -> np.ndarray | None:
        """(n_items, D) float32 vectors of the items, when the model has any.

        The cold-start strategies (:mod:`recpipe.models.coldstart`) compare items and
        aggregate request items by the cosine of these vectors. The default (models
        without item embeddings: popularity, kNN, Markov) is None.
        """
        return None

    def _check_queries(self, queries: Queries) -> None:
        if not isinstance(queries, Queries):
            raise TypeError(f"queries must be Queries, got {type(queries).__name__}")
        if queries.kind not in self.query_kinds:
            raise ValueError(
                f"model {self.name!r} cannot score {queries.kind!r} queries; it supports "
                f"{sorted(self.query_kinds)}"
            )
        if queries.users is not None:
            check_range(queries.users, self.meta.n_users, "query users")
        if queries.items is not None:
            check_range(queries.items, self.meta.n_items, "query items")

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise NotFittedError(f"model {self.name!r} is not fitted; call fit() or load()")

    @abstractmethod
    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        """Learn the model's state from ``train`` (and optionally ``valid``)."""

    @abstractmethod
    def _score(self, queries: Queries) -> np.ndarray:
        """(B, n_items) scores of every item for each query (a new array)."""

    def _score_candidates(self, queries: Queries, candidates: np.ndarray) -> np.ndarray:
        """(B, C) scores of ``candidates`` (B, C); by default gathered from :meth:`_score`."""
        return np.take_along_axis(self._score(queries), candidates, axis=1)

    # persistence --------------------------------------------------------------
    @abstractmethod
    def _save_state(self, path: Path) -> None:
        """Write the fitted state into the (new, empty but for base files) ``path``."""

    @abstractmethod
    def _load_state(self, path: Path) -> None:
        """Read the state written by :meth:`_save_state`; raise ArtifactError if corrupt."""

    def save(self, path: Path | str) -> Path:
        """Write a self-contained artifact directory, replacing an older artifact.

        The artifact (:mod:`recpipe.models.artifact`) is assembled in a temporary
        sibling folder and moved into place when complete, so a reader never sees
        half an artifact.

        Parameters
        ----------
        path : pathlib.Path or str
            The artifact directory (e.g. ``models/<name>``); parents are created.

        Returns
        -------
        pathlib.Path
            ``path``.

        Raises
        ------
        NotFittedError
            The model is not fitted.
        ArtifactError
            ``path`` exists and is not a recpipe model artifact (it is never replaced).
        """
        self._require_fitted()
        return write_artifact(self, path)

    @classmethod
    def load(cls, path: Path | str) -> Self:
        """Read an artifact written by :meth:`save` that holds a model of this class.

        Call it on a concrete class (``ItemKNN.load(p)``); the artifact must hold that
        model (or a subclass of it). To load whatever model an artifact holds, use
        :func:`recpipe.models.registry.load_model`.

        Raises
        ------
        TypeError
            ``cls`` is abstract (e.g. ``Recommender`` itself).
        ArtifactError
            The directory is missing, incomplete, corrupt, of another format version,
            or holds another model.
        """
        if inspect.isabstract(cls):
            raise TypeError(
                f"{cls.__name__}.load needs a concrete model class; load an artifact of "
                "any model with recpipe.models.registry.load_model(path)"
            )
        return cast(Self, read_artifact(path, cls))

    def __repr__(self) -> str:
        state = "fitted" if self._fitted else "not fitted"
        return f"{type(self).__name__}({self.config!r}, n_items={self.meta.n_items}, {state})"
