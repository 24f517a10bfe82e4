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
    """

    param: torch.Tensor
    rows: torch.Tensor | None
    grad: torch.Tensor


def unique_rows(
    ids: torch.Tensor, scratch: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct values of ``ids`` and, for each id, its position among them.

    Parameters
    ----------
    ids : torch.Tensor
        (N,) int64 row indices (repeats allowed).
    scratch : numpy.ndarray, optional
        (n_rows,) int64 work array over the table's rows (any content; reused across
        calls, so each call costs O(N), not a sort). Only for CPU ``ids``; without it
        (or on another device) ``torch.unique`` sorts.

    Returns
    -------
    uniq : torch.Tensor
        (U,) the distinct ids (in order of first... some occurrence with ``scratch``,
        sorted without).
    inverse : torch.Tensor
        (N,) int64 with ``uniq[inverse] == ids``.
    """
    if scratch is None or ids.device.type != "cpu":
        uniq, inverse = torch.unique(ids, return_inverse=True)
        return uniq, inverse
    flat = ids.numpy()
    n = flat.shape[0]
    positions = np.arange(n)
    scratch[flat] = positions  # one of each id's positions wins
    keep = np.flatnonzero(scratch[flat] == positions)  # the winners: one per id
    uniq = flat[keep]
    scratch[uniq] = np.arange(keep.shape[0])
    return torch.from_numpy(uniq), torch.from_numpy(scratch[flat])


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
    def total_norm(grads: Sequence[RowGrad]) -> torch.Tensor:
        """The global L2 norm of the gradient: that of the rows' blocks (every other
        row is zero), computed as ``torch.nn.utils.get_total_norm`` does."""
        return torch.nn.utils.get_total_norm([g.grad for g in grads])

    def clip(self, grads: Sequence[RowGrad], max_norm: float) -> None:
        """Scale the blocks in place as :func:`~recpipe.train.loop.clip_grad_norm`
        scales the dense gradient: by ``max_norm / (norm + 1e-6)`` clamped to 1 (on the
        CPU only when it is below 1: multiplying by 1.0 changes nothing)."""
        blocks = [g.grad for g in grads]
        if not blocks:
            return
        coef = max_norm / (self.total_norm(grads) + 1e-6)
        if blocks[0].device.type == "cpu":
            if not float(coef) < 1.0:
                return
        else:  # no device sync per step: multiply by the clamped factor, as torch does
            coef = coef.clamp(max=1.0)
        for block in blocks:
            block.mul_(coef.to(block.dtype))

    def step(self, grads: Sequence[RowGrad]) -> None:
        """Apply the update to each block's rows (and advance the step counters)."""
        group = self.group
        blocks = [g.grad for g in grads]
        with torch.no_grad():
            # the rows (a copy) or the whole parameter (updated in place)
            params = [g.param if g.rows is None else g.param.index_select(0, g.rows) for g in grads]
            if self.adagrad:
                touched = {id(g.param) for g in grads}
                sums = []
                for g in grads:
                    state_sum = self._state(g.param)["sum"]
                    sums.append(state_sum if g.rows is None else state_sum.index_select(0, g.rows))
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
                        self._state(g.param)["sum"].index_copy_(0, g.rows, state_sum)
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
                    g.param.index_copy_(0, g.rows, p_rows)
