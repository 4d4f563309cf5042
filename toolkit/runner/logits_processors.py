"""Logits processors that change which token is most likely: masks, biases, penalties.

Each takes logits [N, V] and the batch's rows, and returns new logits. Per-row values are
gathered into a few tensors once per step; the work on the vocabulary is done with
scatter/index operations on the whole batch, never with a Python loop over tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch

from toolkit.protocol import SamplingParams

if TYPE_CHECKING:
    from toolkit.guided.matchers import GrammarMask

NEG_INF = float("-inf")


class TokenHistory(NamedTuple):
    """The tokens a row has seen so far (penalties and min_tokens need them)."""

    prompt: Sequence[int]
    output: Sequence[int]


def apply_grammar(logits: torch.Tensor, mask: GrammarMask | None) -> torch.Tensor:
    """Guided rows keep only the tokens their grammar allows next (xgrammar's bitmask)."""
    if mask is None:
        return logits
    from toolkit.guided.matchers import apply_grammar_mask

    logits = logits.clone()
    apply_grammar_mask(logits, mask)
    return logits


def apply_allowed_token_ids(logits: torch.Tensor,
                            params: Sequence[SamplingParams]) -> torch.Tensor:
    """Rows with ``allowed_token_ids`` keep only those tokens."""
    rows = [i for i, p in enumerate(params) if p.allowed_token_ids is not None]
    if not rows:
        return logits
    banned = torch.zeros_like(logits, dtype=torch.bool)
    banned[rows] = True
    row_ids, token_ids = _pairs({i: params[i].allowed_token_ids for i in rows}, logits)
    banned[row_ids, token_ids] = False
    return logits.masked_fill(banned, NEG_INF)


def apply_bad_words(logits: torch.Tensor, params: Sequence[SamplingParams],
                    histories: Sequence[TokenHistory]) -> torch.Tensor:
    """Ban the last token of every bad-word sequence whose other tokens end the row's
    output (vLLM's bad_words; a one-token sequence is always banned).

    NOTE: a row this would leave without any finite logit keeps its logits, so a request
    whose allowed tokens are all bad words still gets a token instead of failing the step.
    """
    banned = {i: _completing_tokens(p.bad_words_token_ids, h.output)
              for i, (p, h) in enumerate(zip(params, histories)) if p.bad_words_token_ids}
    banned = {i: tokens for i, tokens in banned.items() if tokens}
    if not banned:
        return logits
    row_ids, token_ids = _pairs(banned, logits)
    masked = logits.clone()
    masked[row_ids, token_ids] = NEG_INF
    rows = torch.tensor(list(banned), dtype=torch.int64, device=logits.device)
    dead = rows[~torch.isfinite(masked[rows]).any(dim=1)]
    masked[dead] = logits[dead]
    return masked


def _completing_tokens(sequences: Sequence[Sequence[int]], output: Sequence[int]) -> list[int]:
    """The last token of each sequence whose prefix is the tail of ``output``."""
    tokens = []
    for seq in sequences:
        prefix_len = len(seq) - 1
        if prefix_len > len(output):
            continue
        if prefix_len == 0 or list(output[len(output) - prefix_len:]) == list(seq[:-1]):
            tokens.append(seq[-1])
    return tokens


def apply_min_tokens(logits: torch.Tensor, params: Sequence[SamplingParams],
                     histories: Sequence[TokenHistory]) -> torch.Tensor:
    """Mask EOS (unless ignored) and stop_token_ids of rows below their min_tokens."""
    banned = {i: p.stop_ids for i, (p, h) in enumerate(zip(params, histories))
              if len(h.output) < p.min_tokens and p.stop_ids}
    if not banned:
        return logits
    row_ids, token_ids = _pairs(banned, logits)
    logits = logits.clone()
    logits[row_ids, token_ids] = NEG_INF
    return logits


def apply_logit_bias(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """Add each row's (token id, bias) pairs."""
    biased = {i: p.logit_bias for i, p in enumerate(params) if p.logit_bias}
    if not biased:
        return logits
    row_ids, token_ids = _pairs({i: [t for t, _ in b] for i, b in biased.items()}, logits)
    values = torch.tensor([v for b in biased.values() for _, v in b], dtype=logits.dtype,
                          device=logits.device)
    return logits.index_put((row_ids, token_ids), values, accumulate=True)


def apply_penalties(logits: torch.Tensor, params: Sequence[SamplingParams],
                    histories: Sequence[TokenHistory]) -> torch.Tensor:
    """Repetition (prompt + output tokens), then frequency and presence (output tokens),
    with vLLM's semantics."""
    if not any(p.has_penalties for p in params):
        return logits
    vocab = logits.shape[1]
    output_counts = token_counts([h.output for h in histories], vocab, logits.device)
    prompt_seen = token_counts([h.prompt for h in histories], vocab, logits.device) > 0
    seen = prompt_seen | (output_counts > 0)
    repetition = _row_values([p.repetition_penalty for p in params], logits)
    scaled = torch.where(logits > 0, logits / repetition, logits * repetition)
    logits = torch.where(seen, scaled, logits)
    frequency = _row_values([p.frequency_penalty for p in params], logits)
    presence = _row_values([p.presence_penalty for p in params], logits)
    return logits - frequency * output_counts - presence * (output_counts > 0).to(logits.dtype)


def token_counts(sequences: Sequence[Sequence[int]], vocab: int,
                 device: torch.device | str) -> torch.Tensor:
    """[N, V] float32: how often each token occurs in each row's sequence."""
    width = max((len(s) for s in sequences), default=0)
    padded = torch.full((len(sequences), width), vocab, dtype=torch.int64)
    for i, seq in enumerate(sequences):
        padded[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.int64)
    counts = torch.zeros(len(sequences), vocab + 1, dtype=torch.float32)
    counts.scatter_add_(1, padded, torch.ones_like(padded, dtype=torch.float32))
    return counts[:, :vocab].to(device)


def _pairs(tokens_by_row: dict[int, Sequence[int]],
           logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat (row ids, token ids) index tensors; token ids beyond the vocabulary are an
    error the API rules out."""
    row_ids = [i for i, tokens in tokens_by_row.items() for _ in tokens]
    token_ids = [t for tokens in tokens_by_row.values() for t in tokens]
    return (torch.tensor(row_ids, dtype=torch.int64, device=logits.device),
            torch.tensor(token_ids, dtype=torch.int64, device=logits.device))


def _row_values(values: list[float], logits: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=logits.dtype, device=logits.device).unsqueeze(1)
