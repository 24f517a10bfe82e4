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


def _pool(table: nn.EmbeddingBag, bag: Bag) -> torch.Tensor:
    """(B, dim) weighted sum of each row of ``bag`` in ``table``."""
    weights = None if bag.weights is None else bag.weights.to(table.weight.dtype)
    return table(bag.indices, bag.offsets, per_sample_weights=weights)


class FieldEmbedding(nn.Module):
    """Embeddings of F categorical fields in one table, plus an optional multi-hot bag field.

    Field ``f`` owns rows ``offset_f .. offset_f + cardinality_f - 1`` of one
    ``nn.Embedding``; the bag field (e.g. item categories) has its own
    ``nn.EmbeddingBag`` and pools its entries by weighted sum (weights ``1 / length``
    give the mean; an empty row gives zeros).

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
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.cardinalities = tuple(int(c) for c in cardinalities)
        self.dim = int(dim)
        self.register_buffer("offsets", _field_offsets(self.cardinalities), persistent=False)
        self.table = nn.Embedding(sum(self.cardinalities), dim)
        nn.init.normal_(self.table.weight, std=init_std)
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

    def field_weight(self, field: int) -> torch.Tensor:
        """(cardinality, D) the rows of field ``field`` (a view of the table)."""
        start = int(self.offsets[field])
        return self.table.weight[start : start + self.cardinalities[field]]

    def field(self, field: int, ids: torch.Tensor) -> torch.Tensor:
        """(..., D) embeddings of ``ids`` (any shape) of one field."""
        return self.table(ids + self.offsets[field])

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
        out = self.table(ids + self.offsets)
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
    Weights and bias start at zero.

    Parameters
    ----------
    cardinalities : sequence of int
        Number of ids of each single-valued field (may be empty).
    bag_size : int, default 0
        Number of ids of the bag input (e.g. ``n_cross_buckets``); 0: none.
    bias : bool, default True
        Add a learned global bias.

    Examples
    --------
    >>> wide = LinearWide([5, 7], bag_size=16)
    >>> out = wide(torch.tensor([[0, 6], [4, 2]]), Bag(torch.tensor([3, 9]), torch.tensor([0, 1])))
    >>> tuple(out.shape)
    (2,)
    """

    def __init__(
        self, cardinalities: Sequence[int], *, bag_size: int = 0, bias: bool = True
    ) -> None:
        super().__init__()
        self.cardinalities = tuple(int(c) for c in cardinalities)
        self.table: nn.Embedding | None = None
        if self.cardinalities:
            self.register_buffer("offsets", _field_offsets(self.cardinalities), persistent=False)
            self.table = nn.Embedding(sum(self.cardinalities), 1)
            nn.init.zeros_(self.table.weight)
        self.bag_table: nn.EmbeddingBag | None = None
        if bag_size:
            self.bag_table = nn.EmbeddingBag(int(bag_size), 1, mode="sum")
            nn.init.zeros_(self.bag_table.weight)
        self.bias = nn.Parameter(torch.zeros(())) if bias else None

    def field_weight(self, field: int) -> torch.Tensor:
        """(cardinality,) the weights of field ``field``."""
        if self.table is None:
            raise ValueError("this LinearWide has no single-valued field")
        start = int(self.offsets[field])
        return self.table.weight[start : start + self.cardinalities[field], 0]

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
            ref = self.table if self.table is not None else self.bag_table
            assert ref is not None
            return ref.weight.new_zeros(())
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
            if self.table is None or ids.ndim != 2 or ids.shape[1] != len(self.cardinalities):
                raise ValueError(
                    f"ids must be (B, {len(self.cardinalities)}), got {tuple(ids.shape)}"
                )
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
