"""Row-sparse optimiser steps: update only the table rows a minibatch looked up.

A model whose gradient touches few rows of large tables (an embedding lookup) can
hand the loop that gradient as :class:`RowGrad` blocks (a parameter, the distinct
rows it touches, the gradient of those rows) instead of dense ``.grad`` tensors.
:class:`RowSparseStep` then clips by the global norm and applies the optimiser's own
update (the same ``torch.optim`` functional kernel the optimiser's ``step`` runs) to
those rows only, with the optimiser's state rows gathered and written back in place:
no pass over whole tables, no zeroing of dense gradients.

Why it is exact
---------------
It is exact only for optimisers under which a row whose gradient is zero does not
move and whose state does not change (:func:`row_sparse_reason` says which):

- ``sgd`` with ``momentum: 0`` and no weight decay: ``p -= lr g``, so ``g = 0`` leaves
  ``p`` as it is (momentum would keep moving a row after its last gradient);
- ``adagrad`` with no weight decay: ``s += g^2; p -= lr g / (sqrt(s) + eps)``, so
  ``g = 0`` leaves ``s`` and ``p`` unchanged (``eps > 0``, so no ``0 / 0``); its
  per-parameter ``step`` counter still advances every step (it only scales the
  learning rate with ``lr_decay``), as the dense step advances it;
- Adam / AdamW are not: their moments decay and keep moving a row with zero gradient.

The rows' gradients are the dense gradient's non-zero rows (a row looked up twice
holds the sum of both lookups' gradients), so their norm is the dense norm, and the
kernel applied to gathered rows computes, element by element, what it computes on the
whole table (up to float rounding where a vectorised kernel splits rows differently).
The optimiser's state lives in the optimiser, updated in place, so
``optimizer.state_dict()`` checkpoints and resumes it as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.optim.adagrad import adagrad
from torch.optim.sgd import sgd

from recpipe.errors import TrainingError


@dataclass(frozen=True)
class RowGrad:
    """The gradient of some rows of one parameter.

    Attributes
    ----------
    param : torch.Tensor
        The parameter (a table, rows along dim 0).
    rows : torch.Tensor or None
        (R,) int64 distinct row indices; None: the whole parameter.
    grad : torch.Tensor
        (R, ...) the gradient of those rows (the whole parameter's shape when ``rows``
        is None); every other row's gradient is zero.
    values : torch.Tensor, optional
        (R, ...) a copy of the parameter's rows ``param[rows]`` when the step gathered
        them already (the update reuses it and writes it back); None: gathered by the
        update.
    """

    param: torch.Tensor
    rows: torch.Tensor | None
    grad: torch.Tensor
    values: torch.Tensor | None = None


@dataclass(frozen=True)
class Segments:
    """Positions of a batch's ids grouped by id: ``ids[order[offsets[k]:offsets[k+1]]]``
    all equal ``rows[k]``, in batch order within a group (the order in which
    ``index_add_`` would add them). Feeds ``torch.nn.functional.embedding_bag(...,
    offsets, mode="sum")``, which sums each group's rows in one pass (a CPU
    ``index_add_`` visits the rows one tensor operation at a time, several times
    slower for a batch of embedding rows).

    Attributes
    ----------
    rows : torch.Tensor
        (U,) int64 the distinct ids, ascending.
    order : numpy.ndarray
        (N,) int64 positions in the batch, grouped by id.
    offsets : numpy.ndarray
        (U,) int64 start of each group in ``order``.
    counts : numpy.ndarray
        (U,) int64 size of each group (how often the id occurs).
    """

    rows: torch.Tensor
    order: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray


#: numpy's stable argsort is a radix sort for 16-bit keys (about 10x faster here).
_RADIX_MAX = np.iinfo(np.uint16).max


def segments(ids: np.ndarray, n_rows: int) -> Segments:
    """Group the positions of ``ids`` (N,) by id (values in ``[0, n_rows)``)."""
    key = ids.astype(np.uint16) if n_rows <= _RADIX_MAX + 1 else ids
    order = np.argsort(key, kind="stable")
    ordered = ids[order]
    starts = np.empty(ids.shape[0], dtype=bool)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    offsets = np.flatnonzero(starts)
    counts = np.empty_like(offsets)
    counts[:-1] = offsets[1:] - offsets[:-1]
    counts[-1:] = ids.shape[0] - offsets[-1:]
    return Segments(torch.from_numpy(ordered[offsets]), order, offsets, counts)


def row_sparse_reason(optimizer: torch.optim.Optimizer) -> str | None:
    """None when ``optimizer``'s step leaves rows with zero gradient (and their
    state) unchanged, so :class:`RowSparseStep` equals its dense step; else why not."""
    groups = optimizer.param_groups
    for group in groups:
        if group.get("weight_decay", 0.0):
            return f"weight_decay {group['weight_decay']} moves every row (expected 0)"
        if group.get("maximize", False) or group.get("differentiable", False):
            return "maximize / differentiable optimisers are not supported"
    if isinstance(optimizer, torch.optim.Adagrad):
        return None
    if isinstance(optimizer, torch.optim.SGD):
        momentum = [g["momentum"] for g in groups if g["momentum"]]
        if momentum:
            return f"SGD momentum {momentum[0]} moves rows after their gradient (expected 0)"
        return None
    return f"{type(optimizer).__name__} moves rows with zero gradient (expected adagrad or sgd)"


class RowSparseStep:
    """Clip and apply ``optimizer``'s update to the rows a step touched.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        An Adagrad or momentum-free SGD optimiser without weight decay, one parameter
        group (:func:`row_sparse_reason`); its state is read and written in place.
    params : sequence of torch.Tensor
        Every parameter the optimiser updates: those a step's :class:`RowGrad` blocks
        leave out have a zero gradient (their Adagrad step counter still advances).

    Raises
    ------
    TrainingError
        The optimiser's update moves rows with zero gradient.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> None:
        reason = row_sparse_reason(optimizer)
        if reason is not None:
            raise TrainingError(f"no row-sparse update for this optimiser: {reason}")
        if len(optimizer.param_groups) != 1:
            raise TrainingError(
                f"row-sparse updates take one parameter group, got {len(optimizer.param_groups)}"
            )
        self.optimizer = optimizer
        self.group = optimizer.param_groups[0]
        self.adagrad = isinstance(optimizer, torch.optim.Adagrad)
        self.params = list(params)
        if self.adagrad:
            for p in self.params:
                self._state(p)  # present from the optimiser's construction or a checkpoint

    def _state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.optimizer.state[param]
        if "sum" not in state or "step" not in state:
            raise TrainingError("Adagrad has no state for a parameter (expected 'sum', 'step')")
        return state

    @staticmethod
    def total_norm(grads: Sequence[RowGrad]) -> float:
        """The global L2 norm of the gradient: that of the rows' blocks (every other row
        is zero). On the CPU the sum of squares runs in numpy (float32 dot products
        added in float64): a few microseconds, where torch's norm takes tens."""
        blocks = [g.grad for g in grads]
        if all(b.device.type == "cpu" for b in blocks):
            squares = 0.0
            for block in blocks:
                flat = block.detach().numpy().reshape(-1)
                squares += float(np.dot(flat, flat))
            return squares**0.5
        return float(torch.nn.utils.get_total_norm(blocks))

    def clip(self, grads: Sequence[RowGrad], max_norm: float) -> None:
        """Scale the blocks in place as :func:`~recpipe.train.loop.clip_grad_norm`
        scales the dense gradient: by ``max_norm / (norm + 1e-6)`` when that is below 1
        (multiplying by 1.0 changes nothing). The norm is read on the host: this path
        runs on the CPU."""
        if not grads:
            return
        coef = max_norm / (self.total_norm(grads) + 1e-6)
        if coef < 1.0:
            for g in grads:
                g.grad.mul_(coef)

    def step(self, grads: Sequence[RowGrad]) -> None:
        """Apply the update to each block's rows (and advance the step counters)."""
        group = self.group
        blocks = [g.grad for g in grads]
        with torch.no_grad():
            # the rows (a copy) or the whole parameter (updated in place)
            params = [
                g.param
                if g.rows is None
                else g.values
                if g.values is not None
                else take_rows(g.param, g.rows)
                for g in grads
            ]
            if self.adagrad:
                touched = {id(g.param) for g in grads}
                sums = []
                for g in grads:
                    state_sum = self._state(g.param)["sum"]
                    sums.append(state_sum if g.rows is None else take_rows(state_sum, g.rows))
                steps = [self._state(g.param)["step"] for g in grads]
                adagrad(
                    params,
                    blocks,
                    sums,
                    steps,
                    fused=group["fused"],
                    foreach=group["foreach"],
                    lr=group["lr"],
                    weight_decay=0.0,
                    lr_decay=group["lr_decay"],
                    eps=group["eps"],
                    maximize=False,
                )
                for p in self.params:  # the untouched ones advance too, as in the dense step
                    if id(p) not in touched:
                        self._state(p)["step"].add_(1)
                for g, state_sum in zip(grads, sums, strict=True):
                    if g.rows is not None:
                        put_rows(self._state(g.param)["sum"], g.rows, state_sum)
            else:
                sgd(
                    params,
                    blocks,
                    [None] * len(params),
                    fused=group["fused"],
                    foreach=group["foreach"],
                    weight_decay=0.0,
                    momentum=0.0,
                    lr=group["lr"],
                    dampening=group["dampening"],
                    nesterov=False,
                    maximize=False,
                )
            for g, p_rows in zip(grads, params, strict=True):
                if g.rows is not None:
                    put_rows(g.param, g.rows, p_rows)


def take_rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``table[rows]`` (a copy), without autograd; in numpy on the CPU (its ``take``
    has a smaller fixed cost than ``index_select``)."""
    if table.device.type == "cpu" and rows.device.type == "cpu":
        return torch.from_numpy(table.detach().numpy().take(rows.numpy(), axis=0))
    with torch.no_grad():
        return table.index_select(0, rows)


def put_rows(table: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
    """``table[rows] = values`` in place (distinct ``rows``), without autograd.

    On the CPU the write goes through numpy views of the same memory: torch's CPU
    ``index_copy_`` copies one row per tensor operation, about 2.5x slower for a
    batch's embedding rows.
    """
    if table.device.type == "cpu" and values.device.type == "cpu":
        table.detach().numpy()[rows.numpy()] = values.numpy()
    else:
        with torch.no_grad():
            table.index_copy_(0, rows, values)
