"""Verification of a step's drafts from the target's logits at every draft position.

The target distribution at each position is the request's processed distribution, built
exactly as ``toolkit.runner.sampler`` builds it (``process_logits`` then ``shaped_probs``),
with the drafts before that position counted as output (penalties, min_tokens) and the
grammar bitmask of that position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from toolkit.protocol import SamplingParams
from toolkit.runner.acceptance import AcceptanceMethod
from toolkit.runner.logits_processors import TokenHistory
from toolkit.runner.rejection import verify_greedy
from toolkit.runner.sampler import draw, process_logits, shaped_probs

if TYPE_CHECKING:
    from toolkit.guided.matchers import GrammarMask


@dataclass
class VerifyRow:
    """One sampling request of the step: its k drafts (k may be 0) own k + 1 rows."""

    params: SamplingParams
    history: TokenHistory
    draft_ids: list[int]
    draft_probs: torch.Tensor | None
    generator: torch.Generator | None
    """The acceptance method's generator (None: torch's global one)."""
    position_generators: list[torch.Generator] | None = None
    """k + 1 generators, plain decoding's draw at each position: when given, drafts are
    accepted while they equal those draws (exact-match verification: the emitted tokens
    are the ones plain decoding emits), whatever the acceptance method."""


def verify_drafts(logits: torch.Tensor, rows: Sequence[VerifyRow],
                  acceptance: AcceptanceMethod,
                  grammar: GrammarMask | None = None) -> list[list[int]]:
    """logits [sum(k_i + 1), V] float32 raw, request after request -> the emitted tokens of
    each request (1..k_i+1). ``grammar``: one bitmask row per logits row."""
    params, histories = _expand(rows)
    processed = process_logits(logits, params, histories, grammar)  # [M, V]
    argmax = processed.argmax(dim=-1).tolist()
    sampled_rows = [i for i, p in enumerate(params) if not p.greedy]
    probs = None
    if sampled_rows:
        probs = torch.zeros_like(processed)
        probs[sampled_rows] = shaped_probs(processed[sampled_rows],
                                           [params[i] for i in sampled_rows])
    emitted, offset = [], 0
    for row in rows:
        end = offset + len(row.draft_ids) + 1
        if row.params.greedy:
            emitted.append(verify_greedy(argmax[offset:end], row.draft_ids))
        elif row.position_generators is not None:
            emitted.append(verify_by_draws(probs[offset:end], row.draft_ids,
                                           row.position_generators))
        elif not row.draft_ids:
            emitted.append(draw(probs[offset:offset + 1], [row.generator]).tolist())
        else:
            emitted.append(acceptance.verify(probs[offset:end], row.draft_ids,
                                             row.draft_probs, row.generator))
        offset = end
    return emitted


def verify_by_draws(target_probs: torch.Tensor, draft_ids: list[int],
                    generators: Sequence[torch.Generator]) -> list[int]:
    """target_probs [k+1, V] -> the emitted tokens: position j draws from its own generator
    (as plain decoding would) until a draw differs from draft j, or the bonus position."""
    emitted = []
    for j, generator in enumerate(generators):
        token = int(draw(target_probs[j:j + 1], [generator]))
        emitted.append(token)
        if j == len(draft_ids) or token != draft_ids[j]:
            break
    return emitted


def _expand(rows: Sequence[VerifyRow]) -> tuple[list[SamplingParams], list[TokenHistory]]:
    """Per logits row: the request's params, and its history with the drafts before it."""
    params, histories = [], []
    for row in rows:
        prompt, output = row.history
        for j in range(len(row.draft_ids) + 1):
            params.append(row.params)
            histories.append(TokenHistory(prompt, [*output, *row.draft_ids[:j]] if j else output))
    return params, histories
