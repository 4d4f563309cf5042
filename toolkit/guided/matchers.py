"""Per-request grammar matchers and the batch's token bitmask, filled once per step."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import xgrammar as xgr

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GrammarMask:
    """One step's bitmask for the rows of a sampling batch that are guided."""

    bitmask: torch.Tensor
    """int32 [N, ceil(V / 32)] on CPU; only the rows in ``rows`` are meaningful."""
    rows: tuple[int, ...]
    """Batch rows to mask (guided requests whose grammar restricts the next token)."""


class GrammarMatchers:
    """The matchers of running guided requests, by request id."""

    def __init__(self) -> None:
        self._matchers: dict[str, xgr.GrammarMatcher] = {}
        self._bitmask: torch.Tensor | None = None

    def add(self, request_id: str, grammar: xgr.CompiledGrammar,
            stop_token_ids: Sequence[int] = ()) -> None:
        """Start matching ``request_id``'s output against ``grammar``; ``stop_token_ids``
        (when given) replace the tokenizer's EOS as the tokens that end the grammar."""
        self._matchers[request_id] = xgr.GrammarMatcher(
            grammar, override_stop_tokens=list(stop_token_ids) or None)

    def release(self, request_id: str) -> None:
        self._matchers.pop(request_id, None)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._matchers

    def __len__(self) -> int:
        return len(self._matchers)

    def fill(self, request_ids: Sequence[str], vocab_size: int) -> GrammarMask | None:
        """The bitmask of a sampling batch (row i = ``request_ids[i]``), or None when no
        row is guided. Filling reads the matchers without changing them."""
        rows = [i for i, rid in enumerate(request_ids) if rid in self._matchers]
        if not rows:
            return None
        bitmask = self._buffer(len(request_ids), vocab_size)
        masked = tuple(i for i in rows
                       if self._matchers[request_ids[i]].fill_next_token_bitmask(bitmask, i))
        return GrammarMask(bitmask, masked) if masked else None

    def accept(self, sampled: dict[str, int]) -> set[str]:
        """Advance each guided request by its sampled token; the ids whose grammar has
        terminated (the stop token was accepted)."""
        terminated = set()
        for request_id, token in sampled.items():
            matcher = self._matchers.get(request_id)
            if matcher is None:
                continue
            if not matcher.accept_token(token):
                logger.warning("request %s: token %d rejected by its grammar", request_id,
                               token)
                terminated.add(request_id)
            elif matcher.is_terminated():
                terminated.add(request_id)
        return terminated

    def _buffer(self, rows: int, vocab_size: int) -> torch.Tensor:
        """A bitmask with at least ``rows`` rows for ``vocab_size`` logits, reused."""
        shape = xgr.get_bitmask_shape(rows, vocab_size)
        if (self._bitmask is None or self._bitmask.shape[0] < rows
                or self._bitmask.shape[1] != shape[1]):
            self._bitmask = xgr.allocate_token_bitmask(max(rows, 8), vocab_size)
        return self._bitmask[:rows]


def apply_grammar_mask(logits: torch.Tensor, mask: GrammarMask) -> None:
    """Set the logits of tokens each masked row's grammar forbids to -inf, in place."""
    bitmask = mask.bitmask.to(logits.device, non_blocking=True)
    xgr.apply_token_bitmask_inplace(logits, bitmask, indices=list(mask.rows))
