"""Shared torch blocks of the CTR-style models (Wide & Deep, DeepFM).

Shapes: B is the batch, F the number of single-valued (one id per row) fields, D the
embedding dimension, N the total number of entries of a multi-hot bag over the batch.

- :class:`Bag`: a multi-hot input in ``torch.nn.EmbeddingBag`` form (flat ``indices``
  (N,), row starts ``offsets`` (B,), optional ``weights`` (N,)); a row's entries are
  ``indices[offsets[b]:offsets[b + 1]]`` and an empty row pools to zeros.
- :class:`FieldEmbedding`: one table for several categorical fields (per-field offsets
  into one ``nn.Embedding``), plus an optional bag field (``nn.EmbeddingBag``, weighted
  sum; pass weights ``1 / row length`` for the mean) -> (B, F [+ 1], D).
- :class:`LinearWide`: the linear (first-order) part over sparse ids: a weight of
  dimension 1 per id, summed, plus a bias. It works as well over a hashed bucket space
  (the cross-product features of Wide & Deep, Cheng et al. 2016).

Both take named fields and an ``id_embedding`` block
(:class:`~recpipe.models.hashed.IdEmbeddingConfig`): a field it hashes leaves the fused
table for its own :class:`~recpipe.models.hashed.HashedEmbedding` (k hash functions
into shared buckets). The hash of a field depends on its name only (and the block), so
a field hashed in a :class:`FieldEmbedding` and in a :class:`LinearWide` of the same
block maps each id to the same buckets in both. Without hashed fields (the default)
the modules are exactly the fused tables.
- :class:`FMInteraction`: the second-order term of a factorization machine (Rendle
  2010), ``0.5 * sum_d ((sum_f v_fd)^2 - sum_f v_fd^2)``, i.e. the sum of the inner
  products of every pair of fields, in O(F D) (DeepFM, Guo et al. 2017).
- :class:`MLP`: Linear + ReLU (+ dropout) layers ending in a linear output; its first
  layer can be applied to a column block of the input (:meth:`MLP.first_partial`), so a
  model can split the first layer into a user part and an item part.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from recpipe.models.hashed import (
    IdEmbedding,
    IdEmbeddingConfig,
    embedding_table,
    init_normal_,
    init_zeros_,
    make_id_embedding,
)

log = logging.getLogger(__name__)

__all__ = ["MLP", "Bag", "FMInteraction", "FieldEmbedding", "LinearWide", "bag_from_csr"]


class Bag(NamedTuple):
    """A batch of multi-hot rows in ``nn.EmbeddingBag`` input form.

    Attributes
    ----------
    indices : torch.Tensor
        (N,) int64 ids of every row's entries, row after row.
    offsets : torch.Tensor
        (B,) int64 start of each row in ``indices`` (non-decreasing, ``offsets[0] == 0``).
    weights : torch.Tensor or None
        (N,) float per-entry weights (None: every weight 1, a plain sum).
    """

    indices: torch.Tensor
    offsets: torch.Tensor
    weights: torch.Tensor | None = None

    def to(self, device: torch.device) -> Bag:
        """The same bag on ``device``."""
        weights = None if self.weights is None else self.weights.to(device)
        return Bag(self.indices.to(device), self.offsets.to(device), weights)

    def shifted(self, offset: int) -> Bag:
        """The bag with ``offset`` added to every index (to address a field in a shared table)."""
        return Bag(self.indices + offset, self.offsets, self.weights)


def bag_from_csr(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray | None = None) -> Bag:
    """A :class:`Bag` with one row per row of a CSR matrix (``indptr`` (B + 1,)).

    Parameters
    ----------
    indptr, indices : numpy.ndarray
        The CSR structure: row ``b`` holds ``indices[indptr[b]:indptr[b + 1]]``.
    data : numpy.ndarray, optional
        (N,) per-entry weights; None for a plain sum.
    """
    weights = None if data is None else torch.from_numpy(np.ascontiguousarray(data, np.float32))
    return Bag(
        torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int64)),
        torch.from_numpy(np.ascontiguousarray(indptr[:-1], dtype=np.int64)),
        weights,
    )


def _field_offsets(cardinalities: Sequence[int]) -> torch.Tensor:
    sizes = [int(c) for c in cardinalities]
    if any(c < 1 for c in sizes):
        raise ValueError(f"every field needs a cardinality >= 1, got {sizes}")
    return torch.tensor(np.concatenate([[0], np.cumsum(sizes)[:-1]]), dtype=torch.long)


class _FieldLayout(NamedTuple):
    """Which single-valued fields are hashed, and the rows of the others in the fused table."""

    names: tuple[str, ...]
    hashed: tuple[bool, ...]
    #: (F,) start of each field in the fused table (a hashed field's entry is unused)
    offsets: torch.Tensor
    #: rows of the fused table (the fields that are not hashed)
    table_rows: int


def _field_layout(
    cardinalities: Sequence[int],
    names: Sequence[str] | None,
    id_embedding: IdEmbeddingConfig | None,
) -> _FieldLayout:
    """The layout of F fields (cardinalities >= 1; names default to ``"0" .. "F-1"``)."""
    sizes = [int(c) for c in cardinalities]
    _field_offsets(sizes)  # every cardinality >= 1
    field_names = tuple(str(f) for f in range(len(sizes))) if names is None else tuple(names)
    if len(field_names) != len(sizes) or len(set(field_names)) != len(field_names):
        raise ValueError(
            f"names must be {len(sizes)} distinct field names (one per cardinality), "
            f"got {list(field_names)}"
        )
    if any(not name or "." in name for name in field_names):
        raise ValueError(f"field names must be non-empty and free of '.', got {field_names}")
    spec = id_embedding or IdEmbeddingConfig()
    hashed = tuple(spec.hashes_table(name) for name in field_names)
    in_table = [0 if h else c for c, h in zip(sizes, hashed, strict=True)]
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(in_table)[:-1]]), dtype=torch.long)
    return _FieldLayout(field_names, hashed, offsets, int(sum(in_table)))


def _pool(table: nn.EmbeddingBag, bag: Bag) -> torch.Tensor:
    """(B, dim) weighted sum of each row of ``bag`` in ``table``."""
    weights = None if bag.weights is None else bag.weights.to(table.weight.dtype)
    return table(bag.indices, bag.offsets, per_sample_weights=weights)


class FieldEmbedding(nn.Module):
    """Embeddings of F categorical fields in one table, plus an optional multi-hot bag field.

    Field ``f`` owns rows ``offset_f .. offset_f + cardinality_f - 1`` of one
    ``nn.Embedding``; the bag field (e.g. item categories) has its own
    ``nn.EmbeddingBag`` and pools its entries by weighted sum (weights ``1 / length``
    give the mean; an empty row gives zeros). A field that ``id_embedding`` hashes
    has its own :class:`~recpipe.models.hashed.HashedEmbedding` instead (in
    :attr:`hashed`, keyed by the field's name), initialised so that its ids' vectors
    have the same spread.

    Parameters
    ----------
    cardinalities : sequence of int
        Number of ids of each single-valued field (F entries).
    dim : int
        D: embedding dimension.
    bag_size : int, default 0
        Number of ids of the bag field; 0: no bag field.
    init_std : float, default 0.01
        Standard deviation of the normal initialisation.
    names : sequence of str, optional
        The fields' names (``id_embedding.tables`` refers to them); default
        ``"0" .. "F-1"``.
    id_embedding : IdEmbeddingConfig, optional
        Which fields are hashed (default: none; one fused table).

    Attributes
    ----------
    table : torch.nn.Embedding or None
        The fused table of the fields that are not hashed (None when all are).
    hashed : torch.nn.ModuleDict
        Field name -> :class:`~recpipe.models.hashed.HashedEmbedding` of each hashed field.
    bag_table : torch.nn.EmbeddingBag or None
        The bag field's table.

    Examples
    --------
    >>> emb = FieldEmbedding([5, 7], dim=4, bag_size=3)
    >>> ids = torch.tensor([[0, 6], [4, 2]])
    >>> bag = Bag(torch.tensor([0, 2, 1]), torch.tensor([0, 2]))
    >>> tuple(emb(ids, bag).shape)
    (2, 3, 4)
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        dim: int,
        *,
        bag_size: int = 0,
        init_std: float = 0.01,
        names: Sequence[str] | None = None,
        id_embedding: IdEmbeddingConfig | None = None,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.cardinalities = tuple(int(c) for c in cardinalities)
        self.dim = int(dim)
        layout = _field_layout(self.cardinalities, names, id_embedding)
        self.names, self.field_hashed = layout.names, layout.hashed
        self.register_buffer("offsets", layout.offsets, persistent=False)
        self.table: nn.Embedding | None = None
        if layout.table_rows:
            self.table = nn.Embedding(layout.table_rows, dim)
            nn.init.normal_(self.table.weight, std=init_std)
        self.hashed = nn.ModuleDict()
        for f, name in enumerate(self.names):
            if self.field_hashed[f]:
                assert id_embedding is not None
                emb = make_id_embedding(id_embedding, self.cardinalities[f], dim, table=name)
                init_normal_(emb, init_std)
                self.hashed[name] = emb
        self.bag_table: nn.EmbeddingBag | None = None
        if bag_size:
            self.bag_table = nn.EmbeddingBag(int(bag_size), dim, mode="sum")
            nn.init.normal_(self.bag_table.weight, std=init_std)

    @property
    def n_fields(self) -> int:
        """F: number of single-valued fields."""
        return len(self.cardinalities)

    @property
    def has_bag(self) -> bool:
        """Whether the module has a bag field."""
        return self.bag_table is not None

    def _fused(self) -> nn.Embedding:
        assert self.table is not None
        return self.table

    def field_weight(self, field: int) -> torch.Tensor:
        """(cardinality, D) the rows of field ``field``: a view of the table, or (hashed)
        every id's vector, computed from the buckets on each call."""
        if self.field_hashed[field]:
            return embedding_table(self.hashed[self.names[field]])
        start = int(self.offsets[field])
        return self._fused().weight[start : start + self.cardinalities[field]]

    def field(self, field: int, ids: torch.Tensor) -> torch.Tensor:
        """(..., D) embeddings of ``ids`` (any shape) of one field."""
        if self.field_hashed[field]:
            return self.hashed[self.names[field]](ids)
        return self._fused()(ids + self.offsets[field])

    def bag(self, bag: Bag) -> torch.Tensor:
        """(B, D) pooled embeddings of the bag field."""
        if self.bag_table is None:
            raise ValueError("this FieldEmbedding has no bag field (bag_size=0)")
        return _pool(self.bag_table, bag)

    def forward(self, ids: torch.Tensor, bag: Bag | None = None) -> torch.Tensor:
        """Embed a batch.

        Parameters
        ----------
        ids : torch.Tensor
            (B, F) int64 ids, column ``f`` of field ``f`` (within ``[0, cardinality_f)``).
        bag : Bag, optional
            B rows of the bag field; required when the module has one.

        Returns
        -------
        torch.Tensor
            (B, F, D), or (B, F + 1, D) with the pooled bag field last.
        """
        if ids.ndim != 2 or ids.shape[1] != self.n_fields:
            raise ValueError(f"ids must be (B, {self.n_fields}), got {tuple(ids.shape)}")
        if any(self.field_hashed):
            out = torch.stack([self.field(f, ids[:, f]) for f in range(self.n_fields)], dim=1)
        else:
            out = self._fused()(ids + self.offsets)
        if self.bag_table is None:
            return out
        if bag is None:
            raise ValueError("this FieldEmbedding has a bag field: pass bag=")
        return torch.cat([out, self.bag(bag).unsqueeze(1)], dim=1)


class LinearWide(nn.Module):
    """Linear part over sparse ids: one scalar weight per id, summed, plus a bias.

    Ids of several single-valued fields share one table through per-field offsets (as
    in :class:`FieldEmbedding`); a multi-hot input (a bag field, or hashed cross
    features in ``[0, bag_size)``) has its own weights and is pooled by weighted sum.
    A field that ``id_embedding`` hashes has its own one-dimensional
    :class:`~recpipe.models.hashed.HashedEmbedding` (in :attr:`hashed`), with the
    hash functions a :class:`FieldEmbedding` of the same field name and block uses.
    Weights and bias start at zero.

    Parameters
    ----------
    cardinalities : sequence of int
        Number of ids of each single-valued field (may be empty).
    bag_size : int, default 0
        Number of ids of the bag input (e.g. ``n_cross_buckets``); 0: none.
    bias : bool, default True
        Add a learned global bias.
    names : sequence of str, optional
        The fields' names (``id_embedding.tables`` refers to them); default
        ``"0" .. "F-1"``.
    id_embedding : IdEmbeddingConfig, optional
        Which fields are hashed (default: none; one fused table).

    Attributes
    ----------
    table : torch.nn.Embedding or None
        (rows, 1) weights of the fields that are not hashed (None when there are none).
    hashed : torch.nn.ModuleDict
        Field name -> (n_ids, 1) :class:`~recpipe.models.hashed.HashedEmbedding`.
    bag_table : torch.nn.EmbeddingBag or None
        The bag input's weights.
    bias : torch.nn.Parameter or None
        The global bias.

    Examples
    --------
    >>> wide = LinearWide([5, 7], bag_size=16)
    >>> out = wide(torch.tensor([[0, 6], [4, 2]]), Bag(torch.tensor([3, 9]), torch.tensor([0, 1])))
    >>> tuple(out.shape)
    (2,)
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        *,
        bag_size: int = 0,
        bias: bool = True,
        names: Sequence[str] | None = None,
        id_embedding: IdEmbeddingConfig | None = None,
    ) -> None:
        super().__init__()
        self.cardinalities = tuple(int(c) for c in cardinalities)
        self.names: tuple[str, ...] = ()
        self.field_hashed: tuple[bool, ...] = ()
        self.table: nn.Embedding | None = None
        self.hashed = nn.ModuleDict()
        if self.cardinalities:
            layout = _field_layout(self.cardinalities, names, id_embedding)
            self.names, self.field_hashed = layout.names, layout.hashed
            self.register_buffer("offsets", layout.offsets, persistent=False)
            if layout.table_rows:
                self.table = nn.Embedding(layout.table_rows, 1)
                nn.init.zeros_(self.table.weight)
            for f, name in enumerate(self.names):
                if self.field_hashed[f]:
                    assert id_embedding is not None
                    card = self.cardinalities[f]
                    emb: IdEmbedding = make_id_embedding(id_embedding, card, 1, table=name)
                    init_zeros_(emb)
                    self.hashed[name] = emb
        self.bag_table: nn.EmbeddingBag | None = None
        if bag_size:
            self.bag_table = nn.EmbeddingBag(int(bag_size), 1, mode="sum")
            nn.init.zeros_(self.bag_table.weight)
        self.bias = nn.Parameter(torch.zeros(())) if bias else None

    def _check_fields(self) -> None:
        if not self.cardinalities:
            raise ValueError("this LinearWide has no single-valued field")

    def field_weight(self, field: int) -> torch.Tensor:
        """(cardinality,) the weights of field ``field`` (a hashed field's computed from
        its buckets on each call)."""
        self._check_fields()
        if self.field_hashed[field]:
            return embedding_table(self.hashed[self.names[field]])[:, 0]
        assert self.table is not None
        start = int(self.offsets[field])
        return self.table.weight[start : start + self.cardinalities[field], 0]

    def field(self, field: int, ids: torch.Tensor) -> torch.Tensor:
        """(...) weights of ``ids`` (any shape) of field ``field``."""
        self._check_fields()
        if self.field_hashed[field]:
            return self.hashed[self.names[field]](ids)[..., 0]
        assert self.table is not None
        return self.table(ids + self.offsets[field])[..., 0]

    def bag_weight(self) -> torch.Tensor:
        """(bag_size,) the weights of the bag input."""
        if self.bag_table is None:
            raise ValueError("this LinearWide has no bag input (bag_size=0)")
        return self.bag_table.weight[:, 0]

    def pool(self, bag: Bag) -> torch.Tensor:
        """(B,) weighted sum of the bag input's weights per row (no bias)."""
        if self.bag_table is None:
            raise ValueError("this LinearWide has no bag input (bag_size=0)")
        return _pool(self.bag_table, bag)[:, 0]

    def bias_value(self) -> torch.Tensor:
        """The bias as a scalar tensor (0 without one)."""
        if self.bias is None:
            ref = next(self.parameters(), None)
            assert ref is not None, "a LinearWide without fields, bag input and bias"
            return ref.new_zeros(())
        return self.bias

    def forward(self, ids: torch.Tensor | None = None, bag: Bag | None = None) -> torch.Tensor:
        """The linear term of a batch.

        Parameters
        ----------
        ids : torch.Tensor, optional
            (B, F) int64 ids of the single-valued fields.
        bag : Bag, optional
            B rows of the bag input.

        Returns
        -------
        torch.Tensor
            (B,) ``bias + sum_f w[ids[:, f]] + sum_j weight_j * w_bag[bag_j]``.
        """
        parts: list[torch.Tensor] = []
        if ids is not None:
            n_fields = len(self.cardinalities)
            if not n_fields or ids.ndim != 2 or ids.shape[1] != n_fields:
                raise ValueError(f"ids must be (B, {n_fields}), got {tuple(ids.shape)}")
            if any(self.field_hashed):
                weights = [self.field(f, ids[:, f]) for f in range(n_fields)]
                parts.append(torch.stack(weights, dim=1).sum(dim=1))
            else:
                assert self.table is not None
                parts.append(self.table(ids + self.offsets).sum(dim=(1, 2)))
        if bag is not None:
            parts.append(self.pool(bag))
        if not parts:
            raise ValueError("pass ids, bag or both")
        out = parts[0]
        for part in parts[1:]:
            out = out + part
        return out + self.bias_value()


class FMInteraction(nn.Module):
    """Second-order factorization-machine term over F field embeddings.

    ``0.5 * sum_d ((sum_f v_fd)^2 - sum_f v_fd^2)``, which equals
    ``sum_{f < g} <v_f, v_g>``.

    Examples
    --------
    >>> v = torch.tensor([[[1.0, 0.0], [2.0, 1.0], [0.5, 3.0]]])
    >>> FMInteraction()(v).tolist()  # 2 + 0.5 + 4
    [6.5]
    """

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """(B, F, D) embeddings -> (B,) pairwise interaction."""
        if v.ndim != 3:
            raise ValueError(f"expected (B, F, D) embeddings, got shape {tuple(v.shape)}")
        total = v.sum(dim=1)
        return 0.5 * (total.pow(2) - v.pow(2).sum(dim=1)).sum(dim=1)


class MLP(nn.Module):
    """Linear + ReLU (+ dropout) hidden layers, then a linear output layer.

    Parameters
    ----------
    in_dim : int
        Input width.
    hidden : sequence of int
        Widths of the hidden layers (may be empty: a single linear layer).
    dropout : float, default 0.0
        Dropout after each hidden activation (training only).
    out_dim : int, default 1
        Output width.

    Examples
    --------
    >>> mlp = MLP(8, [16, 4], dropout=0.1)
    >>> tuple(mlp(torch.zeros(3, 8)).shape)
    (3, 1)
    """

    def __init__(
        self, in_dim: int, hidden: Sequence[int], dropout: float = 0.0, out_dim: int = 1
    ) -> None:
        super().__init__()
        if in_dim < 1 or out_dim < 1 or any(int(h) < 1 for h in hidden):
            raise ValueError(
                f"layer widths must be >= 1, got in_dim={in_dim}, hidden={list(hidden)}, "
                f"out_dim={out_dim}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        dims = [int(in_dim), *(int(h) for h in hidden), int(out_dim)]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.dropout = nn.Dropout(dropout)
        self.hidden = tuple(dims[1:-1])

    @property
    def first(self) -> nn.Linear:
        """The first linear layer (the output layer when there is no hidden layer)."""
        return self.layers[0]

    def first_partial(self, x: torch.Tensor, columns: slice, *, bias: bool = False) -> torch.Tensor:
        """The first layer applied to a block of input columns only.

        ``first(x_full) == first_partial(x_full[..., a], a, bias=True) +
        first_partial(x_full[..., b], b)`` for a split of the columns into ``a`` and ``b``.

        Parameters
        ----------
        x : torch.Tensor
            (..., n_columns) the input's columns ``columns``.
        columns : slice
            Which input columns ``x`` holds.
        bias : bool, default False
            Add the first layer's bias (add it in exactly one part).

        Returns
        -------
        torch.Tensor
            (..., width of the first layer) pre-activation contribution.
        """
        weight = self.first.weight[:, columns]
        return nn.functional.linear(x, weight, self.first.bias if bias else None)

    def tail(self, z: torch.Tensor) -> torch.Tensor:
        """Everything after the first layer's affine map: ``forward(x) == tail(first(x))``.

        Parameters
        ----------
        z : torch.Tensor
            (..., width of the first layer) pre-activation.

        Returns
        -------
        torch.Tensor
            (..., out_dim).
        """
        if len(self.layers) == 1:
            return z
        for layer in self.layers[1:]:
            z = layer(self.dropout(torch.relu(z)))
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) -> (..., out_dim)."""
        return self.tail(self.first(x))
