"""Batched logprobs: the chosen token's logprob, rank and top alternatives."""

from __future__ import annotations

import pytest
import torch

from toolkit.runner.logprobs import token_logprobs


def test_chosen_logprob_rank_and_top_alternatives():
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 0.0, 5.0, 1.0]])
    entries = token_logprobs(logits, torch.tensor([2, 2]), [2, 0])
    log_probs = logits.log_softmax(-1)
    first, second = entries
    assert first.token_id == 2 and first.rank == 2
    assert first.logprob == pytest.approx(float(log_probs[0, 2]))
    assert [t for t, _ in first.top] == [0, 2]
    assert first.top[0][1] == pytest.approx(float(log_probs[0, 0]))
    assert second.rank == 1 and second.top == ()


def test_tied_alternatives_come_in_token_order_like_argmax():
    """bf16 logits tie often: the greedy token (argmax: the first of the tied) leads its top."""
    logits = torch.tensor([[0.0, 2.0, 1.0, 2.0, 2.0, -1.0]] * 3)
    greedy = logits.argmax(dim=-1)
    entries = token_logprobs(logits, greedy, [1, 2, 4])
    assert [[t for t, _ in e.top] for e in entries] == [[1], [1, 3], [1, 3, 4, 2]]
    assert all(e.token_id == e.top[0][0] and e.rank == 1 for e in entries)
