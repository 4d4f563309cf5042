"""LoraProjection: the adapter slots of one QuantLinear and the per-row delta it adds.

The QuantLinear's own storage and matmul stay as the QuantMethod made them (quantized
ones included); ``QuantLinear.forward`` adds ``delta`` when the projection has a
LoraProjection. Slot layout (toolkit/kernels/lora_bgmv.py): a [S, P * R, in] holds each
fused part's A in rows p * R .. p * R + r, b [S, out, P * R] each part's scaled B in its
output rows and the same columns; everything else is zero, so parts and ranks below R
add exact zeros.
"""

from __future__ import annotations

import torch

from toolkit.kernels.dispatch import use_triton
from toolkit.kernels.lora_bgmv import lora_delta_triton
from toolkit.layers.linear import linear, pack_weight
from toolkit.lora.batch import LoraBatch
from toolkit.lora.targets import LoraTarget
from toolkit.quant.linear import QuantLinear


class LoraProjection:
    """The slots of one (possibly fused) projection."""

    def __init__(self, projection: QuantLinear, batch: LoraBatch, num_slots: int,
                 max_rank: int, dtype: torch.dtype) -> None:
        self.batch = batch
        self.method = projection.method
        self.max_rank = max_rank
        num_parts = len(projection.output_sizes)
        device = projection.device
        self.a = torch.zeros(num_slots, num_parts * max_rank, projection.in_features,
                             dtype=dtype, device=device)  # [S, P * R, in]
        self.b = torch.zeros(num_slots, projection.out_features, num_parts * max_rank,
                             dtype=dtype, device=device)  # [S, out, P * R]
        self.packed: list[tuple[torch.Tensor | None, torch.Tensor | None]] = [
            (None, None)] * num_slots
        """oneDNN-packed a[s], b[s] for the CPU route (None where packing does not apply)."""

    def clear_slot(self, slot: int) -> None:
        self.a[slot].zero_()
        self.b[slot].zero_()
        self.packed[slot] = (None, None)

    def write(self, slot: int, target: LoraTarget, a: torch.Tensor, b: torch.Tensor) -> None:
        """Put one module's A [r, in] and scaled B [out_part, r] into ``slot``."""
        rank = a.shape[0]
        first = (target.part or 0) * self.max_rank
        end = target.out_start + target.out_features
        self.a[slot, first:first + rank].copy_(a)
        self.b[slot, target.out_start:end, first:first + rank].copy_(b)

    def pack(self, slot: int) -> None:
        """Pack ``slot``'s weights for the CPU route once it is fully written."""
        invariant = self.method.batch_invariant
        self.packed[slot] = (pack_weight(self.a[slot], batch_invariant=invariant),
                             pack_weight(self.b[slot], batch_invariant=invariant))

    def add_delta(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y [T, out] += each row's adapter delta of x [T, in]; y as is without adapters."""
        if self.batch.slots is None:
            return y
        if x.shape[0] != self.batch.slots.shape[0]:
            raise RuntimeError(f"LoRA batch of {self.batch.slots.shape[0]} tokens, "
                               f"projection input of {x.shape[0]}")
        if use_triton(x):  # CUDA: one gather kernel pair for every row of the step
            return y + lora_delta_triton(x.to(self.a.dtype), self.a, self.b,
                                         self.batch.slots).to(y.dtype)
        return self._add_grouped(x, y)

    def _add_grouped(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The CPU route: per adapter of the step, two matmuls on its rows (the method's
        batch-invariant matmul where it has one, so a row's bits do not depend on the
        rows it shares the call with)."""
        invariant, min_rows = self.method.batch_invariant, self.method.invariant_min_rows
        x = x.to(self.a.dtype)
        for slot, rows in self.batch.groups:
            packed_a, packed_b = self.packed[slot]
            shrunk = linear(x.index_select(0, rows), self.a[slot], None, packed_a, invariant,
                            min_rows)  # [n, P * R]
            delta = linear(shrunk, self.b[slot], None, packed_b, invariant, min_rows)
            y.index_add_(0, rows, delta.to(y.dtype))
        return y
