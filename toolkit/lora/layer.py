"""LoraProjection: the adapter slots of one QuantLinear and the per-row delta it adds.

The QuantLinear's own storage and matmul stay as the QuantMethod made them (quantized
ones included); ``QuantLinear.forward`` adds ``delta`` when the projection has a
LoraProjection. Slot layout (toolkit/kernels/lora_bgmv.py): a [S, P * R, in] holds each
fused part's A in rows p * R .. p * R + r, b [S, out, P * R] each part's scaled B in its
output rows and the same columns; everything else is zero, so parts and ranks below R
add exact zeros.

On the CPU, the native route (toolkit/kernels/cpu/ops.cpp ``lora_bgmv``) runs each row
through its own slot only, in one call per projection: a row's shrink and expand in
float32, reading its adapter's A and B (as ``bt``, B transposed, [S, P * R, out]). The
torch route runs every slot at once in two matmuls: the shrink against all slots' A side
by side ([S * P * R, in]), each row keeping only its own slot's block of the result (the
others zeroed), and the expand against all slots' B side by side ([out, S * P * R]), where
the zeroed blocks add exact zeros; it does S times the arithmetic a row needs (measured on
SmolLM2 with 16 rank-8 adapters over all seven projections at 16 streams: 1.52x the base
model's time a token, the native route 1.17x, experiments/lora_throughput.py). Per adapter
two small matmuls each (index, pad, matmul, scatter) cost more than either.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        self.wide: WideSlots | None = None
        """Every slot's A and B side by side for the torch CPU route; None until the next
        such step after a slot changed."""
        self.bt: torch.Tensor | None = None
        """b transposed, [S, P * R, out], for the native route; None until the next such
        step after a slot changed."""

    def clear_slot(self, slot: int) -> None:
        self.a[slot].zero_()
        self.b[slot].zero_()
        self._changed()

    def _changed(self) -> None:
        """A slot was written: the CPU routes lay their copies out again on their next step."""
        self.wide = self.bt = None

    def write(self, slot: int, target: LoraTarget, a: torch.Tensor, b: torch.Tensor) -> None:
        """Put one module's A [r, in] and scaled B [out_part, r] into ``slot``."""
        rank = a.shape[0]
        first = (target.part or 0) * self.max_rank
        end = target.out_start + target.out_features
        self.a[slot, first:first + rank].copy_(a)
        self.b[slot, target.out_start:end, first:first + rank].copy_(b)
        self._changed()

    def pack(self, slot: int) -> None:
        """``slot`` is fully written: the CPU routes lay out (and pack) every slot again
        on their next step."""
        self._changed()

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
        rows = self.batch.rows
        every_row = rows.shape[0] == x.shape[0]  # decode steps: no gather, no index_add
        x_rows = (x if every_row else x.index_select(0, rows)).to(self.a.dtype)  # [n, in]
        ops = self.method.kernels.native_ops(x_rows, self.a)
        delta = self._native_delta(ops, x_rows) if ops is not None else self._wide_delta(
            x_rows)  # [n, out]
        if every_row:  # the same elementwise sums as index_add_ would make
            return y.add_(delta.to(y.dtype))
        return y.index_add_(0, rows, delta.to(y.dtype))

    def _native_delta(self, ops, x_rows: torch.Tensor) -> torch.Tensor:
        """The native route: each row through its own slot, one kernel call."""
        if self.bt is None:
            self.bt = self.b.transpose(1, 2).contiguous()  # [S, P * R, out]
        return ops.lora_bgmv(x_rows, self.a, self.bt, self.batch.row_slots)

    def _wide_delta(self, x_rows: torch.Tensor) -> torch.Tensor:
        """The torch route: every slot at once, two matmuls (the method's batch-invariant
        matmul where it has one, so a row's bits do not depend on the rows it shares the
        call with)."""
        if self.wide is None:
            self.wide = WideSlots.of(self.a, self.b, self.method.batch_invariant)
        wide = self.wide
        invariant, min_rows = self.method.batch_invariant, self.method.invariant_min_rows
        block = self.a.shape[1]
        own = self.batch.row_slots.unsqueeze(1) * block + torch.arange(
            block, device=x_rows.device)  # [n, P * R]: each row's columns of the wide shrink
        every = linear(x_rows, wide.a, None, wide.packed_a, invariant,
                       min_rows)  # [n, S * P * R]
        shrunk = torch.zeros_like(every).scatter_(1, own, every.gather(1, own))
        return linear(shrunk, wide.b, None, wide.packed_b, invariant, min_rows)  # [n, out]


@dataclass(frozen=True)
class WideSlots:
    """Every slot's A and B side by side, for the CPU route's two matmuls."""

    a: torch.Tensor
    """[S * P * R, in]: slot s's A in rows s * P * R .. (s + 1) * P * R."""
    b: torch.Tensor
    """[out, S * P * R]: slot s's B in the same columns."""
    packed_a: torch.Tensor | None
    packed_b: torch.Tensor | None
    """oneDNN-packed a and b (None where packing does not apply)."""

    @classmethod
    def of(cls, a: torch.Tensor, b: torch.Tensor, batch_invariant: bool) -> WideSlots:
        """From the slot buffers a [S, P * R, in] and b [S, out, P * R]."""
        wide_a = a.reshape(-1, a.shape[2])
        wide_b = b.permute(1, 0, 2).reshape(b.shape[1], -1).contiguous()
        return cls(wide_a, wide_b, pack_weight(wide_a, batch_invariant=batch_invariant),
                   pack_weight(wide_b, batch_invariant=batch_invariant))
