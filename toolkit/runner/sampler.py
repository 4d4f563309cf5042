"""Batched sampling on tensors. THE ORDER of every logits transform is defined here.

Stage 1, logits processors (they can change the greedy choice), in this order:
    0. grammar             guided rows: tokens the request's grammar forbids next get -inf
                           (xgrammar's token bitmask, filled for the whole batch; first, so
                           nothing after it can make a forbidden token win, and it does not
                           depend on any other processor)
    1. allowed_token_ids   only the listed tokens stay
   1b. bad_words           the last token of a bad word whose other tokens end the output
    2. min_tokens          EOS (unless ignore_eos) and stop_token_ids masked until reached
    3. logit_bias          additive bias per token id
    4. penalties           repetition (prompt + output), then frequency and presence (output)
Greedy rows (temperature 0) take the argmax here.

Stage 2, distribution shaping for sampled rows (Aphrodite's default order):
    5. temperature
    6. top_k, then top_p on what remains
    7. top_a               keep p >= top_a * p_max^2
    8. min_p               keep p >= min_p * p_max
    9. tfs                 tail-free sampling
   10. eta_cutoff
   11. epsilon_cutoff
   12. typical_p
   13. smoothing_factor / smoothing_curve (quadratic sampling)
-inf only ever grows, so a token the grammar forbids is never drawn.
Then one inverse-CDF draw per sampled row (``draw``): a uniform from the row's own
generator for seeded rows, from torch's global one otherwise, so a seeded request's tokens
depend only on its own logits and seed, never on the batch. Logprobs are computed elsewhere
(``logprobs.py``) from the raw logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from toolkit.kernels.argmax import argmax_rows
from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.protocol import SamplingParams
from toolkit.runner import truncation
from toolkit.runner.logits_processors import (
    TokenHistory,
    apply_allowed_token_ids,
    apply_bad_words,
    apply_grammar,
    apply_logit_bias,
    apply_min_tokens,
    apply_penalties,
)

if TYPE_CHECKING:
    from toolkit.guided.matchers import GrammarMask

RowTransform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_SHAPING: tuple[tuple[str, float, RowTransform], ...] = (
    ("top_a", 0.0, truncation.apply_top_a),
    ("min_p", 0.0, truncation.apply_min_p),
    ("tfs", 1.0, truncation.apply_tfs),
    ("eta_cutoff", 0.0, truncation.apply_eta_cutoff),
    ("epsilon_cutoff", 0.0, truncation.apply_epsilon_cutoff),
    ("typical_p", 1.0, truncation.apply_typical_p),
)
"""Steps 7-12: (SamplingParams field, neutral value, transform), in order."""


def sample(logits: torch.Tensor, params: Sequence[SamplingParams],
           generators: Sequence[torch.Generator | None],
           histories: Sequence[TokenHistory] | None = None,
           grammar: GrammarMask | None = None, *,
           kernels: KernelRoute = TORCH) -> torch.Tensor:
    """logits [N, V] float32 -> token ids [N] int64; params, generators, histories: one
    per row (no histories: every row starts from empty prompt and output); ``grammar``:
    the step's bitmask of the guided rows; ``kernels``: the CPU kernel route of the greedy
    argmax (toolkit/kernels/argmax.py). ``logits`` itself is not changed."""
    if histories is None:
        histories = [TokenHistory((), ())] * len(params)
    logits = process_logits(logits, params, histories, grammar)
    greedy_ids = argmax_rows(logits, kernels=kernels)
    if all(p.greedy for p in params):
        return greedy_ids
    sampled_ids = draw(shaped_probs(logits, params), generators)
    is_greedy = torch.tensor([p.greedy for p in params], device=logits.device)
    return torch.where(is_greedy, greedy_ids, sampled_ids)


def draw(probs: torch.Tensor, generators: Sequence[torch.Generator | None]) -> torch.Tensor:
    """probs [N, V] (rows need not sum to exactly 1) -> one token id per row [N] int64, by
    inverse-CDF sampling: a uniform u per row (from the row's generator, or torch's global
    one where it is None) picks the first token whose cumulative probability exceeds
    u * total. Exact for the distribution up to float32 rounding of the running sum; one
    random number per row where a multinomial draws one per vocabulary entry (its exponential
    race costs ~1 ms a row at V=49k on a CPU). A zero-probability token is never drawn. Each
    row's result depends on that row alone. A row with NaN or infinite weights, or none
    above zero, is a ValueError (as torch.multinomial), never an out-of-vocabulary id."""
    uniforms = torch.rand(len(generators), 1, device=probs.device)
    for i, generator in enumerate(generators):
        if generator is not None:
            uniforms[i] = torch.rand(1, generator=generator, device=probs.device)
    cdf = probs.cumsum(dim=-1)  # [N, V]
    total = cdf[:, -1:]
    if not bool(torch.isfinite(total).all() and (total > 0).all()):
        raise ValueError("a probability row is not finite or sums to zero")
    # u < 1, but u * total can round up to total: stay strictly below it
    targets = torch.minimum(uniforms * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, targets, right=True).squeeze(1)


def process_logits(logits: torch.Tensor, params: Sequence[SamplingParams],
                   histories: Sequence[TokenHistory],
                   grammar: GrammarMask | None = None) -> torch.Tensor:
    """Steps 0-4 (new tensor; ``logits`` is left as it was)."""
    logits = apply_grammar(logits, grammar)
    logits = apply_allowed_token_ids(logits, params)
    logits = apply_bad_words(logits, params, histories)
    logits = apply_min_tokens(logits, params, histories)
    logits = apply_logit_bias(logits, params)
    return apply_penalties(logits, params, histories)


def shaped_probs(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """Steps 5-13: [N, V] probabilities to draw from."""
    vocab = logits.shape[1]
    logits = truncation.apply_temperature(
        logits, _values(logits, [1.0 if p.greedy else p.temperature for p in params]))
    top_k = [p.top_k if p.top_k > 0 else vocab for p in params]
    top_p = [p.top_p for p in params]
    if any(k < vocab for k in top_k) or any(p < 1.0 for p in top_p):
        logits = truncation.apply_top_k_top_p(logits, _values(logits, top_k, torch.int64),
                                              _values(logits, top_p))
    for name, neutral, transform in _SHAPING:
        values = [getattr(p, name) for p in params]
        if any(v != neutral for v in values):
            logits = transform(logits, _values(logits, values))
    factors = [p.smoothing_factor for p in params]
    if any(f > 0.0 for f in factors):
        logits = truncation.apply_quadratic(
            logits, _values(logits, factors), _values(logits, [p.smoothing_curve for p in params]))
    return logits.softmax(dim=-1)


def _values(logits: torch.Tensor, values: list, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=logits.device)
