"""The Triton BGMV LoRA kernels; imported only by toolkit.kernels.lora_bgmv.

Two launches, each one program per (row, output block): shrink ``s[t] = A[slot_t] x[t]``
into a float32 [T, Q] buffer, then expand ``delta[t] = B[slot_t] s[t]``. A row without an
adapter (slot -1) reads nothing and gets zeros.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_K = 64
"""Inputs reduced per iteration of the shrink kernel."""
BLOCK_N = 64
"""Outputs per program of the expand kernel."""


@triton.jit
def _shrink_kernel(x_ptr, a_ptr, slots_ptr, out_ptr, Q, K, stride_xt, stride_as, stride_aq,
                   BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr):
    """Grid (T, cdiv(Q, BLOCK_Q)): out[t, q] = sum_k a[slot_t, q, k] * x[t, k] (fp32)."""
    row = tl.program_id(0)
    qs = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)  # [BQ]
    slot = tl.load(slots_ptr + row)
    num_k = tl.where(slot >= 0, K, 0)  # no adapter: every load masked off, zeros out
    slot = tl.maximum(slot, 0).to(tl.int64)
    acc = tl.zeros((BLOCK_Q,), dtype=tl.float32)
    for k_start in range(0, K, BLOCK_K):
        ks = k_start + tl.arange(0, BLOCK_K)  # [BK]
        x = tl.load(x_ptr + row * stride_xt + ks, mask=ks < num_k, other=0.0)
        a_mask = (qs[:, None] < Q) & (ks[None, :] < num_k)
        a = tl.load(a_ptr + slot * stride_as + qs[:, None] * stride_aq + ks[None, :],
                    mask=a_mask, other=0.0)  # [BQ, BK]
        acc += tl.sum(a.to(tl.float32) * x.to(tl.float32)[None, :], axis=1)
    tl.store(out_ptr + row * Q + qs, acc, mask=qs < Q)


@triton.jit
def _expand_kernel(s_ptr, b_ptr, slots_ptr, out_ptr, Q, N, stride_bs, stride_bn,
                   BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr):
    """Grid (T, cdiv(N, BLOCK_N)): out[t, n] = sum_q b[slot_t, n, q] * s[t, q]."""
    row = tl.program_id(0)
    ns = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    slot = tl.load(slots_ptr + row)
    num_q = tl.where(slot >= 0, Q, 0)  # no adapter: every load masked off, zeros out
    slot = tl.maximum(slot, 0).to(tl.int64)
    qs = tl.arange(0, BLOCK_Q)  # [BQ], BLOCK_Q >= Q
    s = tl.load(s_ptr + row * Q + qs, mask=qs < num_q, other=0.0)  # [BQ] fp32
    b_mask = (ns[:, None] < N) & (qs[None, :] < num_q)
    b = tl.load(b_ptr + slot * stride_bs + ns[:, None] * stride_bn + qs[None, :],
                mask=b_mask, other=0.0)  # [BN, BQ]
    out = tl.sum(b.to(tl.float32) * s[None, :], axis=1)
    tl.store(out_ptr + row * N + ns, out.to(out_ptr.dtype.element_ty), mask=ns < N)


def launch(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
           slots: torch.Tensor) -> torch.Tensor:
    """x [T, K], a [S, Q, K], b [S, N, Q] (last dims contiguous), slots [T] -> [T, N]."""
    num_rows, in_features = x.shape
    num_shrink, out_features = a.shape[1], b.shape[1]
    out = torch.empty((num_rows, out_features), dtype=x.dtype, device=x.device)
    if num_rows == 0:
        return out
    x = x if x.stride(1) == 1 else x.contiguous()
    a = a if a.stride(2) == 1 else a.contiguous()
    b = b if b.stride(2) == 1 else b.contiguous()
    slots = slots.to(torch.int32).contiguous()
    block_q = triton.next_power_of_2(num_shrink)
    shrunk = torch.empty((num_rows, num_shrink), dtype=torch.float32, device=x.device)
    _shrink_kernel[(num_rows, 1)](x, a, slots, shrunk, num_shrink, in_features, x.stride(0),
                                  a.stride(0), a.stride(1), BLOCK_Q=block_q, BLOCK_K=BLOCK_K)
    block_n = min(BLOCK_N, triton.next_power_of_2(out_features))
    _expand_kernel[(num_rows, triton.cdiv(out_features, block_n))](
        shrunk, b, slots, out, num_shrink, out_features, b.stride(0), b.stride(1),
        BLOCK_Q=block_q, BLOCK_N=block_n)
    return out
