"""The machinery the click-through-rate style rankers share, on implicit feedback.

- ``wide_deep`` (:mod:`recpipe.models.wide_deep`): Wide & Deep (Cheng et al. 2016,
  "Wide & Deep Learning for Recommender Systems"): a linear model over sparse ids and
  hashed cross-product features (memorisation) plus an MLP over embeddings and dense
  features (generalisation), trained jointly; logit = wide + deep.
- ``deepfm`` (:mod:`recpipe.models.deepfm`): DeepFM (Guo et al. 2017, "DeepFM: A
  Factorization-Machine based Neural Network for CTR Prediction"): a factorization
  machine (first-order weights plus pairwise inner products of the field embeddings)
  and an MLP that share ONE embedding table; logit = linear + FM + deep.

This module holds what both share: the config (:class:`CtrConfig`), the network's
common parts (:class:`CtrNet`: field embeddings, first-order weights, the deep MLP and
full-catalogue scoring), the input builder and the estimator (:class:`CtrRecommender`:
sampling, training, scoring, artifact); each model's module adds its own terms.

Inputs of a (user, item) pair. B: batch, D: ``embedding_dim``, C: categories.

- Fields ``user`` and ``item`` (indices), and, when ``meta.item_categories`` is present,
  the multi-hot ``category`` bag of the item (mean of its categories' embeddings).
- Dense: ``log1p`` of the user's train activity (distinct items) and of the item's train
  count, each divided by its maximum (so both lie in ``[0, 1]``).
- Wide crosses (``wide_deep`` only), hashed into ``n_cross_buckets`` with
  :func:`recpipe.features.inputs.hash_cross` (``hash_seed``; serving rebuilds them from
  the config): ``user x popularity bucket`` always, where the bucket of an item is
  ``floor(log2(1 + train count))`` (a user's taste for head vs. tail items; this is the
  cross used when there are no categories), and ``user x category`` (averaged over the
  item's categories) when categories exist.
- Deep input: ``[e_user, dense_user, e_item, e_category, dense_item]`` -> MLP -> 1. The
  first MLP layer is linear, so full-catalogue scoring splits it into a user part and an
  item part (precomputed once per call) and never materialises (B, n_items, input).

Training: positives are the distinct (known user, known item) pairs of the train part;
each gets ``negatives`` items drawn from a :class:`~recpipe.features.sampling.NegativeSampler`
over train popularity ``** sampling_alpha`` (0: uniform), reseeded per epoch from
``(seed, epoch)``, and (``exclude_seen``) redrawn while they hit one of the user's train
items. Loss: binary cross-entropy with logits plus ``l2`` times the squared norm of the
batch's embeddings (per example). Early stopping: Recall@20 on the validation users.

Both models score ``user`` queries over the whole catalogue and expose
:meth:`CtrRecommender.predict_proba` for aligned (user, item) pairs (the ``ctr``
protocol's AUC / log loss). The artifact holds ``weights.pt`` and ``ctr_state.npz``
(the users' train activity).

The ``id_embedding`` option (:class:`~recpipe.models.hashed.IdEmbeddingConfig`) swaps the
``user`` and / or ``item`` field (its embedding and its first-order weight) for hashed
buckets, e.g. ``id_embedding: {kind: hashed, buckets: 0.25, hashes: 2, tables: [user,
item]}`` (Bloom embeddings, Serrà & Karatzoglou 2017; see :mod:`recpipe.models.hashed`).
An id's first-order weight is hashed with the same functions as its embedding, so a
bucket holds ``[v, w]`` as a table row would. The category field and the wide crosses
(already hashed into ``n_cross_buckets``) are unchanged; the default is one row per id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field, PositiveInt, field_validator
from torch import nn

from recpipe.features.inputs import cross_name, hash_cross, shard_order
from recpipe.features.sampling import NegativeSampler
from recpipe.models.artifact import expect_shape, load_arrays, save_arrays
from recpipe.models.data import Interactions, Queries, check_range, int_array
from recpipe.models.hashed import IdEmbeddingConfig, check_tables
from recpipe.models.layers import MLP, Bag, FieldEmbedding, LinearWide
from recpipe.models.torch_base import TorchModelConfig, TorchRecommender, user_item_csr
from recpipe.train.device import to_device
from recpipe.train.distributed import row_bounds

log = logging.getLogger(__name__)

__all__ = [
    "CtrConfig",
    "CtrInputs",
    "CtrNet",
    "CtrRecommender",
    "ItemTable",
    "UserTable",
]

STATE_FILE = "ctr_state.npz"
#: Memory for the (B, items, hidden) activations of one chunk of full-catalogue scoring.
SCORE_CHUNK_BYTES = 64 * 2**20
#: Pairs scored at a time by predict_proba.
PREDICT_CHUNK = 65_536
#: Rounds of redrawing negatives that hit a train item of the user.
_EXCLUDE_ROUNDS = 20
CROSS_USER_POPULARITY = cross_name("user", "popularity")
CROSS_USER_CATEGORY = cross_name("user", "category")
#: The id fields of the CTR models that ``id_embedding.tables`` can hash.
CTR_TABLES: tuple[str, ...] = ("user", "item")


# ---------------------------------------------------------------------- configs
class CtrConfig(TorchModelConfig):
    """Options shared by Wide & Deep and DeepFM (plus the training loop's)."""

    embedding_dim: int = Field(default=32, ge=1, description="D: embedding dimension")
    hidden: tuple[PositiveInt, ...] = Field(
        default=(128, 64), description="widths of the MLP's hidden layers (may be empty)"
    )
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="dropout in the MLP")
    negatives: int = Field(default=4, ge=1, description="sampled negatives per positive")
    sampling_alpha: float = Field(
        default=0.0, ge=0.0, description="negatives ~ train count ** alpha (0: uniform)"
    )
    exclude_seen: bool = Field(
        default=True, description="redraw negatives that are train items of the user"
    )
    l2: float = Field(default=1e-5, ge=0.0, description="l2 on the batch's embeddings")
    init_std: float = Field(default=0.01, gt=0.0, description="std of the embedding init")
    # training-loop defaults suited to these models. With 1e-3 and patience 3, DeepFM on
    # the default data sat ~6 epochs on a popularity plateau (validation Recall@20
    # 0.215-0.223, pop's level) before personalising (0.323 at epoch 25); a small
    # validation dip there stopped it on the plateau, collapsed to popularity (test
    # 0.303 vs pop 0.301, coverage@20 0.08). 3e-3 leaves the plateau at once (0.222,
    # 0.226, 0.245, ...; test 0.427 after 14 epochs, half the time) and patience 5
    # rides out a dip.
    epochs: int = Field(default=30, ge=1, description="most epochs to train")
    batch_size: int = Field(default=1024, ge=1, description="examples per minibatch")
    learning_rate: float = Field(default=3e-3, gt=0)
    patience: int | None = Field(default=5, ge=1)
    id_embedding: IdEmbeddingConfig = Field(
        default_factory=IdEmbeddingConfig,
        description="user / item fields (embeddings and first-order weights): one table row "
        "per id (kind: table) or hashed buckets (kind: hashed; tables: user, item)",
    )

    @field_validator("id_embedding")
    @classmethod
    def _known_tables(cls, spec: IdEmbeddingConfig) -> IdEmbeddingConfig:
        return check_tables(spec, CTR_TABLES)


# ---------------------------------------------------------------------- tensors
class CtrInputs(NamedTuple):
    """A batch of (user, item) pairs as tensors. B: batch size.

    Attributes
    ----------
    users, items : torch.Tensor
        (B,) int64 indices.
    dense : torch.Tensor
        (B, 2) float: normalised log user activity, normalised log item count.
    categories : Bag or None
        B rows: each item's category ids, weights ``1 / n_categories`` (the mean).
    crosses : Bag or None
        B rows of hashed cross buckets (``wide_deep``): the user x popularity bucket
        (weight 1), then the user x category buckets (weights ``1 / n_categories``).
    """

    users: torch.Tensor
    items: torch.Tensor
    dense: torch.Tensor
    categories: Bag | None = None
    crosses: Bag | None = None


class ItemTable(NamedTuple):
    """Every item's inputs, for full-catalogue scoring. I: n_items.

    Attributes
    ----------
    dense : torch.Tensor
        (I,) float normalised log train count.
    categories : Bag or None
        I rows, as in :class:`CtrInputs`.
    indptr : torch.Tensor or None
        (I + 1,) int64 row pointer of ``categories`` (to take a chunk of items).
    popularity_bucket : torch.Tensor
        (I,) int64 popularity bucket of each item.
    """

    dense: torch.Tensor
    categories: Bag | None
    indptr: torch.Tensor | None
    popularity_bucket: torch.Tensor


class UserTable(NamedTuple):
    """The user side of full-catalogue scoring. B: users.

    Attributes
    ----------
    users : torch.Tensor
        (B,) int64 user indices.
    dense : torch.Tensor
        (B,) float normalised log activity.
    popularity_cross : torch.Tensor or None
        (B, P) int64 cross buckets of each user with every popularity bucket.
    category_cross : torch.Tensor or None
        (B, C) int64 cross buckets of each user with every category.
    """

    users: torch.Tensor
    dense: torch.Tensor
    popularity_cross: torch.Tensor | None = None
    category_cross: torch.Tensor | None = None


# ---------------------------------------------------------------------- modules
class CtrNet(nn.Module):
    """The parts both models share: field embeddings, first-order weights and the deep MLP.

    Abstract: subclasses define ``forward(inputs) -> (B,) logits`` and the terms
    ``_pair_terms`` / ``_chunk_terms`` that :meth:`score_all` adds to the deep part.

    Parameters
    ----------
    n_users, n_items : int
        Table sizes (reserved slots included).
    n_categories : int
        C: number of category ids (0: no category field).
    dim : int
        D: embedding dimension.
    hidden : sequence of int
        Hidden widths of the MLP.
    dropout : float
        Dropout in the MLP.
    init_std : float
        Standard deviation of the embedding initialisation.
    id_embedding : IdEmbeddingConfig, optional
        Plain tables (default: the user and item fields share one fused table in
        :attr:`embed` and one in :attr:`linear`) or hashed buckets
        (:mod:`recpipe.models.hashed`) for the ``user`` and / or ``item`` field; a
        hashed field's first-order weight uses the hash functions of its embedding.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_categories: int,
        dim: int,
        hidden: Sequence[int],
        dropout: float,
        init_std: float = 0.01,
        id_embedding: IdEmbeddingConfig | None = None,
    ) -> None:
        super().__init__()
        self.n_items = int(n_items)
        self.dim = int(dim)
        self.has_categories = n_categories > 0
        self.embed = FieldEmbedding(
            [n_users, n_items],
            dim,
            bag_size=n_categories,
            init_std=init_std,
            names=CTR_TABLES,
            id_embedding=id_embedding,
        )
        self.linear = LinearWide(
            [n_users, n_items], bag_size=n_categories, names=CTR_TABLES, id_embedding=id_embedding
        )
        n_item_fields = 2 if self.has_categories else 1
        # deep input: [e_user, dense_user | e_item, (e_category), dense_item]
        self.user_columns = slice(0, dim + 1)
        self.item_columns = slice(dim + 1, dim + 1 + n_item_fields * dim + 1)
        self.mlp = MLP(self.item_columns.stop, hidden, dropout)

    # pieces ------------------------------------------------------------------
    def fields(self, inputs: CtrInputs) -> torch.Tensor:
        """(B, F, D) embeddings: user, item, (category)."""
        ids = torch.stack([inputs.users, inputs.items], dim=1)
        return self.embed(ids, inputs.categories if self.has_categories else None)

    def deep(self, v: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """(B,) MLP logit from the (B, F, D) field embeddings and (B, 2) dense inputs."""
        x = torch.cat([v[:, 0], dense[:, :1], v[:, 1:].flatten(1), dense[:, 1:]], dim=1)
        return self.mlp(x)[:, 0]

    def first_order(self, inputs: CtrInputs) -> torch.Tensor:
        """(B,) bias + user, item and (mean) category weights."""
        ids = torch.stack([inputs.users, inputs.items], dim=1)
        return self.linear(ids, inputs.categories if self.has_categories else None)

    def penalty(self, inputs: CtrInputs) -> torch.Tensor:
        """Mean over the batch of the squared norm of its rows' embeddings."""
        return self.fields(inputs).float().pow(2).sum(dim=(1, 2)).mean()

    # full-catalogue scoring ------------------------------------------------------
    def _item_fields(self, items: ItemTable) -> torch.Tensor:
        """(I, F_item, D) item-side embeddings: item, (mean category)."""
        parts = [self.embed.field_weight(1)]
        if self.has_categories:
            assert items.categories is not None
            parts.append(self.embed.bag(items.categories))
        return torch.stack(parts, dim=1)

    def _item_first_order(self, items: ItemTable) -> torch.Tensor:
        """(I,) item and (mean) category weights, without the bias."""
        out = self.linear.field_weight(1)
        if self.has_categories:
            assert items.categories is not None
            out = out + self.linear.pool(items.categories)
        return out

    def _deep_parts(
        self, users: UserTable, e_user: torch.Tensor, item_fields: torch.Tensor, items: ItemTable
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """First-layer pre-activations: (B, H) user part (with bias), (I, H) item part."""
        x_user = torch.cat([e_user, users.dense[:, None].to(e_user.dtype)], dim=1)
        x_item = torch.cat(
            [item_fields.flatten(1), items.dense[:, None].to(item_fields.dtype)], dim=1
        )
        return (
            self.mlp.first_partial(x_user, self.user_columns, bias=True),
            self.mlp.first_partial(x_item, self.item_columns),
        )

    def _chunk_size(self, n_users: int) -> int:
        # float32 bytes per (user, item): each layer's output, before and after the ReLU
        per_pair = 4 * 2 * (sum(self.mlp.hidden) + 1)
        return max(1, SCORE_CHUNK_BYTES // (max(n_users, 1) * per_pair))

    def _pair_terms(
        self, users: UserTable, items: ItemTable, item_fields: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Model-specific (B,) user and (I,) item terms added to every pair's logit."""
        raise NotImplementedError

    def _chunk_terms(
        self,
        users: UserTable,
        items: ItemTable,
        item_fields: torch.Tensor,
        start: int,
        stop: int,
    ) -> torch.Tensor | None:
        """Model-specific (B, stop - start) terms of the items ``start:stop`` (or None)."""
        return None

    def score_all(self, users: UserTable, items: ItemTable) -> torch.Tensor:
        """(B, I) logits of every user for every item (equal to :meth:`forward` per pair).

        The deep part runs over chunks of items sized to :data:`SCORE_CHUNK_BYTES`.
        """
        e_user = self.embed.field(0, users.users)
        item_fields = self._item_fields(items)
        user_pre, item_pre = self._deep_parts(users, e_user, item_fields, items)
        user_term, item_term = self._pair_terms(users, items, item_fields)
        b, n = users.users.shape[0], self.n_items
        out = torch.empty((b, n), dtype=torch.float32, device=users.users.device)
        step = self._chunk_size(b)
        for start in range(0, n, step):
            stop = min(start + step, n)
            z = user_pre[:, None, :] + item_pre[None, start:stop, :]
            scores = self.mlp.tail(z)[..., 0].float()
            scores = scores + user_term[:, None] + item_term[None, start:stop]
            extra = self._chunk_terms(users, items, item_fields, start, stop)
            if extra is not None:
                scores = scores + extra
            out[:, start:stop] = scores
        return out


# ---------------------------------------------------------------------- numpy side
@dataclass
class _Batch:
    """One minibatch in numpy (see :class:`CtrInputs`), with its labels when training."""

    users: np.ndarray
    items: np.ndarray
    dense: np.ndarray
    categories: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    crosses: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    label: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def rows(self, lo: int, hi: int) -> _Batch:
        """Rows ``[lo, hi)`` of the minibatch (bags cut at their offsets)."""

        def bag(
            parts: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
            if parts is None:
                return None
            indices, offsets, weights = parts
            start = int(offsets[lo]) if lo < offsets.shape[0] else int(indices.shape[0])
            stop = int(offsets[hi]) if hi < offsets.shape[0] else int(indices.shape[0])
            return indices[start:stop], offsets[lo:hi] - start, weights[start:stop]

        return _Batch(
            users=self.users[lo:hi],
            items=self.items[lo:hi],
            dense=self.dense[lo:hi],
            categories=bag(self.categories),
            crosses=bag(self.crosses),
            label=None if self.label is None else self.label[lo:hi],
        )

    def inputs(self, device: torch.device) -> CtrInputs:
        def bag(parts: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> Bag | None:
            if parts is None:
                return None
            return Bag(*(to_device(p, device) for p in parts))

        return CtrInputs(
            users=to_device(self.users, device),
            items=to_device(self.items, device),
            dense=to_device(self.dense, device),
            categories=bag(self.categories),
            crosses=bag(self.crosses),
        )


def _csr_rows(m: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of a CSR matrix as (indices (N,), offsets (B,), data (N,)), vectorised."""
    starts = m.indptr[rows].astype(np.int64)
    lengths = m.indptr[rows + 1].astype(np.int64) - starts
    ends = np.cumsum(lengths)
    offsets = ends - lengths
    pos = np.repeat(starts - offsets, lengths) + np.arange(int(ends[-1]) if len(ends) else 0)
    return m.indices[pos].astype(np.int64), offsets, m.data[pos].astype(np.float32)


class _Features:
    """Turns (user, item) index pairs into model inputs (numpy), and builds the scoring tables.

    Parameters
    ----------
    item_counts : numpy.ndarray
        (n_items,) train counts.
    user_activity : numpy.ndarray
        (n_users,) distinct train items of each user.
    categories : scipy.sparse.csr_matrix or None
        (n_items, C) multi-hot item categories.
    crosses : bool
        Build the wide crosses (Wide & Deep).
    n_cross_buckets, hash_seed : int
        The cross hash's space and seed.
    """

    def __init__(
        self,
        item_counts: np.ndarray,
        user_activity: np.ndarray,
        categories: sp.csr_matrix | None,
        *,
        crosses: bool,
        n_cross_buckets: int = 1,
        hash_seed: int = 0,
    ) -> None:
        counts = np.asarray(item_counts, dtype=np.float64)
        activity = np.asarray(user_activity, dtype=np.float64)
        self.item_dense = (np.log1p(counts) / max(np.log1p(counts.max(initial=0)), 1e-12)).astype(
            np.float32
        )
        self.user_dense = (
            np.log1p(activity) / max(np.log1p(activity.max(initial=0)), 1e-12)
        ).astype(np.float32)
        self.popularity_bucket = np.floor(np.log2(1.0 + counts)).astype(np.int64)
        self.n_popularity_buckets = int(self.popularity_bucket.max(initial=0)) + 1
        self.categories: sp.csr_matrix | None = None
        if categories is not None:
            cats = sp.csr_matrix(categories, dtype=np.float32, copy=True)
            cats.data[:] = 1.0  # multi-hot -> mean over each item's categories
            cats.eliminate_zeros()
            cats.sort_indices()
            lengths = np.diff(cats.indptr)
            cats.data = (1.0 / np.repeat(np.maximum(lengths, 1), lengths)).astype(np.float32)
            self.categories = cats
        self.crosses = crosses
        self.n_cross_buckets = int(n_cross_buckets)
        self.hash_seed = int(hash_seed)

    @property
    def n_categories(self) -> int:
        """C (0 without categories)."""
        return 0 if self.categories is None else int(self.categories.shape[1])

    def _hash(self, users: np.ndarray, values: np.ndarray, name: str) -> np.ndarray:
        return hash_cross(
            users, values, n_buckets=self.n_cross_buckets, seed=self.hash_seed, name=name
        )

    def batch(
        self, users: np.ndarray, items: np.ndarray, label: np.ndarray | None = None
    ) -> _Batch:
        """The inputs of aligned (B,) users and items."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        dense = np.stack([self.user_dense[users], self.item_dense[items]], axis=1)
        categories = None
        if self.categories is not None:
            categories = _csr_rows(self.categories, items)
        crosses = None
        if self.crosses:
            b = users.shape[0]
            pop = self._hash(users, self.popularity_bucket[items], CROSS_USER_POPULARITY)
            if categories is None:
                crosses = (pop, np.arange(b, dtype=np.int64), np.ones(b, dtype=np.float32))
            else:
                cat_idx, cat_off, cat_w = categories
                lengths = np.diff(np.append(cat_off, cat_idx.shape[0]))
                cat = self._hash(np.repeat(users, lengths), cat_idx, CROSS_USER_CATEGORY)
                offsets = cat_off + np.arange(b)  # one popularity entry before each row
                idx = np.empty(b + cat.shape[0], dtype=np.int64)
                weights = np.empty(b + cat.shape[0], dtype=np.float32)
                idx[offsets], weights[offsets] = pop, 1.0
                cat_pos = np.repeat(offsets + 1 - cat_off, lengths) + np.arange(cat.shape[0])
                idx[cat_pos], weights[cat_pos] = cat, cat_w
                crosses = (idx, offsets, weights)
        return _Batch(users, items, dense.astype(np.float32), categories, crosses, label)

    def item_table(self, device: torch.device) -> ItemTable:
        """Every item's inputs on ``device``."""
        categories = indptr = None
        if self.categories is not None:
            c = self.categories
            indptr = to_device(c.indptr.astype(np.int64), device)
            categories = Bag(
                to_device(c.indices.astype(np.int64), device),
                indptr[:-1],
                to_device(c.data.astype(np.float32), device),
            )
        return ItemTable(
            dense=to_device(self.item_dense, device),
            categories=categories,
            indptr=indptr,
            popularity_bucket=to_device(self.popularity_bucket, device),
        )

    def user_table(self, users: np.ndarray, device: torch.device) -> UserTable:
        """The user side of scoring ``users`` (B,) on ``device``."""
        users = np.asarray(users, dtype=np.int64)
        pop_cross = cat_cross = None
        if self.crosses:
            b = users.shape[0]
            p, c = self.n_popularity_buckets, self.n_categories
            pop = self._hash(np.repeat(users, p), np.tile(np.arange(p), b), CROSS_USER_POPULARITY)
            pop_cross = to_device(pop.reshape(b, p), device)
            if c:
                cat = self._hash(np.repeat(users, c), np.tile(np.arange(c), b), CROSS_USER_CATEGORY)
                cat_cross = to_device(cat.reshape(b, c), device)
        return UserTable(
            users=to_device(users, device),
            dense=to_device(self.user_dense[users], device),
            popularity_cross=pop_cross,
            category_cross=cat_cross,
        )


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A seed derived from the config seed, the epoch and a stream number."""
    return int(
        np.random.SeedSequence([int(seed) % 2**63, int(epoch), int(stream)]).generate_state(1)[0]
    )


# ---------------------------------------------------------------------- models
class CtrRecommender(TorchRecommender):
    """Base of :class:`~recpipe.models.wide_deep.WideAndDeep` and
    :class:`~recpipe.models.deepfm.DeepFM` (see the module docstring).

    Class attributes
    ----------------
    predicts_ctr : bool
        True: :meth:`predict_proba` gives click probabilities (the ``ctr`` protocol).
    """

    Config: ClassVar[type[CtrConfig]] = CtrConfig
    query_kinds: ClassVar[frozenset[str]] = frozenset({"user"})
    predicts_ctr: ClassVar[bool] = True
    ddp_sharding: ClassVar[Literal["rows", "batches"]] = "rows"
    _uses_crosses: ClassVar[bool] = False

    def __init__(self, config: Any, meta: Any) -> None:
        super().__init__(config, meta)
        self._user_activity = np.zeros(self.meta.n_users, dtype=np.int64)
        self._features: _Features | None = None
        self._item_tables: dict[str, ItemTable] = {}
        self._pos_users = np.zeros(0, dtype=np.int64)
        self._pos_items = np.zeros(0, dtype=np.int64)
        self._seen_keys = np.zeros(0, dtype=np.int64)

    # inputs --------------------------------------------------------------------
    @property
    def categories(self) -> sp.csr_matrix | None:
        """The items' multi-hot categories from the meta, or None."""
        return getattr(self.meta, "item_categories", None)

    @property
    def features(self) -> _Features:
        """The input builder (from the meta and the users' train activity)."""
        if self._features is None:
            cfg = self.config
            self._features = _Features(
                self.meta.item_counts,
                self._user_activity,
                self.categories,
                crosses=self._uses_crosses,
                n_cross_buckets=getattr(cfg, "n_cross_buckets", 1),
                hash_seed=getattr(cfg, "hash_seed", 0),
            )
            self._item_tables = {}
        return self._features

    def _net_args(self) -> dict[str, Any]:
        cfg = self.config
        cats = self.categories
        return {
            "n_users": self.meta.n_users,
            "n_items": self.meta.n_items,
            "n_categories": 0 if cats is None else int(cats.shape[1]),
            "dim": cfg.embedding_dim,
            "hidden": tuple(cfg.hidden),
            "dropout": cfg.dropout,
            "init_std": cfg.init_std,
            "id_embedding": cfg.id_embedding,
        }

    # training ------------------------------------------------------------------
    def _prepare(self, train: Interactions, valid: Interactions | None) -> None:
        n_users, n_items = self.meta.n_users, self.meta.n_items
        seen = user_item_csr(train, n_users, n_items).tocoo()
        if seen.nnz == 0:
            raise ValueError(f"{self.name}: no (known user, known item) pair to train on")
        self._pos_users = seen.row.astype(np.int64)
        self._pos_items = seen.col.astype(np.int64)
        self._seen_keys = np.sort(self._pos_users * n_items + self._pos_items)
        self._user_activity = np.bincount(self._pos_users, minlength=n_users).astype(np.int64)
        self._features = None

    def _negatives(self, epoch: int) -> np.ndarray:
        """(n_positives, negatives) sampled items of one epoch (a function of seed and epoch)."""
        cfg = self.config
        n, k = self._pos_users.shape[0], cfg.negatives
        sampler = NegativeSampler(
            self.meta.item_counts,
            alpha=cfg.sampling_alpha,
            seed=_epoch_seed(cfg.seed, epoch, 0),
            cache_size=max(n * k, 1),
        )
        neg = sampler.sample_matrix(n, k).astype(np.int64)
        rows, cols = np.nonzero(self._rejected(np.arange(n)[:, None], neg))
        for _ in range(_EXCLUDE_ROUNDS):
            if rows.size == 0:
                break
            neg[rows, cols] = sampler.sample(rows.size)
            again = self._rejected(rows, neg[rows, cols])
            rows, cols = rows[again], cols[again]
        return neg

    def _rejected(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Where a negative ``items`` drawn for positive ``rows`` (same shape, or (N, 1)
        against (N, k)) must be redrawn: a train item of the user (``exclude_seen``),
        else the positive itself."""
        if not self.config.exclude_seen:
            return items == self._pos_items[rows]
        keys = self._pos_users[rows] * self.meta.n_items + items
        pos = np.minimum(np.searchsorted(self._seen_keys, keys), self._seen_keys.size - 1)
        return self._seen_keys[pos] == keys

    def _n_batches(self, epoch: int) -> int:
        rows = self._pos_users.shape[0] * (1 + self.config.negatives)
        return -(-rows // self.config.batch_size)

    def _batches(self, epoch: int) -> Iterator[_Batch]:
        cfg = self.config
        k = cfg.negatives
        users = np.repeat(self._pos_users, 1 + k)
        items = np.concatenate([self._pos_items[:, None], self._negatives(epoch)], axis=1)
        items = items.reshape(-1)
        label = np.zeros((self._pos_users.shape[0], 1 + k), dtype=np.float32)
        label[:, 0] = 1.0
        label = label.reshape(-1)
        order = shard_order(
            users.shape[0],
            batch_size=cfg.batch_size,
            shuffle=True,
            seed=_epoch_seed(cfg.seed, epoch, 1),
        )
        features = self.features
        return (
            features.batch(users[rows], items[rows], label[rows])
            for rows in (
                order[s : s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)
            )
        )

    def _step(
        self, module: torch.nn.Module, batch: _Batch, device: torch.device
    ) -> tuple[torch.Tensor, int]:
        assert batch.label is not None
        inputs = batch.inputs(device)
        logits = module(inputs).float()
        label = to_device(batch.label, device)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, label)
        if self.config.l2 > 0:
            loss = loss + self.config.l2 * module.penalty(inputs)
        return loss, len(batch)

    def _shard_batch(self, batch: _Batch, rank: int, world_size: int) -> _Batch:
        # the loss and the penalty are means over rows: a rank's rows, weighted by
        # their share, give the 1-process gradient
        return batch.rows(*row_bounds(len(batch), rank, world_size))

    # scoring -------------------------------------------------------------------
    def _item_table(self, device: torch.device) -> ItemTable:
        features = self.features
        key = str(device)
        if key not in self._item_tables:
            self._item_tables[key] = features.item_table(device)
        return self._item_tables[key]

    def _score_users(self, module: torch.nn.Module, users: torch.Tensor) -> torch.Tensor:
        device = users.device
        user_table = self.features.user_table(users.detach().cpu().numpy(), device)
        return module.score_all(user_table, self._item_table(device))

    def _score_tensor(
        self, module: torch.nn.Module, queries: Queries, device: torch.device
    ) -> torch.Tensor:
        return self._score_users(module, to_device(queries.users.astype(np.int64), device))

    def predict_logit(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Logits of aligned (user, item) pairs.

        Parameters
        ----------
        users, items : numpy.ndarray
            (N,) int user and item indices.

        Returns
        -------
        numpy.ndarray
            (N,) float64 logits (:meth:`predict_proba` before the sigmoid).

        Raises
        ------
        ValueError
            The arrays differ in shape or hold an index out of range.
        NotFittedError
            The model is not fitted.
        """
        self._require_fitted()
        users = int_array(users, "users", 1)
        items = int_array(items, "items", 1)
        if users.shape != items.shape:
            raise ValueError(
                f"users and items must be aligned 1-D arrays, got {users.shape} and {items.shape}"
            )
        check_range(users, self.meta.n_users, "users")
        check_range(items, self.meta.n_items, "items")
        assert self.module is not None
        module = self.module.eval()
        out = np.empty(users.shape[0], dtype=np.float64)
        with torch.no_grad():
            for start in range(0, users.shape[0], PREDICT_CHUNK):
                stop = min(start + PREDICT_CHUNK, users.shape[0])
                batch = self.features.batch(users[start:stop], items[start:stop])
                out[start:stop] = module(batch.inputs(self.device)).float().cpu().numpy()
        return out

    def predict_proba(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Click probabilities of aligned (user, item) pairs.

        Parameters
        ----------
        users, items : numpy.ndarray
            (N,) int user and item indices.

        Returns
        -------
        numpy.ndarray
            (N,) float64 probabilities in (0, 1): the sigmoid of :meth:`predict_logit`.
        """
        logits = self.predict_logit(users, items)
        return 1.0 / (1.0 + np.exp(-logits))

    # persistence ---------------------------------------------------------------
    def _save_extra(self, path: Path) -> None:
        save_arrays(path / STATE_FILE, user_activity=self._user_activity)

    def _load_extra(self, path: Path) -> None:
        arrays = load_arrays(path / STATE_FILE, ["user_activity"])
        activity = expect_shape(
            arrays["user_activity"], (self.meta.n_users,), f"{STATE_FILE} user_activity"
        )
        self._user_activity = activity.astype(np.int64)
        self._features = None
