"""The proposer contract: draft tokens for running decodes, before the target verifies them.

Pure Python at import (no torch), so the scheduler can hold a proposer and stay torch-free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from toolkit.protocol import Request


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

    ``propose`` is called by the scheduler once per step with the running decodes that may
    speculate. A proposer may keep per-request state (a draft model's KV cache); it must
    derive it from ``request.all_token_ids`` alone (drafts rejected by the target are simply
    absent from the next call's tokens) and drop it in ``release``.
    """

    @abstractmethod
    def propose(self, requests: Sequence[Request],
                max_num_tokens: Sequence[int]) -> list[Proposal | None]:
        """One entry per request: at most ``max_num_tokens[i]`` (>= 1) drafts, or None when
        the proposer has nothing to offer for it."""

    def release(self, request_id: str) -> None:
        """Forget a finished request's state (no-op for stateless proposers)."""

    def __len__(self) -> int:
        """Requests whose state is held (0 for stateless proposers)."""
        return 0


@dataclass(frozen=True)
class ProposerContext:
    """What a proposer gets from build_runtime (which builds every object, a draft model's
    included)."""

    device: str
    num_blocks: int
    """KV pages of the target; a draft model's pool has as many."""
    block_size: int
    vocab_size: int
    """Width of the target's logits; draft distributions are laid out on it."""
    draft_model: Any = None
    """speculative=draft: the loaded draft model (a torch module)."""
    draft_attention: Any = None
    """speculative=draft: its AttentionBackend, over a KV pool of its own."""
