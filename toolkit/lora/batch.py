"""The step's adapter layout, shared by every LoRA projection of the model."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LoraBatch:
    """Per-token adapter slots of the running step (set by the runner before the forward,
    cleared after); ``slots is None`` means no row of this step has an adapter."""

    slots: torch.Tensor | None = None
    """[T] int32 on the model's device: each token's adapter slot, -1 for the base model."""
    groups: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    """(slot, row indices [n] int64) per adapter of the step: the CPU route's segments."""

    def set(self, token_slots: list[int], device: torch.device | str) -> None:
        """Lay out a step from each token's slot (-1: none)."""
        if all(s < 0 for s in token_slots):
            self.clear()
            return
        slots = torch.tensor(token_slots, dtype=torch.int32)
        self.slots = slots.to(device)
        self.groups = [(slot, (slots == slot).nonzero().squeeze(1).to(device))
                       for slot in sorted(set(token_slots) - {-1})]

    def clear(self) -> None:
        self.slots = None
        self.groups = []
