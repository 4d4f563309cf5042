"""Prompt lookup: draft what followed an earlier occurrence of the context's last n-gram."""

from __future__ import annotations

from collections.abc import Sequence

from toolkit.runner.proposer import DraftRequest, Proposal, Proposer


def lookup_ngram(token_ids: Sequence[int], max_num_tokens: int, min_n: int,
                 max_n: int) -> list[int]:
    """The tokens that followed the earliest earlier occurrence of the longest suffix
    n-gram (``max_n`` down to ``min_n``) of ``token_ids``; at most ``max_num_tokens``,
    [] when no suffix occurs earlier."""
    num_tokens = len(token_ids)
    for n in range(min(max_n, num_tokens - 1), min_n - 1, -1):
        suffix = list(token_ids[num_tokens - n:])
        first = suffix[0]
        start = 0
        while True:
            try:
                i = token_ids.index(first, start, num_tokens - n)
            except ValueError:
                break
            if token_ids[i:i + n] == suffix:
                return list(token_ids[i + n:i + n + max_num_tokens])
            start = i + 1
    return []


class NgramProposer(Proposer):
    """vLLM's NgramProposer semantics on the prompt + output of each request; no draft
    probabilities (the drafts are point masses)."""

    def __init__(self, prompt_lookup_min: int, prompt_lookup_max: int) -> None:
        self.prompt_lookup_min = prompt_lookup_min
        self.prompt_lookup_max = prompt_lookup_max

    def propose(self, requests: Sequence[DraftRequest]) -> list[Proposal | None]:
        proposals: list[Proposal | None] = []
        for request in requests:
            drafts = lookup_ngram(request.token_ids, request.max_num_tokens,
                                  self.prompt_lookup_min, self.prompt_lookup_max)
            proposals.append(Proposal(drafts) if drafts else None)
        return proposals
