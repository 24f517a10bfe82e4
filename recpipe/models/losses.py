"""Loss functions of the factorization models, as pure torch functions (tested by hand).

B: batch of users or events, K: sampled negatives per positive, D: factor size,
I: items, M: observed (user, item) cells in a batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of predicted ratings (B,) against the ratings (B,)."""
    return torch.mean((pred - target) ** 2)


def sampled_bce_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with sampled negatives, averaged over all B * (1 + K) rows.

    Parameters
    ----------
    pos : torch.Tensor
        (B,) logits of the observed items (label 1).
    neg : torch.Tensor
        (B, K) logits of the sampled items (label 0).
    """
    total = F.softplus(-pos).sum() + F.softplus(neg).sum()
    return total / (pos.numel() + neg.numel())


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: mean of ``-log sigmoid(pos - neg)`` over (B, K) pairs.

    Rendle et al. 2009, "BPR: Bayesian Personalized Ranking from Implicit Feedback".
    """
    return F.softplus(-(pos[:, None] - neg)).mean()


def sampled_bce_loss_and_grad(
    pos: torch.Tensor, neg: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sampled_bce_loss` and its gradient with respect to the logits, in closed form.

    Returns
    -------
    loss : torch.Tensor
        () the loss, computed as :func:`sampled_bce_loss` does.
    grad : torch.Tensor
        (B, 1 + K) d loss / d ``[pos, neg]``: ``-sigmoid(-pos) / N`` in column 0 and
        ``sigmoid(neg) / N`` in the others, N = B * (1 + K).
    """
    n = pos.numel() + neg.numel()
    loss = (F.softplus(-pos).sum() + F.softplus(neg).sum()) / n
    grad = torch.cat([torch.sigmoid(-pos).neg_()[:, None], torch.sigmoid(neg)], dim=1).div_(n)
    return loss, grad


def bpr_loss_and_grad(pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`bpr_loss` and its gradient with respect to the scores, in closed form.

    With x = pos - neg (B, K): d/dx of ``mean(softplus(-x))`` is ``-sigmoid(-x) / (B K)``,
    so a negative gets ``sigmoid(-x) / (B K)`` and its positive minus the row's sum.

    Returns
    -------
    loss : torch.Tensor
        () the loss, computed as :func:`bpr_loss` does.
    grad : torch.Tensor
        (B, 1 + K) d loss / d ``[pos, neg]`` (column 0: the positive).
    """
    minus_x = neg - pos[:, None]  # -x, exactly
    loss = F.softplus(minus_x).mean()
    d_neg = torch.sigmoid(minus_x).div_(minus_x.numel())
    d_pos = -d_neg if d_neg.shape[1] == 1 else d_neg.sum(1, keepdim=True).neg_()
    return loss, torch.cat([d_pos, d_neg], dim=1)


def weighted_full_loss(
    users: torch.Tensor,
    items: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    confidence: torch.Tensor,
    unobserved_weight: float,
) -> torch.Tensor:
    """iALS / WALS weighted squared loss over *every* (user, item) cell, computed exactly.

    The loss of a batch of B users over all I items is

    .. math::
        \\sum_{(u,i) \\in O} c_{ui} (1 - s_{ui})^2 + w_0 \\sum_{(u,i) \\notin O} s_{ui}^2,
        \\quad s_{ui} = p_u \\cdot q_i,

    with O the observed cells. Rather than visiting all B * I cells, the unobserved
    sum is the all-cells sum minus the observed cells, and the all-cells sum is
    :math:`\\sum_u p_u^T G p_u` with the Gramian :math:`G = Q^T Q` (D x D): cost
    O(I D^2 + M D) instead of O(B I D) (Hu, Koren & Volinsky 2008; Rendle et al. 2021).

    Parameters
    ----------
    users : torch.Tensor
        (B, D) user vectors.
    items : torch.Tensor
        (I, D) every item's vector.
    rows, cols : torch.Tensor
        (M,) int64 observed cells: row in ``users``, row in ``items`` (no duplicates).
    confidence : torch.Tensor
        (M,) weight ``c_ui`` of each observed cell.
    unobserved_weight : float
        ``w_0``, the weight of every unobserved cell.

    Returns
    -------
    torch.Tensor
        The scalar sum over the batch's cells (not averaged).
    """
    # index_select, not users[rows]: the backward of advanced indexing accumulates with
    # index_put_, whose CPU kernel adds in thread order (a different sum on every
    # multi-threaded run); index_select's backward (index_add_) is deterministic
    s_obs = (users.index_select(0, rows) * items.index_select(0, cols)).sum(-1)
    observed = (confidence * (1.0 - s_obs) ** 2 - unobserved_weight * s_obs**2).sum()
    gramian = items.T @ items
    everything = ((users @ gramian) * users).sum()
    return observed + unobserved_weight * everything


def weighted_full_loss_bruteforce(
    users: torch.Tensor,
    items: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    confidence: torch.Tensor,
    unobserved_weight: float,
) -> torch.Tensor:
    """The same loss as :func:`weighted_full_loss` by visiting all B x I cells (tests)."""
    scores = users @ items.T
    weight = torch.full_like(scores, unobserved_weight)
    target = torch.zeros_like(scores)
    weight[rows, cols] = confidence.to(weight.dtype)
    target[rows, cols] = 1.0
    return (weight * (target - scores) ** 2).sum()
