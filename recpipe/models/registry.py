"""The registry of model names: :data:`MODELS`, :func:`get_model`, :func:`build_model`
and :func:`load_model`.

:data:`MODELS` is a plain dict ``{name: model class}``, written out by hand in
:func:`_registry`; a new model joins it with one line there (and is then covered by
the contract test suite). The dict is built on first access rather than at import,
because some model modules pull in heavy libraries (torch); importing this module
stays cheap and free of side effects. No model module imports the registry.

>>> from recpipe.models.registry import MODELS, get_model
>>> get_model("pop") is MODELS["pop"]
True
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recpipe.errors import ArtifactError
from recpipe.models.artifact import read_artifact_meta
from recpipe.models.base import ModelConfig, Recommender
from recpipe.models.data import DataMeta

if TYPE_CHECKING:
    MODELS: dict[str, type[Recommender]]

__all__ = ["MODELS", "build_model", "get_model", "load_model"]


@cache
def _registry() -> dict[str, type[Recommender]]:
    """Build :data:`MODELS` once: every model class, checked against the contract."""
    from recpipe.baselines.bias import BiasBaseline
    from recpipe.baselines.category_pop import CategoryPopularity
    from recpipe.baselines.context_pop import ContextPopularity
    from recpipe.baselines.implicit_mf import ALS, BPR
    from recpipe.baselines.itemknn import ItemKNN
    from recpipe.baselines.markov import MarkovChain, SequentialRules
    from recpipe.baselines.popularity import Popularity, RecentPopularity
    from recpipe.baselines.sknn import SessionKNN
    from recpipe.models.content2cf import Content2CF
    from recpipe.models.content2vec import Content2Vec
    from recpipe.models.deepfm import DeepFM
    from recpipe.models.gru4rec import ContextualGRU4Rec, GRU4Rec
    from recpipe.models.mf import MFBCE, MFBPR, MFExplicit, MFWeighted
    from recpipe.models.wide_deep import WideAndDeep

    models: dict[str, type[Recommender]] = {}
    for model in (
        Popularity,
        RecentPopularity,
        ItemKNN,
        MarkovChain,
        SequentialRules,
        SessionKNN,
        ALS,
        BPR,
        BiasBaseline,
        CategoryPopularity,
        ContextPopularity,
        MFExplicit,
        MFBCE,
        MFBPR,
        MFWeighted,
        WideAndDeep,
        DeepFM,
        GRU4Rec,
        ContextualGRU4Rec,
        Content2CF,
        Content2Vec,
    ):
        model.check_contract()
        if model.name in models:
            raise TypeError(
                f"model name {model.name!r} is taken by both {models[model.name].__qualname__} "
                f"and {model.__qualname__}"
            )
        models[model.name] = model
    return models


def __getattr__(name: str) -> Any:
    if name == "MODELS":
        return _registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"MODELS"})


def get_model(name: str) -> type[Recommender]:
    """The model class registered as ``name``.

    Raises
    ------
    ValueError
        ``name`` is not registered; the message lists the known names.
    """
    models = _registry()
    try:
        return models[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; known: {sorted(models)}") from None


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
    models = _registry()
    model_cls = models.get(name) if isinstance(name, str) else None
    if model_cls is None:
        raise ArtifactError(
            f"model artifact {str(path)!r} holds unknown model {name!r}; known: {sorted(models)}"
        )
    return model_cls.load(path)
