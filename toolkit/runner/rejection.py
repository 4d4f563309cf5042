"""Exact verification of draft tokens (Leviathan et al. 2023, arXiv 2211.17192).

Draft i is accepted with probability min(1, p_i(d_i) / q_i(d_i)); at the first rejection a
token is drawn from the residual norm(max(p_i - q_i, 0)) and the run stops; when all k are
accepted a bonus token is drawn from p_{k+1}. Every emitted token is then distributed
exactly as p, whatever q is. A point-mass q (n-gram or greedy drafts) accepts with
probability p_i(d_i) and draws from p_i with d_i removed. Greedy requests accept while the
draft equals the target's argmax and emit the argmax at the first mismatch.
"""

from __future__ import annotations

import torch

from toolkit.runner.sampler import draw


def verify_greedy(target_argmax: list[int], draft_ids: list[int]) -> list[int]:
    """target_argmax: the k + 1 argmax tokens -> the emitted tokens (1..k+1)."""
    for i, draft in enumerate(draft_ids):
        if draft != target_argmax[i]:
            return [*draft_ids[:i], target_argmax[i]]
    return [*draft_ids, target_argmax[len(draft_ids)]]


def rejection_sample(target_probs: torch.Tensor, draft_ids: list[int],
                     draft_probs: torch.Tensor | None,
                     generator: torch.Generator | None = None) -> list[int]:
    """target_probs [k+1, V], draft_probs [k, V] or None (point masses) -> the emitted
    tokens: the accepted drafts, then one recovered or bonus token."""
    k = len(draft_ids)
    device = target_probs.device
    ids = torch.tensor(draft_ids, device=device).unsqueeze(1)  # [k, 1]
    p_draft = target_probs[:k].gather(1, ids).squeeze(1)  # [k]
    q_draft = (draft_probs[:k].to(device).gather(1, ids).squeeze(1) if draft_probs is not None
               else torch.ones_like(p_draft))
    uniform = torch.rand(k, device=device, generator=generator)
    accepted = ((q_draft > 0) & (uniform * q_draft < p_draft)).tolist()
    num_accepted = accepted.index(False) if False in accepted else k
    if num_accepted == k:
        bonus = _draw(target_probs[k], generator)
        return [*draft_ids, bonus]
    residual = _residual(target_probs[num_accepted], draft_ids[num_accepted],
                         None if draft_probs is None else draft_probs[num_accepted].to(device))
    return [*draft_ids[:num_accepted], _draw(residual, generator)]


def _residual(p: torch.Tensor, draft: int, q: torch.Tensor | None) -> torch.Tensor:
    """max(p - q, 0) (unnormalized); p itself in the degenerate case where it is all zero
    (p == q up to rounding, so a rejection was a rounding accident)."""
    if q is None:
        residual = p.clone()
        residual[draft] = 0.0
    else:
        residual = (p - q).clamp_(min=0.0)
    return residual if residual.sum() > 0 else p


def _draw(weights: torch.Tensor, generator: torch.Generator | None) -> int:
    """One token from unnormalized non-negative weights [V]."""
    return int(draw(weights.unsqueeze(0), [generator]))
