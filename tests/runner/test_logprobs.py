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
