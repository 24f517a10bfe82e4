"""Item content as network input, and the base of the content-based (cold-start) models.

The features stage encodes every item into an :class:`~recpipe.features.content.ItemContent`
row (multi-hot categories, hashed text n-gram counts, standardised numeric attributes);
:class:`~recpipe.models.data.DataMeta` carries it aligned to the item index. This
module turns rows of it into tensors and vectors:

- :class:`ContentColumns`: the category and text columns a model reads, fitted on its
  training items (columns no training item has get no trained embedding, so they are
  dropped rather than read as noise), and the number of numeric columns;
- :func:`content_tensors`: CSR rows sliced into ``nn.EmbeddingBag`` input
  (:class:`~recpipe.models.layers.Bag`: flat indices, row offsets, per-entry weights
  normalised to a mean: 1 / n for categories, ``log1p(count)`` / row sum for text)
  plus the numeric rows, as a :class:`ContentBatch`;
- :class:`ContentTower`: categories -> mean embedding, text -> weighted mean
  embedding, numeric -> linear; the parts (and an optional extra input, e.g. an id
  embedding) are concatenated and mapped by an MLP to ``out_dim``;
- :class:`ContentEncoderConfig`: the tower's options, a mixin of model configs;
- :class:`ContentRecommender`: the shared base of ``content2cf`` and ``content2vec``:
  the content check at construction, the training run on the shared loop, item
  vectors and the cold-start scoring below, :meth:`~ContentRecommender.embed_content`
  for new items, the artifact state.

Scoring (every item index has one vector; items with neither content nor train
events have the zero vector):

- ``session`` / ``item`` (a one-item session): the recency-weighted mean
  (:func:`~recpipe.models.embedding.aggregate_items`, ``decay``) of the L2-normalised
  vectors of the prefix's items; item j scores its dot product with j's normalised
  vector (a weighted mean cosine similarity). Items of the prefix score -2 (below
  every cosine) unless ``remind``. A prefix with no item that has a vector scores by
  popularity.
- ``user``: defined by each model; users it knows nothing about score by popularity.

Every row gets ``pop_weight`` times the popularity prior (train counts scaled to
[0, 1]) as a tie-breaker; a popularity fallback row is the prior itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from recpipe.errors import ArtifactError, MissingContentError
from recpipe.features.content import ItemContent
from recpipe.features.idmap import N_RESERVED, UNK
from recpipe.models.artifact import expect_shape, load_arrays, save_arrays
from recpipe.models.data import QUERY_KINDS, DataMeta, Interactions, Queries
from recpipe.models.embedding import aggregate_items, has_known_items
from recpipe.models.layers import MLP, Bag
from recpipe.models.sparse import popularity_prior
from recpipe.models.torch_base import TorchModelConfig, TorchRecommender
from recpipe.train.device import seed_everything

log = logging.getLogger(__name__)

__all__ = [
    "ContentBatch",
    "ContentColumns",
    "ContentEncoderConfig",
    "ContentModelConfig",
    "ContentRecommender",
    "ContentTower",
    "MissingContentError",
    "content_tensors",
    "require_item_content",
    "usable_rows",
]

STATE_FILE = "content_state.npz"
#: Score of a prefix item when ``remind`` is off: below every cosine similarity.
PREFIX_SCORE = -2.0
#: Items encoded at a time when computing item vectors.
ENCODE_CHUNK = 4096
#: Init std of the category and text embedding tables.
_EMBEDDING_STD = 0.1


# ---------------------------------------------------------------------- columns
@dataclass(frozen=True, eq=False)
class ContentColumns:
    """The content columns a tower reads (see the module docstring).

    Attributes
    ----------
    categories : numpy.ndarray
        (Kc,) int64 sorted columns of ``ItemContent.categories`` read (Kc may be 0).
    text : numpy.ndarray
        (Kt,) int64 sorted columns of ``ItemContent.text`` read.
    n_numeric : int
        Number of numeric columns read (0 or all of ``ItemContent.numeric``).
    category_width, text_width : int
        Widths of the content matrices the columns index (checked on new content).
    """

    categories: np.ndarray
    text: np.ndarray
    n_numeric: int
    category_width: int
    text_width: int

    def __post_init__(self) -> None:
        for name, width in (("categories", self.category_width), ("text", self.text_width)):
            cols = np.asarray(getattr(self, name), dtype=np.int64)
            if cols.ndim != 1 or np.any(np.diff(cols) <= 0):
                raise ValueError(f"{name} columns must be a sorted 1-D array without repeats")
            if cols.size and (cols[0] < 0 or cols[-1] >= width):
                raise ValueError(f"{name} columns must lie in [0, {width})")
            object.__setattr__(self, name, cols)
        object.__setattr__(self, "n_numeric", int(self.n_numeric))

    @classmethod
    def fit(
        cls,
        content: ItemContent,
        rows: np.ndarray,
        *,
        categories: bool = True,
        text: bool = True,
        numeric: bool = True,
        all_categories: bool = False,
    ) -> ContentColumns:
        """The columns that some of ``rows`` (the training items) hold, per enabled part.

        Parameters
        ----------
        content : ItemContent
            Item content aligned to the item index.
        rows : numpy.ndarray
            (R,) item indices the model trains on.
        categories, text, numeric : bool
            Which parts to read.
        all_categories : bool, default False
            Read the categories of every item of ``content``, also those no training
            item has: items sharing such a category then share its (untrained)
            embedding, so that new items of a new category still group together.
        """
        rows = np.asarray(rows, dtype=np.int64)

        def used(m: sp.csr_matrix, on: bool, among: np.ndarray) -> np.ndarray:
            if not on or among.size == 0:
                return np.zeros(0, dtype=np.int64)
            return np.unique(sp.csr_matrix(m)[among].indices).astype(np.int64)

        every = np.arange(len(content), dtype=np.int64)
        return cls(
            categories=used(content.categories, categories, every if all_categories else rows),
            text=used(content.text, text, rows),
            n_numeric=content.numeric.shape[1] if numeric else 0,
            category_width=content.categories.shape[1],
            text_width=content.text.shape[1],
        )

    @property
    def n_categories(self) -> int:
        """Kc: category columns read."""
        return int(self.categories.shape[0])

    @property
    def n_text(self) -> int:
        """Kt: text columns read."""
        return int(self.text.shape[0])

    @property
    def empty(self) -> bool:
        """Whether no column at all is read."""
        return self.n_categories == 0 and self.n_text == 0 and self.n_numeric == 0

    @cached_property
    def category_lookup(self) -> np.ndarray:
        """(category_width,) int64 position of each column in :attr:`categories`, or -1."""
        return _lookup(self.categories, self.category_width)

    @cached_property
    def text_lookup(self) -> np.ndarray:
        """(text_width,) int64 position of each column in :attr:`text`, or -1."""
        return _lookup(self.text, self.text_width)

    def check(self, content: ItemContent) -> None:
        """Raise ValueError if ``content`` is not encoded like the fitted content."""
        got = (content.categories.shape[1], content.text.shape[1], content.numeric.shape[1])
        want_numeric = self.n_numeric if self.n_numeric else content.numeric.shape[1]
        want = (self.category_width, self.text_width, want_numeric)
        if got != want:
            raise ValueError(
                f"item content has (categories, text, numeric) widths {got}, expected {want}: "
                "encode new items with the model's meta.item_encoder"
            )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of :meth:`from_arrays` (for an artifact)."""
        return {
            "columns_categories": self.categories,
            "columns_text": self.text,
            "columns_sizes": np.array(
                [self.n_numeric, self.category_width, self.text_width], dtype=np.int64
            ),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ContentColumns:
        """Rebuild what :meth:`to_arrays` wrote; ValueError if it is inconsistent."""
        sizes = expect_shape(arrays["columns_sizes"], (3,), "content column sizes")
        return cls(
            categories=arrays["columns_categories"],
            text=arrays["columns_text"],
            n_numeric=int(sizes[0]),
            category_width=int(sizes[1]),
            text_width=int(sizes[2]),
        )

    KEYS: ClassVar[tuple[str, ...]] = ("columns_categories", "columns_text", "columns_sizes")


def _lookup(columns: np.ndarray, width: int) -> np.ndarray:
    out = np.full(width, -1, dtype=np.int64)
    out[columns] = np.arange(columns.shape[0])
    return out


def _all_columns(content: ItemContent) -> ContentColumns:
    return ContentColumns(
        categories=np.arange(content.categories.shape[1]),
        text=np.arange(content.text.shape[1]),
        n_numeric=content.numeric.shape[1],
        category_width=content.categories.shape[1],
        text_width=content.text.shape[1],
    )


# ---------------------------------------------------------------------- tensors
class ContentBatch(NamedTuple):
    """The content of B items as tower input.

    Attributes
    ----------
    categories, text : Bag or None
        ``nn.EmbeddingBag`` input (indices into the read columns, offsets (B,),
        weights summing to 1 over each non-empty row); None when the part is not read.
    numeric : torch.Tensor or None
        (B, n_numeric) float32, or None when not read.
    """

    categories: Bag | None
    text: Bag | None
    numeric: torch.Tensor | None

    @property
    def n_rows(self) -> int:
        """B: number of items in the batch."""
        for part in (self.categories, self.text):
            if part is not None:
                return int(part.offsets.shape[0])
        return 0 if self.numeric is None else int(self.numeric.shape[0])

    def to(self, device: torch.device) -> ContentBatch:
        """The same batch on ``device``."""
        return ContentBatch(
            None if self.categories is None else self.categories.to(device),
            None if self.text is None else self.text.to(device),
            None if self.numeric is None else self.numeric.to(device),
        )


def _bag_rows(
    m: sp.csr_matrix, rows: np.ndarray, lookup: np.ndarray, log_weights: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr (B + 1,), indices, weights) of ``rows`` of ``m`` restricted to the read
    columns (renumbered by ``lookup``), weights normalised to sum 1 per row."""
    sub = sp.csr_matrix(m)[rows]
    row_of = np.repeat(np.arange(rows.shape[0]), np.diff(sub.indptr))
    pos = lookup[sub.indices]
    keep = pos >= 0
    row_of, pos = row_of[keep], pos[keep]
    values = sub.data[keep].astype(np.float64)
    weights = np.log1p(np.maximum(values, 0.0)) if log_weights else np.ones_like(values)
    totals = np.bincount(row_of, weights=weights, minlength=rows.shape[0])
    weights = np.divide(
        weights, totals[row_of], out=np.zeros_like(weights), where=totals[row_of] > 0
    )
    counts = np.bincount(row_of, minlength=rows.shape[0])
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, pos.astype(np.int64), weights.astype(np.float32)


def _bag(indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray) -> Bag:
    return Bag(
        torch.from_numpy(np.ascontiguousarray(indices)),
        torch.from_numpy(np.ascontiguousarray(indptr[:-1])),
        torch.from_numpy(np.ascontiguousarray(weights)),
    )


def content_tensors(
    content: ItemContent,
    rows: np.ndarray,
    device: torch.device | str | None = None,
    columns: ContentColumns | None = None,
) -> ContentBatch:
    """Slice the content of ``rows`` into tower input.

    Parameters
    ----------
    content : ItemContent
        Item content (one row per item).
    rows : numpy.ndarray
        (B,) rows to take, in order (repeats allowed).
    device : torch.device or str, optional
        Where the tensors go (default CPU).
    columns : ContentColumns, optional
        The columns to read (others are dropped, and the kept ones renumbered
        ``0 .. K - 1``); default every column of every part.

    Returns
    -------
    ContentBatch
        Categories with weight ``1 / n`` on each of a row's n categories, text with
        weight ``log1p(count) / sum over the row``, the numeric rows; a part with no
        read column is None. Empty rows pool to zeros in ``nn.EmbeddingBag``.

    Examples
    --------
    >>> content = ItemContent(
    ...     item_ids=np.array(["a", "b"], dtype=object),
    ...     categories=sp.csr_matrix(np.array([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])),
    ...     text=sp.csr_matrix(np.array([[0.0, 3.0], [1.0, 0.0]])),
    ...     numeric=np.zeros((2, 0), dtype=np.float32),
    ... )
    >>> batch = content_tensors(content, np.array([1, 0]))
    >>> batch.categories.indices.tolist(), batch.categories.offsets.tolist()
    ([1, 2], [0, 0])
    >>> batch.categories.weights.tolist(), batch.numeric
    ([0.5, 0.5], None)
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1:
        raise ValueError(f"rows must be 1-D, got shape {rows.shape}")
    if rows.size and (rows.min() < 0 or rows.max() >= len(content)):
        raise ValueError(f"rows must lie in [0, {len(content)})")
    cols = columns if columns is not None else _all_columns(content)
    cats = text = numeric = None
    if cols.n_categories:
        cats = _bag(*_bag_rows(content.categories, rows, cols.category_lookup, False))
    if cols.n_text:
        text = _bag(*_bag_rows(content.text, rows, cols.text_lookup, True))
    if cols.n_numeric:
        numeric = torch.from_numpy(
            np.ascontiguousarray(content.numeric[rows, : cols.n_numeric], dtype=np.float32)
        )
    batch = ContentBatch(cats, text, numeric)
    return batch.to(torch.device(device)) if device is not None else batch


def usable_rows(content: ItemContent, columns: ContentColumns | None = None) -> np.ndarray:
    """(N,) bool: rows with at least one read category or text entry or a non-zero
    numeric value (default: every column)."""
    cols = columns if columns is not None else _all_columns(content)
    n = len(content)
    out = np.zeros(n, dtype=bool)
    for m, lookup, on in (
        (content.categories, cols.category_lookup, cols.n_categories > 0),
        (content.text, cols.text_lookup, cols.n_text > 0),
    ):
        if on:
            m = sp.csr_matrix(m)
            row_of = np.repeat(np.arange(n), np.diff(m.indptr))
            hit = (lookup[m.indices] >= 0) & (m.data != 0)
            out[row_of[hit]] = True
    if cols.n_numeric:
        out |= np.any(content.numeric[:, : cols.n_numeric] != 0, axis=1)
    return out


# ---------------------------------------------------------------------- config
class ContentEncoderConfig(BaseModel):
    """Options of the content tower (a mixin of content models' configs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    category_dim: int = Field(default=32, ge=1, description="embedding size of the categories")
    text_dim: int = Field(default=64, ge=1, description="embedding size of the text n-grams")
    numeric_dim: int = Field(default=16, ge=1, description="output size of the numeric layer")
    hidden: tuple[PositiveInt, ...] = Field(
        default=(128,), description="widths of the tower's hidden layers (may be empty)"
    )
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="dropout in the tower")
    use_categories: bool = Field(default=True, description="read the items' categories")
    use_text: bool = Field(default=True, description="read the items' hashed text n-grams")
    use_numeric: bool = Field(default=True, description="read the items' numeric attributes")
    all_categories: bool = Field(
        default=False,
        description="embed every catalogue category, also those no training item has (new "
        "items of a new category then share an untrained embedding: they group together, "
        "but on a large catalogue of unseen categories the random vectors crowd the top)",
    )


class ContentModelConfig(TorchModelConfig, ContentEncoderConfig):
    """Options shared by the content models: the tower's, the loop's and the scoring's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decay: float = Field(
        default=0.8, gt=0.0, le=1.0, description="recency decay of a prefix's item weights"
    )
    remind: bool = Field(default=False, description="also recommend the items of a prefix")
    pop_weight: float = Field(
        default=1e-6, ge=0.0, description="weight of the popularity prior (a tie-breaker)"
    )


def require_item_content(meta: DataMeta, model: str, config: ContentEncoderConfig) -> ItemContent:
    """``meta.item_content`` if it holds something the config reads, else a clear error.

    Raises
    ------
    MissingContentError
        No item content, no enabled part, or every enabled part is empty.
    """
    content = meta.item_content
    if content is None:
        raise MissingContentError(
            f"{model} needs item content: the features stage found none; give the data "
            "set an items table (title / text / categories / numeric columns), re-run "
            "the features stage, and build DataMeta with DataMeta.from_features"
        )
    parts = {
        "categories": config.use_categories and content.categories.nnz > 0,
        "text": config.use_text and content.text.nnz > 0,
        "numeric": config.use_numeric and bool(np.any(content.numeric != 0)),
    }
    if not any(parts.values()):
        flags = (config.use_categories, config.use_text, config.use_numeric)
        enabled = [part for part, on in zip(parts, flags, strict=True) if on]
        raise MissingContentError(
            f"{model} needs item content: the enabled parts {enabled} are empty for every "
            "item (or no part is enabled); enable another of use_categories / use_text / "
            "use_numeric or give the items table those columns"
        )
    return content


# ---------------------------------------------------------------------- tower
class ContentTower(nn.Module):
    """Item content -> vector: pooled category and text embeddings, numeric layer, MLP.

    Parameters
    ----------
    n_categories, n_text, n_numeric : int
        Number of category columns, text columns and numeric columns read (0: the
        part is off).
    out_dim : int
        Output width.
    category_dim, text_dim, numeric_dim : int
        Width of each part.
    hidden : sequence of int
        Hidden widths of the MLP over the concatenated parts (empty: one linear layer).
    dropout : float
        Dropout after each hidden activation.
    extra_dim : int, default 0
        Width of an extra input concatenated to the parts (e.g. an id embedding).

    Examples
    --------
    >>> tower = ContentTower(3, 5, 2, out_dim=4, hidden=[8])
    >>> batch = ContentBatch(
    ...     Bag(torch.tensor([0, 2]), torch.tensor([0, 1]), torch.tensor([1.0, 1.0])),
    ...     None,
    ...     torch.zeros(2, 2),
    ... )
    >>> tuple(tower(batch).shape)  # the text part is absent from this batch: zeros
    (2, 4)
    """

    def __init__(
        self,
        n_categories: int,
        n_text: int,
        n_numeric: int,
        out_dim: int,
        *,
        category_dim: int = 32,
        text_dim: int = 64,
        numeric_dim: int = 16,
        hidden: Iterable[int] = (128,),
        dropout: float = 0.1,
        extra_dim: int = 0,
    ) -> None:
        super().__init__()
        self.categories: nn.EmbeddingBag | None = None
        self.text: nn.EmbeddingBag | None = None
        self.numeric: nn.Linear | None = None
        widths = []
        if n_categories > 0:
            self.categories = nn.EmbeddingBag(int(n_categories), category_dim, mode="sum")
            nn.init.normal_(self.categories.weight, std=_EMBEDDING_STD)
            widths.append(category_dim)
        if n_text > 0:
            self.text = nn.EmbeddingBag(int(n_text), text_dim, mode="sum")
            nn.init.normal_(self.text.weight, std=_EMBEDDING_STD)
            widths.append(text_dim)
        if n_numeric > 0:
            self.numeric = nn.Linear(int(n_numeric), numeric_dim)
            widths.append(numeric_dim)
        self.extra_dim = int(extra_dim)
        self.in_dim = sum(widths) + self.extra_dim
        if self.in_dim == 0:
            raise ValueError("ContentTower needs at least one content part or an extra input")
        self.mlp = MLP(self.in_dim, list(hidden), dropout, out_dim)
        self.out_dim = int(out_dim)

    @classmethod
    def from_columns(
        cls,
        columns: ContentColumns,
        out_dim: int,
        config: ContentEncoderConfig,
        *,
        extra_dim: int = 0,
    ) -> ContentTower:
        """A tower that reads ``columns``, sized by ``config``."""
        return cls(
            columns.n_categories,
            columns.n_text,
            columns.n_numeric,
            out_dim,
            category_dim=config.category_dim,
            text_dim=config.text_dim,
            numeric_dim=config.numeric_dim,
            hidden=config.hidden,
            dropout=config.dropout,
            extra_dim=extra_dim,
        )

    def features(self, batch: ContentBatch, extra: torch.Tensor | None = None) -> torch.Tensor:
        """(B, in_dim) the concatenated parts (a part missing from ``batch`` gives zeros)."""
        b = batch.n_rows if extra is None else int(extra.shape[0])
        ref = self.mlp.first.weight
        parts: list[torch.Tensor] = []
        for table, bag in ((self.categories, batch.categories), (self.text, batch.text)):
            if table is None:
                continue
            if bag is None:
                parts.append(ref.new_zeros(b, table.embedding_dim))
                continue
            weights = None if bag.weights is None else bag.weights.to(table.weight.dtype)
            parts.append(table(bag.indices, bag.offsets, per_sample_weights=weights))
        if self.numeric is not None:
            if batch.numeric is None:
                parts.append(ref.new_zeros(b, self.numeric.out_features))
            else:
                parts.append(self.numeric(batch.numeric.to(ref.dtype)))
        if self.extra_dim:
            if extra is None or extra.shape != (b, self.extra_dim):
                raise ValueError(f"this tower takes an extra ({b}, {self.extra_dim}) input")
            parts.append(extra)
        return torch.cat(parts, dim=1)

    def forward(self, batch: ContentBatch, extra: torch.Tensor | None = None) -> torch.Tensor:
        """(B, out_dim) vectors of the batch's items."""
        return self.mlp(self.features(batch, extra))


# ---------------------------------------------------------------------- base model
class ContentRecommender(TorchRecommender):
    """Base of the content models (see the module docstring).

    Subclasses implement the torch hooks (``_build_module``, ``_batches``,
    ``_n_batches``, ``_step``) and

    - ``_prepare(train, valid)``: set ``self._columns`` and whatever the batches need;
    - ``_validation(train, valid)``: the early-stopping check reporting ``valid_loss``
      (or None);
    - ``_encode(module, batch, rows, ids_known, device)``: (B, D) vectors of a content
      batch (``ids_known``: whether each item may use what was learnt from its events);
    - ``_out_dim()``: D;
    - ``_finish(train)``: set the item vectors (:meth:`_set_item_vectors`) and the
      user state after training;
    - ``_user_query(users)``: ``(vectors (B, D), known (B,), cosine)`` for user queries;
    - ``_state_arrays()`` / ``_set_state(arrays)`` for their own arrays (call super).
    """

    Config: ClassVar[type[ContentModelConfig]] = ContentModelConfig
    query_kinds: ClassVar[frozenset[str]] = QUERY_KINDS
    uses_content: ClassVar[bool] = True
    monitor: ClassVar[str] = "valid_loss"
    monitor_mode: ClassVar[Literal["max", "min"]] = "min"
    config: ContentModelConfig

    def __init__(self, config: Any, meta: DataMeta) -> None:
        super().__init__(config, meta)
        self.content = require_item_content(meta, self.name, self.config)
        self._columns: ContentColumns | None = None
        self._item_vectors = np.zeros((0, 0), dtype=np.float32)
        self._unit = np.zeros((0, 0), dtype=np.float32)
        self._has_vector = np.zeros(meta.n_items, dtype=bool)
        self._prior = np.zeros(meta.n_items, dtype=np.float64)

    # hooks ---------------------------------------------------------------------
    def _validation(
        self, train: Interactions, valid: Interactions | None
    ) -> Callable[[nn.Module, torch.device], Mapping[str, float]] | None:
        return None

    def _encode(
        self,
        module: nn.Module,
        batch: ContentBatch,
        rows: np.ndarray,
        ids_known: np.ndarray | None,
        device: torch.device,
    ) -> torch.Tensor:
        raise NotImplementedError

    def _finish(self, train: Interactions) -> None:
        raise NotImplementedError

    def _user_query(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        raise NotImplementedError

    # training ------------------------------------------------------------------
    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        cfg = self.config
        seed_everything(cfg.seed)
        counts = np.bincount(train.item_idx, minlength=self.meta.n_items).astype(np.int64)
        counts[:N_RESERVED] = 0
        self._prior = popularity_prior(counts)
        self._prepare(train, valid)
        if self._columns is None or self._columns.empty:
            raise MissingContentError(
                f"{self.name} needs item content: no training item has content in the "
                "enabled parts (use_categories / use_text / use_numeric)"
            )
        seed_everything(cfg.seed)  # the tower's init depends on the seed alone
        module = self._build_module()
        self._train_module(module, train, self._validation(train, valid))
        module.eval()
        self._finish(train)

    def _shuffled(self, rows: np.ndarray, epoch: int) -> Iterable[np.ndarray]:
        """``rows`` in a seeded random order (seed and epoch), in ``batch_size`` chunks."""
        rng = np.random.default_rng([self.config.seed, epoch])
        order = rows[rng.permutation(rows.shape[0])]
        step = self.config.batch_size
        for start in range(0, order.shape[0], step):
            yield order[start : start + step]

    def _batch(self, content: ItemContent, rows: np.ndarray, device: torch.device) -> ContentBatch:
        assert self._columns is not None
        return content_tensors(content, rows, device, self._columns)

    def _predict(
        self, content: ItemContent, rows: np.ndarray, ids_known: np.ndarray | None
    ) -> np.ndarray:
        """(R, D) float32 vectors of ``rows`` of ``content`` by the trained module."""
        module = self.module
        assert module is not None
        module.eval()
        device = next(module.parameters()).device
        parts = []
        with torch.no_grad():
            for start in range(0, rows.shape[0], ENCODE_CHUNK):
                chunk = rows[start : start + ENCODE_CHUNK]
                known = None if ids_known is None else ids_known[start : start + ENCODE_CHUNK]
                batch = self._batch(content, chunk, device)
                out = self._encode(module, batch, chunk, known, device)
                parts.append(out.float().cpu().numpy())
        if not parts:
            return np.zeros((0, self._out_dim()), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _out_dim(self) -> int:
        raise NotImplementedError

    def _set_item_vectors(self, vectors: np.ndarray) -> None:
        """Keep the (n_items, D) item vectors and derive the unit vectors and the mask."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        vectors[:N_RESERVED] = 0.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self._item_vectors = vectors
        self._has_vector = norms[:, 0] > 0
        self._unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)

    # public ----------------------------------------------------------------------
    def item_vectors(self) -> np.ndarray:
        """(n_items, D) float32 vector of every item index (zeros: no content, no events).

        Raises
        ------
        NotFittedError
            The model is not fitted.
        """
        self._require_fitted()
        return self._item_vectors.copy()

    def embed_content(self, content: ItemContent) -> np.ndarray:
        """Vectors of items from their content alone (new items: the cold-start path).

        Parameters
        ----------
        content : ItemContent
            N items encoded like the training content, e.g.
            ``meta.item_encoder.transform(items_frame)``.

        Returns
        -------
        numpy.ndarray
            (N, D) float32, comparable with :meth:`item_vectors`; the zero vector for
            items with no content the model reads.

        Raises
        ------
        ValueError
            ``content`` is encoded differently (other category vocabulary, text
            buckets or numeric columns).
        NotFittedError
            The model is not fitted.
        """
        self._require_fitted()
        assert self._columns is not None
        self._columns.check(content)
        out = np.zeros((len(content), self._out_dim()), dtype=np.float32)
        rows = np.flatnonzero(usable_rows(content, self._columns))
        out[rows] = self._predict(content, rows, None)
        return out

    # scoring -------------------------------------------------------------------
    def _score(self, queries: Queries) -> np.ndarray:
        out = np.empty((len(queries), self.meta.n_items), dtype=np.float32)
        step = self.config.score_batch_size
        for start in range(0, len(queries), step):
            part = queries.take(slice(start, start + step))
            out[start : start + len(part)] = self._score_part(part)
        return out

    def _score_part(self, queries: Queries) -> np.ndarray:
        prior = self._prior.astype(np.float32)
        exclude = None
        if queries.kind == "user":
            vectors, known, cosine = self._user_query(queries.users)
        else:
            items = queries.items[:, None] if queries.kind == "item" else queries.items
            items = np.where(self._has_vector[items], items, UNK)  # no vector: unknown
            vectors = aggregate_items(self._unit, items, self.config.decay)
            known, cosine = has_known_items(items), True
            if not self.config.remind:
                exclude = items
        table = self._unit if cosine else self._item_vectors
        scores = np.asarray(vectors, dtype=np.float32) @ table.T
        if exclude is not None:
            rows = np.broadcast_to(np.arange(exclude.shape[0])[:, None], exclude.shape)
            real = exclude >= N_RESERVED
            scores[rows[real], exclude[real]] = PREFIX_SCORE
        scores += self.config.pop_weight * prior
        scores[~known] = prior
        return scores

    # persistence ---------------------------------------------------------------
    def _state_arrays(self) -> dict[str, np.ndarray]:
        assert self._columns is not None
        return {
            "item_vectors": self._item_vectors,
            "prior": self._prior,
            **self._columns.to_arrays(),
        }

    def _state_keys(self) -> list[str]:
        return ["item_vectors", "prior", *ContentColumns.KEYS]

    def _set_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        n = self.meta.n_items
        vectors = arrays["item_vectors"]
        if vectors.ndim != 2:
            raise ArtifactError(f"item vectors must be 2-D, got shape {vectors.shape}")
        self._set_item_vectors(expect_shape(vectors, (n, vectors.shape[1]), "item vectors"))
        self._prior = expect_shape(arrays["prior"], (n,), "popularity prior").astype(np.float64)
        self._columns = ContentColumns.from_arrays(arrays)
        self._columns.check(self.content)

    def _save_extra(self, path: Path) -> None:
        save_arrays(path / STATE_FILE, **self._state_arrays())

    def _load_extra(self, path: Path) -> None:
        arrays = load_arrays(path / STATE_FILE, self._state_keys())
        try:
            self._set_state(arrays)
        except (ValueError, KeyError, IndexError) as exc:
            raise ArtifactError(
                f"model artifact {str(path)!r}: bad {self.name} state: {exc}"
            ) from exc
