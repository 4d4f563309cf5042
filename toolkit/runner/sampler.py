"""Batched sampling on tensors: temperature, top-k, top-p, min-p, greedy, per-request seeds.

Unseeded rows are drawn together with one multinomial call. A seeded request draws from its
own generator, so its tokens depend only on its own logits and seed, never on the batch.
"""

from __future__ import annotations

import torch

from toolkit.protocol import SamplingParams


def sample(logits: torch.Tensor, params: list[SamplingParams],
           generators: list[torch.Generator | None]) -> torch.Tensor:
    """logits [N, V] float32 -> token ids [N] int64; params, generators: one per row."""
    greedy_ids = logits.argmax(dim=-1)
    if all(p.greedy for p in params):
        return greedy_ids
    probs = _filtered_probs(logits, params)
    sampled_ids = torch.multinomial(probs, 1).squeeze(1)
    for i, generator in enumerate(generators):
        if generator is not None and not params[i].greedy:
            sampled_ids[i] = torch.multinomial(probs[i], 1, generator=generator)[0]
    is_greedy = torch.tensor([p.greedy for p in params], device=logits.device)
    return torch.where(is_greedy, greedy_ids, sampled_ids)


def _filtered_probs(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """[N, V] probabilities after temperature, top-k, top-p and min-p."""
    device = logits.device
    temperature = torch.tensor([p.temperature if not p.greedy else 1.0 for p in params],
                               device=device)
    logits = logits / temperature.unsqueeze(1)
    top_k = [p.top_k if p.top_k > 0 else logits.shape[1] for p in params]
    top_p = [p.top_p for p in params]
    if any(k < logits.shape[1] for k in top_k) or any(p < 1.0 for p in top_p):
        logits = _top_k_top_p(logits, torch.tensor(top_k, device=device),
                              torch.tensor(top_p, device=device))
    probs = logits.softmax(dim=-1)
    min_p = [p.min_p for p in params]
    if any(m > 0.0 for m in min_p):
        threshold = torch.tensor(min_p, device=device).unsqueeze(1) * probs.amax(-1, keepdim=True)
        probs = probs.masked_fill(probs < threshold, 0.0)
    return probs


def _top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask to -inf every token outside each row's top-k set, then outside the top-p set
    of what remains (top-k first, as vLLM does)."""
    sorted_logits, sorted_ids = logits.sort(dim=-1, descending=True)
    ranks = torch.arange(logits.shape[1], device=logits.device).unsqueeze(0)
    sorted_logits = sorted_logits.masked_fill(ranks >= top_k.unsqueeze(1), float("-inf"))
    sorted_probs = sorted_logits.softmax(dim=-1)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_logits = sorted_logits.masked_fill(mass_before >= top_p.unsqueeze(1), float("-inf"))
    return torch.empty_like(logits).scatter_(1, sorted_ids, sorted_logits)
