"""TorchRefBackend against dense causal attention on the same K/V."""

from __future__ import annotations

import pytest
import torch
from paged_batch import build_forward_batch

from toolkit.attention.forward_batch import ForwardBatch
from toolkit.attention.registry import ATTENTION_BACKENDS
from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.kv.cache_pool import KVCachePool, dequantize_kv, quantize_kv

PAGE_SIZE = 4
NUM_QO_HEADS, NUM_KV_HEADS, HEAD_DIM = 6, 2, 8


@pytest.fixture(params=["native", "torch"])
def kernels(request) -> KernelRoute:
    """Each test runs on both CPU routes, the backend built with each: the C++ kernels
    (store, decode) and torch ops."""
    return request.getfixturevalue("native_kernels") if request.param == "native" else TORCH


def _page_table_batch(requests: list[tuple[int, int, list[int]]]) -> ForwardBatch:
    """requests: (seq_len after the step, new tokens, page ids) -> the step's metadata."""
    return build_forward_batch([([0] * qo_len, seq_len - qo_len, pages)
                                for seq_len, qo_len, pages in requests], PAGE_SIZE)


def _dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q: [Q, Hq, D] at the last Q of S positions; k, v: [S, Hkv, D] -> [Q, Hq, D]."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,shd->hqs", q.double(), k.double()) * HEAD_DIM**-0.5
    num_q, seq_len = q.shape[0], k.shape[0]
    query_pos = torch.arange(seq_len - num_q, seq_len)
    allowed = torch.arange(seq_len)[None, :] <= query_pos[:, None]
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("hqs,shd->qhd", scores.softmax(-1), v.double()).float()


def _backend(pool: KVCachePool, kernels: KernelRoute):
    return ATTENTION_BACKENDS.get("torch_ref")(pool, NUM_QO_HEADS, NUM_KV_HEADS, HEAD_DIM,
                                               kernels=kernels)


def _run_and_compare(kernels: KernelRoute, requests: list[tuple[int, int, list[int]]],
                     cache_dtype: torch.dtype = torch.float32, tolerance: float = 1e-5) -> None:
    """Prefill each request's cached prefix, then run one step and compare to dense."""
    torch.manual_seed(0)
    pool = KVCachePool(num_layers=2, num_pages=32, page_size=PAGE_SIZE,
                       num_kv_heads=NUM_KV_HEADS, head_dim=HEAD_DIM, dtype=cache_dtype)
    backend = _backend(pool, kernels)
    full_k = [torch.randn(s, NUM_KV_HEADS, HEAD_DIM) for s, _, _ in requests]
    full_v = [torch.randn(s, NUM_KV_HEADS, HEAD_DIM) for s, _, _ in requests]
    layer = 1
    prefix = [(s - n, s - n, pages) for s, n, pages in requests if s > n]
    if prefix:
        backend.plan(_page_table_batch(prefix))
        cached = [i for i, (s, n, _) in enumerate(requests) if s > n]
        ks = torch.cat([full_k[i][: requests[i][0] - requests[i][1]] for i in cached])
        vs = torch.cat([full_v[i][: requests[i][0] - requests[i][1]] for i in cached])
        backend.forward(layer, torch.randn(ks.shape[0], NUM_QO_HEADS, HEAD_DIM), ks, vs)
    queries = [torch.randn(n, NUM_QO_HEADS, HEAD_DIM) for _, n, _ in requests]
    backend.plan(_page_table_batch(requests))
    out = backend.forward(layer, torch.cat(queries),
                          torch.cat([k[s - n:] for k, (s, n, _) in zip(full_k, requests)]),
                          torch.cat([v[s - n:] for v, (s, n, _) in zip(full_v, requests)]))
    expected = torch.cat([_dense_attention(q, k, v) for q, k, v in zip(queries, full_k, full_v)])
    torch.testing.assert_close(out, expected, atol=tolerance, rtol=tolerance)


def test_decode_batch_of_different_lengths_on_scattered_pages(kernels):
    _run_and_compare(kernels,
                     [(9, 1, [7, 3, 12]), (4, 1, [5]), (13, 1, [30, 0, 2, 21]), (1, 1, [9])])


def test_decode_batch_of_equal_lengths_needs_no_mask(kernels):
    _run_and_compare(kernels, [(6, 1, [4, 1]), (6, 1, [11, 8])])


def test_prefill_from_scratch(kernels):
    _run_and_compare(kernels, [(11, 11, [6, 2, 15])])


def test_chunked_prefill_attends_to_the_cached_prefix(kernels):
    _run_and_compare(kernels, [(14, 5, [3, 19, 8, 1])])


def test_mixed_batch_with_decodes_after_a_prefill(kernels):
    _run_and_compare(kernels,
                     [(10, 3, [2, 9, 4]), (7, 1, [13, 6]), (5, 5, [20, 17]), (12, 1, [1, 0, 5])])


def test_mixed_batch_with_decodes_first(kernels):
    _run_and_compare(kernels,
                     [(7, 1, [13, 6]), (12, 1, [1, 0, 5]), (10, 3, [2, 9, 4]), (5, 5, [20, 17])])


def test_bfloat16_cache_matches_within_bf16_tolerance(kernels):
    pool = KVCachePool(num_layers=1, num_pages=8, page_size=PAGE_SIZE,
                       num_kv_heads=NUM_KV_HEADS, head_dim=HEAD_DIM, dtype=torch.bfloat16)
    backend = _backend(pool, kernels)
    q = torch.randn(6, NUM_QO_HEADS, HEAD_DIM, dtype=torch.bfloat16)
    k = torch.randn(6, NUM_KV_HEADS, HEAD_DIM, dtype=torch.bfloat16)
    v = torch.randn(6, NUM_KV_HEADS, HEAD_DIM, dtype=torch.bfloat16)
    backend.plan(_page_table_batch([(6, 6, [5, 2])]))
    out = backend.forward(0, q, k, v)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), _dense_attention(q.float(), k.float(), v.float()),
                               atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("requests", [
    [(10, 3, [2, 9, 4]), (7, 1, [13, 6]), (5, 5, [20, 17]), (12, 1, [1, 0, 5])],
    [(9, 1, [7, 3, 12]), (4, 1, [5]), (13, 1, [30, 0, 2, 21])],
])
def test_fp8_cache_stays_close_to_dense_attention(requests, kernels):
    """fp8 K/V (per token and head scales) vs exact attention: within fp8 rounding."""
    _run_and_compare(kernels, requests, torch.float8_e4m3fn, tolerance=6e-2)


def test_fp8_cache_attends_over_the_dequantized_values(kernels):
    """A bfloat16 model on an fp8 cache: the output is exact attention over the K/V that
    quantize/dequantize gives back (to bf16 rounding), and within fp8 error of exact
    attention over the original K/V."""
    torch.manual_seed(3)
    requests, spans = [(12, 12, [4, 1, 6]), (9, 9, [2, 7, 0])], ((0, 12), (12, 21))
    q = torch.randn(21, NUM_QO_HEADS, HEAD_DIM, dtype=torch.bfloat16)
    k = torch.randn(21, NUM_KV_HEADS, HEAD_DIM, dtype=torch.bfloat16) * 2
    v = torch.randn(21, NUM_KV_HEADS, HEAD_DIM, dtype=torch.bfloat16)
    pool = KVCachePool(num_layers=1, num_pages=8, page_size=PAGE_SIZE,
                       num_kv_heads=NUM_KV_HEADS, head_dim=HEAD_DIM, dtype=torch.float8_e4m3fn)
    backend = _backend(pool, kernels)
    backend.plan(_page_table_batch(requests))
    out = backend.forward(0, q, k, v).float()
    assert pool.caches[0].dtype == torch.float8_e4m3fn
    k8, v8 = (dequantize_kv(*quantize_kv(x), torch.float32) for x in (k, v))

    def dense(keys, values):
        return torch.cat([_dense_attention(q[a:b].float(), keys[a:b].float(), values[a:b].float())
                          for a, b in spans])

    def relative_error(expected):
        return ((out - expected).norm() / expected.norm()).item()

    assert relative_error(dense(k8, v8)) < 5e-3
    assert relative_error(dense(k, v)) < 4e-2


def test_unknown_backend_lists_valid_names():
    with pytest.raises(KeyError, match="torch_ref"):
        ATTENTION_BACKENDS.get("nope")


@pytest.mark.parametrize("cached_prefix", [0, 8])
def test_prefill_and_decode_take_sdpas_fused_cpu_kernel(cached_prefix, kernels):
    """Unfused math SDPA made a 2000-token SmolLM2 prefill ~6x slower (3-D or enable_gqa
    inputs fall back to it on the CPU); every call here must reach the flash kernel. The
    native route's decode attention is its own kernel, so only the prefill calls SDPA."""
    pool = KVCachePool(num_layers=1, num_pages=16, page_size=PAGE_SIZE,
                       num_kv_heads=NUM_KV_HEADS, head_dim=HEAD_DIM, dtype=torch.bfloat16)
    backend = _backend(pool, kernels)
    num_new = 12
    batch = _page_table_batch([(cached_prefix + num_new, num_new, [1, 2, 3, 4, 5]),
                               (9, 1, [6, 7, 8])])
    backend.plan(batch)
    q = torch.randn(num_new + 1, NUM_QO_HEADS, HEAD_DIM, dtype=torch.bfloat16)
    kv = torch.randn(num_new + 1, NUM_KV_HEADS, HEAD_DIM, dtype=torch.bfloat16)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        backend.forward(0, q, kv, kv)
    calls = {event.key: event.count for event in profile.key_averages()}
    expected_calls = 1 if kernels.is_native else 2
    assert calls.get("aten::_scaled_dot_product_flash_attention_for_cpu") == expected_calls
    assert "aten::_scaled_dot_product_attention_math" not in calls
