"""Speculative drafting after sampling: the next step's drafts, proposed as soon as this
step's tokens are known (as in vLLM v1, the scheduler only sees their ids and budgets
1 + k tokens for them)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from toolkit.protocol import Request, RunnerOutput
from toolkit.protocol.outputs import ScheduledRequest
from toolkit.runner.proposer import DraftRequest, Proposer


class Drafter:
    """Runs a proposer over the requests that may speculate next step and keeps the draft
    distributions (draft-model sampling) until those drafts are verified."""

    def __init__(self, proposer: Proposer, num_speculative_tokens: int, max_model_len: int,
                 disable_by_batch_size: int | None = None) -> None:
        self.proposer = proposer
        self.num_speculative_tokens = num_speculative_tokens
        self.max_model_len = max_model_len
        self.disable_by_batch_size = disable_by_batch_size
        """No drafts while a step holds more requests than this (None: no limit)."""
        self._probs: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        """Per-request state entries held (draft KV, pending distributions); 0 when no
        request is in flight."""
        return len(self.proposer) + len(self._probs)

    def propose(self, scheduled: Sequence[ScheduledRequest], output: RunnerOutput) -> None:
        """Draft for each request that got tokens in ``output`` into
        ``output.draft_token_ids``; none above ``disable_by_batch_size`` requests, and
        never past max_model_len or beyond what max_tokens can still use. A request that
        can draft no more gives back its state first (a draft model's pages)."""
        for item in scheduled:
            self._probs.pop(item.request.request_id, None)  # drafts the scheduler dropped
        limit = self.disable_by_batch_size
        if limit is not None and len(scheduled) > limit:
            return
        candidates = []
        for item in scheduled:
            emitted = output.sampled_token_ids.get(item.request.request_id)
            if not emitted:
                continue
            candidate = self._candidate(item.request, emitted, output)
            if candidate is None:
                self.proposer.release(item.request.request_id)
            else:
                candidates.append(candidate)
        if candidates:
            self._propose(candidates, output)

    def _candidate(self, request: Request, emitted: list[int],
                   output: RunnerOutput) -> DraftRequest | None:
        """The request's tokens after this step, when it may draft at least one token
        (now and in any later step: the caps only shrink)."""
        if request.request_id in output.grammar_finished:
            return None
        num_tokens = request.num_tokens + len(emitted)
        num_output_tokens = request.num_output_tokens + len(emitted)
        cap = min(self.num_speculative_tokens, self.max_model_len - num_tokens,
                  request.sampling_params.max_tokens - num_output_tokens - 1)
        if cap <= 0:
            return None
        return DraftRequest(request.request_id, request.all_token_ids + emitted,
                            request.sampling_params, cap)

    def _propose(self, candidates: list[DraftRequest], output: RunnerOutput) -> None:
        for candidate, proposal in zip(candidates, self.proposer.propose(candidates)):
            if proposal is None:
                continue
            output.draft_token_ids[candidate.request_id] = proposal.token_ids
            if proposal.probs is not None:
                self._probs[candidate.request_id] = proposal.probs

    def take_probs(self, item: ScheduledRequest) -> torch.Tensor | None:
        """The distributions [k, V] the scheduled drafts of ``item`` were sampled from;
        None for point masses."""
        probs = self._probs.pop(item.request.request_id, None)
        return None if probs is None else probs[:item.num_draft_tokens]

    def release(self, request_id: str) -> None:
        """Forget a finished or preempted request's drafting state."""
        self._probs.pop(request_id, None)
        self.proposer.release(request_id)
