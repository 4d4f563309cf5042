"""Each distribution-shaping transform against a distribution computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from toolkit.runner import truncation

PROBS = [0.5, 0.3, 0.15, 0.05]
LOGITS = torch.tensor([PROBS]).log()
NEG_INF = float("-inf")


def kept(logits: torch.Tensor) -> list[bool]:
    return torch.isfinite(logits[0]).tolist()


def one(value: float) -> torch.Tensor:
    return torch.tensor([value])


def entropy(probs: list[float]) -> float:
    return -sum(p * math.log(p) for p in probs)


def test_top_a_keeps_p_at_least_top_a_times_p_max_squared():
    # threshold = 0.5 * 0.5^2 = 0.125: 0.05 goes, 0.15 stays
    assert kept(truncation.apply_top_a(LOGITS, one(0.5))) == [True, True, True, False]
    # threshold = 1.0 * 0.25 = 0.25: only 0.5 and 0.3 stay
    assert kept(truncation.apply_top_a(LOGITS, one(1.0))) == [True, True, False, False]


def test_min_p_keeps_p_at_least_min_p_times_p_max():
    assert kept(truncation.apply_min_p(LOGITS, one(0.5))) == [True, True, False, False]


def test_tfs_cuts_where_the_curvature_mass_passes_z():
    # sorted p: .5 .3 .15 .05; first differences -.2 -.15 -.1; |second| .05 .05 -> cdf .5 1.
    assert kept(truncation.apply_tfs(LOGITS, one(0.6))) == [True, True, False, False]
    assert kept(truncation.apply_tfs(LOGITS, one(0.4))) == [True, False, False, False]
    assert kept(truncation.apply_tfs(LOGITS, one(1.0))) == [True] * 4


def test_epsilon_cutoff_is_in_units_of_1e_4_and_keeps_the_top_token():
    assert kept(truncation.apply_epsilon_cutoff(LOGITS, one(1000.0))) == [True, True, True, False]
    assert kept(truncation.apply_epsilon_cutoff(LOGITS, one(9000.0))) == [True, False, False, False]


def test_eta_cutoff_uses_the_entropy_bound():
    eta = 0.16  # eta_cutoff 1600: min(0.16, 0.4 * exp(-H)) with H ~ 1.14 -> ~0.128
    threshold = min(eta, math.sqrt(eta) * math.exp(-entropy(PROBS)))
    expected = [p >= threshold for p in PROBS]
    assert expected == [True, True, True, False]
    assert kept(truncation.apply_eta_cutoff(LOGITS, one(eta * 1e4))) == expected


def test_typical_p_keeps_the_tokens_nearest_the_expected_surprisal():
    h = entropy(PROBS)
    order = sorted(range(4), key=lambda i: abs(h + math.log(PROBS[i])))
    mass, expected = 0.0, [False] * 4
    for i in order:
        expected[i] = True
        mass += PROBS[i]
        if mass >= 0.5:
            break
    assert sum(expected) < 4
    assert kept(truncation.apply_typical_p(LOGITS, one(0.5))) == expected
    assert kept(truncation.apply_typical_p(LOGITS, one(1.0))) == [True] * 4


@pytest.mark.parametrize("curve, expected", [(1.0, [2.0, 1.0, -2.0]), (3.0, [2.0, 1.0, -6.0]),
                                             (2.0, [2.0, 1.0, -4.0])])
def test_quadratic_smoothing_around_the_top_logit(curve, expected):
    # d = [0, -1, -2]; logit' = 2 - k d^2 + s d^3 with k = (3 - c)/2, s = (c - 1)/2
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    out = truncation.apply_quadratic(logits, one(1.0), one(curve))
    assert out[0].tolist() == pytest.approx(expected)


def test_quadratic_leaves_dropped_tokens_and_factor_zero_rows_alone():
    logits = torch.tensor([[2.0, NEG_INF, 0.0], [2.0, 1.0, 0.0]])
    out = truncation.apply_quadratic(logits, torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert out[0, 1] == NEG_INF
    assert torch.equal(out[1], logits[1])


def test_neutral_values_leave_a_mixed_batch_row_untouched():
    logits = LOGITS.expand(2, -1).clone()
    for transform, active, neutral in [(truncation.apply_top_a, 1.0, 0.0),
                                       (truncation.apply_tfs, 0.4, 1.0),
                                       (truncation.apply_typical_p, 0.5, 1.0),
                                       (truncation.apply_eta_cutoff, 1600.0, 0.0),
                                       (truncation.apply_epsilon_cutoff, 9000.0, 0.0)]:
        out = transform(logits, torch.tensor([active, neutral]))
        assert not torch.isfinite(out[0]).all(), transform.__name__
        assert torch.equal(out[1], logits[1]), transform.__name__


@pytest.mark.parametrize("transform", [
    lambda logits, p: truncation.apply_top_k_top_p(logits, torch.tensor([4] * 2), p),
    truncation.apply_typical_p,
])
def test_a_mass_that_underflows_in_float32_still_keeps_one_token(transform):
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0], [0.0, 0.0, 0.0, 0.0]])
    kept = torch.isfinite(transform(logits, torch.tensor([5e-324, 5e-324], dtype=torch.float64)))
    assert kept.sum(dim=-1).tolist() == [1, 1]
