"""Exact-match verification of seeded drafts (device.deterministic): the emitted tokens are
plain decoding's draws, position by position."""

from __future__ import annotations

import torch

from toolkit.runner.sampler import draw
from toolkit.runner.verify import verify_by_draws

VOCAB = 50


def _generators(seed: int, count: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed * 1000 + j) for j in range(count)]


def _plain_draws(probs: torch.Tensor, seed: int) -> list[int]:
    """The sampler's draw at each position, as plain decoding makes it."""
    return draw(probs, _generators(seed, probs.shape[0])).tolist()


def test_accepts_drafts_equal_to_the_draws_and_adds_the_bonus_draw():
    probs = torch.softmax(torch.randn(5, VOCAB, generator=torch.Generator().manual_seed(0)), -1)
    plain = _plain_draws(probs, seed=3)
    assert verify_by_draws(probs, plain[:4], _generators(3, 5)) == plain


def test_stops_at_the_first_draft_that_differs_from_its_draw():
    probs = torch.softmax(torch.randn(5, VOCAB, generator=torch.Generator().manual_seed(1)), -1)
    plain = _plain_draws(probs, seed=4)
    drafts = [plain[0], plain[1], (plain[2] + 1) % VOCAB, plain[3]]
    assert verify_by_draws(probs, drafts, _generators(4, 5)) == plain[:3]
    assert verify_by_draws(probs[:1], [], _generators(4, 1)) == plain[:1]
