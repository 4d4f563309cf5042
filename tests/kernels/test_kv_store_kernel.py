"""KV-cache store: Triton (interpreter on CPU) vs its torch twin vs KVCachePool.write."""

from __future__ import annotations

import pytest
import torch

from toolkit.kernels.kv_store import store_kv, store_kv_ref
from toolkit.kv.cache_pool import KVCachePool

triton = pytest.importorskip("triton")

NUM_PAGES, PAGE_SIZE, NUM_KV_HEADS, HEAD_DIM = 6, 4, 2, 8


def _cache(dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(NUM_PAGES, 2, PAGE_SIZE, NUM_KV_HEADS, HEAD_DIM, dtype=dtype)


@pytest.mark.parametrize(("kv_dtype", "cache_dtype"), [
    (torch.float32, torch.float32),
    (torch.bfloat16, torch.bfloat16),
    (torch.float32, torch.bfloat16),
])
def test_kernel_matches_reference(kv_dtype: torch.dtype, cache_dtype: torch.dtype):
    from toolkit.kernels.kv_store import store_kv_triton

    slots = torch.tensor([5, 6, 7, 8, 22, 0])  # across pages 1, 2, 5 and 0
    k = torch.randn(6, NUM_KV_HEADS, HEAD_DIM).to(kv_dtype)
    v = torch.randn(6, NUM_KV_HEADS, HEAD_DIM).to(kv_dtype)
    got, want = _cache(cache_dtype), _cache(cache_dtype)
    store_kv_triton(got, slots, k, v)
    store_kv_ref(want, slots, k, v)
    if kv_dtype == cache_dtype:
        assert torch.equal(got, want)
    else:  # NOTE: the interpreter rounds fp32 -> bf16 toward zero: one ulp apart at most
        torch.testing.assert_close(got, want, atol=0, rtol=2**-7)
    assert got.count_nonzero() > 0


def test_kernel_reads_k_and_v_from_a_fused_qkv_buffer_and_skips_padding():
    from toolkit.kernels.kv_store import store_kv_triton

    num_qo_heads = 4
    heads = torch.randn(3, num_qo_heads + 2 * NUM_KV_HEADS, HEAD_DIM)  # [T, Hq + 2Hkv, D]
    k = heads[:, num_qo_heads:num_qo_heads + NUM_KV_HEADS]
    v = heads[:, num_qo_heads + NUM_KV_HEADS:]
    slots = torch.tensor([9, -1, 3])
    got, want = _cache(torch.float32), _cache(torch.float32)
    store_kv_triton(got, slots, k, v)
    store_kv_ref(want, slots, k, v)
    assert torch.equal(got, want)
    assert torch.equal(got[2, 0, 1], k[0]) and torch.equal(got[0, 1, 3], v[2])
    assert got.count_nonzero() == 2 * 2 * NUM_KV_HEADS * HEAD_DIM  # the padded row wrote nothing


def test_reference_is_the_pools_write():
    pool = KVCachePool(1, NUM_PAGES, PAGE_SIZE, NUM_KV_HEADS, HEAD_DIM, torch.bfloat16)
    slots = torch.tensor([1, 2, 13])
    k, v = torch.randn(3, NUM_KV_HEADS, HEAD_DIM), torch.randn(3, NUM_KV_HEADS, HEAD_DIM)
    pool.write(0, slots, k, v)
    cache = _cache(torch.bfloat16)
    store_kv_ref(cache, slots, k, v)
    assert torch.equal(cache, pool.caches[0])


def test_dispatch_uses_the_twin_off_cuda():
    slots = torch.tensor([0, 11])
    k, v = torch.randn(2, NUM_KV_HEADS, HEAD_DIM), torch.randn(2, NUM_KV_HEADS, HEAD_DIM)
    got, want = _cache(torch.float32), _cache(torch.float32)
    store_kv(got, slots, k, v)
    store_kv_ref(want, slots, k, v)
    assert torch.equal(got, want)


def test_fp8_caches_are_refused():
    from toolkit.kernels.kv_store import store_kv_triton

    cache = torch.zeros(2, 2, PAGE_SIZE, NUM_KV_HEADS, HEAD_DIM, dtype=torch.float8_e4m3fn)
    k = torch.randn(1, NUM_KV_HEADS, HEAD_DIM)
    for store in (store_kv, store_kv_triton):
        with pytest.raises(ValueError, match="KVCachePool.write"):
            store(cache, torch.tensor([0]), k, k)
