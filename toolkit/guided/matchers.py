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

    def fill_with_drafts(self, request_ids: Sequence[str], draft_ids: Sequence[Sequence[int]],
                         vocab_size: int) -> GrammarMask | None:
        """The bitmask of a verification batch: request i owns 1 + len(draft_ids[i])
        consecutive rows, row j masking what may follow its first j drafts. The drafts
        are accepted tentatively to fill the rows, then rolled back (the matchers are left
        as they were). Rows after a draft the grammar rejects stay unmasked: the target
        gives that draft probability 0, so verification never reaches them."""
        num_rows = sum(len(d) + 1 for d in draft_ids)
        bitmask, masked, row = None, [], 0
        for request_id, drafts in zip(request_ids, draft_ids):
            matcher = self._matchers.get(request_id)
            if matcher is not None:
                bitmask = bitmask if bitmask is not None else self._buffer(num_rows, vocab_size)
                masked.extend(self._fill_run(matcher, drafts, bitmask, row))
            row += len(drafts) + 1
        return GrammarMask(bitmask, tuple(masked)) if masked else None

    @staticmethod
    def _fill_run(matcher: xgr.GrammarMatcher, drafts: Sequence[int], bitmask: torch.Tensor,
                  first_row: int) -> list[int]:
        """Fill rows first_row.. for a draft run; the rows that need applying."""
        masked, num_accepted = [], 0
        for j in range(len(drafts) + 1):
            if matcher.fill_next_token_bitmask(bitmask, first_row + j):
                masked.append(first_row + j)
            if j == len(drafts) or matcher.is_terminated() or not matcher.accept_token(drafts[j]):
                break
            num_accepted += 1
        if num_accepted:
            matcher.rollback(num_accepted)
        return masked

    def accept(self, sampled: dict[str, list[int]]) -> set[str]:
        """Advance each guided request by its emitted tokens (``accept_run``); the ids
        whose grammar has terminated or rejected a token."""
        return {request_id for request_id, tokens in sampled.items()
                if self.accept_run(request_id, tokens)}

    def accept_run(self, request_id: str, tokens: list[int]) -> bool:
        """Advance ``request_id``'s matcher by its emitted tokens, in order; True when its
        grammar has terminated (the stop token was accepted) or rejected a token, and the
        run is then cut (in place) after the token that ends it. False for a request that
        is not guided."""
        matcher = self._matchers.get(request_id)
        if matcher is None:
            return False
        for i, token in enumerate(tokens):
            if not matcher.accept_token(token):
                logger.warning("request %s: token %d rejected by its grammar", request_id, token)
            elif not matcher.is_terminated():
                continue
            del tokens[i + 1:]
            return True
        return False

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
