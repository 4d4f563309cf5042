"""The fp8 KV cache on the native route (toolkit/kernels/cpu/ops.cpp store_kv_fp8 and
decode_attention with kv_scales) against the torch route's quantize_kv, index_copy_ and SDPA
over dequantized K/V."""

from __future__ import annotations

import pytest
import torch
from paged_batch import build_forward_batch

from toolkit.attention.torch_ref import TorchRefBackend
from toolkit.kernels.route import TORCH
from toolkit.kv.cache_pool import KVCachePool


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fp8_cache_store_and_decode_attention_match_the_torch_route(dtype, native_kernels):
    """An fp8 pool on the native route: store_kv_fp8 writes the bytes and scales that
    quantize_kv and index_copy_ write, and its decode attention (keys and values read in
    place, scales applied to scores and weights) agrees with the torch route's SDPA over
    dequantized K/V to bf16 rounding; float16 activations go through in float32."""
    page_size, num_qo_heads, num_kv_heads, head_dim = 16, 9, 3, 64
    requests = [([5], 37, [7, 3, 12]), ([6], 15, [5]), (list(range(20)), 0, [30, 0])]
    batch = build_forward_batch(requests, page_size)
    num_tokens = sum(len(tokens) for tokens, _, _ in requests)
    q = torch.randn(num_tokens, num_qo_heads, head_dim).to(dtype)
    k, v = ((torch.randn(num_tokens, num_kv_heads, head_dim) * 4).to(dtype) for _ in range(2))
    k[3] = 0  # an all-zero vector: scale 0
    fill = torch.randn(40 * page_size, num_kv_heads, head_dim)
    outputs, pools = [], []
    for kernels in (native_kernels, TORCH):
        pool = KVCachePool(num_layers=1, num_pages=40, page_size=page_size,
                           num_kv_heads=num_kv_heads, head_dim=head_dim,
                           dtype=torch.float8_e4m3fn)
        filler = TorchRefBackend(pool, num_qo_heads, num_kv_heads, head_dim)
        filler.plan(build_forward_batch([(list(range(40 * page_size)), 0, list(range(40)))],
                                        page_size))
        filler.forward(0, torch.zeros(40 * page_size, num_qo_heads, head_dim), fill, fill)
        backend = TorchRefBackend(pool, num_qo_heads, num_kv_heads, head_dim, kernels=kernels)
        assert backend._native == kernels.is_native
        backend.plan(batch)
        outputs.append(backend.forward(0, q, k, v))
        pools.append(pool)
    assert torch.equal(pools[0].caches[0].view(torch.uint8), pools[1].caches[0].view(torch.uint8))
    assert torch.equal(pools[0].scales[0], pools[1].scales[0])
    assert outputs[0].dtype == dtype
    torch.testing.assert_close(outputs[0].float(), outputs[1].float(), atol=2e-2, rtol=2e-2)


def test_fp8_decode_attention_reads_every_code_exactly(native_kernels):
    """One cached position whose V holds each finite e4m3 code once (scale 1): its softmax
    weight is 1, so in float32 every output column is that code's value, exactly."""
    num_kv_heads, head_dim = 4, 64
    codes = torch.arange(256, dtype=torch.uint8)
    codes = codes[(codes & 0x7F) != 0x7F]  # 0x7f and 0xff are NaN
    values = torch.zeros(num_kv_heads * head_dim, dtype=torch.uint8)
    values[:len(codes)] = codes
    cache = torch.zeros(1, 2, 16, num_kv_heads, head_dim, dtype=torch.uint8)
    cache[0, 1, 0] = values.view(num_kv_heads, head_dim)
    scales = torch.ones(1, 2, 16, num_kv_heads)
    q = torch.randn(1, num_kv_heads, head_dim)
    one = torch.tensor([0], dtype=torch.int32)
    out = native_kernels.ops.decode_attention(
        q, cache.view(torch.float8_e4m3fn), one, one, torch.tensor([1], dtype=torch.int32),
        0.125, kv_scales=scales)
    assert torch.equal(out.flatten(), values.view(torch.float8_e4m3fn).float())
