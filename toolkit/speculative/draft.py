"""Draft-model proposer: a second (smaller) model with its own paged KV cache drafts k
tokens autoregressively; greedy requests get its argmax, sampled ones a draw from its
shaped distribution q, which is kept for exact verification.

The draft's KV state of a request is a token list; each call rewinds it to the longest
prefix shared with the request's current tokens (drafts the target rejected drop out, and
their slots are overwritten), feeds the tokens it lacks in one chunk, then drafts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from toolkit.attention.base import AttentionBackend
from toolkit.protocol import SamplingParams
from toolkit.runner.batch_builder import build_chunk_batch
from toolkit.runner.proposer import DraftRequest, Proposal, Proposer
from toolkit.runner.sampler import draw, shaped_probs
from toolkit.speculative.base import ProposerContext


@dataclass(eq=False)
class _DraftState:
    """One request's draft KV: ``token_ids[i]`` has its K/V at position i."""

    token_ids: list[int] = field(default_factory=list)
    page_ids: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None


class PagePool:
    """The draft cache's free page ids (no sharing: a draft state owns its pages)."""

    def __init__(self, num_pages: int, page_size: int) -> None:
        self.num_pages = num_pages
        self.page_size = page_size
        self._free: deque[int] = deque(range(num_pages))

    @property
    def num_free_pages(self) -> int:
        return len(self._free)

    def allocate(self, state: _DraftState, num_tokens: int) -> bool:
        """Grow ``state``'s pages to cover ``num_tokens`` positions; False (no change)
        when too few are free."""
        missing = -(-num_tokens // self.page_size) - len(state.page_ids)
        if missing > len(self._free):
            return False
        state.page_ids.extend(self._free.popleft() for _ in range(missing))
        return True

    def free(self, state: _DraftState) -> None:
        self._free.extend(state.page_ids)
        state.page_ids = []


@dataclass
class _Job:
    """One request's drafting in the current call."""

    state: _DraftState
    params: SamplingParams
    num_drafts: int
    draft_ids: list[int] = field(default_factory=list)
    probs: list[torch.Tensor] = field(default_factory=list)


class DraftModelProposer(Proposer):
    """Owns the draft model, its attention backend over its own KV pool, and its pages."""

    def __init__(self, model: torch.nn.Module, attention: AttentionBackend,
                 pages: PagePool, vocab_size: int,
                 device: torch.device | str) -> None:
        self.model = model
        self.attention = attention
        self.pages = pages
        self.vocab_size = vocab_size
        """The target's logits width; q is laid out on it."""
        self.device = device
        self._states: dict[str, _DraftState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def release(self, request_id: str) -> None:
        state = self._states.pop(request_id, None)
        if state is not None:
            self.pages.free(state)

    @torch.inference_mode()
    def propose(self, requests: Sequence[DraftRequest]) -> list[Proposal | None]:
        jobs: list[_Job | None] = [self._prepare(r) for r in requests]
        active = [j for j in jobs if j is not None]
        if active:
            self._draft(active, [r.token_ids for r, j in zip(requests, jobs) if j])
        return [None if j is None else
                Proposal(j.draft_ids, torch.stack(j.probs) if j.probs else None) for j in jobs]

    def _prepare(self, request: DraftRequest) -> _Job | None:
        """Rewind the request's draft state and reserve pages for the chunk and the
        drafts; None when the draft's pages run out."""
        state = self._states.get(request.request_id)
        if state is None:
            state = self._states[request.request_id] = _DraftState()
            seed = request.sampling_params.seed
            if seed is not None:
                state.generator = torch.Generator(self.device).manual_seed(seed)
        num_tokens = request.num_tokens
        keep = min(_common_prefix(state.token_ids, request.token_ids), num_tokens - 1)
        del state.token_ids[keep:]
        num_drafts = request.max_num_tokens
        # positions 0 .. num_tokens + num_drafts - 2 get K/V (the last draft is not fed)
        if not self.pages.allocate(state, num_tokens + num_drafts - 1):
            self.release(request.request_id)
            return None
        return _Job(state, request.sampling_params, num_drafts)

    def _draft(self, jobs: list[_Job], token_ids: list[list[int]]) -> None:
        """Feed each request's missing tokens, then draft one token per forward."""
        chunks = [(tokens[len(j.state.token_ids):], len(j.state.token_ids), j.state.page_ids, 1)
                  for j, tokens in zip(jobs, token_ids)]
        for job, tokens in zip(jobs, token_ids):
            job.state.token_ids = list(tokens)
        self._step(jobs, chunks)
        for _ in range(max(j.num_drafts for j in jobs) - 1):
            running = [j for j in jobs if len(j.draft_ids) < j.num_drafts]
            chunks = [([j.draft_ids[-1]], len(j.state.token_ids), j.state.page_ids, 1)
                      for j in running]
            for job in running:
                job.state.token_ids.append(job.draft_ids[-1])
            self._step(running, chunks)

    def _step(self, jobs: list[_Job], chunks: list) -> None:
        """One draft forward; each job gets its next draft token."""
        batch = build_chunk_batch(chunks, self.pages.page_size, self.device)
        self.attention.plan(batch)
        hidden = self.model(batch.input_ids, batch.positions, self.attention)  # [T, H]
        logits = self._on_target_vocab(self.model.compute_logits(hidden[batch.logits_indices]))
        greedy = [i for i, j in enumerate(jobs) if j.params.greedy]
        argmax = logits.argmax(dim=-1).tolist() if greedy else []
        sampled = [i for i, j in enumerate(jobs) if not j.params.greedy]
        probs = shaped_probs(logits[sampled], [jobs[i].params for i in sampled]) if sampled else None
        for i in greedy:
            jobs[i].draft_ids.append(argmax[i])
        for row, i in enumerate(sampled):
            q = probs[row]  # [V]
            token = int(draw(q.unsqueeze(0), [jobs[i].state.generator]))
            jobs[i].draft_ids.append(token)
            jobs[i].probs.append(q)

    def _on_target_vocab(self, logits: torch.Tensor) -> torch.Tensor:
        """[N, V_draft] -> [N, V_target] float32 (extra target ids get -inf)."""
        logits = logits.float()
        width = logits.shape[1]
        if width == self.vocab_size:
            return logits
        if width > self.vocab_size:
            return logits[:, :self.vocab_size]
        pad = logits.new_full((logits.shape[0], self.vocab_size - width), float("-inf"))
        return torch.cat([logits, pad], dim=1)


def _common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of a and b."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low], a[:high] != b[:high]
    while high - low > 1:
        mid = (low + high) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid
    return low


def draft_proposer(context: ProposerContext) -> DraftModelProposer:
    """The proposer over the draft model and attention build_runtime loaded."""
    return DraftModelProposer(context.draft_model, context.draft_attention,
                              PagePool(context.num_pages, context.page_size),
                              context.vocab_size, context.device)
