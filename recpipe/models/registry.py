"""The registry of model names: :data:`ENTRIES`, :data:`MODELS`, :func:`get_model`,
:func:`build_model` and :func:`load_model`.

:data:`~recpipe.models.names.ENTRIES` maps every registered name to the class that
implements it, written out by hand as ``"module:Class"``; a new model joins it with one
line there (and is then covered by the contract test suite). A class is imported the
first time its name is asked for, because model modules pull in heavy libraries
(torch): checking names (:data:`NAMES`) imports no model, and asking for one model
imports only its module. :data:`MODELS` (``{name: model class}``, every model) is
built on first access. No model module imports the registry.

>>> from recpipe.models.registry import MODELS, get_model
>>> get_model("pop") is MODELS["pop"]
True
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recpipe.errors import ArtifactError
from recpipe.models.artifact import read_artifact_meta
from recpipe.models.base import ModelConfig, Recommender
from recpipe.models.data import DataMeta
from recpipe.models.names import ENTRIES, NAMES

if TYPE_CHECKING:
    MODELS: dict[str, type[Recommender]]

__all__ = ["ENTRIES", "MODELS", "NAMES", "build_model", "get_model", "load_model"]


@cache
def _load(name: str) -> type[Recommender]:
    """Import the class registered as ``name`` and check it against the contract."""
    module, _, attr = ENTRIES[name].partition(":")
    model: type[Recommender] = getattr(importlib.import_module(module), attr)
    if model.name != name:
        raise TypeError(
            f"{ENTRIES[name]} is registered as {name!r} but names itself {model.name!r}"
        )
    model.check_contract()
    return model


def _registry() -> dict[str, type[Recommender]]:
    """Every model class (imports them all)."""
    return {name: _load(name) for name in ENTRIES}


def __getattr__(name: str) -> Any:
    if name == "MODELS":
        return _registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"MODELS"})


def get_model(name: str) -> type[Recommender]:
    """The model class registered as ``name`` (imports its module only).

    Raises
    ------
    ValueError
        ``name`` is not registered; the message lists the known names.
    """
    if not isinstance(name, str) or name not in ENTRIES:
        raise ValueError(f"unknown model {name!r}; known: {sorted(ENTRIES)}")
    return _load(name)


def build_model(
    name: str, config: Mapping[str, Any] | ModelConfig | None, meta: DataMeta
) -> Recommender:
    """An unfitted model ``name`` built from a config mapping (as in params.yaml).

    Parameters
    ----------
    name : str
        Registry name.
    config : mapping, ModelConfig or None
        The model's options; None or ``{}`` for the defaults.
    meta : DataMeta
        Sizes and popularity of the split.

    Raises
    ------
    ValueError
        Unknown model name.
    ConfigError
        Unknown option or bad value; the message names the key.
    """
    return get_model(name)(config, meta)


def load_model(path: Path | str) -> Recommender:
    """Read a model artifact, whatever model it holds.

    The artifact's ``meta.json`` names the model; its registered class reads the rest
    (:meth:`Recommender.load <recpipe.models.base.Recommender.load>`), without
    params.yaml.

    Parameters
    ----------
    path : pathlib.Path or str
        An artifact directory written by
        :meth:`Recommender.save <recpipe.models.base.Recommender.save>`.

    Raises
    ------
    ArtifactError
        The directory is missing, incomplete, corrupt, of another format version, or
        holds a model that is not registered (the message lists the known names).
    """
    path = Path(path)
    name = read_artifact_meta(path).get("model")
    if not isinstance(name, str) or name not in ENTRIES:
        raise ArtifactError(
            f"model artifact {str(path)!r} holds unknown model {name!r}; known: {sorted(ENTRIES)}"
        )
    return _load(name).load(path)
