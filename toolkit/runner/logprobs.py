"""Log-probabilities of chosen tokens and their top alternatives, for a whole batch at once.

They are the model's raw distribution: log_softmax of the logits before any processor,
penalty, temperature or truncation (vLLM's default ``logprobs_mode``, raw_logprobs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from toolkit.protocol import TokenLogprobs


def token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor,
                   num_top: Sequence[int]) -> list[TokenLogprobs]:
    """logits [M, V], token_ids [M] -> one ``TokenLogprobs`` per row with ``num_top[i]``
    alternatives; one log_softmax, one gather and one topk for all rows."""
    if logits.shape[0] == 0:
        return []
    log_probs = logits.float().log_softmax(dim=-1)
    chosen = log_probs.gather(1, token_ids.view(-1, 1).to(log_probs.device))
    ranks = (log_probs > chosen).sum(dim=-1) + 1
    k = max(num_top, default=0)
    tops = _top(log_probs, k) if k else [((), ())] * len(num_top)
    chosen_list, rank_list = chosen.squeeze(1).tolist(), ranks.tolist()
    ids = token_ids.tolist()
    return [
        TokenLogprobs(ids[i], chosen_list[i], rank_list[i],
                      tuple(zip(tops[i][0][: num_top[i]], tops[i][1][: num_top[i]])))
        for i in range(len(ids))
    ]


def _top(log_probs: torch.Tensor, k: int) -> list[tuple[list[int], list[float]]]:
    """log_probs [M, V] -> per row the ids and values of its k largest, equal values in token
    order (as argmax, hence greedy sampling, breaks ties; topk's order among them is
    unspecified, and bf16 logits tie often)."""
    floors = log_probs.topk(k, dim=-1).values[:, -1]  # [M]
    tops = []
    for row, floor in zip(log_probs, floors):
        candidates = (row >= floor).nonzero().squeeze(1)  # ascending ids, k or more
        values, order = row[candidates].sort(descending=True, stable=True)
        tops.append((candidates[order[:k]].tolist(), values[:k].tolist()))
    return tops
