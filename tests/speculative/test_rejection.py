"""Rejection sampling preserves the target distribution; greedy and typical acceptance."""

from __future__ import annotations

import torch
from spec_stats import chi2_critical, chi_square

from toolkit.runner.rejection import rejection_sample, verify_greedy
from toolkit.runner.typical import typical_accept

V = 8
NUM_TRIALS = 4_000


def _dist(*values: float) -> torch.Tensor:
    t = torch.tensor(values, dtype=torch.float32)
    return t / t.sum()


P1 = _dist(4, 3, 1, 1, 0.5, 0.25, 0.25, 0)
P2 = _dist(0.5, 1, 2, 4, 1, 0.5, 0, 1)
Q1 = _dist(1, 1, 1, 1, 1, 1, 1, 1)
Q2 = _dist(0, 0, 1, 6, 1, 1, 1, 0)


def _assert_distributed_as(samples: list[int], probs: torch.Tensor) -> None:
    expected = {i: float(p) for i, p in enumerate(probs) if p > 0}
    stat, df = chi_square(samples, expected)
    assert stat < chi2_critical(df), (stat, df)


def _run(target: torch.Tensor, draft_ids_fn, draft_probs) -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    return [rejection_sample(target, draft_ids_fn(generator), draft_probs, generator)
            for _ in range(NUM_TRIALS)]


def test_point_mass_drafts_keep_the_target_distribution():
    target = torch.stack([P1, P2])  # [k + 1, V], k = 1
    runs = _run(target, lambda g: [1], None)
    _assert_distributed_as([r[0] for r in runs], P1)
    accepted = [r for r in runs if len(r) == 2]
    assert all(r[0] == 1 for r in accepted)
    _assert_distributed_as([r[1] for r in accepted], P2)  # the bonus token
    rate = len(accepted) / NUM_TRIALS
    assert abs(rate - float(P1[1])) < 4 * (rate * (1 - rate) / NUM_TRIALS) ** 0.5


def test_a_draft_with_zero_target_probability_is_always_rejected():
    target = torch.stack([P1, P2])
    runs = _run(target, lambda g: [7], None)
    assert all(len(r) == 1 and r[0] != 7 for r in runs)
    _assert_distributed_as([r[0] for r in runs], P1)


def test_sampled_drafts_keep_the_target_distribution_over_two_positions():
    target = torch.stack([P1, P2, Q1])  # k = 2
    draft_probs = torch.stack([Q1, Q2])

    def drafts(generator):
        return [int(torch.multinomial(q, 1, generator=generator)) for q in (Q1, Q2)]

    runs = _run(target, drafts, draft_probs)
    _assert_distributed_as([r[0] for r in runs], P1)
    _assert_distributed_as([r[1] for r in runs if len(r) >= 2], P2)
    _assert_distributed_as([r[2] for r in runs if len(r) == 3], Q1)  # bonus from p_3
    rate = sum(len(r) >= 2 for r in runs) / NUM_TRIALS
    beta = float(torch.minimum(P1, Q1).sum())  # expected acceptance of the first draft
    assert abs(rate - beta) < 4 * (beta * (1 - beta) / NUM_TRIALS) ** 0.5


def test_identical_draft_and_target_accept_everything():
    target = torch.stack([P1, P2])
    runs = _run(target, lambda g: [int(torch.multinomial(P1, 1, generator=g))], P1[None])
    assert all(len(r) == 2 for r in runs)


def test_greedy_accepts_while_equal_to_argmax():
    assert verify_greedy([5, 6, 7], [5, 6]) == [5, 6, 7]
    assert verify_greedy([5, 6, 7], [5, 1]) == [5, 6]
    assert verify_greedy([5, 6, 7], [4, 6]) == [5]
    assert verify_greedy([3], []) == [3]


def test_typical_acceptance_accepts_confident_and_typical_drafts():
    peaked = _dist(97, 1, 1, 1)  # low entropy: threshold = posterior_threshold
    flat = _dist(1, 1, 1, 1)     # high entropy: threshold = alpha * exp(-H) < 1/4
    target = torch.stack([peaked, flat, peaked])
    assert typical_accept(target, [0, 2], 0.09, 0.3) == [0, 2, 0]


def test_typical_acceptance_stops_at_an_untypical_draft_and_samples_the_target():
    peaked = _dist(97, 1, 1, 1)
    sure = _dist(0, 0, 1, 0)
    target = torch.stack([peaked, sure, peaked])
    generator = torch.Generator().manual_seed(0)
    # draft 1 has p = 0.01 < min(0.09, 0.3 exp(-H)): rejected; the target's token (2) follows
    for _ in range(20):
        assert typical_accept(target, [0, 1], 0.09, 0.3, generator) == [0, 2]
    # a higher threshold rejects what a lower one accepts
    mid = _dist(6, 4)
    assert typical_accept(torch.stack([mid, mid]), [1], 0.3, 1.0)[:1] == [1]
    assert len(typical_accept(torch.stack([mid, _dist(0, 1)]), [1], 0.5, 1.0, generator)) == 1
