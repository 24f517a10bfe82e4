"""SASRec: self-attentive sequential recommendation, trained the current ways.

The network of Kang & McAuley 2018 ("Self-attentive sequential recommendation", ICDM):
the last ``max_len`` items of a user's history (or of a session) are embedded (item
embedding times ``sqrt(d)`` plus a learned position embedding, dropout), read by
``blocks`` pre-norm transformer blocks with causal self-attention (torch's
``scaled_dot_product_attention``: flash attention on a GPU, bf16 under the loop's
autocast) and a point-wise feed-forward part, and a final layer norm. The output at
position t scores every item by its dot product with the (shared) item embedding; it
is trained to predict the item at t + 1.

Losses (``loss``), over every position whose next item is a known item:

``cross_entropy``
    softmax cross-entropy over the whole catalogue (Klenitskiy & Vasilev, RecSys 2023:
    beats BERT4Rec in accuracy and training time);
``sampled_softmax``
    softmax over the target and ``n_negatives`` items drawn from
    ``popularity ** sample_alpha`` (0: uniform), shared by the batch, plus the batch's
    other targets with ``in_batch``; each column's logit is lowered by
    ``logq * log q(item)``, the chance the item is a candidate column (logQ correction);
    a negative equal to the row's target is masked;
``bce``
    binary cross-entropy of the target against one uniformly drawn negative per
    position (the original paper);
``gbce``
    generalised BCE (Petrov & Macdonald, RecSys 2023, gSASRec): the target's
    ``log sigmoid`` is scaled by ``beta = a (t (1 - 1/a) + 1/a)``, ``a = N / (I - 1)``
    the negative sampling rate of N negatives (drawn per sequence) among I items and
    ``t`` the calibration (``gbce_t``; 0: plain BCE with N negatives, 1: fully
    calibrated).

Sequences (``sequence``): ``user`` histories (each user's train events in time order;
the per-user temporal and leave-last-out splits) or ``session`` s (the session split);
``auto`` picks ``session`` on the session split and ``user`` elsewhere. A history
longer than ``max_len + 1`` is cut into consecutive windows (each event is a target
once). The last ``max_len`` items of every user's history are kept in the model
(``history`` buffer), so user queries are answered from them; session queries read
the prefix, item queries are one-item sessions. ``context`` adds embeddings of the
event type and time-gap bucket to the item embedding, as the contextual RNN does.

B: sequences in a batch, T: ``max_len``, d: ``hidden``, N: sampled negatives, I: items.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from recpipe.features.idmap import N_RESERVED, PAD
from recpipe.features.sampling import NegativeSampler
from recpipe.models.data import Interactions, Queries
from recpipe.models.space import Choice, Float, Int, SearchSpace
from recpipe.models.torch_base import (
    VALID_K,
    TorchModelConfig,
    TorchRecommender,
    next_item_validator,
)
from recpipe.train.device import to_device
from recpipe.train.distributed import row_bounds

#: Table sizes of the context codes SASRec reads: event type, time-gap bucket.
EVENT_TYPES = 8
GAP_BUCKETS = 64

_SEED_ORDER = 7919
_SEED_SAMPLES = 1_000_003


# ---------------------------------------------------------------------- module
class Block(torch.nn.Module):
    """A pre-norm transformer block: causal multi-head self-attention, then a
    point-wise feed-forward part, each with dropout and a residual connection."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"hidden ({d}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.dropout = dropout
        self.norm1 = torch.nn.LayerNorm(d)
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.out = torch.nn.Linear(d, d)
        self.norm2 = torch.nn.LayerNorm(d)
        self.ff1 = torch.nn.Linear(d, d)
        self.ff2 = torch.nn.Linear(d, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, d), ``mask`` (B, 1, T, T) bool (True: may attend)."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        drop = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, dropout_p=drop
        )
        x = x + F.dropout(self.out(att.transpose(1, 2).reshape(b, t, d)), drop, self.training)
        h = F.dropout(F.relu(self.ff1(self.norm2(x))), drop, self.training)
        return x + F.dropout(self.ff2(h), drop, self.training)


class SASRecModule(torch.nn.Module):
    """Item and position embeddings, the blocks, the final norm, the user histories.

    ``history`` (n_users, T) and ``history_context`` (n_users, T, 2) are buffers: the
    last ``max_len`` items (and context codes) of every user's train history, left
    padded, saved with the weights.
    """

    def __init__(
        self,
        n_items: int,
        n_users: int,
        d: int,
        blocks: int,
        heads: int,
        max_len: int,
        dropout: float,
        context: bool,
    ) -> None:
        super().__init__()
        self.d = d
        self.max_len = max_len
        self.dropout = dropout
        self.item = torch.nn.Embedding(n_items, d, padding_idx=PAD)
        self.pos = torch.nn.Embedding(max_len, d)
        torch.nn.init.normal_(self.item.weight, std=1.0 / math.sqrt(d))
        with torch.no_grad():
            self.item.weight[PAD].zero_()
        torch.nn.init.normal_(self.pos.weight, std=0.02)
        self.context = context
        if context:
            self.event = torch.nn.Embedding(EVENT_TYPES, d)
            self.gap = torch.nn.Embedding(GAP_BUCKETS, d)
            torch.nn.init.zeros_(self.event.weight)
            torch.nn.init.zeros_(self.gap.weight)
        self.blocks = torch.nn.ModuleList(Block(d, heads, dropout) for _ in range(blocks))
        self.norm = torch.nn.LayerNorm(d)
        self.register_buffer("history", torch.zeros(n_users, max_len, dtype=torch.long))
        self.register_buffer(
            "history_context", torch.zeros(n_users, max_len, 2 if context else 0, dtype=torch.long)
        )

    def encode(self, items: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) left-padded items (and (B, T, 2) context codes) -> (B, T, d) outputs;
        the output at t has seen items 0..t only. T <= max_len; positions are right
        aligned (the last item always has position ``max_len - 1``)."""
        t = items.shape[1]
        real = items != PAD
        x = self.item(items) * math.sqrt(self.d)
        x = x + self.pos.weight[self.max_len - t :]
        if self.context and codes is not None:
            x = x + self.event(codes[..., 0].clamp(0, EVENT_TYPES - 1))
            x = x + self.gap(codes[..., 1].clamp(0, GAP_BUCKETS - 1))
        x = F.dropout(x, self.dropout, self.training) * real[..., None].to(x.dtype)
        causal = torch.ones(t, t, dtype=torch.bool, device=items.device).tril()
        # a position attends to earlier real items and always to itself (no empty row)
        mask = (causal & real[:, None, :]) | torch.eye(t, dtype=torch.bool, device=items.device)
        mask = mask[:, None]
        for block in self.blocks:
            x = block(x, mask) * real[..., None].to(x.dtype)
        return self.norm(x)

    def last(self, items: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d) the output at the last position."""
        return self.encode(items, codes)[:, -1]

    def score_all(self, h: torch.Tensor) -> torch.Tensor:
        """(B, n_items) scores of every item."""
        return h @ self.item.weight.T.to(h.dtype)


# ---------------------------------------------------------------------- config
class SASRecConfig(TorchModelConfig):
    """Options of ``sasrec`` (plus the training loop's; ``batch_size`` counts sequences)."""

    hidden: int = Field(default=64, ge=1, description="d: embedding and block width")
    blocks: int = Field(default=2, ge=1, description="transformer blocks")
    heads: int = Field(default=1, ge=1, description="attention heads (divide hidden)")
    max_len: int = Field(default=50, ge=1, description="T: most recent items read")
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    loss: Literal["cross_entropy", "sampled_softmax", "bce", "gbce"] = "cross_entropy"
    n_negatives: int = Field(
        default=256,
        ge=1,
        description="N: negatives shared by the batch (sampled_softmax) or per sequence (gbce)",
    )
    sample_alpha: float = Field(
        default=0.0, ge=0.0, description="negatives ~ train count ** alpha (0: uniform)"
    )
    in_batch: bool = Field(
        default=False, description="sampled_softmax: the batch's targets are negatives too"
    )
    logq: float = Field(
        default=1.0, ge=0.0, description="sampled_softmax: weight of the logQ correction"
    )
    gbce_t: float = Field(
        default=0.75, ge=0.0, le=1.0, description="gbce: calibration t (0: plain BCE)"
    )
    sequence: Literal["auto", "user", "session"] = Field(
        default="auto", description="train on user histories or sessions (auto: by split)"
    )
    context: bool = Field(
        default=False, description="add event-type and time-gap embeddings to the items"
    )
    optimizer: Literal["adam", "adamw", "adagrad", "sgd"] = "adam"
    learning_rate: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=128, ge=1, description="B: sequences per minibatch")
    epochs: int = Field(default=50, ge=1)
    patience: int | None = Field(default=3, ge=1)


# ---------------------------------------------------------------------- batches
@dataclass(frozen=True, slots=True)
class SASBatch:
    """One minibatch: (B, T) ``inputs`` and ``targets`` (PAD where nothing is
    predicted), (B, T, 2) context codes or None, and the negatives: (N,) shared by the
    batch (sampled softmax), (B, N) per sequence (gBCE) or (B, T) one per position
    (BCE); ``others``: under
    DDP the other ranks' targets, in-batch negatives in the same columns as one
    process."""

    inputs: np.ndarray
    targets: np.ndarray
    codes: np.ndarray | None
    negatives: np.ndarray | None
    others: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def shard(self, rank: int, world_size: int) -> SASBatch:
        """The rank's rows ``[B r / W, B (r + 1) / W)``; shared negatives whole."""
        lo, hi = row_bounds(len(self), rank, world_size)
        per_row = self.negatives is not None and self.negatives.ndim == 2
        return SASBatch(
            inputs=self.inputs[lo:hi],
            targets=self.targets[lo:hi],
            codes=None if self.codes is None else self.codes[lo:hi],
            negatives=self.negatives[lo:hi] if per_row else self.negatives,
            others=np.concatenate([self.targets[:lo], self.targets[hi:]]).ravel(),
        )


def sequence_windows(
    items: np.ndarray, offsets: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cut each sequence ``items[offsets[s]:offsets[s + 1]]`` into windows of at most
    ``width`` events, from its end back, consecutive windows sharing one event (so that
    each event after a sequence's first is a target exactly once).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        (W, width) int64 positions into ``items`` (-1: padding, left) and (W,) the
        sequence of each window. Sequences shorter than 2 give none.
    """
    starts, ends = offsets[:-1], offsets[1:]
    rows: list[np.ndarray] = []
    owner: list[int] = []
    step = width - 1
    for s in np.flatnonzero(ends - starts >= 2):
        lo, hi = int(starts[s]), int(ends[s])
        end = hi
        while end - lo >= 2:
            begin = max(lo, end - width)
            row = np.full(width, -1, dtype=np.int64)
            row[width - (end - begin) :] = np.arange(begin, end)
            rows.append(row)
            owner.append(int(s))
            end -= step
    if not rows:
        return np.empty((0, width), dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.stack(rows), np.asarray(owner, dtype=np.int64)


def user_order(data: Interactions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events of known users grouped by user in time order: (order, offsets, users)."""
    known = np.flatnonzero(data.user_idx >= N_RESERVED)
    order = known[np.lexsort((data.timestamp[known], data.user_idx[known]))]
    users, starts = np.unique(data.user_idx[order], return_index=True)
    offsets = np.append(starts, len(order)).astype(np.int64)
    return order, offsets, users.astype(np.int64)


# ---------------------------------------------------------------------- losses
def sampled_softmax(
    h: torch.Tensor,
    targets: torch.Tensor,
    table: torch.Tensor,
    columns: torch.Tensor,
    log_q: torch.Tensor | None,
    target_log_q: torch.Tensor | None,
) -> torch.Tensor:
    """Mean softmax cross-entropy of each row's target against ``columns``.

    ``h`` (M, d) outputs, ``targets`` (M,), ``columns`` (C,) negative items;
    ``log_q`` (C,) and ``target_log_q`` (M,) the weighted log candidate chances
    subtracted from the logits (None: no correction). A column equal to a row's target
    is masked for that row.
    """
    pos = (h * table[targets]).sum(-1, keepdim=True)  # (M, 1)
    neg = h @ table[columns].T  # (M, C)
    if log_q is not None and target_log_q is not None:
        pos = pos - target_log_q[:, None]
        neg = neg - log_q[None, :]
    neg = neg.masked_fill(columns[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([pos, neg], dim=1).float()
    return -torch.log_softmax(logits, dim=1)[:, 0].mean()


def bce(pos: torch.Tensor, neg: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Mean over rows of ``-beta log sigmoid(pos) - sum log(1 - sigmoid(neg))``: BCE
    (``beta`` 1, ``neg`` (M,) or (M, N)) and gBCE (``beta`` < 1)."""
    pos, neg = pos.float(), neg.float()
    if neg.ndim == 1:
        neg = neg[:, None]
    return (-beta * F.logsigmoid(pos) - F.logsigmoid(-neg).sum(dim=1)).mean()


def gbce_beta(n_negatives: int, n_items: int, t: float) -> float:
    """gSASRec's ``beta = a (t (1 - 1/a) + 1/a)`` with ``a = N / (I - 1)``."""
    a = min(1.0, n_negatives / max(n_items - 1, 1))
    return a * (t * (1.0 - 1.0 / a) + 1.0 / a)


# ---------------------------------------------------------------------- model
class SASRec(TorchRecommender):
    """SASRec (see the module docstring). Scores ``user`` (from the kept history),
    ``session`` (the prefix) and ``item`` (a one-item session) queries."""

    name: ClassVar[str] = "sasrec"
    search_space: ClassVar[SearchSpace] = {
        "hidden": Choice((32, 64, 128)),
        "blocks": Int(1, 3),
        "dropout": Float(0.0, 0.6),
        "learning_rate": Float(1e-4, 1e-2, log=True),
        "max_len": Choice((20, 50, 100)),
        "batch_size": Choice((64, 128, 256)),
    }
    Config: ClassVar[type[SASRecConfig]] = SASRecConfig
    query_kinds: ClassVar[frozenset[str]] = frozenset({"user", "session", "item"})
    monitor: ClassVar[str] = f"recall@{VALID_K}"
    ddp_sharding: ClassVar[Literal["rows", "batches"]] = "rows"

    def __init__(self, config: Any, meta: Any) -> None:
        super().__init__(config, meta)
        self._history: np.ndarray | None = None
        self._history_codes: np.ndarray | None = None
        self._log_q: torch.Tensor | None = None

    @property
    def by_session(self) -> bool:
        """Whether training reads sessions (else user histories)."""
        if self.config.sequence == "auto":
            return self.meta.split == "session"
        return self.config.sequence == "session"

    # module --------------------------------------------------------------------
    def _build_module(self) -> SASRecModule:
        cfg = self.config
        module = SASRecModule(
            self.meta.n_items,
            self.meta.n_users,
            cfg.hidden,
            cfg.blocks,
            cfg.heads,
            cfg.max_len,
            cfg.dropout,
            cfg.context,
        )
        self._install_histories(module)
        return module

    def _install_histories(self, module: torch.nn.Module | None) -> None:
        """Copy the kept histories (:meth:`set_histories`) into ``module``'s buffers."""
        if module is None or self._history is None:
            return
        assert isinstance(module, SASRecModule)
        module.history.copy_(torch.from_numpy(self._history))
        if self._history_codes is not None:
            module.history_context.copy_(torch.from_numpy(self._history_codes))

    def _codes(self, data: Interactions, positions: np.ndarray) -> np.ndarray | None:
        """(..., 2) event type and gap bucket codes at ``positions`` (-1: zeros)."""
        if not self.config.context:
            return None
        safe = np.where(positions >= 0, positions, 0)
        codes = np.stack([data.event_type_idx[safe], data.gap_bucket[safe]], axis=-1)
        return np.where(positions[..., None] >= 0, codes, 0).astype(np.int64)

    def set_histories(self, data: Interactions) -> None:
        """Keep the last ``max_len`` items of every known user in ``data`` (time order)
        as the history user queries are answered from; users absent keep none. Called
        by fit with the train part; call it with more events (e.g. train and valid)
        to answer from a longer history."""
        t = self.config.max_len
        order, offsets, users = user_order(data)
        positions = np.full((self.meta.n_users, t), -1, dtype=np.int64)
        for u, lo, hi in zip(users, offsets[:-1], offsets[1:], strict=True):
            take = order[max(lo, hi - t) : hi]
            positions[u, t - len(take) :] = take
        history = np.where(positions >= 0, data.item_idx[np.maximum(positions, 0)], PAD)
        self._history = history.astype(np.int64)
        self._history_codes = self._codes(data, positions)
        self._install_histories(self.module)

    # training --------------------------------------------------------------------
    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        self.set_histories(train)
        try:
            super()._fit(train, valid)
        finally:  # the training arrays go with the fit
            self._log_q = None
            self._windows = self._window_codes = None

    def _prepare(self, train: Interactions, valid: Interactions | None) -> None:
        cfg = self.config
        if self.by_session:
            order = np.arange(len(train), dtype=np.int64)
            offsets = train.offsets.astype(np.int64)
        else:
            order, offsets, _ = user_order(train)
        windows, _ = sequence_windows(order, offsets, cfg.max_len + 1)
        positions = np.where(windows >= 0, order[np.maximum(windows, 0)], -1)
        items = np.where(positions >= 0, train.item_idx[np.maximum(positions, 0)], PAD)
        if items.shape[0] == 0:
            raise ValueError(f"{self.name}: the training data hold no sequence of 2+ events")
        self._windows = items.astype(np.int64)
        self._window_codes = self._codes(train, positions)
        counts = self.meta.item_counts.astype(np.float64)
        if counts[N_RESERVED:].sum() <= 0:
            raise ValueError(f"{self.name}: the training data hold no known item to predict")
        alpha = cfg.sample_alpha if cfg.loss in ("sampled_softmax", "gbce") else 0.0
        if alpha == 0.0:
            counts = np.where(np.arange(len(counts)) >= N_RESERVED, 1.0, 0.0)
        self._sampler = NegativeSampler(counts, alpha=alpha or 1.0, seed=cfg.seed)
        self._log_q = None
        if cfg.loss == "sampled_softmax" and cfg.logq > 0:
            q = cfg.n_negatives * self._sampler.probabilities
            if cfg.in_batch:
                pop = self.meta.item_counts.astype(np.float64)
                q = q + (cfg.batch_size * cfg.max_len) * pop / max(pop.sum(), 1.0)
            floor = float(q[q > 0].min())
            self._log_q = torch.from_numpy(cfg.logq * np.log(np.maximum(q, floor))).float()

    def _n_batches(self, epoch: int) -> int | None:
        return -(-self._windows.shape[0] // self.config.batch_size)

    def _batches(self, epoch: int) -> Iterator[SASBatch]:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed * _SEED_ORDER + epoch)
        sampler = self._sampler.reseeded(cfg.seed * _SEED_SAMPLES + epoch)
        order = rng.permutation(self._windows.shape[0])
        for start in range(0, len(order), cfg.batch_size):
            rows = order[start : start + cfg.batch_size]
            win = self._windows[rows]
            inputs, targets = win[:, :-1], win[:, 1:].copy()
            targets[(inputs == PAD) | (targets < N_RESERVED)] = PAD
            if cfg.loss == "bce":
                negatives = sampler.sample(targets.size).reshape(targets.shape)
            elif cfg.loss == "cross_entropy":
                negatives = None
            elif cfg.loss == "gbce":  # each sequence its own N (as gSASRec: see _step)
                negatives = sampler.sample(len(rows) * cfg.n_negatives).reshape(len(rows), -1)
            else:
                negatives = sampler.sample(cfg.n_negatives)
            codes = None if self._window_codes is None else self._window_codes[rows][:, :-1]
            yield SASBatch(inputs, targets, codes, negatives)

    def _shard_batch(self, batch: SASBatch, rank: int, world_size: int) -> SASBatch:
        return batch.shard(rank, world_size)

    def _step(
        self, module: torch.nn.Module, batch: SASBatch, device: torch.device
    ) -> tuple[torch.Tensor, int]:
        cfg = self.config
        assert isinstance(module, SASRecModule)
        inputs = to_device(batch.inputs, device)
        targets = to_device(batch.targets, device)
        codes = None if batch.codes is None else to_device(batch.codes, device)
        out = module.encode(inputs, codes)  # (B, T, d)
        counted = targets != PAD
        n = int(counted.sum())
        if n == 0:
            return out.sum() * 0.0, 0
        h = out[counted]  # (M, d)
        y = targets[counted]
        table = module.item.weight
        if cfg.loss == "cross_entropy":
            logits = (h @ table.T.to(h.dtype)).float()
            logits[:, :N_RESERVED] = float("-inf")
            return F.cross_entropy(logits, y), n
        assert batch.negatives is not None
        negatives = to_device(batch.negatives, device)
        if cfg.loss == "bce":
            neg = negatives[counted]
            pos_s = (h * table[y].to(h.dtype)).sum(-1)
            neg_s = (h * table[neg].to(h.dtype)).sum(-1)
            return bce(pos_s, neg_s), n
        if cfg.loss == "gbce":
            # Negatives per sequence, not shared by the batch: a sum of N independent
            # sigmoid terms (unlike the softmax's normalised mass) pushed the same N items
            # down from every position at once, and Adam's per-item scaling let those
            # bursts swamp the positives (YOOCHOOSE, 5 epochs: Recall@20 0.20 shared,
            # below plain BCE with one negative, 0.43).
            pos_s = (h * table[y].to(h.dtype)).sum(-1)
            per_row = torch.bmm(out, table[negatives].to(out.dtype).transpose(1, 2))
            neg_s = per_row[counted]  # (M, N)
            neg_ids = negatives[:, None, :].expand(-1, targets.shape[1], -1)[counted]
            neg_s = neg_s.masked_fill(neg_ids == y[:, None], float("-inf"))
            beta = gbce_beta(cfg.n_negatives, self.meta.n_real_items, cfg.gbce_t)
            return bce(pos_s, neg_s, beta), n
        columns = negatives
        if cfg.in_batch:  # every target of the (global) batch is a negative column too
            in_batch = targets[targets != PAD]
            if batch.others is not None and batch.others.size:
                others = to_device(batch.others, device)
                in_batch = torch.cat([in_batch, others[others != PAD]])
            columns = torch.cat([in_batch, negatives])
        log_q = target_q = None
        if self._log_q is not None:
            lq = self._log_q.to(device)
            log_q, target_q = lq[columns], lq[y]
        return sampled_softmax(h, y, table.to(h.dtype), columns, log_q, target_q), n

    # scoring -------------------------------------------------------------------
    def _score_tensor(
        self, module: torch.nn.Module, queries: Queries, device: torch.device
    ) -> torch.Tensor:
        assert isinstance(module, SASRecModule)
        t = self.config.max_len
        codes = None
        if queries.kind == "user":
            users = to_device(np.asarray(queries.users, dtype=np.int64), device)
            items = module.history[users]
            if self.config.context:
                codes = module.history_context[users]
            return module.score_all(module.last(items, codes))
        if queries.kind == "item":
            items_np = np.asarray(queries.items, dtype=np.int64)[:, None]
        else:
            items_np = np.ascontiguousarray(queries.items[:, -t:], dtype=np.int64)
            if self.config.context:
                cols = [queries.event_type_idx, queries.gap_bucket]
                if all(c is not None for c in cols):
                    codes = to_device(
                        np.stack([c[:, -t:] for c in cols], axis=-1).astype(np.int64), device
                    )
        return module.score_all(module.last(to_device(items_np, device), codes))

    def _score_users(self, module: torch.nn.Module, users: torch.Tensor) -> torch.Tensor:
        assert isinstance(module, SASRecModule)
        codes = module.history_context[users] if self.config.context else None
        return module.score_all(module.last(module.history[users], codes))

    def item_vectors(self) -> np.ndarray:
        """(n_items, d) the item embeddings, for similar items and cold start."""
        self._require_fitted()
        assert isinstance(self.module, SASRecModule)
        return self.module.item.weight.detach().float().cpu().numpy().copy()

    # validation ----------------------------------------------------------------
    def _validator(
        self, train: Interactions, valid: Interactions
    ) -> Callable[[torch.nn.Module, torch.device], Mapping[str, float]] | None:
        """Next-item Recall@20 on validation session prefixes (sessions), else
        Recall@20 of the users' validation items from their histories (users)."""
        if self.by_session:
            return next_item_validator(self, valid)
        return super()._validator(train, valid)
