"""Matrix factorization in torch: user and item embeddings with biases, four objectives.

=================  ==========================================================================
``mf_explicit``    ratings regression: MSE on the rating events (predicts ratings)
``mf_bce``         implicit feedback as classification: BCE, K sampled negatives per positive
``mf_bpr``         implicit feedback as ranking: BPR with uniform or popularity-sampled
                   negatives (Rendle et al. 2009)
``mf_wals``        implicit feedback as weighted regression (iALS / WALS, Hu, Koren &
                   Volinsky 2008): confidence ``1 + alpha * r`` on observed cells, weight
                   ``unobserved_weight`` on every other cell, the loss over all items
                   computed exactly with the Gramian (:func:`.losses.weighted_full_loss`)
=================  ==========================================================================

The score of user u for item i is :math:`p_u \\cdot q_i + b_u + b_i + g`. Every model
scores ``user`` queries (top-K for a known user); the implicit ones early-stop on
Recall@20 of the validation part, ``mf_explicit`` on its RMSE. Positives of the
implicit models are the distinct (user, item) pairs of the training part.

The ``id_embedding`` option (:class:`~recpipe.models.hashed.IdEmbeddingConfig`) swaps the
user and / or item tables (factors and biases) for hashed buckets, e.g.
``id_embedding: {kind: hashed, buckets: 0.25, hashes: 2}`` (Bloom embeddings, Serrà &
Karatzoglou 2017; see :mod:`recpipe.models.hashed`); the default is one row per id.

``mf_bpr`` and ``mf_bce`` compute their step's gradient in closed form (``gradient:
closed_form``, the default): the sigmoid of the score (difference) gives d loss / d
score, and the rows' gradients (factors, biases, the L2 term on the looked-up rows)
are added into the tables' dense ``.grad`` with ``index_add_``, so the optimiser sees
the gradient autograd would give, up to float rounding, with no graph built. Autograd
over the same loss runs instead with hashed id tables, under DDP, or with
``gradient: autograd``. With an optimiser whose update is row-sparse (``optimizer:
adagrad``, or ``sgd`` with ``momentum: 0``; no weight decay) they hand the loop the same
gradient as the distinct looked-up rows of each table instead (``_row_step``, on the
CPU), and only those rows and their optimiser state move
(:mod:`recpipe.train.sparse`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import torch
from pydantic import Field, field_validator

from recpipe.errors import TrainingError
from recpipe.features.idmap import N_RESERVED
from recpipe.features.inputs import TripletBatch, shard_order, triplet_batches
from recpipe.features.sampling import NegativeSampler
from recpipe.models.data import Interactions, Queries
from recpipe.models.hashed import (
    IdEmbeddingConfig,
    check_tables,
    embedding_table,
    init_normal_,
    init_zeros_,
    make_id_embedding,
)
from recpipe.models.losses import (
    bpr_loss,
    bpr_loss_and_grad,
    mse_loss,
    sampled_bce_loss,
    sampled_bce_loss_and_grad,
    weighted_full_loss,
)
from recpipe.models.space import Float, Int, SearchSpace
from recpipe.models.sparse import drop_reserved
from recpipe.models.torch_base import (
    TorchModelConfig,
    TorchRecommender,
    user_item_csr,
)
from recpipe.train.device import resolve_device, to_device
from recpipe.train.distributed import row_bounds
from recpipe.train.loop import GradStepFn, RowSparseStepFn
from recpipe.train.sparse import RowGrad, segments

_USER = frozenset({"user"})
#: The id tables of the MF models (``id_embedding.tables``).
MF_TABLES: tuple[str, ...] = ("user", "item")


class MFModule(torch.nn.Module):
    """User and item embeddings (D) with user, item and global biases.

    Parameters
    ----------
    n_users, n_items : int
        Table sizes (reserved slots included).
    factors : int
        D.
    init_std : float
        Standard deviation of the normal initialisation of the factors.
    id_embedding : IdEmbeddingConfig, optional
        Plain tables (default) or hashed buckets (:mod:`recpipe.models.hashed`) for the
        user and / or item ids; a hashed id's bias is hashed with the same functions
        as its factors, so a bucket holds ``[q, b]`` as a table row would.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        factors: int,
        init_std: float,
        id_embedding: IdEmbeddingConfig | None = None,
    ) -> None:
        super().__init__()
        spec = id_embedding or IdEmbeddingConfig()
        self.user = make_id_embedding(spec, n_users, factors, table="user")
        self.item = make_id_embedding(spec, n_items, factors, table="item")
        self.user_bias = make_id_embedding(spec, n_users, 1, table="user")
        self.item_bias = make_id_embedding(spec, n_items, 1, table="item")
        self.global_bias = torch.nn.Parameter(torch.zeros(1))
        init_normal_(self.user, init_std)
        init_normal_(self.item, init_std)
        init_zeros_(self.user_bias)
        init_zeros_(self.item_bias)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of (B,) users for (B,) items, or (B, C) items per user -> (B,) / (B, C)."""
        u = self.user(users)
        v = self.item(items)
        b_i = self.item_bias(items).squeeze(-1)
        b_u = self.user_bias(users).squeeze(-1) + self.global_bias
        if items.dim() == 2:
            return torch.einsum("bd,bcd->bc", u, v) + b_i + b_u[:, None]
        return (u * v).sum(-1) + b_i + b_u

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """(B, n_items) scores of every item for (B,) users."""
        u = self.user(users)
        b_u = self.user_bias(users) + self.global_bias
        return u @ embedding_table(self.item).T + embedding_table(self.item_bias).T + b_u

    def augmented(
        self, users: torch.Tensor, items: slice | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Vectors whose dot product is the full score, biases folded in:
        ``[p_u, 1, b_u + g]`` (B, D + 2) and ``[q_i, b_i, 1]`` (I, D + 2)."""
        p = self.user(users)
        ones_u = torch.ones_like(p[:, :1])
        p_aug = torch.cat([p, ones_u, self.user_bias(users) + self.global_bias], dim=1)
        q = embedding_table(self.item)[items]
        b_i = embedding_table(self.item_bias)[items]
        q_aug = torch.cat([q, b_i, torch.ones_like(q[:, :1])], dim=1)
        return p_aug, q_aug


class MFConfig(TorchModelConfig):
    """Options shared by the factorization models."""

    factors: int = Field(default=64, ge=1, description="D: size of the user and item factors")
    init_std: float = Field(default=0.05, gt=0, description="std of the factors' initialisation")
    l2: float = Field(default=1e-5, ge=0, description="L2 penalty on the batch's factors")
    learning_rate: float = Field(default=3e-3, gt=0)
    epochs: int = Field(default=40, ge=1)
    patience: int | None = Field(default=4, ge=1)
    id_embedding: IdEmbeddingConfig = Field(
        default_factory=IdEmbeddingConfig,
        description="user / item ids: one table row each (kind: table) or hashed buckets "
        "(kind: hashed; tables: user, item)",
    )

    @field_validator("id_embedding")
    @classmethod
    def _known_tables(cls, spec: IdEmbeddingConfig) -> IdEmbeddingConfig:
        return check_tables(spec, MF_TABLES)


class _MF(TorchRecommender):
    """Shared parts: the module, user scoring, the L2 penalty."""

    Config: ClassVar[type[MFConfig]] = MFConfig
    query_kinds: ClassVar[frozenset[str]] = _USER

    def _build_module(self) -> MFModule:
        cfg = self.config
        return MFModule(
            self.meta.n_users, self.meta.n_items, cfg.factors, cfg.init_std, cfg.id_embedding
        )

    def _score_users(self, module: torch.nn.Module, users: torch.Tensor) -> torch.Tensor:
        return module.score_all(users)

    def factors(self) -> tuple[np.ndarray, np.ndarray]:
        """User and item vectors whose dot product is the model's score, biases folded in.

        Returns
        -------
        users : numpy.ndarray
            (n_users, D + 2) float32 rows ``[p_u, 1, b_u + g]``.
        items : numpy.ndarray
            (n_items, D + 2) float32 rows ``[q_i, b_i, 1]``.

            ``users[u] @ items[i]`` equals the score of user u for item i
            (:math:`p_u \\cdot q_i + b_u + b_i + g`). Dropping the last column of both
            keeps ``p_u . q_i + b_i``, which ranks items for a user in the same order.
            Rows of users and items without train events hold their initial values.

        Raises
        ------
        NotFittedError
            The model is not fitted.
        """
        self._require_fitted()
        module = self.module
        assert isinstance(module, MFModule)
        with torch.no_grad():
            users = torch.arange(self.meta.n_users, device=module.global_bias.device)
            p, q = module.augmented(users, slice(None))
        return (
            p.float().cpu().numpy().astype(np.float32, copy=False),
            q.float().cpu().numpy().astype(np.float32, copy=False),
        )

    def item_vectors(self) -> np.ndarray:
        """(n_items, D) the item factors ``q_i`` (no bias), for cold-start similarity."""
        return self.factors()[1][:, :-2]

    def _score_tensor(
        self, module: torch.nn.Module, queries: Queries, device: torch.device
    ) -> torch.Tensor:
        return module.score_all(to_device(queries.users, device))

    def _shuffled(self, n: int, epoch: int) -> Iterator[np.ndarray]:
        """Row indices of one epoch in minibatches: a permutation seeded by seed and epoch."""
        step = self.config.batch_size
        order = shard_order(n, batch_size=step, shuffle=True, seed=self.config.seed * 7919 + epoch)
        for start in range(0, order.shape[0], step):
            yield order[start : start + step]

    def _penalty(self, module: MFModule, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Mean squared norm of the factors in the batch, times ``l2``."""
        if self.config.l2 == 0:
            return torch.zeros((), device=users.device)
        u = module.user(users).pow(2).sum(-1).mean()
        v = module.item(items).pow(2).sum(-1).mean()
        return self.config.l2 * (u + v)


# ---------------------------------------------------------------------- explicit
class MFExplicitConfig(MFConfig):
    """Options of ``mf_explicit``."""

    l2: float = Field(default=0.05, ge=0)
    learning_rate: float = Field(default=2e-3, gt=0)
    batch_size: int = Field(default=512, ge=1)
    factors: int = Field(default=32, ge=1)


class MFExplicit(_MF):
    """Rating prediction by MSE on the training events' values (ratings).

    Early stopping follows the RMSE on the validation events of known users and
    items. On implicit data (every value 1) it learns little: use the implicit models.
    """

    name: ClassVar[str] = "mf_explicit"
    search_space: ClassVar[SearchSpace] = {
        "factors": Int(8, 128, log=True),
        "learning_rate": Float(1e-4, 3e-2, log=True),
        "l2": Float(1e-4, 1.0, log=True),
    }
    Config: ClassVar[type[MFExplicitConfig]] = MFExplicitConfig
    predicts_ratings: ClassVar[bool] = True
    monitor: ClassVar[str] = "rmse"
    ddp_sharding: ClassVar[Literal["rows", "batches"]] = "rows"
    monitor_mode: ClassVar[Literal["max", "min"]] = "min"

    def _prepare(self, train: Interactions, valid: Interactions | None) -> None:
        keep = (train.user_idx >= N_RESERVED) & (train.item_idx >= N_RESERVED)
        self._users = train.user_idx[keep].astype(np.int64)
        self._items = train.item_idx[keep].astype(np.int64)
        self._values = train.value[keep].astype(np.float32)
        self._mean = float(self._values.mean()) if self._values.size else 0.0

    def _build_module(self) -> MFModule:
        module = super()._build_module()
        with torch.no_grad():
            module.global_bias.fill_(getattr(self, "_mean", 0.0))
        return module

    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        self._prepare(train, valid)  # the global mean initialises the module
        super()._fit(train, valid)

    def _n_batches(self, epoch: int) -> int:
        return -(-self._users.shape[0] // self.config.batch_size)

    def _batches(self, epoch: int) -> Iterator[tuple[np.ndarray, ...]]:
        for idx in self._shuffled(self._users.shape[0], epoch):
            yield self._users[idx], self._items[idx], self._values[idx]

    def _step(
        self, module: torch.nn.Module, batch: Any, device: torch.device
    ) -> tuple[torch.Tensor, int]:
        users, items, values = (to_device(a, device) for a in batch)
        pred = module(users, items)
        loss = mse_loss(pred, values) + self._penalty(module, users, items)
        return loss, int(users.shape[0])

    def _validator(self, train: Interactions, valid: Interactions) -> Any:
        keep = (valid.user_idx >= N_RESERVED) & (valid.item_idx >= N_RESERVED)
        if not keep.any():
            return None
        users = valid.user_idx[keep].astype(np.int64)
        items = valid.item_idx[keep].astype(np.int64)
        values = valid.value[keep].astype(np.float32)

        def rmse(module: torch.nn.Module, device: torch.device) -> Mapping[str, float]:
            pred = module(to_device(users, device), to_device(items, device)).float().cpu()
            return {"rmse": float(torch.sqrt(torch.mean((pred - torch.from_numpy(values)) ** 2)))}

        return rmse


# ---------------------------------------------------------------------- sampled implicit
class SampledMFConfig(MFConfig):
    """Options of the implicit models with sampled negatives."""

    l2: float = Field(default=0.01, ge=0)
    negatives: int = Field(default=4, ge=1, description="K: sampled negatives per positive")
    sampling: Literal["uniform", "popularity"] = Field(
        default="uniform", description="negatives uniformly, or by train popularity^alpha"
    )
    sampling_alpha: float = Field(
        default=0.75, ge=0, description="exponent on the popularity (sampling=popularity)"
    )
    gradient: Literal["closed_form", "autograd"] = Field(
        default="closed_form",
        description="closed_form: the step writes its gradient itself, without autograd "
        "(plain id tables in one process; autograd elsewhere); autograd: always backward()",
    )


class _SampledMF(_MF):
    """Implicit MF trained on (user, positive, K negatives) minibatches."""

    Config: ClassVar[type[SampledMFConfig]] = SampledMFConfig
    ddp_sharding: ClassVar[Literal["rows", "batches"]] = "rows"

    def _prepare(self, train: Interactions, valid: Interactions | None) -> None:
        pairs = user_item_csr(train, self.meta.n_users, self.meta.n_items).tocoo()
        if pairs.nnz == 0:
            raise ValueError(f"{self.name}: no (known user, known item) pair to train on")
        self._users = pairs.row.astype(np.int64)
        self._items = pairs.col.astype(np.int64)

    def _n_batches(self, epoch: int) -> int:
        return -(-self._users.shape[0] // self.config.batch_size)

    def _batches(self, epoch: int) -> Iterator[TripletBatch]:
        cfg = self.config
        alpha = 0.0 if cfg.sampling == "uniform" else cfg.sampling_alpha
        n_draws = self._users.shape[0] * cfg.negatives
        sampler = NegativeSampler(
            self.meta.item_counts,
            alpha=alpha,
            seed=cfg.seed * 1_000_003 + epoch,
            cache_size=max(n_draws, 1),
        )
        return triplet_batches(
            self._users,
            self._items,
            n_negatives=cfg.negatives,
            batch_size=cfg.batch_size,
            sampler=sampler,
            seed=cfg.seed * 7919 + epoch,
            exclude_positive=True,
        )

    def _scores(
        self, module: MFModule, batch: TripletBatch, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Positive (B,) and negative (B, K) scores and the L2 penalty, with one lookup
        of each table per step: the penalty reuses the looked-up rows (before, the
        scores and the penalty looked them up twice, six embedding backward passes)."""
        users = to_device(batch.users, device)
        items = torch.cat(
            [to_device(batch.positives, device)[:, None], to_device(batch.negatives, device)],
            dim=1,
        )  # (B, 1 + K)
        u = module.user(users)  # (B, D)
        v = module.item(items)  # (B, 1 + K, D)
        # (BPR's differences cancel the user and global biases, but DDP wants every
        # parameter in the graph: they stay, with a zero gradient)
        b_u = module.user_bias(users).squeeze(-1) + module.global_bias
        scores = (u.unsqueeze(1) * v).sum(-1) + module.item_bias(items).squeeze(-1) + b_u[:, None]
        if self.config.l2:  # mean squared norm of the batch's factors, as _penalty
            penalty = self.config.l2 * (u.pow(2).sum(-1).mean() + v.pow(2).sum(-1).mean())
        else:
            penalty = torch.zeros((), device=device)
        return scores[:, 0], scores[:, 1:], penalty

    # closed-form gradient ----------------------------------------------------------
    #: The loss depends on the differences of a row's scores only (BPR), so the user and
    #: global biases cancel out: their gradient is zero. Autograd's is zero up to rounding
    #: (exactly zero with one negative); with more, Adam scales that residue into steps
    #: of about ``learning_rate`` on the user biases, which shift a user's scores by one
    #: constant (rankings unchanged): the closed form leaves them at zero.
    _row_shift_invariant: ClassVar[bool] = False

    def _loss_and_grad(
        self, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss of (B,) positive and (B, K) negative scores (without the penalty)
        and its (B, 1 + K) gradient with respect to ``[pos, neg]``."""
        raise NotImplementedError

    def _grad_step(self) -> GradStepFn | None:
        """:meth:`_closed_form_step` with plain id tables and ``gradient: closed_form``;
        None (autograd over :meth:`_step`) with hashed ids or ``gradient: autograd``."""
        cfg = self.config
        if cfg.gradient == "autograd":
            return None
        if any(cfg.id_embedding.hashes_table(table) for table in MF_TABLES):
            return None  # a hashed row is a sum over buckets: autograd routes it
        return self._closed_form_step

    def _closed_form_step(
        self, module: torch.nn.Module, batch: TripletBatch, device: torch.device
    ) -> tuple[torch.Tensor, int]:
        """:meth:`_step`'s loss, with its gradient added into the tables' ``.grad``
        (:meth:`_closed_form` gives the looked-up rows' gradients): ``index_add_``
        accumulates the rows of repeated ids, as the embeddings' backward pass does. The
        tables' gradients are dense, as autograd leaves them, so the optimiser takes the
        same step (up to float rounding)."""
        assert isinstance(module, MFModule)
        with torch.no_grad():
            rows = self._closed_form(module, batch, device)
            _dense_grad(module.user.weight).index_add_(0, rows.users, rows.g_u, alpha=rows.a)
            _dense_grad(module.item.weight).index_add_(
                0, rows.items, rows.g_v.view(rows.items.shape[0], -1), alpha=rows.c
            )
            _dense_grad(module.item_bias.weight).index_add_(0, rows.items, rows.g.view(-1, 1))
            user_bias, global_bias = (
                _dense_grad(module.user_bias.weight),
                _dense_grad(module.global_bias),
            )
            if not self._row_shift_invariant:
                user_bias.index_add_(0, rows.users, rows.g.sum(1, keepdim=True))
                global_bias += rows.g.sum()
        return rows.loss, len(batch)

    def _row_sparse_step(self) -> RowSparseStepFn | None:
        """:meth:`_row_step` wherever :meth:`_grad_step` is the closed form, on the CPU."""
        if self._grad_step() is None or resolve_device(self.config.device).type != "cpu":
            return None
        return self._row_step

    def _row_step(
        self, module: torch.nn.Module, batch: TripletBatch, device: torch.device
    ) -> tuple[torch.Tensor, int, list[RowGrad]]:
        """:meth:`_step`'s loss and its gradient as the distinct looked-up rows of each
        table (:class:`~recpipe.train.sparse.RowGrad`), for a row-sparse optimiser step.

        The gradients are those of :meth:`_closed_form`, summed per distinct id rather
        than per batch row: with ``g`` (B, W) the gradient of the loss with respect to
        the scores (W = 1 + K), ``n_u`` / ``n_j`` how often a user / item occurs,

        - user ``u``: ``a n_u p_u + sum over (b, j) with users[b] = u of g[b, j] q_j``;
        - item ``j``: ``c n_j q_j + sum over (b, j') with items[b, j'] = j of g[b, j'] p_b``;
        - item bias ``j``: the sum of those ``g[b, j']``; user bias, global bias: as
          :meth:`_closed_form_step` (BPR: zero, left out).

        Each sum is one ``embedding_bag`` over the ids grouped by
        :func:`~recpipe.train.sparse.segments`: it gathers the other side's rows
        straight from its table, weighted by ``g``, so the (B, W, D) per-row gradient is
        never built. The same sums as the dense ``.grad`` up to float rounding.
        """
        assert isinstance(module, MFModule)
        if device.type != "cpu":  # the grouping runs in numpy: a CPU step
            raise TrainingError(f"{self.name}: the row-sparse step runs on the CPU, not {device}")
        l2 = self.config.l2
        bag = torch.nn.functional.embedding_bag
        with torch.no_grad():
            users_np = batch.users
            items_np = np.column_stack((batch.positives, batch.negatives))  # (B, W)
            flat_np = items_np.reshape(-1)
            n_rows, width = items_np.shape  # W = 1 + K
            # Gathers, scores and 1-D sums run in numpy on views of the tables' memory: a
            # CPU step of small operations, where numpy's fixed cost per call is a
            # fraction of torch's (and its einsum beats the batched matmul here).
            # (detached: embedding_bag keeps its backward's buffers for a weight that
            # requires grad, even under no_grad)
            user_table, item_table = module.user.weight.detach(), module.item.weight.detach()
            user_np, item_np = user_table.numpy(), item_table.numpy()
            u = user_np.take(users_np, axis=0)  # (B, D)
            v = item_np.take(flat_np, axis=0).reshape(n_rows, width, -1)  # (B, W, D)
            scores_np = np.einsum("bwd,bd->bw", v, u)  # (B, W)
            scores_np += module.item_bias.weight.detach().numpy().reshape(-1)[items_np]
            scores = torch.from_numpy(scores_np)
            if not self._row_shift_invariant:  # else they cancel out of the loss
                user_bias = module.user_bias.weight.detach().numpy().reshape(-1)
                scores += torch.from_numpy(user_bias[users_np])[:, None] + module.global_bias
            loss, g = self._loss_and_grad(scores[:, 0], scores[:, 1:])  # g: (B, W)
            g_np = g.numpy()  # (B, W)

            # users: the (b, j) cells of each user's rows, grouped by user
            by_user = segments(users_np, user_table.shape[0])
            g_users = bag(
                torch.from_numpy(items_np[by_user.order].reshape(-1)),
                item_table,
                torch.from_numpy(by_user.offsets * width),
                mode="sum",
                per_sample_weights=torch.from_numpy(g_np[by_user.order].reshape(-1)),
            )  # (U, D)
            p_rows = torch.from_numpy(user_np.take(by_user.rows.numpy(), axis=0))
            # items: each item's cells, grouped by item
            by_item = segments(flat_np, item_table.shape[0])
            g_of_item = g_np.reshape(-1)[by_item.order]
            g_items = bag(
                torch.from_numpy(users_np[by_item.order // width]),
                user_table,
                torch.from_numpy(by_item.offsets),
                mode="sum",
                per_sample_weights=torch.from_numpy(g_of_item),
            )  # (I, D)
            q_rows = torch.from_numpy(item_np.take(by_item.rows.numpy(), axis=0))
            if l2:
                # the penalty's value, l2 (mean |p_u|^2 + mean |q_j|^2) over the batch's
                # rows as _scores has it, from the distinct rows times their counts
                squares = _weighted_squares(by_user.counts, p_rows.numpy()) / n_rows
                squares += _weighted_squares(by_item.counts, q_rows.numpy()) / flat_np.shape[0]
                loss = loss + l2 * squares
                a = 2.0 * l2 / n_rows
                c = 2.0 * l2 / flat_np.shape[0]
                g_users.addcmul_(_column(by_user.counts * a), p_rows)
                g_items.addcmul_(_column(by_item.counts * c), q_rows)
            g_bias = np.add.reduceat(g_of_item, by_item.offsets)[:, None]  # (I, 1)
            blocks = [
                RowGrad(module.user.weight, by_user.rows, g_users, p_rows),
                RowGrad(module.item.weight, by_item.rows, g_items, q_rows),
                RowGrad(module.item_bias.weight, by_item.rows, torch.from_numpy(g_bias)),
            ]
            if not self._row_shift_invariant:
                per_row = g.sum(1).numpy()[by_user.order]  # (B,) grouped by user
                g_user_bias = np.add.reduceat(per_row, by_user.offsets)[:, None]
                blocks.append(
                    RowGrad(module.user_bias.weight, by_user.rows, torch.from_numpy(g_user_bias))
                )
                blocks.append(RowGrad(module.global_bias, None, g.sum().view(1)))
        return loss, len(batch), blocks

    def _closed_form(
        self, module: MFModule, batch: TripletBatch, device: torch.device
    ) -> _RowGradients:
        """The loss of :meth:`_step` and the gradients of its looked-up rows, without
        autograd (call under ``torch.no_grad()``).

        The scores and the penalty are those of :meth:`_scores`, computed without a
        graph. With ``g`` the (B, 1 + K) gradient of the loss with respect to the
        scores, ``a = 2 l2 / B`` and ``c = 2 l2 / (B (1 + K))`` (the L2 term's factors),
        the gradients of the looked-up rows are

        - user factors ``p_u``: ``a p_u + sum_j g[b, j] q_j``;
        - item factors ``q_j``: ``c q_j + g[b, j] p_u``;
        - item biases: ``g[b, j]``; user biases: ``sum_j g[b, j]``; global: ``sum g``
          (zero for a loss of score differences, BPR: :attr:`_row_shift_invariant`).

        The factor rows come scaled: their gradients are ``a * g_u`` and ``c * g_v``.
        """
        l2 = self.config.l2
        # float32 throughout: the loop's bf16 autocast on CUDA would run the batched
        # product in bf16, where autograd's step (elementwise products) stays float32
        fp32 = (
            torch.autocast(device.type, enabled=False)
            if device.type == "cuda"
            else contextlib.nullcontext()
        )
        with fp32:
            users = to_device(batch.users, device)
            items = to_device(np.column_stack((batch.positives, batch.negatives)), device)
            flat = items.view(-1)  # (B (1 + K),): each row's positive, then its negatives
            n_rows, width = items.shape
            u = module.user.weight.index_select(0, users)  # (B, D)
            v = module.item.weight.index_select(0, flat).view(n_rows, width, -1)  # (B, 1+K, D)
            scores = torch.bmm(v, u.unsqueeze(-1)).view(n_rows, width)  # (B, 1 + K)
            scores += module.item_bias.weight.index_select(0, flat).view(n_rows, width)
            if not self._row_shift_invariant:  # else they cancel out of the loss
                b_u = module.user_bias.weight.index_select(0, users) + module.global_bias
                scores += b_u  # (B, 1) broadcast over the row
            loss, g = self._loss_and_grad(scores[:, 0], scores[:, 1:])  # g: (B, 1 + K)
            g_items = g.unsqueeze(-1)  # (B, 1 + K, 1)
            a = 2.0 * l2 / n_rows
            c = 2.0 * l2 / flat.shape[0]
            if c > _FOLD_MIN:
                # The L2 rows scaled in by index_add_'s alpha: a (p_u + sum_j (g_j / a) q_j)
                # and c (q_j + (g_j / c) p_u), one multiply-add pass each.
                g_u = torch.addcmul(u, v[:, 0], g[:, :1], value=1.0 / a)
                for j in range(1, width):
                    g_u.addcmul_(v[:, j], g[:, j : j + 1], value=1.0 / a)
                g_v = torch.addcmul(v, g_items, u.unsqueeze(1), value=1.0 / c)
            else:  # no L2 (or one so small that 1 / c could overflow)
                g_u = v[:, 0] * g[:, :1]
                for j in range(1, width):
                    g_u.addcmul_(v[:, j], g[:, j : j + 1])
                g_v = g_items * u.unsqueeze(1)
                if l2:
                    g_u.add_(u, alpha=a)
                    g_v.add_(v, alpha=c)
                a = c = 1.0
            if l2:  # the penalty's value, l2 (mean |p_u|^2 + mean |q_j|^2), as _scores has it
                u_flat, v_flat = u.view(-1), v.view(-1)
                loss = loss.add(torch.dot(u_flat, u_flat), alpha=l2 / n_rows)
                loss.add_(torch.dot(v_flat, v_flat), alpha=l2 / flat.shape[0])
        return _RowGradients(loss, users, flat, g_u, a, g_v, c, g)


class _RowGradients(NamedTuple):
    """What :meth:`_SampledMF._closed_form` gives: B rows, W = 1 + K items per row."""

    loss: torch.Tensor
    """() the loss, penalty included."""
    users: torch.Tensor
    """(B,) the user of each row."""
    items: torch.Tensor
    """(B W,) each row's positive, then its negatives."""
    g_u: torch.Tensor
    """(B, D) the user factors' gradients, divided by ``a``."""
    a: float
    g_v: torch.Tensor
    """(B, W, D) the item factors' gradients, divided by ``c``."""
    c: float
    g: torch.Tensor
    """(B, W) d loss / d score: the item biases' gradients."""


#: Below this L2 factor the closed-form step adds the L2 rows on their own (1 / c
#: could overflow float32 otherwise).
_FOLD_MIN = 1e-20


def _dense_grad(param: torch.Tensor) -> torch.Tensor:
    """``param.grad``, first set to zeros where it is None (the loop clears it per step)."""
    if param.grad is None:
        param.grad = torch.zeros_like(param)
    return param.grad


class MFBCE(_SampledMF):
    """Implicit feedback as classification: BCE over positives and sampled negatives."""

    name: ClassVar[str] = "mf_bce"
    search_space: ClassVar[SearchSpace] = {
        "factors": Int(16, 256, log=True),
        "learning_rate": Float(1e-4, 3e-2, log=True),
        "l2": Float(1e-5, 1e-1, log=True),
        "negatives": Int(1, 16, log=True),
    }

    def _step(
        self, module: torch.nn.Module, batch: TripletBatch, device: torch.device
    ) -> tuple[torch.Tensor, int]:
        pos, neg, penalty = self._scores(module, batch, device)
        return sampled_bce_loss(pos, neg) + penalty, len(batch)

    def _loss_and_grad(
        self, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return sampled_bce_loss_and_grad(pos, neg)


class MFBPRConfig(SampledMFConfig):
    """Options of ``mf_bpr``."""

    negatives: int = Field(default=4, ge=1)


class MFBPR(_SampledMF):
    """Implicit feedback as ranking: BPR pairs (positive, each sampled negative)."""

    name: ClassVar[str] = "mf_bpr"
    search_space: ClassVar[SearchSpace] = {
        "factors": Int(16, 256, log=True),
        "learning_rate": Float(1e-4, 3e-2, log=True),
        "l2": Float(1e-5, 1e-1, log=True),
        "negatives": Int(1, 16, log=True),
    }
    Config: ClassVar[type[MFBPRConfig]] = MFBPRConfig
    _row_shift_invariant: ClassVar[bool] = True

    def _step(
        self, module: torch.nn.Module, batch: TripletBatch, device: torch.device
    ) -> tuple[torch.Tensor, int]:
        pos, neg, penalty = self._scores(module, batch, device)
        return bpr_loss(pos, neg) + penalty, len(batch)

    def _loss_and_grad(
        self, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return bpr_loss_and_grad(pos, neg)


# ---------------------------------------------------------------------- weighted (iALS)
class MFWeightedConfig(MFConfig):
    """Options of ``mf_wals``; ``batch_size`` counts users."""

    batch_size: int = Field(default=128, ge=1, description="users per minibatch")
    learning_rate: float = Field(default=0.01, gt=0)
    l2: float = Field(default=0.01, ge=0)
    alpha: float = Field(
        default=1.0, ge=0, description="confidence of an observed cell: 1 + alpha * r"
    )
    unobserved_weight: float = Field(
        default=0.2, gt=0, description="w0: weight of every unobserved cell"
    )
    strength: Literal["count", "value", "log"] = Field(
        default="count",
        description="r: number of events, sum of event values, or log(1 + events)",
    )


class MFWeighted(_MF):
    """Weighted matrix factorization over all cells (iALS objective), by minibatch gradient.

    Each minibatch is a set of users; its loss covers every item, the unobserved
    ones through the Gramian of the item factors (biases folded into the vectors),
    so no negative is sampled.
    """

    name: ClassVar[str] = "mf_wals"
    search_space: ClassVar[SearchSpace] = {
        "factors": Int(16, 256, log=True),
        "learning_rate": Float(1e-3, 0.1, log=True),
        "l2": Float(1e-5, 1e-1, log=True),
        "alpha": Float(0.1, 50.0, log=True),
        "unobserved_weight": Float(0.01, 1.0, log=True),
    }
    Config: ClassVar[type[MFWeightedConfig]] = MFWeightedConfig
    ddp_sharding: ClassVar[Literal["rows", "batches"]] = "rows"

    def _prepare(self, train: Interactions, valid: Interactions | None) -> None:
        cfg = self.config
        weighted = cfg.strength == "value"
        m = train.user_item_matrix(self.meta.n_users, self.meta.n_items, weighted=weighted)
        if cfg.strength in ("count", "log"):
            m = _event_counts(train, self.meta.n_users, self.meta.n_items)
        m = drop_reserved(m, rows=True, cols=True)
        if m.nnz == 0:
            raise ValueError(f"{self.name}: no (known user, known item) pair to train on")
        r = np.log1p(m.data) if cfg.strength == "log" else m.data
        m.data = (1.0 + cfg.alpha * r).astype(np.float32)
        self._confidence = m
        self._train_users = np.flatnonzero(np.diff(m.indptr) > 0).astype(np.int64)

    def _n_batches(self, epoch: int) -> int:
        return -(-self._train_users.shape[0] // self.config.batch_size)

    def _batches(self, epoch: int) -> Iterator[tuple[np.ndarray, ...]]:
        for idx in self._shuffled(self._train_users.shape[0], epoch):
            users = self._train_users[idx]
            block = self._confidence[users].tocoo()
            yield (
                users,
                block.row.astype(np.int64),
                (block.col - N_RESERVED).astype(np.int64),
                block.data.astype(np.float32),
            )

    def _step(
        self, module: torch.nn.Module, batch: Any, device: torch.device
    ) -> tuple[torch.Tensor, int]:
        users, rows, cols, conf = (to_device(a, device) for a in batch)
        p, q = module.augmented(users, slice(N_RESERVED, None))
        loss = weighted_full_loss(p, q, rows, cols, conf, self.config.unobserved_weight)
        b = users.shape[0]
        penalty = torch.zeros((), device=device)
        if self.config.l2:
            share = b / max(self._train_users.shape[0], 1)
            penalty = self.config.l2 * (
                module.user(users).pow(2).sum() + share * embedding_table(module.item).pow(2).sum()
            )
        return (loss + penalty) / b, int(b)

    def _shard_batch(
        self, batch: tuple[np.ndarray, ...], rank: int, world_size: int
    ) -> tuple[np.ndarray, ...]:
        """A rank's block of the batch's users with their cells. The loss is a sum over
        users (and the item penalty a users' share) over the batch's users, so the
        share-weighted ranks add up to the 1-process gradient."""
        users, rows, cols, conf = batch
        lo, hi = row_bounds(users.shape[0], rank, world_size)
        start, stop = np.searchsorted(rows, [lo, hi])  # cells are sorted by row
        return users[lo:hi], rows[start:stop] - lo, cols[start:stop], conf[start:stop]


def _event_counts(data: Interactions, n_users: int, n_items: int) -> Any:
    """(n_users, n_items) number of events of each user on each item."""
    import scipy.sparse as sp

    ones = np.ones(len(data), dtype=np.float32)
    return sp.csr_matrix((ones, (data.user_idx, data.item_idx)), shape=(n_users, n_items))


def _column(values: np.ndarray) -> torch.Tensor:
    """(N,) float64 numpy values -> (N, 1) float32 tensor."""
    return torch.from_numpy(values.astype(np.float32)[:, None])


def _weighted_squares(counts: np.ndarray, rows: np.ndarray) -> float:
    """``sum_k counts[k] |rows[k]|^2``: the batch's squared norms from its distinct rows."""
    return float(np.dot(counts.astype(np.float64), np.einsum("kd,kd->k", rows, rows)))
