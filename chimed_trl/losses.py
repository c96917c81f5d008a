"""Ranking losses for reward models, as pure functions on a ``[B, K]`` score tensor and a ``[B, K]`` rank tensor.

Ranks: integers, lower is better, ties allowed, ``-1`` (any negative value) marks padding. Every loss is a mean over
the lists of the batch that hold at least one strictly ordered pair (a fully tied or one-response list adds nothing),
so lists of different lengths weigh the same, as in InstructGPT's K-choose-2 batches.

- :func:`listmle`: Plackett-Luce negative log-likelihood of the whole ranking (Xia et al., 2008). Ties use
  **Breslow's** treatment (deterministic, one pass): the members of a tie group are each drawn from the same
  remaining set, ``-sum_g [sum_{i in G_g} s_i - |G_g| * logsumexp_{j: rank_j >= rank_g} s_j]``. Without ties this is
  exactly the product of the stage-wise softmax probabilities of the given order.
- :func:`pairwise`: mean over every strictly ordered pair ``(i better than j)`` of
  ``-log sigmoid(s_i - s_j - margin * (rank_j - rank_i))`` (InstructGPT; the margin grows with the rank gap).
- :func:`bt`: Bradley-Terry on the best vs the worst response only (the un-augmented chosen/rejected baseline):
  the first response with the lowest rank against the last one with the highest rank.

With K=2 and no margin all three equal TRL's ``RewardTrainer`` loss, ``-logsigmoid(s_chosen - s_rejected).mean()``.
:func:`center_penalty` is TRL's ``center_rewards_coefficient`` term, ``mean((s_chosen + s_rejected)**2)``, taken over
every pair of a list (so again equal to TRL's at K=2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _ordered_pairs(ranks: torch.Tensor) -> torch.Tensor:
    """``[B, K, K]`` bool: ``i`` is strictly better than ``j`` and both are real responses."""
    valid = ranks >= 0
    both = valid[:, :, None] & valid[:, None, :]
    return both & (ranks[:, :, None] < ranks[:, None, :])


def _mean_over_lists(per_list: torch.Tensor, has_pairs: torch.Tensor) -> torch.Tensor:
    if not has_pairs.any():
        return per_list.sum() * 0.0  # keeps the graph (and DDP's gradient hooks) alive on an all-tied batch
    return per_list[has_pairs].mean()


def _margin(margin: float | torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Per-list margin as a ``[B, 1, 1]`` tensor (a float or a ``[B]`` tensor in)."""
    m = torch.as_tensor(margin, dtype=scores.dtype, device=scores.device)
    return m.reshape(-1, 1, 1) if m.ndim else m.reshape(1, 1, 1)


def pairwise(scores: torch.Tensor, ranks: torch.Tensor, margin: float | torch.Tensor = 0.0) -> torch.Tensor:
    """InstructGPT's K-choose-2 loss: per list, the mean of ``-log sigmoid(s_i - s_j - margin * gap)``."""
    pairs = _ordered_pairs(ranks)
    diff = scores[:, :, None] - scores[:, None, :]
    gap = (ranks[:, None, :] - ranks[:, :, None]).to(scores.dtype)
    nll = -F.logsigmoid(diff - _margin(margin, scores) * gap)
    n_pairs = pairs.sum(dim=(1, 2))
    per_list = torch.where(pairs, nll, torch.zeros_like(nll)).sum(dim=(1, 2)) / n_pairs.clamp(min=1)
    return _mean_over_lists(per_list, n_pairs > 0)


def best_worst_index(ranks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per list, the first response with the lowest rank and the last one with the highest rank."""
    valid = ranks >= 0
    past_worst = ranks.max() + 1  # padding sorts after every real response (no overflow once scaled by K)
    best_key = torch.where(valid, ranks, torch.full_like(ranks, 0) + past_worst)
    positions = torch.arange(ranks.shape[1], device=ranks.device)
    # the lowest rank, earliest position: argmin is not guaranteed to return the first minimum, so break ties by hand
    best = (best_key * ranks.shape[1] + positions).argmin(dim=1)
    worst_key = torch.where(valid, ranks, torch.full_like(ranks, -1))
    worst = (worst_key * ranks.shape[1] + positions).argmax(dim=1)
    return best, worst


def bt(scores: torch.Tensor, ranks: torch.Tensor, margin: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Bradley-Terry on the best vs the worst response of each list (the chosen/rejected baseline)."""
    best, worst = best_worst_index(ranks)
    rows = torch.arange(scores.shape[0], device=scores.device)
    gap = (ranks[rows, worst] - ranks[rows, best]).to(scores.dtype)
    m = _margin(margin, scores).reshape(-1)
    per_list = -F.logsigmoid(scores[rows, best] - scores[rows, worst] - m * gap)
    return _mean_over_lists(per_list, gap > 0)


def listmle(scores: torch.Tensor, ranks: torch.Tensor, margin: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Plackett-Luce negative log-likelihood of the ranking; ties by Breslow. ``margin`` must be 0."""
    if (torch.as_tensor(margin) != 0).any():
        raise ValueError("listmle has no margin: use loss_type pairwise or bt for a rank-gap margin")
    valid = ranks >= 0
    # remaining set of j when i is drawn: every real response ranked no better than i (its tie group included)
    at_risk = valid[:, None, :] & (ranks[:, None, :] >= ranks[:, :, None])
    masked = torch.where(at_risk, scores[:, None, :], torch.full_like(at_risk, float("-inf"), dtype=scores.dtype))
    log_denominator = torch.logsumexp(masked, dim=2)
    # the last group is drawn from itself only: its members add s_i - logsumexp(group), non-zero when tied, so keep
    # every stage; a single worst response adds s - s = 0 as in the untied Plackett-Luce product.
    terms = torch.where(valid, scores - log_denominator, torch.zeros_like(scores))
    per_list = -terms.sum(dim=1)
    has_pairs = _ordered_pairs(ranks).any(dim=(1, 2))
    return _mean_over_lists(per_list, has_pairs)


def center_penalty(scores: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """TRL's centring term generalised to lists: per list, the mean of ``(s_i + s_j)**2`` over its pairs ``i < j``."""
    valid = ranks >= 0
    upper = torch.triu(torch.ones(ranks.shape[1], ranks.shape[1], dtype=torch.bool, device=ranks.device), 1)
    pairs = valid[:, :, None] & valid[:, None, :] & upper
    sums = (scores[:, :, None] + scores[:, None, :]) ** 2
    n_pairs = pairs.sum(dim=(1, 2))
    per_list = torch.where(pairs, sums, torch.zeros_like(sums)).sum(dim=(1, 2)) / n_pairs.clamp(min=1)
    return _mean_over_lists(per_list, n_pairs > 0)


LOSSES = {"listmle": listmle, "pairwise": pairwise, "bt": bt}
LOSS_TYPES = tuple(LOSSES)


def ranking_loss(loss_type: str, scores: torch.Tensor, ranks: torch.Tensor, margin: float | torch.Tensor = 0.0):
    if loss_type not in LOSSES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
    return LOSSES[loss_type](scores, ranks, margin)
