"""The sampler against the distributions it must produce."""

from __future__ import annotations

import pytest
import torch

from toolkit.protocol import SamplingParams
from toolkit.runner.logits_processors import TokenHistory
from toolkit.runner.sampler import sample

LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])
NUM_SAMPLES = 40_000
CHI2_CRITICAL_DF7 = 24.32  # p = 0.001


def draw(params: SamplingParams, n: int = NUM_SAMPLES) -> torch.Tensor:
    torch.manual_seed(0)
    logits = LOGITS.expand(n, -1).clone()
    return sample(logits, [params] * n, [None] * n)


def chi_square(samples: torch.Tensor, expected_probs: torch.Tensor) -> float:
    counts = torch.bincount(samples, minlength=len(expected_probs)).double()
    expected = expected_probs.double() * len(samples)
    keep = expected > 0
    assert counts[~keep].sum() == 0, "sampled a token whose probability is zero"
    return float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())


def renormalized(probs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    probs = torch.where(keep, probs, torch.zeros_like(probs))
    return probs / probs.sum()


def test_greedy_is_argmax():
    logits = torch.randn(5, 100)
    tokens = sample(logits, [SamplingParams(temperature=0.0)] * 5, [None] * 5)
    assert torch.equal(tokens, logits.argmax(-1))


def test_temperature_matches_softmax():
    for temperature in (0.5, 1.0, 2.0):
        samples = draw(SamplingParams(temperature=temperature))
        assert chi_square(samples, (LOGITS / temperature).softmax(-1)) < CHI2_CRITICAL_DF7


def test_top_k_keeps_the_k_best_renormalized():
    samples = draw(SamplingParams(top_k=3))
    keep = torch.arange(8) < 3
    assert chi_square(samples, renormalized(LOGITS.softmax(-1), keep)) < CHI2_CRITICAL_DF7


def test_top_p_keeps_the_smallest_nucleus():
    probs = LOGITS.softmax(-1)
    top_p = float(probs[:3].sum()) - 1e-3  # the first three tokens are needed to reach it
    samples = draw(SamplingParams(top_p=top_p))
    keep = torch.arange(8) < 3
    assert chi_square(samples, renormalized(probs, keep)) < CHI2_CRITICAL_DF7


def test_top_k_then_top_p_on_the_renormalized_rest():
    probs = LOGITS.softmax(-1)
    top4 = renormalized(probs, torch.arange(8) < 4)
    top_p = float(top4[:2].sum()) - 1e-3
    samples = draw(SamplingParams(top_k=4, top_p=top_p))
    assert chi_square(samples, renormalized(probs, torch.arange(8) < 2)) < CHI2_CRITICAL_DF7


def test_min_p_drops_tokens_below_the_threshold():
    probs = LOGITS.softmax(-1)
    min_p = 0.2
    samples = draw(SamplingParams(min_p=min_p))
    keep = probs >= min_p * probs.max()
    assert 1 < int(keep.sum()) < 8
    assert chi_square(samples, renormalized(probs, keep)) < CHI2_CRITICAL_DF7


def test_mixed_batch_rows_follow_their_own_params():
    logits = LOGITS.expand(4, -1).clone()
    params = [SamplingParams(temperature=0.0), SamplingParams(top_k=1),
              SamplingParams(temperature=1.0), SamplingParams(temperature=0.0)]
    tokens = sample(logits, params, [None] * 4)
    assert tokens[0] == 0 and tokens[1] == 0 and tokens[3] == 0


def test_seeded_rows_do_not_depend_on_the_batch():
    params = SamplingParams(temperature=1.0, seed=1234)

    def sequence(batch_size: int, other_seed: int) -> list[int]:
        torch.manual_seed(other_seed)
        generator = torch.Generator().manual_seed(params.seed)
        tokens = []
        for _ in range(20):
            logits = torch.randn(batch_size, 8)
            logits[0] = LOGITS
            generators = [generator] + [None] * (batch_size - 1)
            tokens.append(int(sample(logits, [params] * batch_size, generators)[0]))
        return tokens

    alone = sequence(1, other_seed=0)
    assert sequence(7, other_seed=1) == alone
    assert sequence(3, other_seed=2) == alone
    assert len(set(alone)) > 1


def test_seeded_row_with_every_extra_is_the_same_alone_and_in_a_batch_of_8():
    seeded = SamplingParams(temperature=0.9, seed=99, top_k=6, top_p=0.95, min_p=0.01,
                            top_a=0.05, tfs=0.99, typical_p=0.99, eta_cutoff=1.0,
                            epsilon_cutoff=1.0, smoothing_factor=0.3, smoothing_curve=1.5,
                            presence_penalty=0.2, frequency_penalty=0.1,
                            repetition_penalty=1.1, logit_bias=((3, 0.5),))
    others = [SamplingParams(temperature=t, top_k=k) for t, k in
              [(0.0, -1), (1.0, 3), (0.7, -1), (1.3, 2), (0.5, -1), (1.0, -1), (2.0, 4)]]
    history = TokenHistory([0, 1], [2])

    def sequence(batch: list[SamplingParams], other_seed: int) -> list[int]:
        torch.manual_seed(other_seed)
        generator = torch.Generator().manual_seed(seeded.seed)
        tokens = []
        for _ in range(30):
            logits = torch.randn(len(batch), 8)
            logits[0] = LOGITS
            generators = [generator] + [None] * (len(batch) - 1)
            histories = [history] * len(batch)
            tokens.append(int(sample(logits, batch, generators, histories)[0]))
        return tokens

    alone = sequence([seeded], other_seed=0)
    assert sequence([seeded, *others], other_seed=5) == alone
    assert len(set(alone)) > 1


def test_inverse_cdf_draw_follows_unnormalized_weights_and_skips_zeros():
    from toolkit.runner.sampler import draw as draw_rows

    weights = torch.tensor([0.0, 3.0, 0.0, 1.0, 0.5, 0.0, 2.5, 0.0])  # sums to 7, not 1
    torch.manual_seed(1)
    samples = draw_rows(weights.expand(NUM_SAMPLES, -1), [None] * NUM_SAMPLES)
    assert chi_square(samples, weights / weights.sum()) < CHI2_CRITICAL_DF7


def test_inverse_cdf_draw_at_the_extremes_of_the_uniform(monkeypatch):
    from toolkit.runner import sampler

    probs = torch.tensor([[0.0, 0.25, 0.75, 0.0, 0.0]])
    for u, expected in ((0.0, 1), (0.25, 2), (1.0 - 2**-24, 2)):
        monkeypatch.setattr(sampler.torch, "rand", lambda *a, u=u, **k: torch.full(a, u))
        assert int(sampler.draw(probs, [None])) == expected, u


def test_inverse_cdf_draw_of_a_row_is_the_same_alone_and_in_a_batch():
    from toolkit.runner.sampler import draw as draw_rows

    probs = torch.randn(16, 49152).softmax(-1)
    seeds = [torch.Generator().manual_seed(s) for s in range(16)]
    batch = draw_rows(probs, seeds)
    alone = [int(draw_rows(probs[i:i + 1], [torch.Generator().manual_seed(i)])) for i in range(16)]
    assert batch.tolist() == alone


def test_inverse_cdf_draw_refuses_rows_that_are_no_distribution():
    from toolkit.runner.sampler import draw as draw_rows

    for row in ([0.5, float("nan"), 0.5], [0.0, float("inf"), 1.0], [0.0, 0.0, 0.0]):
        with pytest.raises(ValueError, match="not finite or sums to zero"):
            draw_rows(torch.tensor([[0.2, 0.3, 0.5], row]), [None, None])
