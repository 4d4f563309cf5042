"""The Triton rotary kernel; imported only by toolkit.kernels.rotary on first use."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rotate_heads(x_ptr, out_ptr, token, token_stride, head_stride, num_heads, cos, sin,
                  HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr):
    """Rotate the [num_heads, D] heads of one token; out is contiguous [T, H, D]."""
    heads = tl.arange(0, BLOCK_H)
    dims = tl.arange(0, HEAD_DIM)
    rolled = (dims + HEAD_DIM // 2) % HEAD_DIM
    in_heads = (heads < num_heads)[:, None]
    base = x_ptr + token * token_stride + heads[:, None] * head_stride
    x = tl.load(base + dims[None, :], mask=in_heads, other=0.0)  # [BH, D]
    x_rolled = tl.load(base + rolled[None, :], mask=in_heads, other=0.0)  # [BH, D]
    out = x.to(tl.float32) * cos[None, :] + x_rolled.to(tl.float32) * sin[None, :]
    out_offsets = (token * num_heads + heads[:, None]) * HEAD_DIM + dims[None, :]
    tl.store(out_ptr + out_offsets, out.to(x.dtype), mask=in_heads)


@triton.jit
def _rotary_kernel(q_ptr, k_ptr, cos_ptr, sin_ptr, q_out_ptr, k_out_ptr,
                   q_token_stride, q_head_stride, k_token_stride, k_head_stride,
                   num_qo_heads, num_kv_heads,
                   HEAD_DIM: tl.constexpr, BLOCK_HQ: tl.constexpr, BLOCK_HKV: tl.constexpr):
    """One program per token: its cos/sin row is loaded once for all q and k heads."""
    token = tl.program_id(0)
    dims = tl.arange(0, HEAD_DIM)
    cos = tl.load(cos_ptr + token * HEAD_DIM + dims).to(tl.float32)  # [D]
    sin = tl.load(sin_ptr + token * HEAD_DIM + dims).to(tl.float32)  # [D]
    _rotate_heads(q_ptr, q_out_ptr, token, q_token_stride, q_head_stride, num_qo_heads,
                  cos, sin, HEAD_DIM, BLOCK_HQ)
    _rotate_heads(k_ptr, k_out_ptr, token, k_token_stride, k_head_stride, num_kv_heads,
                  cos, sin, HEAD_DIM, BLOCK_HKV)


def launch(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
           sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q [T, Hq, D], k [T, Hkv, D] (D contiguous), cos/sin [T, 1, D]
    -> contiguous rotated (q, k) in q's dtype. D must be a power of two."""
    num_tokens, num_qo_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    assert k.shape == (num_tokens, num_kv_heads, head_dim), "q and k disagree"
    assert q.stride(2) == 1 and k.stride(2) == 1, "head_dim must be contiguous"
    assert head_dim & (head_dim - 1) == 0, "head_dim must be a power of two"
    cos = cos.reshape(num_tokens, head_dim).contiguous()  # [T, D]
    sin = sin.reshape(num_tokens, head_dim).contiguous()  # [T, D]
    q_out = torch.empty((num_tokens, num_qo_heads, head_dim), dtype=q.dtype, device=q.device)
    k_out = torch.empty((num_tokens, num_kv_heads, head_dim), dtype=k.dtype, device=k.device)
    if num_tokens == 0:
        return q_out, k_out
    _rotary_kernel[(num_tokens,)](
        q, k, cos, sin, q_out, k_out, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        num_qo_heads, num_kv_heads, HEAD_DIM=head_dim,
        BLOCK_HQ=triton.next_power_of_2(num_qo_heads),
        BLOCK_HKV=triton.next_power_of_2(num_kv_heads))
    return q_out, k_out
