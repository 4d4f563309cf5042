"""Acceptance methods by name: how a request's drafts are verified against the target."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from toolkit.registry import Registry
from toolkit.runner.rejection import rejection_sample
from toolkit.runner.typical import typical_accept


class AcceptanceMethod(ABC):
    """Verifies one sampled (non-greedy) request's k drafts; greedy requests are always
    verified by argmax match (``rejection.verify_greedy``), whatever the method."""

    @abstractmethod
    def verify(self, target_probs: torch.Tensor, draft_ids: list[int],
               draft_probs: torch.Tensor | None,
               generator: torch.Generator | None) -> list[int]:
        """target_probs [k+1, V] (the request's processed, shaped distribution at each
        draft position and after the last), draft_probs [k, V] or None for point masses
        -> the emitted tokens (1..k+1): accepted drafts, then one target-drawn token."""


class RejectionSampler(AcceptanceMethod):
    """Lossless: the emitted tokens are distributed exactly as the target's p."""

    def verify(self, target_probs, draft_ids, draft_probs, generator):
        return rejection_sample(target_probs, draft_ids, draft_probs, generator)


class TypicalAcceptanceSampler(AcceptanceMethod):
    """Lossy: accepts drafts the target finds typical enough (see ``typical.py``)."""

    def __init__(self, posterior_threshold: float, posterior_alpha: float) -> None:
        self.posterior_threshold = posterior_threshold
        self.posterior_alpha = posterior_alpha

    def verify(self, target_probs, draft_ids, draft_probs, generator):
        return typical_accept(target_probs, draft_ids, self.posterior_threshold,
                              self.posterior_alpha, generator)


ACCEPTANCE_METHODS = Registry[AcceptanceMethod]("acceptance method")
"""Factories take (posterior_threshold, posterior_alpha)."""


@ACCEPTANCE_METHODS.register("rejection_sampler")
def _rejection(posterior_threshold: float, posterior_alpha: float) -> AcceptanceMethod:
    return RejectionSampler()


@ACCEPTANCE_METHODS.register("typical_acceptance_sampler")
def _typical(posterior_threshold: float, posterior_alpha: float) -> AcceptanceMethod:
    return TypicalAcceptanceSampler(posterior_threshold, posterior_alpha)
