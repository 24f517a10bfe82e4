"""``content2vec``: item embeddings from content modules and co-occurrence, for cold start.

After Nedelec, Smirnova & Vasile 2017 ("Specializing joint representations for the
task of product recommendation"): each item is embedded by modular feature
extractors whose outputs are joined into one item embedding, and the whole network
is trained end to end on a pairwise objective: items that co-occur (here: within
``window`` positions in the same train session) should have similar embeddings,
items drawn from the noise distribution (popularity ``** sampling_alpha``, 0.75 as
in word2vec / Prod2Vec) dissimilar, by a logistic loss on their similarity.

Modules (each can be switched off):

- categories: mean embedding of the item's categories;
- text: ``log1p``-weighted mean embedding of its hashed title / text n-grams;
- numeric: a linear layer over its standardised numeric attributes;
- Prod2Vec: an item-id embedding (``id_dim``, 0 to switch off), learnt from the same
  co-occurrences.

The outputs are concatenated and mapped to ``dim`` by one linear layer
("Content2Vec-linear", the default: ``hidden=()``); ``hidden`` adds hidden layers,
and ``residual`` adds a linear skip from the concatenation to the output next to
them (the paper's "Content2Vec-res" pairwise residual unit). So that items without
usage get good embeddings, the id embedding of each item in a minibatch is dropped
(zeroed) with probability ``id_dropout`` during training (as DropoutNet, Volkovs et
al. 2017, drops preference inputs), and always for items without train events at
scoring time: their embedding comes from content alone.

Scoring is by cosine similarity of the embeddings (see :mod:`recpipe.models.content`):
``item`` queries (similar items) and ``session`` queries (the recency-weighted mean of
the prefix); a ``user`` query is the recency-weighted mean of the user's last
``history`` train items in time order (users without train events score by
popularity). Early stopping follows the logistic loss of the validation part's
co-occurring pairs (``valid_loss``), each with seeded popularity negatives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from recpipe.features.idmap import N_RESERVED, PAD
from recpipe.features.sampling import NegativeSampler
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
from recpipe.models.embedding import aggregate_items
from recpipe.models.space import Choice, Float, Int, SearchSpace
from recpipe.train.device import to_device
from recpipe.train.distributed import row_bounds

log = logging.getLogger(__name__)

__all__ = ["Content2Vec", "Content2VecConfig", "Content2VecNet", "cooccurring_pairs"]

#: Most validation pairs scored for early stopping.
_MAX_VALID_PAIRS = 20_000


class Content2VecConfig(ContentModelConfig):
    """Options of ``content2vec`` (plus the content tower's and the training loop's)."""

    dim: int = Field(default=64, ge=1, description="size of the joint item embedding")
    hidden: tuple[PositiveInt, ...] = Field(
        default=(), description="hidden widths between the concatenation and the embedding"
    )
    residual: bool = Field(
        default=False, description="add a linear skip next to the hidden layers (needs hidden)"
    )
    id_dim: int = Field(default=32, ge=0, description="Prod2Vec item-id embedding size (0: off)")
    id_dropout: float = Field(
        default=0.5, ge=0.0, le=1.0, description="chance of dropping an item's id in training"
    )
    window: int = Field(default=3, ge=1, description="co-occurrence window within a session")
    negatives: int = Field(default=4, ge=1, description="noise items per co-occurring pair")
    sampling_alpha: float = Field(default=0.75, ge=0.0, description="noise ~ count ** alpha")
    similarity: Literal["cosine", "dot"] = Field(
        default="cosine", description="similarity inside the logistic loss"
    )
    temperature: float = Field(
        default=0.1, gt=0.0, description="cosine similarities are divided by this"
    )
    history: int = Field(default=50, ge=1, description="last train items of a user query")
    epochs: int = Field(default=20, ge=1, description="most epochs to train")
    batch_size: int = Field(default=512, ge=1, description="co-occurring pairs per minibatch")
    learning_rate: float = Field(default=3e-3, gt=0)
    patience: int | None = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _residual_needs_hidden(self) -> Content2VecConfig:
        if self.residual and not self.hidden:
            raise ValueError("residual=true needs hidden layers (hidden=[...]) to skip over")
        return self


def cooccurring_pairs(data: Interactions, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) item pairs at most ``window`` positions apart in the same session.

    Pairs with a reserved item (padding, unknown) or of an item with itself are left out;
    each pair appears once per occurrence, the earlier item first.

    Returns
    -------
    tuple of numpy.ndarray
        (P,) int64 earlier items and (P,) int64 later items.
    """
    items = data.item_idx.astype(np.int64)
    sessions = data.session_index
    first, second = [], []
    for gap in range(1, window + 1):
        if items.shape[0] <= gap:
            break
        a, b = items[:-gap], items[gap:]
        keep = (sessions[:-gap] == sessions[gap:]) & (a >= N_RESERVED) & (b >= N_RESERVED)
        keep &= a != b
        first.append(a[keep])
        second.append(b[keep])
    if not first:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(first), np.concatenate(second)


class Content2VecNet(nn.Module):
    """Content modules and an item-id embedding joined into one item embedding.

    Parameters
    ----------
    columns : ContentColumns
        The content columns read.
    n_items : int
        Size of the item-id table.
    config : Content2VecConfig
        Sizes (``dim``, ``id_dim``, the tower's) and the combination.
    """

    def __init__(self, columns: ContentColumns, n_items: int, config: Content2VecConfig) -> None:
        super().__init__()
        self.ids: nn.Embedding | None = None
        if config.id_dim:
            self.ids = nn.Embedding(n_items, config.id_dim)
            nn.init.normal_(self.ids.weight, std=0.1)
        self.tower = ContentTower.from_columns(columns, config.dim, config, extra_dim=config.id_dim)
        self.skip: nn.Linear | None = None
        if config.residual:
            self.skip = nn.Linear(self.tower.in_dim, config.dim)

    def forward(
        self, batch: ContentBatch, items: torch.Tensor, id_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, dim) embeddings of B items.

        Parameters
        ----------
        batch : ContentBatch
            The items' content.
        items : torch.Tensor
            (B,) int64 item indices (for the id embedding).
        id_mask : torch.Tensor
            (B,) float: 1 keeps the item's id embedding, 0 drops it.
        """
        extra = None
        if self.ids is not None:
            extra = self.ids(items) * id_mask[:, None].to(self.ids.weight.dtype)
        x = self.tower.features(batch, extra)
        out = self.tower.mlp(x)
        if self.skip is not None:
            out = out + self.skip(x)
        return out


class Content2Vec(ContentRecommender):
    """Joint content + Prod2Vec item embeddings (see the module docstring)."""

    name: ClassVar[str] = "content2vec"
    search_space: ClassVar[SearchSpace] = {
        "learning_rate": Float(3e-4, 3e-2, log=True),
        "dim": Choice((32, 64, 128)),
        "temperature": Float(0.02, 1.0, log=True),
        "negatives": Int(1, 16, log=True),
    }
    ddp_sharding: ClassVar[Literal["rows", "batches"]] = "rows"
    Config: ClassVar[type[Content2VecConfig]] = Content2VecConfig
    config: Content2VecConfig

    def __init__(self, config: Any, meta: DataMeta) -> None:
        super().__init__(config, meta)
        self._warm = np.zeros(meta.n_items, dtype=bool)
        self._history_indptr = np.zeros(meta.n_users + 1, dtype=np.int64)
        self._history_items = np.zeros(0, dtype=np.int64)

    # training ------------------------------------------------------------------
    def _prepare(self, train: Interactions, valid: Interactions | None) -> None:
        cfg = self.config
        n_items = self.meta.n_items
        counts = np.bincount(train.item_idx, minlength=n_items).astype(np.int64)
        counts[:N_RESERVED] = 0
        self._counts = counts
        self._warm = counts > 0
        self._pairs = cooccurring_pairs(train, cfg.window)
        if self._pairs[0].size == 0:
            raise ValueError(
                f"{self.name}: no two items co-occur within window={cfg.window} in a train "
                "session; nothing to learn from"
            )
        self._columns = ContentColumns.fit(
            self.content,
            np.flatnonzero(self._warm),
            categories=cfg.use_categories,
            text=cfg.use_text,
            numeric=cfg.use_numeric,
            all_categories=cfg.all_categories,
        )
        self._history(train)
        log.info(
            "%s: %d co-occurring pairs (window %d), %d category and %d text columns, %d numeric",
            self.name,
            self._pairs[0].shape[0],
            cfg.window,
            self._columns.n_categories,
            self._columns.n_text,
            self._columns.n_numeric,
        )

    def _history(self, train: Interactions) -> None:
        """Keep the last ``history`` train items of each user, oldest first (CSR by user)."""
        keep = (train.user_idx >= N_RESERVED) & (train.item_idx >= N_RESERVED)
        users = train.user_idx[keep].astype(np.int64)
        items = train.item_idx[keep].astype(np.int64)
        order = np.lexsort((train.timestamp[keep], users))  # by user, then time (stable)
        users, items = users[order], items[order]
        lengths = np.bincount(users, minlength=self.meta.n_users)
        ends = np.cumsum(lengths)
        from_end = ends[users] - np.arange(users.shape[0])  # 1 = the user's last event
        recent = from_end <= self.config.history
        kept = np.bincount(users[recent], minlength=self.meta.n_users)
        self._history_indptr = np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)
        self._history_items = items[recent]

    def _out_dim(self) -> int:
        return self.config.dim

    def _build_module(self) -> Content2VecNet:
        assert self._columns is not None
        return Content2VecNet(self._columns, self.meta.n_items, self.config)

    def _n_batches(self, epoch: int) -> int:
        return -(-self._pairs[0].shape[0] // self.config.batch_size)

    def _sampler(self, seed: int, n_draws: int) -> NegativeSampler:
        return NegativeSampler(
            self._counts,
            alpha=self.config.sampling_alpha,
            seed=seed,
            cache_size=max(n_draws, 1),
        )

    def _batches(self, epoch: int) -> Iterator[tuple[np.ndarray, ...]]:
        cfg = self.config
        a, b = self._pairs
        rng = np.random.default_rng([cfg.seed, epoch, 1])
        sampler = self._sampler(int(rng.integers(2**62)), a.shape[0] * cfg.negatives)
        for rows in self._shuffled(np.arange(a.shape[0]), epoch):
            negatives = sampler.sample_excluding(b[rows], cfg.negatives)
            yield self._pair_batch(a[rows], b[rows], negatives, rng)

    def _pair_batch(
        self,
        a: np.ndarray,
        b: np.ndarray,
        negatives: np.ndarray,
        rng: np.random.Generator | None,
    ) -> tuple[np.ndarray, ...]:
        """(unique items, their id mask, positions of a, b and the negatives in them).

        With ``rng`` (training), each unique item's id is dropped with probability
        ``id_dropout``; items without train events never have one.
        """
        flat = np.concatenate([a, b, negatives.reshape(-1)])
        unique, inverse = np.unique(flat, return_inverse=True)
        n = a.shape[0]
        mask = self._warm[unique].astype(np.float32)
        if rng is not None and self.config.id_dropout > 0:
            mask *= rng.random(unique.shape[0]) >= self.config.id_dropout
        return (
            unique,
            mask,
            inverse[:n],
            inverse[n : 2 * n],
            inverse[2 * n :].reshape(negatives.shape),
        )

    def _similarity(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.config.similarity == "cosine":
            x = nn.functional.normalize(x, dim=-1)
            y = nn.functional.normalize(y, dim=-1)
            return (x * y).sum(-1) / self.config.temperature
        return (x * y).sum(-1)

    def _encode(
        self,
        module: nn.Module,
        batch: ContentBatch,
        rows: np.ndarray,
        ids_known: np.ndarray | None,
        device: torch.device,
    ) -> torch.Tensor:
        mask = np.zeros(rows.shape[0], np.float32) if ids_known is None else ids_known
        items = to_device(rows.astype(np.int64), device)
        return module(batch, items, to_device(mask.astype(np.float32), device))

    def _step(
        self, module: nn.Module, batch: tuple[np.ndarray, ...], device: torch.device
    ) -> tuple[torch.Tensor, int]:
        unique, mask, ia, ib, ineg = batch
        emb = self._encode(module, self._batch(self.content, unique, device), unique, mask, device)
        emb = emb.float()
        ia, ib, ineg = (to_device(x.astype(np.int64), device) for x in (ia, ib, ineg))
        anchor = emb[ia]
        pos = self._similarity(anchor, emb[ib])  # (B,)
        neg = self._similarity(anchor[:, None, :], emb[ineg])  # (B, K)
        loss = nn.functional.softplus(-pos) + nn.functional.softplus(neg).sum(dim=1)
        return loss.mean(), int(ia.shape[0])

    def _shard_batch(
        self, batch: tuple[np.ndarray, ...], rank: int, world_size: int
    ) -> tuple[np.ndarray, ...]:
        """A rank's block of the pairs; every rank keeps the batch's unique items and
        their id mask (encoded in full, so the same dropout applies on every rank)."""
        unique, mask, ia, ib, ineg = batch
        lo, hi = row_bounds(ia.shape[0], rank, world_size)
        return unique, mask, ia[lo:hi], ib[lo:hi], ineg[lo:hi]

    def _validation(
        self, train: Interactions, valid: Interactions | None
    ) -> Callable[[nn.Module, torch.device], Mapping[str, float]] | None:
        if valid is None or len(valid) == 0:
            return None
        cfg = self.config
        a, b = cooccurring_pairs(valid, cfg.window)
        usable = usable_rows(self.content, self._columns) | self._warm
        keep = usable[a] & usable[b]
        a, b = a[keep], b[keep]
        if a.size == 0:
            return None
        rng = np.random.default_rng([cfg.seed, 2**31])
        if a.shape[0] > _MAX_VALID_PAIRS:
            pick = np.sort(rng.choice(a.shape[0], _MAX_VALID_PAIRS, replace=False))
            a, b = a[pick], b[pick]
        negatives = self._sampler(int(rng.integers(2**62)), a.size * cfg.negatives)
        negatives = negatives.sample_excluding(b, cfg.negatives)
        step = cfg.batch_size
        batches = [
            self._pair_batch(a[s : s + step], b[s : s + step], negatives[s : s + step], None)
            for s in range(0, a.shape[0], step)
        ]

        def check(module: nn.Module, device: torch.device) -> Mapping[str, float]:
            total = 0.0
            for batch in batches:
                loss, n = self._step(module, batch, device)
                total += float(loss) * n
            return {"valid_loss": total / a.shape[0]}

        return check

    def _finish(self, train: Interactions) -> None:
        assert self._columns is not None
        usable = usable_rows(self.content, self._columns) | self._warm
        usable[:N_RESERVED] = False
        rows = np.flatnonzero(usable)
        vectors = np.zeros((self.meta.n_items, self.config.dim), dtype=np.float32)
        vectors[rows] = self._predict(self.content, rows, self._warm[rows].astype(np.float32))
        self._set_item_vectors(vectors)
        del self._pairs

    # scoring -------------------------------------------------------------------
    def _user_query(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        starts, ends = self._history_indptr[users], self._history_indptr[users + 1]
        lengths = ends - starts
        width = max(int(lengths.max(initial=0)), 1)
        # left-padded (B, width) history, most recent last
        offsets = np.arange(width)[None, :] - (width - lengths)[:, None]
        valid = offsets >= 0
        positions = np.where(valid, starts[:, None] + offsets, 0)
        if self._history_items.size:
            items = np.where(valid, self._history_items[positions], PAD)
            items = np.where(self._has_vector[items], items, PAD)
        else:
            items = np.full(positions.shape, PAD, dtype=np.int64)
        vectors = self._aggregate(items)
        known = (items >= N_RESERVED).any(axis=1)
        return vectors, known, True

    def _aggregate(self, items: np.ndarray) -> np.ndarray:
        return aggregate_items(self._unit, items, self.config.decay)

    # persistence ---------------------------------------------------------------
    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {
            **super()._state_arrays(),
            "warm": self._warm,
            "history_indptr": self._history_indptr,
            "history_items": self._history_items,
        }

    def _state_keys(self) -> list[str]:
        return [*super()._state_keys(), "warm", "history_indptr", "history_items"]

    def _set_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        super()._set_state(arrays)
        n_users, n_items = self.meta.n_users, self.meta.n_items
        if self._item_vectors.shape[1] != self.config.dim:
            raise ValueError(
                f"item vectors have {self._item_vectors.shape[1]} dims, config.dim is "
                f"{self.config.dim}"
            )
        self._warm = expect_shape(arrays["warm"], (n_items,), "warm items").astype(bool)
        indptr = expect_shape(arrays["history_indptr"], (n_users + 1,), "history offsets")
        items = arrays["history_items"].astype(np.int64)
        if indptr[0] != 0 or indptr[-1] != items.shape[0] or np.any(np.diff(indptr) < 0):
            raise ValueError("user history offsets do not match the history items")
        if items.size and (items.min() < N_RESERVED or items.max() >= n_items):
            raise ValueError("user history holds item indices out of range")
        self._history_indptr = indptr.astype(np.int64)
        self._history_items = items
