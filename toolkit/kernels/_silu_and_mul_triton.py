"""The Triton SiLU-and-mul kernel; imported only by toolkit.kernels.silu_and_mul."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_SIZE = 1024
"""Columns of the output per program."""


@triton.jit
def _silu_and_mul_kernel(gate_up_ptr, out_ptr, row_stride, intermediate_size,
                         BLOCK_SIZE: tl.constexpr):
    """Grid (T, cdiv(I, BLOCK_SIZE)): out = silu(gate) * up, computed in fp32."""
    row = tl.program_id(0)
    columns = tl.program_id(1) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    in_row = columns < intermediate_size
    gate_ptrs = gate_up_ptr + row * row_stride + columns
    gate = tl.load(gate_ptrs, mask=in_row, other=0.0).to(tl.float32)
    up = tl.load(gate_ptrs + intermediate_size, mask=in_row, other=0.0)
    out = gate * tl.sigmoid(gate) * up.to(tl.float32)
    tl.store(out_ptr + row * intermediate_size + columns, out.to(up.dtype), mask=in_row)


def launch(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up [T, 2 * I] (rows may be strided, columns contiguous) -> [T, I] contiguous."""
    num_rows, width = gate_up.shape
    assert width % 2 == 0, "gate_up must hold gate and up halves"
    if gate_up.stride(1) != 1:
        gate_up = gate_up.contiguous()
    intermediate_size = width // 2
    out = torch.empty((num_rows, intermediate_size), dtype=gate_up.dtype, device=gate_up.device)
    if num_rows == 0:
        return out
    block_size = min(BLOCK_SIZE, triton.next_power_of_2(intermediate_size))
    grid = (num_rows, triton.cdiv(intermediate_size, block_size))
    _silu_and_mul_kernel[grid](gate_up, out, gate_up.stride(0), intermediate_size,
                               BLOCK_SIZE=block_size)
    return out
