"""The Triton RMSNorm kernel; imported only by toolkit.kernels.rmsnorm on first use."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rmsnorm_kernel(x_ptr, weight_ptr, out_ptr, row_stride, hidden_size, eps,
                    BLOCK_SIZE: tl.constexpr):
    """One program per row: out = weight * (x * rsqrt(mean(x^2) + eps)).to(x.dtype)."""
    row = tl.program_id(0)
    columns = tl.arange(0, BLOCK_SIZE)
    in_row = columns < hidden_size
    x = tl.load(x_ptr + row * row_stride + columns, mask=in_row, other=0.0)
    x_fp32 = x.to(tl.float32)
    mean_square = tl.sum(x_fp32 * x_fp32, axis=0) / hidden_size
    normed = (x_fp32 * tl.rsqrt(mean_square + eps)).to(x.dtype)
    weight = tl.load(weight_ptr + columns, mask=in_row, other=0.0)
    out = (weight.to(tl.float32) * normed.to(tl.float32)).to(x.dtype)
    tl.store(out_ptr + row * hidden_size + columns, out, mask=in_row)


def rmsnorm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x: [T, H] (rows may be strided, columns contiguous), weight: [H] -> [T, H]."""
    num_rows, hidden_size = x.shape
    if x.stride(1) != 1:
        x = x.contiguous()
    out = torch.empty((num_rows, hidden_size), dtype=x.dtype, device=x.device)
    if num_rows == 0:
        return out
    block_size = triton.next_power_of_2(hidden_size)
    _rmsnorm_kernel[(num_rows,)](x, weight, out, x.stride(0), hidden_size, eps,
                                 BLOCK_SIZE=block_size)
    return out
