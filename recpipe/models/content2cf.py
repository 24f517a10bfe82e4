"""``content2cf``: collaborative-filtering factors predicted from item content.

After van den Oord, Dieleman & Schrauwen 2013 ("Deep content-based music
recommendation"): a matrix factorisation of the implicit feedback gives every warm
item a latent factor vector; a network then learns to map an item's *content* to its
factor vector, so that items without any usage (cold items) get factors from their
content and can be recommended to users like any other item. The paper maps audio to
the factors of weighted matrix factorisation; here the content is the items'
categories, hashed title / text n-grams and numeric attributes
(:class:`~recpipe.models.content.ContentTower`), and the factors come from one of the
registered implicit MF models (``factors_model``: ``mf_wals``, the paper's WMF, by
default; ``mf_bpr``; ``mf_bce``).

Fit:

1. the factors model is built with ``factors_config`` (its ``seed`` and ``device``
   default to this model's) and fitted on ``train`` (and on ``valid`` for its early
   stopping, unless ``factors_early_stopping`` is off); its
   :meth:`~recpipe.models.mf._MF.factors` give user vectors ``[p_u, 1]`` and item
   vectors ``[q_i, b_i]`` (D + 1), whose dot product ``p_u . q_i + b_i`` ranks items
   as the factors model does;
2. the tower is trained to map the content of each warm item (train events and some
   content) to its item vector, by mean squared error (``loss="mse"``, the paper's
   objective) or cosine distance (``"cosine"``); a seeded ``valid_fraction`` of the
   warm items is held out and early stopping follows its loss (``valid_loss``).

Item vectors: warm items keep their learned factors (``warm_items="learned"``) or
take the predicted ones (``"predicted"``, what the paper evaluates); cold items with
content take the predicted ones; items with neither are the zero vector.

Scoring: ``user`` queries score ``[p_u, 1] . v_i``; users without train events (the
UNK user among them) score by popularity. ``session`` / ``item`` queries score by
cosine similarity to the prefix (see :mod:`recpipe.models.content`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from recpipe.features.idmap import N_RESERVED
from recpipe.models.artifact import expect_shape
from recpipe.models.content import (
    ContentBatch,
    ContentColumns,
    ContentModelConfig,
    ContentRecommender,
    ContentTower,
    usable_rows,
)
from recpipe.models.data import DataMeta, Interactions
from recpipe.models.mf import MFBCE, MFBPR, MFWeighted
from recpipe.models.space import Float, Int, SearchSpace

log = logging.getLogger(__name__)

__all__ = ["Content2CF", "Content2CFConfig"]

#: Item-vector sources recorded per item (``item_source`` in the state).
NO_VECTOR, LEARNED, PREDICTED = 0, 1, 2
#: Fewest warm items for a held-out validation part.
_MIN_WARM_FOR_VALID = 10
#: The implicit MF models that can give the factors (``factors_model``), by registry name.
_FACTORS_MODELS: dict[str, type[MFBCE | MFBPR | MFWeighted]] = {
    model.name: model for model in (MFWeighted, MFBPR, MFBCE)
}


class Content2CFConfig(ContentModelConfig):
    """Options of ``content2cf`` (plus the content tower's and the training loop's)."""

    factors_model: Literal["mf_wals", "mf_bpr", "mf_bce"] = Field(
        default="mf_wals", description="the registered implicit MF model giving the factors"
    )
    factors_config: dict[str, Any] = Field(
        default_factory=dict, description="options of the factors model (seed, device default)"
    )
    factors_early_stopping: bool = Field(
        default=True,
        description="fit the factors model with the validation part (its early stopping)",
    )
    loss: Literal["mse", "cosine"] = Field(
        default="mse", description="content -> factors regression loss"
    )
    warm_items: Literal["learned", "predicted"] = Field(
        default="learned", description="score warm items by their learned or predicted factors"
    )
    valid_fraction: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="warm items held out for early stopping"
    )
    epochs: int = Field(default=100, ge=1, description="most epochs to train the tower")
    batch_size: int = Field(default=256, ge=1, description="items per minibatch")
    learning_rate: float = Field(default=1e-3, gt=0)
    patience: int | None = Field(default=5, ge=1)


class Content2CF(ContentRecommender):
    """Content -> MF factors regression for cold-start items (see the module docstring)."""

    name: ClassVar[str] = "content2cf"
    search_space: ClassVar[SearchSpace] = {
        "learning_rate": Float(1e-4, 1e-2, log=True),
        "dropout": Float(0.0, 0.5),
        "hidden": Int(64, 512, log=True, as_tuple=True),
    }
    #: a minibatch is an array of item rows and the loss their mean: plain row shards
    ddp_sharding: ClassVar[Literal["rows", "batches"]] = "rows"
    Config: ClassVar[type[Content2CFConfig]] = Content2CFConfig
    config: Content2CFConfig

    def __init__(self, config: Any, meta: DataMeta) -> None:
        super().__init__(config, meta)
        _FACTORS_MODELS[self.config.factors_model].parse_config(self._factors_options())
        self._user_vectors = np.zeros((meta.n_users, 0), dtype=np.float32)
        self._known_users = np.zeros(meta.n_users, dtype=bool)
        self._item_source = np.zeros(meta.n_items, dtype=np.int8)
        self._dim = 0

    @classmethod
    def training_options(
        cls, options: Mapping[str, Any], *, device: str, max_epochs: int | None
    ) -> dict[str, Any]:
        """As for every torch model, and the epoch cap applies to the inner factors
        model too (its device follows this model's, see :meth:`_factors_options`)."""
        out = super().training_options(options, device=device, max_epochs=max_epochs)
        if max_epochs is not None:
            inner = dict(out.get("factors_config", {}))
            inner_cls = _FACTORS_MODELS[out.get("factors_model", cls.Config().factors_model)]
            inner["epochs"] = min(int(inner.get("epochs", inner_cls.Config().epochs)), max_epochs)  # type: ignore[attr-defined]
            out["factors_config"] = inner
        return out

    def _factors_options(self) -> dict[str, Any]:
        options = dict(self.config.factors_config)
        options.setdefault("seed", self.config.seed)
        options.setdefault("device", self.config.device)
        return options

    # training ------------------------------------------------------------------
    def _prepare(self, train: Interactions, valid: Interactions | None) -> None:
        cfg = self.config
        factors_model = _FACTORS_MODELS[cfg.factors_model](self._factors_options(), self.meta)
        factors_model.fit(train, valid if cfg.factors_early_stopping else None)
        users, items = factors_model.factors()
        self._user_vectors = np.ascontiguousarray(users[:, :-1], dtype=np.float32)
        targets = np.ascontiguousarray(items[:, :-1], dtype=np.float32)
        self._dim = targets.shape[1]
        self._targets = torch.from_numpy(targets)

        n_items = self.meta.n_items
        counts = np.bincount(train.item_idx, minlength=n_items)
        counts[:N_RESERVED] = 0
        self._warm = counts > 0
        user_counts = np.bincount(train.user_idx, minlength=self.meta.n_users)
        self._known_users = user_counts > 0
        self._known_users[:N_RESERVED] = False

        present = usable_rows(self.content)
        warm = np.flatnonzero(self._warm & present)
        if warm.size == 0:
            raise ValueError(
                f"{self.name}: no item has both train events and content to learn the "
                "content -> factors mapping from"
            )
        rng = np.random.default_rng(cfg.seed)
        warm = warm[rng.permutation(warm.shape[0])]
        n_valid = 0
        if warm.shape[0] >= _MIN_WARM_FOR_VALID:
            n_valid = round(cfg.valid_fraction * warm.shape[0])
        self._valid_rows = np.sort(warm[:n_valid])
        self._fit_rows = np.sort(warm[n_valid:])
        self._columns = ContentColumns.fit(
            self.content,
            self._fit_rows,
            categories=cfg.use_categories,
            text=cfg.use_text,
            numeric=cfg.use_numeric,
            all_categories=cfg.all_categories,
        )
        log.info(
            "%s: %s factors of %d dims; tower on %d warm items (%d held out), %d category "
            "and %d text columns, %d numeric",
            self.name,
            cfg.factors_model,
            self._dim,
            self._fit_rows.shape[0],
            self._valid_rows.shape[0],
            self._columns.n_categories,
            self._columns.n_text,
            self._columns.n_numeric,
        )

    def _out_dim(self) -> int:
        return self._dim

    def _build_module(self) -> ContentTower:
        assert self._columns is not None
        return ContentTower.from_columns(self._columns, self._dim, self.config)

    def _n_batches(self, epoch: int) -> int:
        return -(-self._fit_rows.shape[0] // self.config.batch_size)

    def _batches(self, epoch: int) -> Iterator[np.ndarray]:
        return iter(self._shuffled(self._fit_rows, epoch))

    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.config.loss == "cosine":
            return (1.0 - nn.functional.cosine_similarity(pred, target, dim=1)).mean()
        return nn.functional.mse_loss(pred, target)

    def _encode(
        self,
        module: nn.Module,
        batch: ContentBatch,
        rows: np.ndarray,
        ids_known: np.ndarray | None,
        device: torch.device,
    ) -> torch.Tensor:
        return module(batch)

    def _step(
        self, module: nn.Module, batch: np.ndarray, device: torch.device
    ) -> tuple[torch.Tensor, int]:
        pred = module(self._batch(self.content, batch, device))
        target = self._targets[torch.from_numpy(batch)].to(device)
        return self._loss(pred.float(), target), int(batch.shape[0])

    def _validation(
        self, train: Interactions, valid: Interactions | None
    ) -> Callable[[nn.Module, torch.device], Mapping[str, float]] | None:
        rows = self._valid_rows
        if rows.size == 0:
            return None

        def check(module: nn.Module, device: torch.device) -> Mapping[str, float]:
            total = 0.0
            for start in range(0, rows.shape[0], self.config.batch_size):
                chunk = rows[start : start + self.config.batch_size]
                loss, n = self._step(module, chunk, device)
                total += float(loss) * n
            return {"valid_loss": total / rows.shape[0]}

        return check

    def _finish(self, train: Interactions) -> None:
        assert self._columns is not None
        n_items = self.meta.n_items
        usable = usable_rows(self.content, self._columns)
        usable[:N_RESERVED] = False
        vectors = np.zeros((n_items, self._dim), dtype=np.float32)
        source = np.full(n_items, NO_VECTOR, dtype=np.int8)
        rows = np.flatnonzero(usable)
        vectors[rows] = self._predict(self.content, rows, None)
        source[rows] = PREDICTED
        learned = self._warm & (~usable | (self.config.warm_items == "learned"))
        vectors[learned] = self._targets.numpy()[learned]
        source[learned] = LEARNED
        self._item_source = source
        self._set_item_vectors(vectors)
        del self._targets
        log.info(
            "%s: %d items scored by learned factors, %d by predicted ones, %d have none",
            self.name,
            int((source == LEARNED).sum()),
            int((source == PREDICTED).sum()),
            int((source[N_RESERVED:] == NO_VECTOR).sum()),
        )

    # scoring -------------------------------------------------------------------
    def _user_query(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        return self._user_vectors[users], self._known_users[users], False

    def item_sources(self) -> np.ndarray:
        """(n_items,) int8 where each item's vector comes from: 0 none, 1 the learned
        factors, 2 predicted from content."""
        self._require_fitted()
        return self._item_source.copy()

    # persistence ---------------------------------------------------------------
    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {
            **super()._state_arrays(),
            "user_vectors": self._user_vectors,
            "known_users": self._known_users,
            "item_source": self._item_source,
        }

    def _state_keys(self) -> list[str]:
        return [*super()._state_keys(), "user_vectors", "known_users", "item_source"]

    def _set_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        super()._set_state(arrays)
        n_users, n_items = self.meta.n_users, self.meta.n_items
        self._dim = self._item_vectors.shape[1]
        self._user_vectors = expect_shape(
            arrays["user_vectors"], (n_users, self._dim), "user vectors"
        ).astype(np.float32)
        self._known_users = expect_shape(arrays["known_users"], (n_users,), "known users").astype(
            bool
        )
        self._item_source = expect_shape(arrays["item_source"], (n_items,), "item sources").astype(
            np.int8
        )
