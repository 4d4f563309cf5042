"""The Triton fused-MoE kernels; imported only by toolkit.kernels.fused_moe.

Both kernels run over the expert-sorted layout of ``fused_moe.align_by_expert``: program
(m, n) takes rows m * BLOCK_M ... of ``sorted_slots`` (one expert, ``block_experts[m]``)
and output columns n * BLOCK_N ...; a slot index s stands for token s // top_k, and
s == num_slots marks a padding row (loads masked, nothing stored). Programs whose block
starts at or past ``num_padded`` return at once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_N = 64
"""Output columns per program."""
BLOCK_K = 64
"""Reduction step of both GEMMs."""


@triton.jit
def _gate_up_kernel(x_ptr, w13_ptr, out_ptr, sorted_slots_ptr, block_experts_ptr,
                    num_padded_ptr, num_slots, top_k, hidden_size, intermediate_size,
                    stride_x, stride_we, stride_wn, stride_out,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """out[s, n] = silu(x[t] . w13[e, n]) * (x[t] . w13[e, I + n]), accumulated in fp32."""
    pid_m = tl.program_id(0)
    if pid_m * BLOCK_M >= tl.load(num_padded_ptr):
        return
    slots = tl.load(sorted_slots_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))  # [BM]
    valid = slots < num_slots
    tokens = slots // top_k
    expert = tl.load(block_experts_ptr + pid_m).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    col_in = cols < intermediate_size
    gate_ptrs = w13_ptr + expert * stride_we + cols[None, :] * stride_wn  # [1, BN]
    up_ptrs = gate_ptrs + intermediate_size * stride_wn
    gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k_start in range(0, hidden_size, BLOCK_K):
        ks = k_start + tl.arange(0, BLOCK_K)  # [BK]
        k_in = ks < hidden_size
        a = tl.load(x_ptr + tokens[:, None] * stride_x + ks[None, :],
                    mask=valid[:, None] & k_in[None, :], other=0.0)  # [BM, BK]
        w_mask = k_in[:, None] & col_in[None, :]
        w_gate = tl.load(gate_ptrs + ks[:, None], mask=w_mask, other=0.0)  # [BK, BN]
        w_up = tl.load(up_ptrs + ks[:, None], mask=w_mask, other=0.0)  # [BK, BN]
        if UPCAST_DOT:
            a = a.to(tl.float32)
            w_gate = w_gate.to(tl.float32)
            w_up = w_up.to(tl.float32)
        gate = tl.dot(a, w_gate, gate, input_precision=DOT_PRECISION)
        up = tl.dot(a, w_up, up, input_precision=DOT_PRECISION)
    out = gate * tl.sigmoid(gate) * up
    tl.store(out_ptr + slots[:, None] * stride_out + cols[None, :],
             out.to(out_ptr.dtype.element_ty), mask=valid[:, None] & col_in[None, :])


@triton.jit
def _down_kernel(h_ptr, w2_ptr, weights_ptr, out_ptr, sorted_slots_ptr, block_experts_ptr,
                 num_padded_ptr, num_slots, hidden_size, intermediate_size,
                 stride_h, stride_we, stride_wn, stride_out,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """out[s, n] = weights[s] * (h[s] . w2[e, n]), in fp32 (out is float32)."""
    pid_m = tl.program_id(0)
    if pid_m * BLOCK_M >= tl.load(num_padded_ptr):
        return
    slots = tl.load(sorted_slots_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))  # [BM]
    valid = slots < num_slots
    expert = tl.load(block_experts_ptr + pid_m).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    col_in = cols < hidden_size
    w_ptrs = w2_ptr + expert * stride_we + cols[None, :] * stride_wn  # [1, BN]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k_start in range(0, intermediate_size, BLOCK_K):
        ks = k_start + tl.arange(0, BLOCK_K)  # [BK]
        k_in = ks < intermediate_size
        a = tl.load(h_ptr + slots[:, None] * stride_h + ks[None, :],
                    mask=valid[:, None] & k_in[None, :], other=0.0)  # [BM, BK]
        w = tl.load(w_ptrs + ks[:, None], mask=k_in[:, None] & col_in[None, :],
                    other=0.0)  # [BK, BN]
        if UPCAST_DOT:
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(a, w, acc, input_precision=DOT_PRECISION)
    routing = tl.load(weights_ptr + slots, mask=valid, other=0.0)  # [BM] fp32
    acc = acc * routing[:, None]
    tl.store(out_ptr + slots[:, None] * stride_out + cols[None, :], acc,
             mask=valid[:, None] & col_in[None, :])


def launch(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
           sorted_slots: torch.Tensor, block_experts: torch.Tensor, num_padded: torch.Tensor,
           block_m: int) -> torch.Tensor:
    """x [T, H], w13 [E, 2I, H], w2 [E, H, I], topk_weights [T, k], and the layout of
    ``align_by_expert(topk_ids, E, block_m)`` -> [T, H] in x's dtype."""
    num_tokens, hidden_size = x.shape
    num_experts, double_intermediate, _ = w13.shape
    intermediate_size = double_intermediate // 2
    top_k = topk_weights.shape[1]
    assert w13.shape == (num_experts, 2 * intermediate_size, hidden_size), w13.shape
    assert w2.shape == (num_experts, hidden_size, intermediate_size), w2.shape
    assert w13.dtype == w2.dtype == x.dtype, (x.dtype, w13.dtype, w2.dtype)
    x, w13, w2 = (t if t.stride(-1) == 1 else t.contiguous() for t in (x, w13, w2))
    num_slots = num_tokens * top_k
    routing = topk_weights.float().contiguous().view(-1)  # [T * k]
    hidden = torch.empty((num_slots, intermediate_size), dtype=x.dtype, device=x.device)
    partial = torch.empty((num_slots, hidden_size), dtype=torch.float32, device=x.device)
    if num_tokens == 0:
        return x.new_empty((0, hidden_size))
    num_blocks = sorted_slots.numel() // block_m
    # NOTE: triton 3.9's interpreter returns garbage for tl.dot on bfloat16 operands; off
    # CUDA (the interpreter) bf16 tiles are multiplied in fp32 instead.
    options = dict(BLOCK_M=block_m, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
                   DOT_PRECISION="ieee" if x.dtype == torch.float32 else None,
                   UPCAST_DOT=x.dtype == torch.bfloat16 and not x.is_cuda)
    _gate_up_kernel[(num_blocks, triton.cdiv(intermediate_size, BLOCK_N))](
        x, w13, hidden, sorted_slots, block_experts, num_padded, num_slots, top_k,
        hidden_size, intermediate_size, x.stride(0), w13.stride(0), w13.stride(1),
        hidden.stride(0), **options)
    _down_kernel[(num_blocks, triton.cdiv(hidden_size, BLOCK_N))](
        hidden, w2, routing, partial, sorted_slots, block_experts, num_padded, num_slots,
        hidden_size, intermediate_size, hidden.stride(0), w2.stride(0), w2.stride(1),
        partial.stride(0), **options)
    return partial.view(num_tokens, top_k, hidden_size).sum(1).to(x.dtype)
