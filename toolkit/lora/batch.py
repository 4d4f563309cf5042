"""The step's adapter layout, shared by every LoRA projection of the model."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LoraBatch:
    """Per-token adapter slots of the running step (set by the runner before the forward,
    cleared after); ``slots is None`` means no row of this step has an adapter."""

    slots: torch.Tensor | None = None
    """[T] int32 on the model's device: each token's adapter slot, -1 for the base model."""
    rows: torch.Tensor | None = None
    """[n] int64: the tokens with an adapter (the CPU route's rows)."""
    row_slots: torch.Tensor | None = None
    """[n] int64: the slot of each of ``rows``."""

    def set(self, token_slots: list[int], device: torch.device | str) -> None:
        """Lay out a step from each token's slot (-1: none)."""
        if all(s < 0 for s in token_slots):
            self.clear()
            return
        slots = torch.tensor(token_slots, dtype=torch.int32)
        self.slots = slots.to(device)
        rows = (slots >= 0).nonzero().squeeze(1)
        self.rows = rows.to(device)
        self.row_slots = slots[rows].long().to(device)

    def clear(self) -> None:
        self.slots = self.rows = self.row_slots = None
