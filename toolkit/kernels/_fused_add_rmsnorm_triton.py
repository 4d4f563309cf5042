"""The Triton residual-add + RMSNorm kernel; imported only by
toolkit.kernels.fused_add_rmsnorm on first use."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _fused_add_rmsnorm_kernel(x_ptr, residual_ptr, weight_ptr, normed_ptr, new_residual_ptr,
                              x_row_stride, residual_row_stride, hidden_size, eps,
                              BLOCK_SIZE: tl.constexpr):
    """One program per row: r = (x + residual).to(dtype); normed = w * (r * rsqrt(ms + eps))."""
    row = tl.program_id(0)
    columns = tl.arange(0, BLOCK_SIZE)
    in_row = columns < hidden_size
    x = tl.load(x_ptr + row * x_row_stride + columns, mask=in_row, other=0.0)
    residual = tl.load(residual_ptr + row * residual_row_stride + columns, mask=in_row,
                       other=0.0)
    summed = (x.to(tl.float32) + residual.to(tl.float32)).to(x.dtype)
    tl.store(new_residual_ptr + row * hidden_size + columns, summed, mask=in_row)
    summed_fp32 = summed.to(tl.float32)
    mean_square = tl.sum(summed_fp32 * summed_fp32, axis=0) / hidden_size
    normed = (summed_fp32 * tl.rsqrt(mean_square + eps)).to(x.dtype)
    weight = tl.load(weight_ptr + columns, mask=in_row, other=0.0)
    out = (weight.to(tl.float32) * normed.to(tl.float32)).to(x.dtype)
    tl.store(normed_ptr + row * hidden_size + columns, out, mask=in_row)


def launch(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
           eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x, residual: [T, H] (rows may be strided, columns contiguous), weight: [H]
    -> (normed [T, H], new residual [T, H]), both contiguous in x's dtype."""
    assert x.shape == residual.shape and x.dtype == residual.dtype, "x and residual differ"
    assert weight.shape == (x.shape[1],), "weight must be [H]"
    x = x if x.stride(1) == 1 else x.contiguous()
    residual = residual if residual.stride(1) == 1 else residual.contiguous()
    num_rows, hidden_size = x.shape
    normed = torch.empty((num_rows, hidden_size), dtype=x.dtype, device=x.device)
    new_residual = torch.empty_like(normed)
    if num_rows == 0:
        return normed, new_residual
    _fused_add_rmsnorm_kernel[(num_rows,)](
        x, residual, weight, normed, new_residual, x.stride(0), residual.stride(0),
        hidden_size, eps, BLOCK_SIZE=triton.next_power_of_2(hidden_size))
    return normed, new_residual
