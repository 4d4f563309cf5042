"""The proposer contract: draft tokens for running decodes, which the target verifies in
the next step. The runner calls it right after sampling (``toolkit.runner.drafter``);
``toolkit.speculative`` implements it (n-gram lookup, a draft model).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from toolkit.protocol import SamplingParams


@dataclass(frozen=True)
class DraftRequest:
    """One request to draft for: its tokens as of the end of the current step."""

    request_id: str
    token_ids: list[int]
    """Prompt and output tokens, this step's emitted tokens included."""
    sampling_params: SamplingParams
    max_num_tokens: int
    """At most this many drafts (>= 1)."""

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class Proposal:
    """Draft tokens for one request, to be fed after its last token."""

    token_ids: list[int]
    """The k drafts d_1..d_k, in order (k >= 1)."""
    probs: object | None = None
    """float32 tensor [k, V]: the distribution q_i each d_i was sampled from; None when the
    drafts are point masses (n-gram lookup, greedy drafting)."""


class Proposer(ABC):
    """Drafts up to k tokens per request from the tokens it has so far.

    ``propose`` is called by the runner once per step, after sampling, with the requests
    that may speculate in the next step. A proposer may keep per-request state (a draft
    model's KV cache); it must derive it from ``DraftRequest.token_ids`` alone (drafts the
    target rejected are simply absent from the next call's tokens) and drop it in
    ``release``.
    """

    @abstractmethod
    def propose(self, requests: Sequence[DraftRequest]) -> list[Proposal | None]:
        """One entry per request: at most ``max_num_tokens`` drafts, or None when the
        proposer has nothing to offer for it."""

    def release(self, request_id: str) -> None:
        """Forget a finished request's state (no-op for stateless proposers)."""

    def __len__(self) -> int:
        """Requests whose state is held (0 for stateless proposers)."""
        return 0
