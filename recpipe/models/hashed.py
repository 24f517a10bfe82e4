"""Hashed id embeddings: the hashing trick with k hash functions for large id spaces.

An id table of ``n_ids x D`` parameters grows with the catalogue (or the user base).
:class:`HashedEmbedding` replaces it with ``n_buckets x D`` shared bucket vectors:
id ``i`` is hashed by k independent hash functions ``h_1 .. h_k`` into buckets
(:func:`recpipe.features.hashing.hash_ids`, splitmix64 with one seed per function,
identical in every process), and its vector combines their rows::

    e_i = sum_j  w_ij * T[h_j(i)]          (combine="sum": w_ij = 1; "mean": 1 / k)

- k = 1 is the plain hashing trick (Weinberger et al. 2009): colliding ids share one
  vector.
- k > 1 is the Bloom embedding of Serrà & Karatzoglou 2017 ("Getting deep
  recommenders fit: Bloom embeddings for sparse binary input/output networks"): the
  id's k-hot Bloom code times the bucket matrix. Two ids rarely share *all* k
  buckets (probability about ``n_buckets ** -k``), so they stay distinguishable
  even when every bucket is shared. As an output layer, a dot product with ``e_i``
  sums the k bucket scores (the paper's output recovery combines the k bucket
  activations of an item in the same way, on the log scale).
- ``weights=True`` adds the learned per-id importance weights ``w_ij`` of the hash
  embeddings of Svenstrup, Hansen & Winther 2017 ("Hash embeddings for efficient
  word representations"): k scalars per id (initialised to the plain sum / mean)
  that let each id weigh its components, so two ids sharing buckets still get
  different vectors. They cost ``n_ids x k`` parameters, k << D.

The reserved slots (:data:`~recpipe.features.idmap.PAD`,
:data:`~recpipe.features.idmap.UNK`) are not hashed: each keeps a dedicated row, and
the padding row is the zero vector and never receives a gradient (``padding_idx``,
as in ``nn.Embedding(padding_idx=PAD)``). The bucket indices of every id are computed
once (an ``(n_ids, k)`` int32 buffer, ``4 k`` bytes per id against ``4 D`` for a table
row) and recomputed on load from the config, so they are not in the state dict.

Models select the representation per table with an :class:`IdEmbeddingConfig`
(``kind: table | hashed``) and build it with :func:`make_id_embedding`; the helpers
:func:`embedding_table`, :func:`embedding_rows` and :func:`init_normal_` /
:func:`init_uniform_` / :func:`init_zeros_` work on both kinds, and on a plain
``nn.Embedding`` do exactly what the models did before hashing existed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator
from torch import nn

from recpipe.features.hashing import hash_ids
from recpipe.features.idmap import N_RESERVED, PAD

log = logging.getLogger(__name__)

__all__ = [
    "HashedEmbedding",
    "IdEmbedding",
    "IdEmbeddingConfig",
    "check_tables",
    "embedding_rows",
    "embedding_table",
    "init_normal_",
    "init_uniform_",
    "init_zeros_",
    "make_id_embedding",
]


class IdEmbeddingConfig(BaseModel):
    """How a model represents its id tables: one row per id, or hashed buckets.

    The ``id_embedding`` block of a model's config (``train.model_configs.<name>`` in
    params.yaml), e.g. ``{kind: hashed, buckets: 0.25, hashes: 2}``. With
    ``kind: table`` (the default) the other keys are ignored.

    Attributes
    ----------
    kind : {"table", "hashed"}
        ``table``: ``nn.Embedding`` with one row per id; ``hashed``:
        :class:`HashedEmbedding`.
    buckets : int or float
        Number of bucket rows: an integer is a count; a float in ``(0, 1]`` a fraction
        of the table's real ids (reserved slots excluded), rounded up.
    hashes : int
        k: hash functions per id (1: the hashing trick; 2 or more: Bloom embeddings).
    seed : int
        Hash seed (recorded in the artifact's config, so a loaded model hashes alike).
    combine : {"sum", "mean"}
        How an id's k bucket vectors combine.
    weights : bool
        Learn per-id importance weights of the k components (hash embeddings,
        Svenstrup et al. 2017).
    tables : tuple of str or None
        Which of the model's id tables to hash (MF: ``user``, ``item``; GRU4Rec:
        ``item``); None: all of them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["table", "hashed"] = Field(
        default="table", description="table: one row per id; hashed: shared hashed buckets"
    )
    buckets: PositiveInt | float = Field(
        default=0.25,
        description="bucket rows: a count (int) or a fraction of the real ids (float in (0, 1])",
    )
    hashes: PositiveInt = Field(default=2, description="k: hash functions per id")
    seed: int = Field(default=0, description="hash seed")
    combine: Literal["sum", "mean"] = Field(
        default="sum", description="how an id's k bucket vectors combine"
    )
    weights: bool = Field(
        default=False, description="learned per-id importance weights (hash embeddings)"
    )
    tables: tuple[str, ...] | None = Field(
        default=None, description="the model's id tables to hash (null: all)"
    )

    @field_validator("buckets")
    @classmethod
    def _fraction_in_range(cls, value: int | float) -> int | float:
        if isinstance(value, float) and not 0.0 < value <= 1.0:
            raise ValueError(
                f"a fractional bucket count must be in (0, 1], got {value}; "
                "give an integer for an absolute number of buckets"
            )
        return value

    def hashes_table(self, table: str) -> bool:
        """Whether the model's id table ``table`` is hashed under this config."""
        return self.kind == "hashed" and (self.tables is None or table in self.tables)

    def n_buckets(self, n_ids: int, n_reserved: int = N_RESERVED) -> int:
        """Bucket rows for a table of ``n_ids`` slots (``n_reserved`` of them reserved).

        Examples
        --------
        >>> IdEmbeddingConfig(kind="hashed", buckets=0.25).n_buckets(1002)
        250
        >>> IdEmbeddingConfig(kind="hashed", buckets=64).n_buckets(1002)
        64
        """
        if isinstance(self.buckets, float):
            return max(1, math.ceil(self.buckets * max(n_ids - n_reserved, 0) - 1e-9))
        return int(self.buckets)


def check_tables(spec: IdEmbeddingConfig, allowed: Collection[str]) -> IdEmbeddingConfig:
    """``spec`` when its ``tables`` name only tables in ``allowed``; ValueError otherwise.

    Model configs call it from a field validator, so a wrong name is a
    :class:`~recpipe.errors.ConfigError` naming the key.
    """
    if spec.tables is not None:
        unknown = sorted(set(spec.tables) - set(allowed))
        if unknown:
            raise ValueError(
                f"id_embedding.tables names unknown tables {unknown}; "
                f"this model's id tables are {sorted(allowed)}"
            )
    return spec


class HashedEmbedding(nn.Module):
    """Embeddings of ``n_ids`` ids from ``n_buckets`` shared rows by k hash functions.

    See the module docstring (Bloom embeddings, Serrà & Karatzoglou 2017; hash
    embeddings, Svenstrup et al. 2017). Ids below ``n_reserved`` have dedicated rows;
    ``padding_idx`` is a zero vector without gradient.

    Parameters
    ----------
    n_ids : int
        Number of ids, reserved slots included (an ``nn.Embedding``'s
        ``num_embeddings``).
    dim : int
        D: embedding dimension.
    n_buckets : int
        Number of shared bucket rows.
    n_hashes : int, default 2
        k: hash functions per id.
    seed : int, default 0
        Hash seed.
    combine : {"sum", "mean"}, default "sum"
        Combination of an id's k bucket vectors.
    weights : bool, default False
        Learn per-id importance weights (``importance``, (n_ids, k), initialised to 1).
    n_reserved : int, default N_RESERVED
        Leading ids with dedicated rows (not hashed).
    padding_idx : int or None, default PAD
        A reserved id whose vector is zero and gets no gradient; None: none.
    name : str, default ""
        Name of the id space, mixed into the hash (tables with different names
        collide independently).

    Attributes
    ----------
    table : torch.nn.Parameter
        (n_reserved + n_buckets, D): the reserved rows, then the buckets.
    importance : torch.nn.Parameter or None
        (n_ids, k) per-id component weights (``weights=True``).

    Examples
    --------
    >>> emb = HashedEmbedding(1000, 8, n_buckets=100, n_hashes=2)
    >>> tuple(emb(torch.tensor([[0, 5], [7, 999]])).shape)
    (2, 2, 8)
    >>> emb.table.numel()  # (2 reserved + 100 buckets) x 8
    816
    """

    def __init__(
        self,
        n_ids: int,
        dim: int,
        n_buckets: int,
        n_hashes: int = 2,
        seed: int = 0,
        combine: Literal["sum", "mean"] = "sum",
        *,
        weights: bool = False,
        n_reserved: int = N_RESERVED,
        padding_idx: int | None = PAD,
        name: str = "",
    ) -> None:
        super().__init__()
        for what, value, low in (
            ("n_ids", n_ids, 1),
            ("dim", dim, 1),
            ("n_buckets", n_buckets, 1),
            ("n_hashes", n_hashes, 1),
            ("n_reserved", n_reserved, 0),
        ):
            if int(value) != value or value < low:
                raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")
        if combine not in ("sum", "mean"):
            raise ValueError(f"combine must be 'sum' or 'mean', got {combine!r}")
        n_reserved = min(int(n_reserved), int(n_ids))
        if padding_idx is not None and not 0 <= padding_idx < n_reserved:
            raise ValueError(
                f"padding_idx must be a reserved id in [0, {n_reserved}) or None, "
                f"got {padding_idx!r}"
            )
        self.n_ids, self.dim = int(n_ids), int(dim)
        self.n_buckets, self.n_hashes = int(n_buckets), int(n_hashes)
        self.seed, self.combine, self.name = int(seed), combine, name
        self.n_reserved, self.padding_idx = n_reserved, padding_idx

        self.table = nn.Parameter(torch.empty(n_reserved + self.n_buckets, self.dim))
        self.register_buffer("index", torch.from_numpy(self.bucket_index()), persistent=False)
        self.importance: nn.Parameter | None = None
        if weights:
            self.importance = nn.Parameter(torch.ones(self.n_ids, self.n_hashes))
        self.init_normal_(1.0)

    # hashing -------------------------------------------------------------------
    def bucket_index(self) -> np.ndarray:
        """(n_ids, k) int32 rows of :attr:`table` that make up each id's vector.

        Reserved id ``r`` repeats its own row ``r`` (only the first copy counts); every
        other id holds ``n_reserved + h_j(id)`` for the k hash functions.
        """
        k, r = self.n_hashes, self.n_reserved
        index = np.empty((self.n_ids, k), dtype=np.int64)
        index[:r] = np.arange(r)[:, None]
        real = np.arange(r, self.n_ids, dtype=np.int64)
        index[r:] = r + hash_ids(real, self.n_buckets, k, self.seed, name=self.name)
        dtype = np.int32 if r + self.n_buckets < 2**31 else np.int64
        return index.astype(dtype)

    def _mix(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, k) weights of the k components of each id (reserved ids: the first only)."""
        k = self.n_hashes
        base = 1.0 if self.combine == "sum" or k == 1 else 1.0 / k
        mix = torch.full((ids.shape[0], k), base, dtype=self.table.dtype, device=ids.device)
        if self.n_reserved and k > 1:
            reserved = ids < self.n_reserved
            mix[:, 1:].masked_fill_(reserved[:, None], 0.0)
            mix[:, 0].masked_fill_(reserved, 1.0)
        if self.importance is not None:
            mix = mix * self.importance.index_select(0, ids).to(mix.dtype)
        return mix

    # lookups -------------------------------------------------------------------
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(..., D) vectors of ``ids`` (any shape, int64 in ``[0, n_ids)``)."""
        flat = ids.reshape(-1).long()
        rows = self.index.index_select(0, flat)
        out = F.embedding_bag(
            rows,
            self.table,
            mode="sum",
            per_sample_weights=self._mix(flat),
            padding_idx=self.padding_idx,
        )
        return out.reshape(*ids.shape, self.dim)

    def all_vectors(self) -> torch.Tensor:
        """(n_ids, D) every id's vector (differentiable; computed on each call)."""
        return self(torch.arange(self.n_ids, device=self.table.device))

    @property
    def num_embeddings(self) -> int:
        """Number of ids (as ``nn.Embedding.num_embeddings``)."""
        return self.n_ids

    @property
    def embedding_dim(self) -> int:
        """D (as ``nn.Embedding.embedding_dim``)."""
        return self.dim

    def extra_repr(self) -> str:
        extra = ", weights=True" if self.importance is not None else ""
        return (
            f"{self.n_ids}, {self.dim}, n_buckets={self.n_buckets}, n_hashes={self.n_hashes}, "
            f"seed={self.seed}, combine={self.combine!r}{extra}"
        )

    # initialisation ------------------------------------------------------------
    def _row_scale(self) -> float:
        """Factor on a bucket row's spread so that an id's vector gets the target spread
        (the k rows are independent: the sum's variance is k times a row's, the mean's
        1 / k times)."""
        k = self.n_hashes
        return 1.0 / math.sqrt(k) if self.combine == "sum" else math.sqrt(k)

    def _zero_padding(self) -> None:
        if self.padding_idx is not None:
            with torch.no_grad():
                self.table[self.padding_idx].zero_()

    def init_normal_(self, std: float) -> None:
        """Initialise so that every id's vector has entries of standard deviation ``std``."""
        r = self.n_reserved
        with torch.no_grad():
            self.table[:r].normal_(0.0, std)
            self.table[r:].normal_(0.0, std * self._row_scale())
        self._zero_padding()

    def init_uniform_(self, bound: float) -> None:
        """Initialise so that every id's vector has the spread of ``uniform(-bound, bound)``
        (reserved rows exactly that; bucket rows scaled as in :meth:`init_normal_`)."""
        r = self.n_reserved
        with torch.no_grad():
            self.table[:r].uniform_(-bound, bound)
            scaled = bound * self._row_scale()
            self.table[r:].uniform_(-scaled, scaled)
        self._zero_padding()

    def init_zeros_(self) -> None:
        """Every row zero (biases); importance weights are left as they are."""
        with torch.no_grad():
            self.table.zero_()


#: What a model's id table is: a plain table or hashed buckets.
IdEmbedding = nn.Embedding | HashedEmbedding


def make_id_embedding(
    spec: IdEmbeddingConfig, n_ids: int, dim: int, *, table: str, name: str | None = None
) -> IdEmbedding:
    """An id table of ``n_ids`` ids: ``nn.Embedding`` or :class:`HashedEmbedding`.

    Parameters
    ----------
    spec : IdEmbeddingConfig
        The model's ``id_embedding`` block.
    n_ids, dim : int
        Number of ids (reserved slots included) and D.
    table : str
        The model's name of this id table (``user``, ``item``): hashed only when
        :meth:`IdEmbeddingConfig.hashes_table` says so.
    name : str, optional
        The hash's name (default ``table``): tables with the same name share their
        hash functions (a factor table and its bias table, say).

    Returns
    -------
    torch.nn.Embedding or HashedEmbedding
        ``nn.Embedding(n_ids, dim)`` with its default initialisation when not hashed
        (callers initialise it as before).
    """
    if not spec.hashes_table(table):
        return nn.Embedding(n_ids, dim)
    emb = HashedEmbedding(
        n_ids,
        dim,
        spec.n_buckets(n_ids),
        spec.hashes,
        spec.seed,
        spec.combine,
        weights=spec.weights,
        name=table if name is None else name,
    )
    log.debug("hashed %s table: %r", table, emb)
    return emb


def embedding_table(emb: nn.Module) -> torch.Tensor:
    """(n_ids, D) every id's vector: ``emb.weight`` of a table, the materialised hashed one."""
    if isinstance(emb, HashedEmbedding):
        return emb.all_vectors()
    return emb.weight


def embedding_rows(emb: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """(N, D) vectors of (N,) ``ids``: ``emb.weight.index_select(0, ids)`` of a table."""
    if isinstance(emb, HashedEmbedding):
        return emb(ids)
    return emb.weight.index_select(0, ids)


def init_normal_(emb: nn.Module, std: float) -> None:
    """``nn.init.normal_(emb.weight, std=std)``, or the hashed equivalent."""
    if isinstance(emb, HashedEmbedding):
        emb.init_normal_(std)
    else:
        nn.init.normal_(emb.weight, std=std)


def init_uniform_(emb: nn.Module, bound: float) -> None:
    """``emb.weight.uniform_(-bound, bound)``, or the hashed equivalent."""
    if isinstance(emb, HashedEmbedding):
        emb.init_uniform_(bound)
    else:
        with torch.no_grad():
            emb.weight.uniform_(-bound, bound)


def init_zeros_(emb: nn.Module) -> None:
    """``nn.init.zeros_(emb.weight)``, or every hashed row zero."""
    if isinstance(emb, HashedEmbedding):
        emb.init_zeros_()
    else:
        nn.init.zeros_(emb.weight)
