"""GRU4Rec and the contextual session RNN, trained by the shared torch loop.

``gru4rec``
    The session-based recurrent network of Hidasi et al. 2016 ("Session-based
    recommendations with recurrent neural networks") with the sampling and losses of
    Hidasi & Karatzoglou 2018 ("Recurrent neural networks with top-k gains for
    session-based recommendations"). A stack of GRU layers reads the session's items
    one by one; the last layer's hidden state h (H) scores every item by
    ``h @ Y.T + b`` with the output item embeddings Y (n_items, H) and biases b.
``gru4rec_ctx``
    The same network with per-event context (event type, time-gap bucket, hour, day
    of week), combined as in Smirnova & Vasile 2017 ("Contextual sequence modeling
    for recommendation with recurrent neural networks"): concatenated to the item
    input or multiplying it, added to the gate pre-activations, and/or multiplying
    the hidden state before the output layer.

Input modes (``embedding``):

- ``onehot``: the one-hot item vector times the first layer's input weights,
  stored as a lookup table (n_items, 3 H) that gives the input part of the three
  gate pre-activations directly (no embedding layer, as in the 2016 paper);
- ``separate``: an item embedding of ``embedding_dim`` feeds the first layer;
- ``tied``: the input embedding *is* the output item embedding Y ("constrained
  embeddings"), of the last layer's size.

Training (session-parallel minibatches, section 3.1.1 of the 2016 paper): B lanes
each walk through one session; at every step the lane's current event is the input
and the next event of the session the target. The hidden state is kept between
steps (detached, so gradients stop at the step), zeroed in lanes that start a new
session and at the start of each epoch. The step's logits cover the B targets of the
minibatch (in-batch negatives for the other rows) and N items sampled from
``popularity ** sample_alpha``, shared by every row (2018 paper); see
:mod:`recpipe.models.session_losses` for the losses. With ``cross_entropy`` and
``logq > 0``, each column's logit is lowered by ``logq * log q(item)``, where
``q(i) = (B p(i) + N p_alpha(i)) / (B + N)`` is the chance that a candidate column
holds item i: B in-batch targets drawn by train popularity ``p(i) = count(i) / sum``
mixed with N samples from ``p_alpha(i) = count(i) ** alpha / sum``.

Scoring a session query runs the network over the (at most ``max_len``) most recent
items of the left-padded prefix, skipping the padding (the state stays zero until
the first real item); an empty prefix scores from the zero state, and an item
query is a one-item session. Early stopping follows Recall@20 of next-item
prediction on a seeded sample of the validation prefixes.

The ``id_embedding`` option (:class:`~recpipe.models.hashed.IdEmbeddingConfig`) swaps
the item tables (input, output and output bias) for hashed buckets, e.g.
``id_embedding: {kind: hashed, buckets: 0.25, hashes: 2}`` (Bloom embeddings, Serrà &
Karatzoglou 2017); the default is one row per item.

Every learned value is in the module's state dict (``weights.pt`` of the artifact);
the rest (sizes, context tables) follows from the config and the data meta.

B: lanes / queries, T: prefix length, H: hidden size, N: sampled negatives,
C: context features (``4 * context_dim``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt, field_validator

from recpipe.features.context import EVENT_TYPE_INDEX
from recpipe.features.idmap import N_RESERVED, PAD
from recpipe.features.sampling import NegativeSampler
from recpipe.models.data import CONTEXT_COLUMNS, Interactions, Queries
from recpipe.models.hashed import (
    HashedEmbedding,
    IdEmbeddingConfig,
    check_tables,
    embedding_rows,
    embedding_table,
    init_uniform_,
    init_zeros_,
    make_id_embedding,
)
from recpipe.models.session_losses import (
    LOSSES,
    accidental_hits,
    cross_entropy_hits,
    negative_mask,
)
from recpipe.models.space import Choice, Float, Int, SearchSpace
from recpipe.models.torch_base import (
    VALID_K,
    TorchModelConfig,
    TorchRecommender,
    next_item_validator,
)
from recpipe.sessions.batching import SessionParallelBatches
from recpipe.train.device import to_device
from recpipe.train.distributed import row_bounds

log = logging.getLogger(__name__)

#: Embedding table sizes of the context codes (``event_type_idx``, ``gap_bucket``,
#: ``hour``, ``dow``). Codes 0 .. size - 2 are the codes of :mod:`recpipe.features.context`
#: (event type 0 = unknown, gap bucket 0 = first event of the session); the last row of
#: ``hour`` (24) and ``dow`` (7) stands for "unknown", used when a query carries no
#: context. Larger codes are clipped to the last row.
CONTEXT_VOCAB: dict[str, int] = {
    "event_type_idx": max(EVENT_TYPE_INDEX.values()) + 1,
    "gap_bucket": 64,
    "hour": 24 + 1,
    "dow": 7 + 1,
}
#: The code of an unknown value of each context column.
CONTEXT_UNKNOWN: dict[str, int] = {"event_type_idx": 0, "gap_bucket": 0, "hour": 24, "dow": 7}

_SEED_LANES = 7919  # session order of epoch e: seed * _SEED_LANES + e
_SEED_SAMPLES = 1_000_003  # negatives of epoch e: seed * _SEED_SAMPLES + e


def _glorot_(weight: torch.Tensor, fan_in: int, fan_out: int) -> None:
    """Uniform init in ``[-s, s]``, ``s = sqrt(6 / (fan_in + fan_out))``."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        weight.uniform_(-bound, bound)


def _gru_update(gi: torch.Tensor, h: torch.Tensor, w_hh: torch.nn.Linear) -> torch.Tensor:
    """One GRU update from the input part of the gates ``gi`` (B, 3 H) and ``h`` (B, H).

    ``r = sigmoid(gi_r + W_r h)``, ``z = sigmoid(gi_z + W_z h)``,
    ``n = tanh(gi_n + r * (W_n h))``, ``h' = (1 - z) * n + z * h`` (elementwise
    products; the biases are inside the linear maps).
    """
    gh = w_hh(h)
    i_r, i_z, i_n = gi.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (h - n)


def _glorot_emb_(emb: torch.nn.Module, fan_in: int, fan_out: int) -> None:
    """:func:`_glorot_` on an id table's rows (plain or hashed, see
    :func:`recpipe.models.hashed.init_uniform_`)."""
    init_uniform_(emb, math.sqrt(6.0 / (fan_in + fan_out)))


# ---------------------------------------------------------------------- module
class GRU4RecModule(torch.nn.Module):
    """The GRU stack, its item input and output tables, and optional context parts.

    Parameters
    ----------
    n_items : int
        Table size (reserved slots included).
    layers : sequence of int
        Hidden sizes H_1 .. H_L of the GRU layers.
    embedding : {"onehot", "separate", "tied"}
        Input mode (see the module docstring).
    embedding_dim : int
        Item embedding size of the ``separate`` mode.
    dropout_input, dropout_hidden : float
        Dropout on the item input (``onehot``: the whole input of a row) and on each
        layer's output (the recurrent state itself is kept whole).
    context_dim : int
        Size of each context code's embedding (the context vector has C = 4 of them).
    context_input : {"none", "concat", "multiply"}
        How the context enters the first layer's input.
    context_recurrent : bool
        Add a projection of the context to the gate pre-activations of every layer.
    context_output : {"none", "multiply"}
        Multiply the last layer's output by ``1 + W c`` before scoring.
    id_embedding : IdEmbeddingConfig, optional
        Plain tables (default) or hashed buckets (:mod:`recpipe.models.hashed`) for the
        item tables (output table and bias, and the input table of the ``onehot`` /
        ``separate`` modes; each table has its own hash functions, the bias shares the
        output table's).
    """

    def __init__(
        self,
        n_items: int,
        layers: Sequence[int],
        embedding: Literal["onehot", "separate", "tied"],
        embedding_dim: int,
        dropout_input: float,
        dropout_hidden: float,
        *,
        context_dim: int = 0,
        context_input: Literal["none", "concat", "multiply"] = "none",
        context_recurrent: bool = False,
        context_output: Literal["none", "multiply"] = "none",
        id_embedding: IdEmbeddingConfig | None = None,
    ) -> None:
        super().__init__()
        self.layers = [int(h) for h in layers]
        self.embedding = embedding
        self.dropout_input = float(dropout_input)
        self.dropout_hidden = float(dropout_hidden)
        self.context_input = context_input
        self.context_recurrent = bool(context_recurrent)
        self.context_output = context_output
        h_first, h_last = self.layers[0], self.layers[-1]

        spec = id_embedding or IdEmbeddingConfig()
        self.item_out = make_id_embedding(spec, n_items, h_last, table="item", name="item_out")
        # hashed: the output bias shares the output table's hash functions
        self.item_bias: torch.nn.Parameter | HashedEmbedding
        if isinstance(self.item_out, HashedEmbedding):
            self.item_bias = make_id_embedding(spec, n_items, 1, table="item", name="item_out")
            init_zeros_(self.item_bias)
        else:
            self.item_bias = torch.nn.Parameter(torch.zeros(n_items))
        _glorot_emb_(self.item_out, n_items, h_last)
        in_dim = {"separate": embedding_dim, "tied": h_last, "onehot": 3 * h_first}[embedding]
        if embedding == "onehot":
            self.item_gates = make_id_embedding(
                spec, n_items, 3 * h_first, table="item", name="item_gates"
            )
            self.gate_bias = torch.nn.Parameter(torch.zeros(3 * h_first))
            _glorot_emb_(self.item_gates, n_items, 3 * h_first)
        elif embedding == "separate":
            self.item_in = make_id_embedding(
                spec, n_items, embedding_dim, table="item", name="item_in"
            )
            _glorot_emb_(self.item_in, n_items, embedding_dim)

        self.w_ih = torch.nn.ModuleList()
        self.w_hh = torch.nn.ModuleList()
        below = in_dim
        for i, h in enumerate(self.layers):
            if i > 0 or embedding != "onehot":
                lin = torch.nn.Linear(below, 3 * h)
                _glorot_(lin.weight, below, 3 * h)
                torch.nn.init.zeros_(lin.bias)
                self.w_ih.append(lin)
            rec = torch.nn.Linear(h, 3 * h)
            _glorot_(rec.weight, h, 3 * h)
            torch.nn.init.zeros_(rec.bias)
            self.w_hh.append(rec)
            below = h

        uses_context = context_input != "none" or context_recurrent or context_output != "none"
        self.uses_context = uses_context
        if uses_context:
            if context_dim < 1:
                raise ValueError("context_dim must be >= 1 when a context combination is on")
            self.context = torch.nn.ModuleList(
                torch.nn.Embedding(CONTEXT_VOCAB[c], context_dim) for c in CONTEXT_COLUMNS
            )
            for name, emb in zip(CONTEXT_COLUMNS, self.context, strict=True):
                torch.nn.init.normal_(emb.weight, std=0.1)
                if name != "gap_bucket":  # unknown codes start (and, unseen, stay) neutral
                    with torch.no_grad():
                        emb.weight[CONTEXT_UNKNOWN[name]].zero_()
            c_dim = context_dim * len(CONTEXT_COLUMNS)
            gates_first = 3 * h_first
            if context_input == "concat":
                # [x, c] @ W == x @ W_x + c @ W_c: the context's share of the first gates
                self.ctx_concat = torch.nn.Linear(c_dim, gates_first, bias=False)
                _glorot_(self.ctx_concat.weight, c_dim, gates_first)
            elif context_input == "multiply":
                self.ctx_multiply = torch.nn.Linear(c_dim, in_dim)
                torch.nn.init.zeros_(self.ctx_multiply.weight)  # starts as the identity
                torch.nn.init.zeros_(self.ctx_multiply.bias)
            if context_recurrent:
                self.ctx_gates = torch.nn.ModuleList(
                    torch.nn.Linear(c_dim, 3 * h, bias=False) for h in self.layers
                )
                for lin, h in zip(self.ctx_gates, self.layers, strict=True):
                    _glorot_(lin.weight, c_dim, 3 * h)
            if context_output == "multiply":
                self.ctx_out = torch.nn.Linear(c_dim, h_last)
                torch.nn.init.zeros_(self.ctx_out.weight)
                torch.nn.init.zeros_(self.ctx_out.bias)

    # parts -----------------------------------------------------------------
    def initial_state(self, batch: int, device: torch.device) -> list[torch.Tensor]:
        """Zero hidden states: one (B, H_l) tensor per layer."""
        return [torch.zeros(batch, h, device=device) for h in self.layers]

    def embed_context(self, codes: torch.Tensor | None) -> torch.Tensor | None:
        """(B, 4) int64 context codes -> (B, C) context vector (None without context)."""
        if not self.uses_context or codes is None:
            return None
        return torch.cat([emb(codes[:, k]) for k, emb in enumerate(self.context)], dim=1)

    def step(
        self,
        items: torch.Tensor,
        hidden: Sequence[torch.Tensor],
        context: torch.Tensor | None = None,
        *,
        embedded: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Feed one event per row through every layer.

        Parameters
        ----------
        items : torch.Tensor
            (B,) int64 input items.
        hidden : sequence of torch.Tensor
            The states before the event, (B, H_l) per layer.
        context : torch.Tensor, optional
            (B, C) context vector of the event (:meth:`embed_context`).
        embedded : torch.Tensor, optional
            (B, D) the items' input embeddings when already looked up (``tied`` and
            ``separate`` modes only).

        Returns
        -------
        new_hidden : list of torch.Tensor
            The states after the event (B, H_l) per layer.
        output : torch.Tensor
            (B, H_L) the last layer's output for scoring (dropout and context applied).
        """
        drop_in = self.dropout_input if self.training else 0.0
        drop_hidden = self.dropout_hidden if self.training else 0.0
        if self.embedding == "onehot":
            x = self.item_gates(items)
            if drop_in > 0:  # dropping a one-hot input drops the whole row
                keep = torch.rand(x.shape[0], 1, device=x.device) >= drop_in
                x = x * keep.to(x.dtype) / (1.0 - drop_in)
        else:
            if embedded is None:
                embedded = (self.item_out if self.embedding == "tied" else self.item_in)(items)
            x = F.dropout(embedded, drop_in, self.training)
        if context is not None and self.context_input == "multiply":
            x = x * (1.0 + self.ctx_multiply(context))

        new_hidden: list[torch.Tensor] = []
        below = x
        lin_in = iter(self.w_ih)
        for i, h in enumerate(hidden):
            if i == 0 and self.embedding == "onehot":
                gi = below + self.gate_bias
            else:
                gi = next(lin_in)(below)
            if context is not None:
                if i == 0 and self.context_input == "concat":
                    gi = gi + self.ctx_concat(context)
                if self.context_recurrent:
                    gi = gi + self.ctx_gates[i](context)
            h_new = _gru_update(gi, h.to(gi.dtype), self.w_hh[i])
            new_hidden.append(h_new)
            below = F.dropout(h_new, drop_hidden, self.training)
        return new_hidden, self.readout(below, context)

    def readout(self, output: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """The last layer's output, multiplied by ``1 + W c`` with ``context_output``."""
        if context is not None and self.context_output == "multiply":
            return output * (1.0 + self.ctx_out(context))
        return output

    def train_step(
        self,
        items: torch.Tensor,
        columns: torch.Tensor,
        hidden: Sequence[torch.Tensor],
        context: torch.Tensor | None = None,
        column_offset: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One training step: :meth:`step` on ``items`` (B,), then the (B, M) logits of
        the ``columns`` (M,) items; returns ``(new_hidden, logits)``.

        ``column_offset`` (M,), when given, is added to every row's logits (the logQ
        correction and column masks of the training fast path), in the same pass as
        the item biases. With tied embeddings the input and output rows are gathered
        in one lookup (one gradient scatter into the table instead of two).
        """
        b = items.shape[0]
        if self.embedding == "tied":
            rows = embedding_rows(self.item_out, torch.cat([items, columns]))
            new_hidden, output = self.step(items, hidden, context, embedded=rows[:b])
            weights = rows[b:]
        else:
            new_hidden, output = self.step(items, hidden, context)
            weights = embedding_rows(self.item_out, columns)
        offset = self.bias_rows(columns)
        if column_offset is not None:
            offset = offset + column_offset.to(offset.dtype)
        return new_hidden, torch.addmm(offset.to(output.dtype), output, weights.T.to(output.dtype))

    def logits(self, output: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B, M) scores of ``items`` (M,) for the outputs (B, H_L)."""
        return output @ self.item_out(items).T + self.bias_rows(items)

    def bias_rows(self, items: torch.Tensor) -> torch.Tensor:
        """(M,) output biases of (M,) ``items``."""
        if isinstance(self.item_bias, HashedEmbedding):
            return self.item_bias(items)[:, 0]
        return self.item_bias.index_select(0, items)

    def bias_all(self) -> torch.Tensor:
        """(n_items,) every item's output bias."""
        if isinstance(self.item_bias, HashedEmbedding):
            return self.item_bias.all_vectors()[:, 0]
        return self.item_bias

    def score_all(self, output: torch.Tensor) -> torch.Tensor:
        """(B, n_items) scores of every item."""
        return output @ embedding_table(self.item_out).T + self.bias_all()


# ---------------------------------------------------------------------- config
class GRU4RecConfig(TorchModelConfig):
    """Options of ``gru4rec`` (plus the training loop's; ``batch_size`` counts lanes)."""

    layers: tuple[PositiveInt, ...] = Field(
        default=(100,), min_length=1, description="H: hidden sizes of the GRU layers"
    )
    embedding: Literal["onehot", "separate", "tied"] = Field(
        default="tied",
        description="item input: one-hot, a separate embedding, or the output embedding",
    )
    embedding_dim: int = Field(default=64, ge=1, description="item embedding size (separate)")
    dropout_input: float = Field(default=0.2, ge=0.0, lt=1.0, description="dropout on the input")
    dropout_hidden: float = Field(
        default=0.5, ge=0.0, lt=1.0, description="dropout on each layer's output"
    )
    loss: Literal["top1", "bpr", "top1_max", "bpr_max", "cross_entropy"] = "cross_entropy"
    bpreg: float = Field(
        default=1.0, ge=0.0, description="bpr_max: weight of the softmax-weighted score penalty"
    )
    logq: float = Field(
        default=1.0, ge=0.0, description="cross_entropy: weight of the logQ correction (0: off)"
    )
    n_sample: int = Field(
        default=2048, ge=0, description="N: extra negatives per step, shared by the lanes"
    )
    sample_alpha: float = Field(
        default=0.5, ge=0.0, description="negatives ~ train count ** alpha (0: uniform)"
    )
    sample_cache: int = Field(
        default=1_000_000, ge=1, description="negatives drawn per refill of the sample cache"
    )
    max_len: int = Field(default=50, ge=1, description="T: most recent events used at scoring")
    id_embedding: IdEmbeddingConfig = Field(
        default_factory=IdEmbeddingConfig,
        description="item ids of the input and output tables: one row each (kind: table) "
        "or hashed buckets (kind: hashed)",
    )
    # training-loop defaults suited to GRU4Rec
    optimizer: Literal["adam", "adamw", "adagrad", "sgd"] = "adagrad"
    learning_rate: float = Field(default=0.1, gt=0)
    # 128 lanes: on the YOOCHOOSE sample (train_full, 10 epochs) Recall@20 / MRR@20
    # 0.707 / 0.377 at 8.6k training events/s on one CPU thread, against 0.711 / 0.385 at
    # 3.6k with 32 lanes and 0.712 / 0.382 at 5.7k with 64 (bench/session.py)
    batch_size: int = Field(default=128, ge=1, description="B: parallel session lanes")
    epochs: int = Field(default=10, ge=1)
    patience: int | None = Field(default=2, ge=1)

    @field_validator("id_embedding")
    @classmethod
    def _known_tables(cls, spec: IdEmbeddingConfig) -> IdEmbeddingConfig:
        return check_tables(spec, ("item",))


class ContextualGRU4RecConfig(GRU4RecConfig):
    """Options of ``gru4rec_ctx``: GRU4Rec's plus how the context is combined."""

    context_dim: int = Field(default=8, ge=1, description="embedding size of each context code")
    context_input: Literal["none", "concat", "multiply"] = Field(
        default="concat", description="context at the input: concatenated or multiplying"
    )
    context_recurrent: bool = Field(
        default=False, description="add a projection of the context to every layer's gates"
    )
    context_output: Literal["none", "multiply"] = Field(
        default="multiply", description="multiply the output by 1 + W c before scoring"
    )


# ---------------------------------------------------------------------- batches
@dataclass(frozen=True, slots=True)
class GRUBatch:
    """One session-parallel training step. B: lanes, N: sampled negatives.

    Attributes
    ----------
    inputs, targets : numpy.ndarray
        (B,) int64 input item and target (next) item of each lane (PAD in inactive
        lanes).
    reset : numpy.ndarray
        (B,) bool lanes that start a new session (their state is zeroed first).
    active : numpy.ndarray
        (B,) bool lanes that hold a session at this step.
    negatives : numpy.ndarray
        (N,) int64 sampled negative items shared by the lanes.
    context : numpy.ndarray or None
        (B, 4) int64 context codes of the input events (contextual model only).
    session : numpy.ndarray
        (B,) int64 session number of each lane (-1 in inactive lanes).
    hits : tuple of numpy.ndarray or None
        The :func:`~recpipe.models.session_losses.accidental_hits` (rows, columns) of
        the step's targets among its B + N columns (the cross-entropy fast path).
    others : numpy.ndarray or None
        (B',) int64 targets of the other DDP ranks' lanes at this step (PAD in inactive
        lanes): in-batch negative columns after the B own targets, so that a rank's
        lanes see the same candidates as in one process; None in one process.
    """

    inputs: np.ndarray
    targets: np.ndarray
    reset: np.ndarray
    active: np.ndarray
    negatives: np.ndarray
    context: np.ndarray | None
    session: np.ndarray
    hits: tuple[np.ndarray, np.ndarray] | None = None
    others: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def shard(self, rank: int, world_size: int) -> GRUBatch:
        """The DDP rank's lanes ``[B r / W, B (r + 1) / W)`` (the sessions running in
        them), with every other lane's target kept as an in-batch column (``others``)."""
        lo, hi = row_bounds(len(self), rank, world_size)
        own = slice(lo, hi)
        targets = self.targets[own]
        others = np.concatenate([self.targets[:lo], self.targets[hi:]])
        hits = None
        if self.hits is not None:
            hits = accidental_hits(targets, np.concatenate([targets, others, self.negatives]))
        return GRUBatch(
            inputs=self.inputs[own],
            targets=targets,
            reset=self.reset[own],
            active=self.active[own],
            negatives=self.negatives,
            context=self.context[own] if self.context is not None else None,
            session=self.session[own],
            hits=hits,
            others=others,
        )


def context_codes(columns: Mapping[str, np.ndarray | None], shape: tuple[int, ...]) -> np.ndarray:
    """Stack the context columns into ``shape + (4,)`` int64 codes within the tables.

    Missing columns (None) take their unknown code (:data:`CONTEXT_UNKNOWN`); codes
    outside ``[0, size)`` are clipped.
    """
    out = np.empty((*shape, len(CONTEXT_COLUMNS)), dtype=np.int64)
    for k, name in enumerate(CONTEXT_COLUMNS):
        values = columns.get(name)
        if values is None:
            out[..., k] = CONTEXT_UNKNOWN[name]
        else:
            out[..., k] = np.clip(values, 0, CONTEXT_VOCAB[name] - 1)
    return out


# ---------------------------------------------------------------------- models
class GRU4Rec(TorchRecommender):
    """Session-based recommendation with a GRU stack (see the module docstring).

    Scores ``session`` queries (the prefix, most recent ``max_len`` items) and ``item``
    queries (a one-item session).
    """

    name: ClassVar[str] = "gru4rec"
    search_space: ClassVar[SearchSpace] = {
        "layers": Int(32, 256, log=True, as_tuple=True),
        "learning_rate": Float(0.01, 0.5, log=True),
        "dropout_input": Float(0.0, 0.5),
        "dropout_hidden": Float(0.0, 0.7),
        "batch_size": Choice((32, 64, 128, 256)),
        "sample_alpha": Float(0.0, 1.0),
    }
    Config: ClassVar[type[GRU4RecConfig]] = GRU4RecConfig
    query_kinds: ClassVar[frozenset[str]] = frozenset({"session", "item"})
    monitor: ClassVar[str] = f"recall@{VALID_K}"
    #: Whether the model reads the context columns.
    contextual: ClassVar[bool] = False
    #: DDP: each rank runs its own lanes (sessions) of the global step, :meth:`GRUBatch.shard`.
    ddp_sharding: ClassVar[Literal["rows", "batches"]] = "rows"

    def __init__(self, config: Any, meta: Any) -> None:
        super().__init__(config, meta)
        self._hidden: list[torch.Tensor] | None = None
        self._log_q: torch.Tensor | None = None
        self._log_q_device: torch.Tensor | None = None

    # module ------------------------------------------------------------------
    def _context_options(self) -> dict[str, Any]:
        return {}

    def _build_module(self) -> GRU4RecModule:
        cfg = self.config
        return GRU4RecModule(
            self.meta.n_items,
            cfg.layers,
            cfg.embedding,
            cfg.embedding_dim,
            cfg.dropout_input,
            cfg.dropout_hidden,
            id_embedding=cfg.id_embedding,
            **self._context_options(),
        )

    # training ------------------------------------------------------------------
    def _prepare(self, train: Interactions, valid: Interactions | None) -> None:
        cfg = self.config
        self._offsets = train.offsets
        self._items = train.item_idx.astype(np.int64)
        self._codes = (
            context_codes({c: getattr(train, c) for c in CONTEXT_COLUMNS}, (len(train),))
            if self.contextual
            else None
        )
        counts = self.meta.item_counts.astype(np.float64)
        if counts[N_RESERVED:].sum() <= 0:
            raise ValueError(f"{self.name}: the training data hold no known item to predict")
        self._sampler = (
            NegativeSampler(
                counts, alpha=cfg.sample_alpha, seed=cfg.seed, cache_size=cfg.sample_cache
            )
            if cfg.n_sample > 0
            else None
        )
        self._log_q = None
        if cfg.loss == "cross_entropy" and cfg.logq > 0:
            p_batch = counts / counts.sum()
            q = cfg.batch_size * p_batch
            if self._sampler is not None:
                q = q + cfg.n_sample * self._sampler.probabilities
            q = q / (cfg.batch_size + (cfg.n_sample if self._sampler is not None else 0))
            floor = float(q[q > 0].min())
            self._log_q = torch.from_numpy(cfg.logq * np.log(np.maximum(q, floor))).float()
        self._hidden = None

    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        try:
            super()._fit(train, valid)
        finally:
            self._hidden = None
            self._log_q_device = None

    def _batches(self, epoch: int) -> Iterator[GRUBatch]:
        cfg = self.config
        lanes = SessionParallelBatches(
            self._offsets,
            cfg.batch_size,
            shuffle_sessions=True,
            seed=cfg.seed * _SEED_LANES + epoch,
        )
        sampler = (
            self._sampler.reseeded(cfg.seed * _SEED_SAMPLES + epoch)
            if self._sampler is not None
            else None
        )
        return self._epoch_batches(lanes, sampler)

    def _epoch_batches(
        self, lanes: SessionParallelBatches, sampler: NegativeSampler | None
    ) -> Iterator[GRUBatch]:
        self._hidden = None  # every epoch starts from zero states
        no_samples = np.empty(0, dtype=np.int64)
        items = self._items
        fast = self.config.loss == "cross_entropy"
        for step in lanes:
            active = step.active
            targets = np.where(active, items[step.targets], PAD)
            negatives = sampler.sample(self.config.n_sample) if sampler else no_samples
            yield GRUBatch(
                inputs=np.where(active, items[step.inputs], PAD),
                targets=targets,
                reset=step.reset,
                active=active,
                negatives=negatives,
                context=self._codes[step.inputs] if self._codes is not None else None,
                session=step.session,
                hits=accidental_hits(targets, np.concatenate([targets, negatives]))
                if fast
                else None,
            )

    def _shard_batch(self, batch: GRUBatch, rank: int, world_size: int) -> GRUBatch:
        return batch.shard(rank, world_size)

    def _step(
        self, module: torch.nn.Module, batch: GRUBatch, device: torch.device
    ) -> tuple[torch.Tensor, int]:
        cfg = self.config
        inputs = to_device(batch.inputs, device)
        targets = to_device(batch.targets, device)
        active = to_device(batch.active, device)
        counted = active & (targets >= N_RESERVED)  # UNK targets teach nothing
        b = inputs.shape[0]
        hidden = self._hidden
        if hidden is None or hidden[0].shape[0] != b or hidden[0].device != device:
            hidden = module.initial_state(b, device)
        keep = to_device(~batch.reset & batch.active, device)[:, None]
        hidden = [h * keep.to(h.dtype) for h in hidden]
        codes = to_device(batch.context, device) if batch.context is not None else None
        context = module.embed_context(codes)
        samples = to_device(batch.negatives, device) if batch.negatives.size else None
        # In-batch columns: this step's targets (a DDP shard: its own, then the others').
        in_batch = targets
        if batch.others is not None and batch.others.size:
            in_batch = torch.cat([targets, to_device(batch.others, device)])
        in_counted = counted if in_batch is targets else in_batch >= N_RESERVED
        columns = in_batch if samples is None else torch.cat([in_batch, samples])
        log_q = None
        if self._log_q is not None:
            if self._log_q_device is None or self._log_q_device.device != device:
                self._log_q_device = self._log_q.to(device)
            log_q = self._log_q_device[columns]
        if batch.hits is not None:  # cross-entropy fast path: column offsets, sparse hits
            offset = torch.zeros(columns.shape[0], device=device) if log_q is None else -log_q
            n_in = in_batch.shape[0]
            offset[:n_in] = offset[:n_in].masked_fill(~in_counted, float("-inf"))
            new_hidden, logits = module.train_step(inputs, columns, hidden, context, offset)
            self._hidden = [h.detach().float() for h in new_hidden]
            rows, cols = (to_device(a, device) for a in batch.hits)
            loss = cross_entropy_hits(logits.float(), rows, cols, counted)
            return loss, int(counted.sum())
        new_hidden, logits = module.train_step(inputs, columns, hidden, context)
        self._hidden = [h.detach().float() for h in new_hidden]
        logits = logits.float()
        mask = negative_mask(in_batch, samples, in_counted)[:b]
        loss = LOSSES[cfg.loss](logits, mask, counted, bpreg=cfg.bpreg, log_q=log_q)
        return loss, int(counted.sum())

    # scoring -------------------------------------------------------------------
    def _query_arrays(self, queries: Queries) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, T) items (left-padded, last ``max_len`` columns) and (B, T, 4) context."""
        if queries.kind == "item":
            items = queries.items[:, None]
            columns: dict[str, np.ndarray | None] = {}
        else:
            t = min(self.config.max_len, queries.items.shape[1])
            items = queries.items[:, -t:]
            columns = {
                c: None if getattr(queries, c) is None else getattr(queries, c)[:, -t:]
                for c in CONTEXT_COLUMNS
            }
        codes = context_codes(columns, items.shape) if self.contextual else None
        return np.ascontiguousarray(items, dtype=np.int64), codes

    def _session_output(
        self, module: GRU4RecModule, items: np.ndarray, codes: np.ndarray | None, device: Any
    ) -> torch.Tensor:
        """(B, H_L) output after reading left-padded (B, T) prefixes, PAD skipped."""
        b, t = items.shape
        hidden = module.initial_state(b, device)
        real = items != PAD
        filled = np.flatnonzero(real.any(axis=0))
        first = int(filled[0]) if filled.size else t
        x_all = to_device(items, device)
        real_all = to_device(real, device)
        c_all = to_device(codes, device) if codes is not None else None
        context = None
        for col in range(first, t):
            context = module.embed_context(c_all[:, col] if c_all is not None else None)
            new_hidden, _ = module.step(x_all[:, col], hidden, context)
            here = real_all[:, col, None]
            hidden = [
                torch.where(here, n, h.to(n.dtype)) for n, h in zip(new_hidden, hidden, strict=True)
            ]
        if c_all is not None and t > 0:  # the context of the last (current) event
            context = module.embed_context(c_all[:, t - 1])
        return module.readout(hidden[-1], context)

    def item_vectors(self) -> np.ndarray:
        """(n_items, H) the output item embeddings, for cold-start similarity."""
        self._require_fitted()
        module = self.module
        assert isinstance(module, GRU4RecModule)
        with torch.no_grad():
            table = embedding_table(module.item_out)
        return table.detach().float().cpu().numpy().copy()

    def _score_tensor(
        self, module: torch.nn.Module, queries: Queries, device: torch.device
    ) -> torch.Tensor:
        items, codes = self._query_arrays(queries)
        return module.score_all(self._session_output(module, items, codes, device))

    # validation ----------------------------------------------------------------
    def _validator(
        self, train: Interactions, valid: Interactions
    ) -> Callable[[torch.nn.Module, torch.device], Mapping[str, float]] | None:
        """Recall@20 and MRR@20 of next-item prediction on sampled validation prefixes
        (:func:`~recpipe.models.torch_base.next_item_validator`)."""
        return next_item_validator(self, valid)


class ContextualGRU4Rec(GRU4Rec):
    """GRU4Rec with per-event context (Smirnova & Vasile 2017).

    The context vector c of an event concatenates embeddings of its event type,
    time-gap bucket, hour and day of week. ``context_input`` adds it to the first
    layer's input (``concat``) or multiplies the item input by ``1 + W c``
    (``multiply``, their multiplicative integration); ``context_recurrent`` adds
    ``W_l c`` to the gate pre-activations of every layer; ``context_output`` multiplies
    the output by ``1 + W c`` before scoring.

    The output modulation uses the context of the *current* event (the last of the
    prefix), not of the event to predict as in the paper: at scoring time nothing is
    known of the next event (its type in particular), and using the same event in
    training and scoring keeps the two consistent. Session queries without context
    arrays use the unknown codes (:data:`CONTEXT_UNKNOWN`), as do item queries.
    """

    name: ClassVar[str] = "gru4rec_ctx"
    Config: ClassVar[type[ContextualGRU4RecConfig]] = ContextualGRU4RecConfig
    contextual: ClassVar[bool] = True

    def _context_options(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "context_dim": cfg.context_dim,
            "context_input": cfg.context_input,
            "context_recurrent": cfg.context_recurrent,
            "context_output": cfg.context_output,
        }
