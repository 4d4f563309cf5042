"""Triton AWQ kernels; imported only by toolkit.kernels.awq_gemm on first use.

Both kernels read AutoAWQ's GEMM layout (see toolkit/kernels/awq_format.py): a packed tile
[BK, BN/8] is loaded once and widened to [BK, BN] with three ``tl.interleave``s, so every
logical column sees its own int32 word; the nibble of logical column j (within its group
of eight) sits at bit 4 * AWQ_REVERSE_ORDER[j] = 4 * ((j >> 1) + 4 * (j & 1)).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _nibble_shifts(BLOCK_N: tl.constexpr):
    """[BLOCK_N] int32 bit offset of each logical column's nibble (AWQ reverse order)."""
    j = tl.arange(0, BLOCK_N) % 8
    return ((j >> 1) + (j & 1) * 4) * 4


@triton.jit
def _widen(packed):
    """[..., C] -> [..., 8C]: each packed word repeated for the eight columns it holds."""
    packed = tl.interleave(packed, packed)
    packed = tl.interleave(packed, packed)
    return tl.interleave(packed, packed)


@triton.jit
def _awq_gemm_kernel(x_ptr, qweight_ptr, qzeros_ptr, scales_ptr, out_ptr,
                     M, N, K, stride_xm,
                     GROUP_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
                     DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """out[pid_k] = x[:, K tiles pid_k, pid_k + SPLIT_K, ...] @ W[those tiles].

    Grid (cdiv(M, BM) * cdiv(N, BN), SPLIT_K). BLOCK_K divides GROUP_SIZE, so one K tile
    lies in one group: its zeros and scales are a single row, loaded once per tile.
    UPCAST_DOT multiplies in fp32 (see NOTE in awq_gemm_triton).
    """
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_n_blocks = tl.cdiv(N, BLOCK_N)
    pid_m = pid // num_n_blocks
    pid_n = pid % num_n_blocks
    num_packed = N // 8
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM]
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    packed_cols = pid_n * (BLOCK_N // 8) + tl.arange(0, BLOCK_N // 8)  # [BN/8]
    row_in = rows < M
    col_in = cols < N
    packed_in = packed_cols < num_packed
    shifts = _nibble_shifts(BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k_tile in range(pid_k, K // BLOCK_K, SPLIT_K):
        ks = k_tile * BLOCK_K + tl.arange(0, BLOCK_K)  # [BK]
        x = tl.load(x_ptr + rows[:, None] * stride_xm + ks[None, :],
                    mask=row_in[:, None], other=0.0)  # [BM, BK]
        packed = tl.load(qweight_ptr + ks[:, None] * num_packed + packed_cols[None, :],
                         mask=packed_in[None, :], other=0)  # [BK, BN/8]
        group = (k_tile * BLOCK_K) // GROUP_SIZE
        packed_zeros = tl.load(qzeros_ptr + group * num_packed + packed_cols,
                               mask=packed_in, other=0)  # [BN/8]
        scales = tl.load(scales_ptr + group * N + cols, mask=col_in, other=0.0)  # [BN]
        q = (_widen(packed) >> shifts[None, :]) & 0xF  # [BK, BN]
        zeros = (_widen(packed_zeros) >> shifts) & 0xF  # [BN]
        w = (q - zeros[None, :]).to(scales.dtype) * scales[None, :]  # W in scales' dtype
        w = w.to(x.dtype)
        if UPCAST_DOT:
            x = x.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(x, w, acc, input_precision=DOT_PRECISION)
    out_ptrs = out_ptr + pid_k * M * N + rows[:, None] * N + cols[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=row_in[:, None] & col_in[None, :])


@triton.jit
def _awq_dequantize_kernel(qweight_ptr, qzeros_ptr, scales_ptr, out_ptr, K, N,
                           GROUP_SIZE: tl.constexpr, BLOCK_K: tl.constexpr,
                           BLOCK_N: tl.constexpr):
    """out[K, N] = (q - z) * s over a [BK, BN] tile; grid (cdiv(K, BK), cdiv(N, BN))."""
    ks = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)  # [BK]
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    packed_cols = tl.program_id(1) * (BLOCK_N // 8) + tl.arange(0, BLOCK_N // 8)  # [BN/8]
    num_packed = N // 8
    k_in = ks < K
    packed_mask = k_in[:, None] & (packed_cols < num_packed)[None, :]
    groups = ks // GROUP_SIZE
    packed = tl.load(qweight_ptr + ks[:, None] * num_packed + packed_cols[None, :],
                     mask=packed_mask, other=0)  # [BK, BN/8]
    packed_zeros = tl.load(qzeros_ptr + groups[:, None] * num_packed + packed_cols[None, :],
                           mask=packed_mask, other=0)  # [BK, BN/8]
    mask = k_in[:, None] & (cols < N)[None, :]
    scales = tl.load(scales_ptr + groups[:, None] * N + cols[None, :], mask=mask, other=0.0)
    shifts = _nibble_shifts(BLOCK_N)[None, :]
    q = (_widen(packed) >> shifts) & 0xF
    zeros = (_widen(packed_zeros) >> shifts) & 0xF
    w = (q - zeros).to(scales.dtype) * scales  # [BK, BN]
    tl.store(out_ptr + ks[:, None] * N + cols[None, :], w.to(out_ptr.dtype.element_ty),
             mask=mask)


def awq_gemm_triton(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor,
                    scales: torch.Tensor, group_size: int, block_m: int, block_n: int,
                    block_k: int, split_k: int) -> torch.Tensor:
    """x [M, K] (columns contiguous) -> [M, N] in x's dtype; blocks chosen by the caller."""
    num_rows, in_features = x.shape
    out_features = scales.shape[1]
    partial_dtype = x.dtype if split_k == 1 else torch.float32
    out = torch.empty((split_k, num_rows, out_features), dtype=partial_dtype, device=x.device)
    grid = (triton.cdiv(num_rows, block_m) * triton.cdiv(out_features, block_n), split_k)
    # NOTE: triton 3.9's interpreter returns garbage for tl.dot on bfloat16 operands; off
    # CUDA (the interpreter) bf16 tiles are multiplied in fp32 instead (same rounded W).
    upcast_dot = x.dtype == torch.bfloat16 and not x.is_cuda
    _awq_gemm_kernel[grid](
        x, qweight, qzeros, scales, out, num_rows, out_features, in_features, x.stride(0),
        GROUP_SIZE=group_size, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        SPLIT_K=split_k, DOT_PRECISION="ieee" if x.dtype == torch.float32 else None,
        UPCAST_DOT=upcast_dot)
    if split_k == 1:
        return out[0]
    return out.sum(dim=0).to(x.dtype)  # [M, N]


def awq_dequantize_triton(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                          group_size: int, block_k: int = 32,
                          block_n: int = 64) -> torch.Tensor:
    """The dense W [K, N] in scales' dtype."""
    in_features = qweight.shape[0]
    out_features = scales.shape[1]
    out = torch.empty((in_features, out_features), dtype=scales.dtype, device=scales.device)
    grid = (triton.cdiv(in_features, block_k), triton.cdiv(out_features, block_n))
    _awq_dequantize_kernel[grid](qweight, qzeros, scales, out, in_features, out_features,
                                 GROUP_SIZE=group_size, BLOCK_K=block_k, BLOCK_N=block_n)
    return out
