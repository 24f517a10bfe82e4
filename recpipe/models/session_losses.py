"""Ranking losses of GRU4Rec over session-parallel minibatches, as pure torch functions.

Every loss here reads a (B, B + N) logits matrix ``r`` of one minibatch step
(Hidasi et al. 2016, "Session-based recommendations with recurrent neural
networks"; Hidasi & Karatzoglou 2018, "Recurrent neural networks with top-k gains
for session-based recommendations"):

- column ``j < B`` scores row ``j``'s target item, so the diagonal ``r[b, b]`` is
  row b's positive score ``r_i`` and the other first-B columns are *in-batch
  negatives* (the other rows' targets);
- columns ``B ..`` score the N *sampled negatives* shared by every row.

A boolean ``negatives`` mask of the same shape says which columns are negatives of
each row (:func:`negative_mask` builds it): never the diagonal, never a column whose
item equals the row's target, never the column of an inactive row. ``active`` (B,)
says which rows contribute a loss; the result is the mean over active rows that
have at least one negative (0, with a gradient, when there is none).

With :math:`j` running over row b's negatives, :math:`N_b` their number and
:math:`s_j = \\mathrm{softmax}_j(r_j)` the softmax over them:

==================  ==========================================================================
``top1``            :math:`\\frac{1}{N_b} \\sum_j \\sigma(r_j - r_i) + \\sigma(r_j^2)`
``bpr``             :math:`-\\frac{1}{N_b} \\sum_j \\log \\sigma(r_i - r_j)`
``top1_max``        :math:`\\sum_j s_j \\left(\\sigma(r_j - r_i) + \\sigma(r_j^2)\\right)`
``bpr_max``         :math:`-\\log \\sum_j s_j \\sigma(r_i - r_j) + \\lambda \\sum_j s_j r_j^2`
``cross_entropy``   :math:`-\\log \\frac{e^{r_i - \\log q_i}}{e^{r_i - \\log q_i} +
                    \\sum_j e^{r_j - \\log q_j}}` (sampled softmax with logQ correction)
==================  ==========================================================================

B: rows (lanes) of the minibatch, N: shared sampled negatives.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "LOSSES",
    "accidental_hits",
    "bpr",
    "bpr_max",
    "cross_entropy",
    "cross_entropy_hits",
    "negative_mask",
    "top1",
    "top1_max",
]


def negative_mask(
    targets: torch.Tensor, samples: torch.Tensor | None = None, active: torch.Tensor | None = None
) -> torch.Tensor:
    """Which columns of the (B, B + N) logits are negatives of each row.

    Parameters
    ----------
    targets : torch.Tensor
        (B,) int64 target item of each row (column ``j < B`` scores ``targets[j]``).
    samples : torch.Tensor, optional
        (N,) int64 sampled negative items (columns ``B ..``); None: N = 0.
    active : torch.Tensor, optional
        (B,) bool rows that hold a real (input, target) pair; default all.

    Returns
    -------
    torch.Tensor
        (B, B + N) bool: True where the column is a negative of the row, i.e. its item
        differs from the row's target (which also drops the diagonal) and, for an
        in-batch column, its row is active.
    """
    b = targets.shape[0]
    columns = targets if samples is None else torch.cat([targets, samples.to(targets.dtype)])
    mask = columns[None, :] != targets[:, None]
    if active is not None:
        mask[:, :b] &= active[None, :].to(torch.bool)
    mask[:, :b].fill_diagonal_(False)
    return mask


# ---------------------------------------------------------------------- helpers
def _rows(
    logits: torch.Tensor, negatives: torch.Tensor, active: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(positive scores (B,), row weights (B,) float, safe mask (B, B + N), counts (B,))."""
    b = logits.shape[0]
    if logits.ndim != 2 or logits.shape[1] < b:
        raise ValueError(f"logits must be (B, B + N) with B = {b} rows, got {tuple(logits.shape)}")
    if negatives.shape != logits.shape:
        raise ValueError(f"negatives must have shape {tuple(logits.shape)}, got {negatives.shape}")
    negatives = negatives.to(torch.bool)
    counts = negatives.sum(dim=1)
    keep = counts > 0
    if active is not None:
        keep = keep & active.to(torch.bool)
    # A row without negatives gets every column (finite values) and weight 0, so that
    # its softmax / logsumexp stays finite and passes no NaN into the backward pass.
    safe = negatives | ~(counts > 0)[:, None]
    pos = torch.diagonal(logits)
    return pos, keep.to(logits.dtype), safe, counts.clamp_min(1).to(logits.dtype)


def _mean(per_row: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of ``per_row`` over the rows of weight 1 (a graph-connected 0 when none)."""
    total = weight.sum()
    return (per_row * weight).sum() / total.clamp_min(1.0)


def _neg_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, B + N) softmax of each row over its masked columns (0 elsewhere)."""
    return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1)


# ---------------------------------------------------------------------- losses
def top1(
    logits: torch.Tensor,
    negatives: torch.Tensor,
    active: torch.Tensor | None = None,
    **_: object,
) -> torch.Tensor:
    """TOP1 (Hidasi et al. 2016): a relative-rank surrogate plus score regularisation.

    .. math::
        L_b = \\frac{1}{N_b} \\sum_{j} \\left(\\sigma(r_j - r_i) + \\sigma(r_j^2)\\right)

    Parameters
    ----------
    logits : torch.Tensor
        (B, B + N) scores; the diagonal holds each row's positive.
    negatives : torch.Tensor
        (B, B + N) bool negatives of each row (:func:`negative_mask`).
    active : torch.Tensor, optional
        (B,) bool rows that count.

    Returns
    -------
    torch.Tensor
        Scalar mean of :math:`L_b` over the counted rows.
    """
    pos, weight, mask, counts = _rows(logits, negatives, active)
    terms = torch.sigmoid(logits - pos[:, None]) + torch.sigmoid(logits**2)
    per_row = (terms * mask).sum(dim=1) / counts
    return _mean(per_row, weight)


def bpr(
    logits: torch.Tensor,
    negatives: torch.Tensor,
    active: torch.Tensor | None = None,
    **_: object,
) -> torch.Tensor:
    """BPR over the minibatch's negatives (Hidasi et al. 2016, after Rendle et al. 2009).

    .. math::
        L_b = -\\frac{1}{N_b} \\sum_{j} \\log \\sigma(r_i - r_j)

    Parameters and return value as :func:`top1`.
    """
    pos, weight, mask, counts = _rows(logits, negatives, active)
    terms = F.softplus(logits - pos[:, None])  # -log sigmoid(r_i - r_j)
    per_row = (terms * mask).sum(dim=1) / counts
    return _mean(per_row, weight)


def top1_max(
    logits: torch.Tensor,
    negatives: torch.Tensor,
    active: torch.Tensor | None = None,
    **_: object,
) -> torch.Tensor:
    """TOP1-max (Hidasi & Karatzoglou 2018): TOP1 weighted by the softmax of the negatives.

    .. math::
        L_b = \\sum_{j} s_j \\left(\\sigma(r_j - r_i) + \\sigma(r_j^2)\\right),
        \\qquad s_j = \\frac{e^{r_j}}{\\sum_k e^{r_k}}

    (:math:`j, k` over row b's negatives; the softmax weights are part of the graph,
    as in the paper.) Parameters and return value as :func:`top1`.
    """
    pos, weight, mask, _counts = _rows(logits, negatives, active)
    s = _neg_softmax(logits, mask)
    terms = torch.sigmoid(logits - pos[:, None]) + torch.sigmoid(logits**2)
    per_row = (s * terms).sum(dim=1)
    return _mean(per_row, weight)


def bpr_max(
    logits: torch.Tensor,
    negatives: torch.Tensor,
    active: torch.Tensor | None = None,
    *,
    bpreg: float = 1.0,
    **_: object,
) -> torch.Tensor:
    """BPR-max (Hidasi & Karatzoglou 2018) with softmax-weighted score regularisation.

    .. math::
        L_b = -\\log \\sum_{j} s_j \\sigma(r_i - r_j)
              + \\lambda \\sum_{j} s_j r_j^2,
        \\qquad s_j = \\frac{e^{r_j}}{\\sum_k e^{r_k}}

    The first term is computed as
    :math:`-\\mathrm{logsumexp}_j(\\log s_j + \\log\\sigma(r_i - r_j))`, which stays
    finite where :math:`\\sigma` underflows.

    Parameters
    ----------
    bpreg : float, default 1.0
        :math:`\\lambda`, weight of the score regularisation.

    Other parameters and the return value as :func:`top1`.
    """
    pos, weight, mask, _counts = _rows(logits, negatives, active)
    masked = logits.masked_fill(~mask, float("-inf"))
    log_s = torch.log_softmax(masked, dim=1)
    ranked = torch.logsumexp(log_s + F.logsigmoid(pos[:, None] - logits), dim=1)
    per_row = -ranked
    if bpreg:
        s = log_s.exp()
        per_row = per_row + bpreg * (s * logits**2).sum(dim=1)
    return _mean(per_row, weight)


def cross_entropy(
    logits: torch.Tensor,
    negatives: torch.Tensor,
    active: torch.Tensor | None = None,
    *,
    log_q: torch.Tensor | None = None,
    **_: object,
) -> torch.Tensor:
    """Sampled softmax cross-entropy over [positive, negatives] with logQ correction.

    .. math::
        L_b = -\\log \\frac{\\exp(r_i - \\log q_i)}
              {\\exp(r_i - \\log q_i) + \\sum_j \\exp(r_j - \\log q_j)}

    where :math:`q_c` is the probability that column c's item enters the candidate
    pool (Bengio & Senecal 2008; Yi et al. 2019 for in-batch negatives). The
    correction is subtracted from *every* column, the positive's included; columns
    that are not negatives of a row (its duplicates of the target, inactive rows)
    leave that row's softmax. Without ``log_q`` this is the plain softmax over the
    minibatch.

    Parameters
    ----------
    log_q : torch.Tensor, optional
        (B + N,) log sampling probability of each column's item (already multiplied
        by the correction's weight); see the model for what it subtracts.

    Other parameters and the return value as :func:`top1`.
    """
    pos_mask = torch.zeros_like(negatives, dtype=torch.bool)
    pos_mask.fill_diagonal_(True)
    _pos, weight, _mask, _counts = _rows(logits, negatives, active)
    corrected = logits if log_q is None else logits - log_q[None, :].to(logits.dtype)
    keep = negatives.to(torch.bool) | pos_mask
    log_p = torch.log_softmax(corrected.masked_fill(~keep, float("-inf")), dim=1)
    per_row = -torch.diagonal(log_p)
    return _mean(per_row, weight)


def accidental_hits(targets: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (row, column) pairs where a column other than the row's own holds its target.

    The sparse form of the duplicate part of :func:`negative_mask`: with B rows and
    M = B + N columns (``columns[:B]`` are the rows' targets), pair ``(b, j)`` is
    returned when ``columns[j] == targets[b]`` and ``j != b``. Found by sorting the
    columns and searching the targets in them, O((M + B) log M) instead of the B x M
    comparison; computed in numpy with the minibatch, before it reaches the device.

    Returns
    -------
    rows, cols : numpy.ndarray
        (H,) int64 each, H the number of hits, ordered by row.
    """
    targets = np.asarray(targets, dtype=np.int64)
    columns = np.asarray(columns, dtype=np.int64)
    perm = np.argsort(columns, kind="stable")
    ordered = columns[perm]
    lo = np.searchsorted(ordered, targets, side="left")
    counts = np.searchsorted(ordered, targets, side="right") - lo
    rows = np.repeat(np.arange(targets.shape[0], dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    cols = perm[lo[rows] + np.arange(rows.shape[0]) - starts[rows]].astype(np.int64)
    keep = cols != rows
    return rows[keep], cols[keep]


def cross_entropy_hits(
    logits: torch.Tensor,
    hit_rows: torch.Tensor,
    hit_cols: torch.Tensor,
    active: torch.Tensor,
) -> torch.Tensor:
    """:func:`cross_entropy` with the negatives given sparsely (the training fast path).

    Equal to ``cross_entropy(logits, negative_mask(targets, samples, active), active,
    log_q=...)`` when ``logits`` already holds the logQ-corrected scores with ``-inf``
    in the in-batch columns of inactive rows, and ``(hit_rows, hit_cols)`` are the
    :func:`accidental_hits`: those entries leave their row's softmax. It takes a few
    passes over the (B, B + N) matrix instead of a dozen, which is most of a CPU
    training step's time.

    Parameters
    ----------
    logits : torch.Tensor
        (B, B + N) float scores; modified in place at the hits.
    hit_rows, hit_cols : torch.Tensor
        (H,) int64 positions that are not negatives of their row.
    active : torch.Tensor
        (B,) bool rows that contribute a loss.
    """
    b = logits.shape[0]
    if hit_rows.numel():
        logits = logits.index_put((hit_rows, hit_cols), logits.new_tensor(float("-inf")))
    per_row = F.cross_entropy(logits, torch.arange(b, device=logits.device), reduction="none")
    weight = active.to(torch.bool) & torch.isfinite(per_row)
    per_row = torch.where(weight, per_row, per_row.new_zeros(()))
    return per_row.sum() / weight.sum().clamp_min(1).to(per_row.dtype)


#: Loss name -> function, as the model config names them.
LOSSES = {
    "top1": top1,
    "bpr": bpr,
    "top1_max": top1_max,
    "bpr_max": bpr_max,
    "cross_entropy": cross_entropy,
}
