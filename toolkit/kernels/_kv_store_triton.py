"""The Triton KV-store kernel; imported only by toolkit.kernels.kv_store on first use."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _store_kv_kernel(k_ptr, v_ptr, cache_ptr, slot_ptr, k_token_stride, v_token_stride,
                     page_size, row_size, BLOCK_SIZE: tl.constexpr):
    """One program per token: copy its k and v rows (Hkv * D values) into the slot's page.

    Page p, offset o: K starts at ((p * 2) * page_size + o) * row_size, V page_size rows on.
    """
    token = tl.program_id(0)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    if slot >= 0:
        page = slot // page_size
        offset = slot % page_size
        columns = tl.arange(0, BLOCK_SIZE)
        in_row = columns < row_size
        k = tl.load(k_ptr + token * k_token_stride + columns, mask=in_row)
        v = tl.load(v_ptr + token * v_token_stride + columns, mask=in_row)
        k_row = cache_ptr + (page * 2 * page_size + offset) * row_size
        v_row = k_row + page_size * row_size
        tl.store(k_row + columns, k.to(cache_ptr.dtype.element_ty), mask=in_row)
        tl.store(v_row + columns, v.to(cache_ptr.dtype.element_ty), mask=in_row)


def _rows_contiguous(x: torch.Tensor) -> bool:
    """Whether each token's [Hkv, D] block is one contiguous run."""
    return x.stride(2) == 1 and x.stride(1) == x.shape[2]


def launch(cache: torch.Tensor, slot_mapping: torch.Tensor, k: torch.Tensor,
           v: torch.Tensor) -> None:
    """cache [num_pages, 2, P, Hkv, D] contiguous (written in place), slot_mapping [T],
    k, v [T, Hkv, D]."""
    num_tokens, num_kv_heads, head_dim = k.shape
    assert cache.is_contiguous(), "the cache must be contiguous"
    assert cache.shape[1] == 2 and cache.shape[3:] == (num_kv_heads, head_dim), "bad cache"
    assert v.shape == k.shape and slot_mapping.shape == (num_tokens,), "bad k/v/slots"
    k = k if _rows_contiguous(k) else k.contiguous()
    v = v if _rows_contiguous(v) else v.contiguous()
    if num_tokens == 0:
        return
    row_size = num_kv_heads * head_dim
    _store_kv_kernel[(num_tokens,)](
        k, v, cache, slot_mapping, k.stride(0), v.stride(0), cache.shape[2], row_size,
        BLOCK_SIZE=triton.next_power_of_2(row_size))
