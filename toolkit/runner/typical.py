"""Typical acceptance (Medusa §3.3.1; Aphrodite's / vLLM V0's TypicalAcceptanceSampler).

Draft i is accepted when p_i(d_i) > min(posterior_threshold, posterior_alpha *
exp(-H(p_i))), H(p) = -sum p log(p + 1e-5); the longest accepted prefix is kept and the
token after it is drawn from the target's distribution at that position (the bonus when
all are accepted). Lossy: the outputs are not distributed as p, but confident drafts pass
without a random test. The draft's own probabilities are not used.
"""

from __future__ import annotations

import torch

from toolkit.runner.sampler import draw

ENTROPY_EPS = 1e-5
"""Added inside the log of the entropy, as Medusa and Aphrodite do."""


def typical_accept(target_probs: torch.Tensor, draft_ids: list[int],
                   posterior_threshold: float, posterior_alpha: float,
                   generator: torch.Generator | None = None) -> list[int]:
    """target_probs [k+1, V] -> the emitted tokens (1..k+1)."""
    k = len(draft_ids)
    device = target_probs.device
    probs = target_probs[:k]  # [k, V]
    ids = torch.tensor(draft_ids, device=device).unsqueeze(1)
    p_draft = probs.gather(1, ids).squeeze(1)  # [k]
    entropy = -(probs * torch.log(probs + ENTROPY_EPS)).sum(dim=-1)  # [k]
    threshold = torch.clamp(posterior_alpha * torch.exp(-entropy), max=posterior_threshold)
    accepted = (p_draft > threshold).tolist()
    num_accepted = accepted.index(False) if False in accepted else k
    token = int(draw(target_probs[num_accepted:num_accepted + 1], [generator]))
    return [*draft_ids[:num_accepted], token]
