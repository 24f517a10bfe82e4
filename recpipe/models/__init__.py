"""Models behind one contract (:mod:`recpipe.models.base`) and the registry that names them.

:data:`MODELS` is a plain dict ``{name: model class}``, written out by hand in
:func:`_registry`; a new model joins it with one line there (and is then covered by
the contract test suite). The dict is built on first access rather than at import,
because the model modules import :mod:`recpipe.models.base` themselves and some pull
in heavy libraries (torch); importing :mod:`recpipe.models` stays cheap and free of
side effects.

>>> from recpipe.models import MODELS, get_model
>>> get_model("pop") is MODELS["pop"]
True
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from recpipe.models.base import (
    QUERY_KINDS,
    DataMeta,
    Interactions,
    ModelConfig,
    NotFittedError,
    Queries,
    Recommender,
)

if TYPE_CHECKING:
    MODELS: dict[str, type[Recommender]]

__all__ = [
    "MODELS",
    "QUERY_KINDS",
    "DataMeta",
    "Interactions",
    "ModelConfig",
    "NotFittedError",
    "Queries",
    "Recommender",
    "build_model",
    "get_model",
]


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
    from recpipe.models.ctr import DeepFM, WideAndDeep
    from recpipe.models.gru4rec import ContextualGRU4Rec, GRU4Rec
    from recpipe.models.mf import MFBCE, MFBPR, MFExplicit, MFWeighted

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
