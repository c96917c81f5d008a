"""Ranking losses against brute-force references (plain Python loops over the definitions) and against TRL."""

import itertools
import math
import types

import pytest
import torch

from chimed_trl.losses import bt, center_penalty, listmle, pairwise


def random_batch(seed, ks=(4, 3, 2, 4), ties=False):
    """Scores [B, K] and ranks [B, K] with -1 padding; best-first ranks, optionally with tie groups."""
    g = torch.Generator().manual_seed(seed)
    k_max = max(ks)
    scores = torch.randn(len(ks), k_max, generator=g, dtype=torch.float64) * 2
    ranks = torch.full((len(ks), k_max), -1, dtype=torch.long)
    for b, k in enumerate(ks):
        r = list(range(k))
        if ties and k >= 3:
            r = [0, 0] + list(range(1, k - 1))  # the two best are tied
        ranks[b, :k] = torch.tensor(r)
    return scores, ranks


def real(scores, ranks, b):
    return [(float(s), int(r)) for s, r in zip(scores[b], ranks[b]) if r >= 0]


def pl_nll(items):
    """-log of the Plackett-Luce probability of the order given (stage-wise softmax products)."""
    remaining, nll = list(items), 0.0
    for s, _ in items:
        nll -= s - math.log(sum(math.exp(x) for x, _ in remaining))
        remaining.remove((s, _))
    return nll


def breslow_nll(items):
    """Breslow: every member of a tie group is drawn from the whole remaining set (group included)."""
    nll = 0.0
    for s, r in items:
        risk = [x for x, q in items if q >= r]
        nll -= s - math.log(sum(math.exp(x) for x in risk))
    return nll


# Catches: a wrong denominator (softmax over all K at every stage, or excluding the item itself), padding counted.
def test_listmle_equals_plackett_luce_product_without_ties():
    scores, ranks = random_batch(0)
    expected = sum(pl_nll(real(scores, ranks, b)) for b in range(4)) / 4
    assert listmle(scores, ranks).item() == pytest.approx(expected, rel=1e-9)


# Catches: ties treated as an order (the tied pair's denominators shrink), or tie groups skipped.
def test_listmle_breslow_ties_and_bound_against_enumeration():
    scores, ranks = random_batch(1, ties=True)
    expected = sum(breslow_nll(real(scores, ranks, b)) for b in range(4)) / 4
    assert listmle(scores, ranks).item() == pytest.approx(expected, rel=1e-9)
    # Enumerate the orders consistent with the ties: Breslow's likelihood never exceeds their mean PL probability
    # (each Breslow factor has the larger denominator), and swapping tied items does not change the loss.
    items = real(scores, ranks, 0)
    tied, rest = items[:2], items[2:]
    mean_prob = sum(math.exp(-pl_nll(list(order) + rest)) for order in itertools.permutations(tied)) / 2
    assert math.exp(-breslow_nll(items)) <= mean_prob + 1e-12
    swapped = scores.clone()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]
    assert listmle(swapped, ranks).item() == pytest.approx(listmle(scores, ranks).item(), rel=1e-12)


# Catches: a mean over all pairs of the batch instead of per list, tied pairs counted, margin not scaled by the gap.
@pytest.mark.parametrize("margin", [0.0, 0.3])
def test_pairwise_matches_brute_force_pairs(margin):
    scores, ranks = random_batch(2, ties=True)
    per_list = []
    for b in range(4):
        items = real(scores, ranks, b)
        losses = [
            -math.log(1 / (1 + math.exp(-(si - sj - margin * (rj - ri)))))
            for (si, ri), (sj, rj) in itertools.permutations(items, 2)
            if ri < rj
        ]
        per_list.append(sum(losses) / len(losses))
    assert pairwise(scores, ranks, margin).item() == pytest.approx(sum(per_list) / 4, rel=1e-9)


# Catches: bt on the first two responses instead of the best vs the worst, or on a padded slot.
def test_bt_is_best_against_worst():
    scores, ranks = random_batch(3)
    expected = 0.0
    for b in range(4):
        items = real(scores, ranks, b)
        expected += -math.log(1 / (1 + math.exp(-(items[0][0] - items[-1][0]))))
    assert bt(scores, ranks).item() == pytest.approx(expected / 4, rel=1e-9)


# Catches: an all-tied (or one-response) list adding a spurious term, or a NaN from an empty mean.
def test_lists_without_ordered_pairs_add_nothing():
    scores, ranks = random_batch(4, ks=(3, 3))
    ranks[1, :3] = 0  # all tied
    for loss in (listmle, pairwise, bt):
        only_first = loss(scores[:1], ranks[:1])
        assert loss(scores, ranks).item() == pytest.approx(only_first.item(), rel=1e-12)
    scores.requires_grad_(True)
    zero = listmle(scores[1:], ranks[1:])
    zero.backward()
    assert zero.item() == 0.0 and torch.isfinite(scores.grad).all()


def trl_reward_loss(chosen, rejected, center=None, margin=None):
    """Run TRL's own RewardTrainer.compute_loss on given scores (a stand-in model returns them as logits)."""
    from accelerate import Accelerator
    from trl import RewardTrainer

    rewards = torch.cat([chosen, rejected])[:, None]

    class Scores(torch.nn.Module):
        training = True

        def forward(self, input_ids, attention_mask, use_cache, **unused):
            return types.SimpleNamespace(logits=rewards[input_ids[:, 0]])

    trainer = RewardTrainer.__new__(RewardTrainer)
    trainer.model = Scores()
    trainer.args = types.SimpleNamespace(center_rewards_coefficient=center)
    trainer.accelerator = Accelerator(cpu=True)
    trainer._metrics = {"train": __import__("collections").defaultdict(list)}
    trainer._total_train_tokens, trainer._tp_size = 0, 1
    n = len(rewards)
    inputs = {"input_ids": torch.arange(n)[:, None], "attention_mask": torch.ones(n, 1, dtype=torch.long)}
    if margin is not None:
        inputs["margin"] = margin
    return trainer.compute_loss(trainer.model, inputs)


# Catches: K=2 not reducing to TRL's loss (sign, mean vs sum, centring term over the wrong pairs, margin sign).
def test_k2_equals_trl_reward_trainer_loss():
    g = torch.Generator().manual_seed(5)
    chosen, rejected = torch.randn(6, generator=g), torch.randn(6, generator=g)
    scores, ranks = torch.stack([chosen, rejected], dim=1), torch.tensor([[0, 1]] * 6)
    expected = trl_reward_loss(chosen, rejected).item()
    for loss in (listmle, pairwise, bt):
        assert loss(scores, ranks).item() == pytest.approx(expected, rel=1e-6)
    centred = trl_reward_loss(chosen, rejected, center=0.01).item()
    assert pairwise(scores, ranks).item() + 0.01 * center_penalty(scores, ranks).item() == pytest.approx(
        centred, rel=1e-6
    )
    margin = torch.rand(6, generator=g)
    with_margin = trl_reward_loss(chosen, rejected, margin=margin).item()
    for loss in (pairwise, bt):
        assert loss(scores, ranks, margin).item() == pytest.approx(with_margin, rel=1e-6)
