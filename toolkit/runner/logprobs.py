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
    top_values, top_ids = log_probs.topk(k, dim=-1) if k else (None, None)
    chosen_list, rank_list = chosen.squeeze(1).tolist(), ranks.tolist()
    values_list = top_values.tolist() if k else [[]] * len(num_top)
    ids_list = top_ids.tolist() if k else [[]] * len(num_top)
    ids = token_ids.tolist()
    return [
        TokenLogprobs(ids[i], chosen_list[i], rank_list[i],
                      tuple(zip(ids_list[i][: num_top[i]], values_list[i][: num_top[i]])))
        for i in range(len(ids))
    ]
