"""TorchRefBackend's batch-invariant route: a query row's output is bitwise the same
whether its request is prefilled whole, in chunks, after cached pages or decoded, and
whatever other requests share the step (SmolLM2's head shapes, bfloat16 activations over a
bfloat16 cache and over an fp8 one)."""

from __future__ import annotations

import pytest
import torch
from paged_batch import build_forward_batch

from toolkit.attention.registry import ATTENTION_BACKENDS
from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.kv.cache_pool import KVCachePool, quantize_kv

PAGE_SIZE = 16
NUM_QO_HEADS, NUM_KV_HEADS, HEAD_DIM = 9, 3, 64
SEQ_LEN = 300  # three of the kernel's 128-position ranges
PAGES = [33, 2, 17, 40, 5, 29, 11, 0, 21, 8, 36, 14, 25, 3, 19, 30, 7, 44, 12]


@pytest.fixture(scope="module", params=[torch.bfloat16, torch.float8_e4m3fn],
                ids=["bf16-cache", "fp8-cache"])
def cache_dtype(request) -> torch.dtype:
    return request.param


def _backend(kernels: KernelRoute, cache_dtype: torch.dtype = torch.bfloat16):
    """A backend built with ``kernels``, batch-invariant where that route allows."""
    pool = KVCachePool(num_layers=1, num_pages=64, page_size=PAGE_SIZE,
                       num_kv_heads=NUM_KV_HEADS, head_dim=HEAD_DIM, dtype=cache_dtype)
    backend = ATTENTION_BACKENDS.get("torch_ref")(pool, NUM_QO_HEADS, NUM_KV_HEADS, HEAD_DIM,
                                                  kernels=kernels)
    assert backend.enable_batch_invariance() is kernels.is_native
    return backend


@pytest.fixture(scope="module")
def qkv():
    torch.manual_seed(0)
    shape = (SEQ_LEN, NUM_QO_HEADS + 2 * NUM_KV_HEADS, HEAD_DIM)
    heads = torch.randn(shape, dtype=torch.bfloat16)
    return (heads[:, :NUM_QO_HEADS], heads[:, NUM_QO_HEADS:NUM_QO_HEADS + NUM_KV_HEADS],
            heads[:, NUM_QO_HEADS + NUM_KV_HEADS:])


def _steps(backend, qkv, cuts: list[int], others: int = 0) -> torch.Tensor:
    """The request's positions in steps [cuts[i], cuts[i+1]); ``others`` unrelated requests
    (a decode and a prefill, on pages of their own) share every step -> [SEQ_LEN, Hq, D]."""
    q, k, v = qkv
    generator = torch.Generator().manual_seed(others)
    outputs = []
    for start, end in zip(cuts, cuts[1:]):
        requests = [([0] * (end - start), start, PAGES)]
        rows = [(q[start:end], k[start:end], v[start:end])]
        for i in range(others):
            qo_len = 1 if i % 2 else 5 + i
            requests.append(([0] * qo_len, 3 * i, [48 + 2 * i, 49 + 2 * i]))
            rows.append(tuple(torch.randn((qo_len, h, HEAD_DIM), generator=generator)
                              .bfloat16() for h in (NUM_QO_HEADS, NUM_KV_HEADS, NUM_KV_HEADS)))
        backend.plan(build_forward_batch(requests, PAGE_SIZE))
        out = backend.forward(0, *(torch.cat(parts) for parts in zip(*rows)))
        outputs.append(out[:end - start])
    return torch.cat(outputs)


@pytest.fixture(scope="module")
def whole(qkv, native_kernels, cache_dtype):
    return _steps(_backend(native_kernels, cache_dtype), qkv, [0, SEQ_LEN])


@pytest.mark.parametrize("cuts", [
    [0, 37, 200, SEQ_LEN],  # chunked prefill
    [0, 256, SEQ_LEN],  # a prefix-cache hit of 16 pages, then the rest
    [0, *range(250, SEQ_LEN + 1)],  # decoded one position at a time
    [0, 128, 129, 130, 134, SEQ_LEN],  # drafts verified across a range boundary
])
@pytest.mark.parametrize("others", [0, 2, 7])
def test_rows_equal_whatever_the_steps_and_neighbours(qkv, whole, cuts, others, native_kernels,
                                                      cache_dtype):
    backend = _backend(native_kernels, cache_dtype)
    assert torch.equal(_steps(backend, qkv, cuts, others), whole)


def test_rows_equal_on_one_thread(qkv, whole, native_kernels, cache_dtype):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        backend = _backend(native_kernels, cache_dtype)
        assert torch.equal(_steps(backend, qkv, [0, 100, SEQ_LEN]), whole)
    finally:
        torch.set_num_threads(threads)


def test_invariant_route_is_causal_attention(qkv, whole, cache_dtype):
    """Exact attention over the K/V the cache holds (fp8: dequantized in float32)."""
    q, k, v = qkv
    if cache_dtype == torch.float8_e4m3fn:
        k, v = ((values.float() * scales[..., None]) for values, scales in map(quantize_kv, (k, v)))
    q, k, v = (t.double() for t in (q, k, v))
    group = NUM_QO_HEADS // NUM_KV_HEADS
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,shd->hqs", q, k) * HEAD_DIM**-0.5
    causal = torch.ones(SEQ_LEN, SEQ_LEN, dtype=torch.bool).tril()
    probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    expected = torch.einsum("hqs,shd->qhd", probs, v).float()
    torch.testing.assert_close(whole.float(), expected, atol=2e-2, rtol=2e-2)


def test_not_available_on_the_torch_route():
    _backend(TORCH)  # enable_batch_invariance() is False
