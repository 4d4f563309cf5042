"""Distribution-shaping transforms: each takes logits [N, V] and one parameter per row [N].

Every function returns new logits where the tokens it drops are -inf; a row whose parameter
has its neutral value (top_a=0, tfs=1, typical_p=1, cutoffs=0, smoothing_factor=0) comes
back unchanged, so one call serves a mixed batch. All work is on tensors: no Python loop
over rows or over the vocabulary. The order they run in lives in ``sampler.py``.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")
CUTOFF_UNIT = 1e-4
"""eta_cutoff and epsilon_cutoff are given in units of 1e-4 (as Aphrodite and the
text-generation-webui take them)."""


def _column(values: torch.Tensor) -> torch.Tensor:
    return values.to(torch.float32).unsqueeze(1)


def _keep_top(mask: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Never drop a row's most likely token."""
    return mask.scatter(1, probs.argmax(dim=-1, keepdim=True), False)


def _keep_first(sorted_mask: torch.Tensor) -> torch.Tensor:
    """Never drop a row's first token in sorted order (a mass threshold that underflows
    to 0 in float32, e.g. top_p=5e-324, would otherwise drop them all)."""
    return torch.cat([torch.zeros_like(sorted_mask[:, :1]), sorted_mask[:, 1:]], dim=-1)


def apply_temperature(logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Divide each row by its temperature (greedy rows pass 1)."""
    return logits / _column(temperature)


def apply_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor,
                      top_p: torch.Tensor) -> torch.Tensor:
    """Keep each row's top_k tokens, then the smallest nucleus of what remains whose
    probability reaches top_p (top-k first, as vLLM does)."""
    sorted_logits, sorted_ids = logits.sort(dim=-1, descending=True)
    ranks = torch.arange(logits.shape[1], device=logits.device).unsqueeze(0)
    sorted_logits = sorted_logits.masked_fill(ranks >= top_k.unsqueeze(1), NEG_INF)
    sorted_probs = sorted_logits.softmax(dim=-1)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    drop = _keep_first(mass_before >= _column(top_p))
    sorted_logits = sorted_logits.masked_fill(drop, NEG_INF)
    return torch.empty_like(logits).scatter_(1, sorted_ids, sorted_logits)


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Drop tokens with p < min_p * p_max."""
    probs = logits.softmax(dim=-1)
    threshold = _column(min_p) * probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(probs < threshold, NEG_INF)


def apply_top_a(logits: torch.Tensor, top_a: torch.Tensor) -> torch.Tensor:
    """Drop tokens with p < top_a * p_max^2."""
    probs = logits.softmax(dim=-1)
    threshold = _column(top_a) * probs.amax(dim=-1, keepdim=True).square()
    return logits.masked_fill(probs < threshold, NEG_INF)


def apply_tfs(logits: torch.Tensor, tfs: torch.Tensor) -> torch.Tensor:
    """Tail-free sampling.

    Sort probabilities descending; take the absolute second differences
    |p[i] - 2 p[i+1] + p[i+2]| (i = 0 .. V-3), normalize them to sum to 1 and accumulate.
    The most likely token is always kept; sorted token j (1 .. V-2) is dropped once the
    accumulated curvature before it, cdf[j-1], exceeds tfs; the last token is dropped (its
    curvature is undefined). Rows with tfs = 1 are untouched.
    """
    sorted_logits, sorted_ids = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    curvature = probs.diff(n=2, dim=-1).abs()
    cdf = (curvature / curvature.sum(dim=-1, keepdim=True).clamp_min(1e-30)).cumsum(dim=-1)
    rows = logits.shape[0]
    drop = torch.cat([torch.zeros(rows, 1, dtype=torch.bool, device=logits.device),
                      cdf > _column(tfs),
                      torch.ones(rows, 1, dtype=torch.bool, device=logits.device)], dim=-1)
    drop &= _column(tfs) < 1.0
    sorted_logits = sorted_logits.masked_fill(drop, NEG_INF)
    return torch.empty_like(logits).scatter_(1, sorted_ids, sorted_logits)


def apply_eta_cutoff(logits: torch.Tensor, eta_cutoff: torch.Tensor) -> torch.Tensor:
    """Eta sampling: drop tokens with p < min(eta, sqrt(eta) * exp(-H)), H the entropy
    (eta = eta_cutoff * 1e-4); the top token always stays."""
    log_probs = logits.log_softmax(dim=-1)
    probs = log_probs.exp()
    entropy = -(probs * log_probs).nan_to_num(0.0).sum(dim=-1, keepdim=True)
    eta = _column(eta_cutoff) * CUTOFF_UNIT
    threshold = torch.minimum(eta, eta.sqrt() * torch.exp(-entropy))
    return logits.masked_fill(_keep_top(probs < threshold, probs), NEG_INF)


def apply_epsilon_cutoff(logits: torch.Tensor, epsilon_cutoff: torch.Tensor) -> torch.Tensor:
    """Drop tokens with p < epsilon_cutoff * 1e-4; the top token always stays."""
    probs = logits.softmax(dim=-1)
    threshold = _column(epsilon_cutoff) * CUTOFF_UNIT
    return logits.masked_fill(_keep_top(probs < threshold, probs), NEG_INF)


def apply_typical_p(logits: torch.Tensor, typical_p: torch.Tensor) -> torch.Tensor:
    """Locally typical sampling: order tokens by |H + log p| (closest to the expected
    surprisal first) and keep the shortest prefix whose probability reaches typical_p."""
    log_probs = logits.log_softmax(dim=-1)
    probs = log_probs.exp()
    entropy = -(probs * log_probs).nan_to_num(0.0).sum(dim=-1, keepdim=True)
    deviation = (entropy + log_probs).abs()
    order = deviation.argsort(dim=-1)
    sorted_probs = probs.gather(1, order)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    drop_sorted = _keep_first((mass_before >= _column(typical_p)) & (_column(typical_p) < 1.0))
    drop = torch.empty_like(drop_sorted).scatter_(1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def apply_quadratic(logits: torch.Tensor, factor: torch.Tensor,
                    curve: torch.Tensor) -> torch.Tensor:
    """Quadratic ("smoothing") sampling around the top logit m, with d = logit - m <= 0:
    logit' = m - factor * k * d^2 + factor * s * d^3, k = (3 - curve) / 2,
    s = (curve - 1) / 2. Dropped (-inf) tokens stay dropped; factor 0 leaves a row as is."""
    top = logits.amax(dim=-1, keepdim=True)
    d = logits - top
    f, c = _column(factor), _column(curve)
    shaped = top - f * (3.0 - c) / 2.0 * d.square() + f * (c - 1.0) / 2.0 * d.pow(3)
    active = torch.isfinite(logits) & (f > 0.0)
    return torch.where(active, shaped, logits)
