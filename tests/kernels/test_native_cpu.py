"""The C++ CPU kernels (toolkit/kernels/cpu/ops.cpp) against their torch twins, each
route built explicitly (toolkit/kernels/route.py).

Each kernel rounds where its twin rounds, so in float32 they agree to summation order and
in bfloat16 to at most one bf16 step on a few elements.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from paged_batch import build_forward_batch

from toolkit.attention.torch_ref import TorchRefBackend
from toolkit.kernels.route import TORCH, KernelRoute, route_named
from toolkit.kernels.silu_and_mul import silu_and_mul, silu_and_mul_ref
from toolkit.kv.cache_pool import KVCachePool
from toolkit.layers.rmsnorm import fused_add_rms_norm, rms_norm
from toolkit.layers.rotary import RopeParameters, RotaryEmbedding

DTYPES = [torch.float32, torch.bfloat16]


def _twins(native_kernels: KernelRoute, fn, *args):
    """(native route result, torch route result) of fn(*args, kernels=route)."""
    return fn(*args, kernels=native_kernels), fn(*args, kernels=TORCH)


def _assert_twins_close(native_out: torch.Tensor, torch_out: torch.Tensor) -> None:
    """float32: to summation order; bfloat16: >= 99 % of elements identical, the rest
    within one bf16 step (a float32 difference that crossed a rounding boundary)."""
    assert native_out.dtype == torch_out.dtype and native_out.shape == torch_out.shape
    if native_out.dtype == torch.float32:
        torch.testing.assert_close(native_out, torch_out, atol=1e-5, rtol=1e-5)
        return
    same = (native_out == torch_out).float().mean().item()
    assert same >= 0.99, same
    torch.testing.assert_close(native_out.float(), torch_out.float(), atol=1e-2, rtol=1e-2)


def test_the_native_route_takes_contiguous_cpu_float_tensors_of_one_dtype_only(native_kernels):
    assert native_kernels.name == "native" and native_kernels.is_native
    ops = native_kernels.ops
    assert native_kernels.native_ops(torch.zeros(2, dtype=torch.bfloat16)) is ops
    assert native_kernels.native_ops(torch.zeros(2), torch.zeros(3)) is ops
    assert native_kernels.native_ops(torch.zeros(2, dtype=torch.float16)) is None
    assert native_kernels.native_ops(torch.zeros(3, 2).t()) is None  # strided
    assert native_kernels.native_ops(torch.zeros(2), torch.zeros(2).bfloat16()) is None
    assert TORCH.native_ops(torch.zeros(2)) is None and not TORCH.is_native


def test_routes_by_name_and_their_invariants(native_kernels):
    assert route_named(None) is TORCH and route_named("torch") is TORCH
    assert route_named("native") == native_kernels
    assert route_named("native").ops is native_kernels.ops  # native.load() is cached
    with pytest.raises(ValueError, match="needs the loaded ops module"):
        KernelRoute("native")
    with pytest.raises(ValueError, match="not one of"):
        route_named("avx")
    assert copy.deepcopy(native_kernels) is native_kernels  # a copied model keeps its route
    assert pickle.loads(pickle.dumps(native_kernels)).ops is native_kernels.ops


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tokens", [1, 5, 40])
def test_rms_norm(dtype, num_tokens, native_kernels):
    torch.manual_seed(0)
    x = torch.randn(num_tokens, 576).to(dtype) * 3
    weight = torch.randn(576).to(dtype)
    _assert_twins_close(*_twins(native_kernels, rms_norm, x, weight, 1e-5))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tokens", [1, 33])
def test_fused_add_rms_norm_returns_the_norm_and_the_new_residual(dtype, num_tokens,
                                                                  native_kernels):
    torch.manual_seed(1)
    x, residual = (torch.randn(num_tokens, 192).to(dtype) for _ in range(2))
    weight = torch.randn(192).to(dtype)
    (native_norm, native_sum), (torch_norm, torch_sum) = _twins(
        native_kernels, fused_add_rms_norm, x, residual, weight, 1e-6)
    assert torch.equal(native_sum, torch_sum)  # one rounded add: bit for bit
    _assert_twins_close(native_norm, torch_norm)


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_and_mul(dtype, native_kernels):
    torch.manual_seed(2)
    gate_up = torch.randn(7, 2 * 1536).to(dtype) * 4
    native_out, torch_out = _twins(native_kernels, silu_and_mul, gate_up)
    _assert_twins_close(native_out, torch_out)
    assert torch.equal(torch_out, silu_and_mul_ref(gate_up))


def test_silu_and_mul_saturates_like_torch_for_large_inputs(native_kernels):
    gates = [-1e4, -200.0, -89.0, -30.0, 0.0, 30.0, 89.0, 200.0]
    gate_up = torch.tensor([gates + [1.0] * len(gates)])
    native_out, torch_out = _twins(native_kernels, silu_and_mul, gate_up)
    torch.testing.assert_close(native_out, torch_out, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tokens", [1, 9])
def test_rotary_rotates_q_and_k_heads_only(dtype, num_tokens, native_kernels):
    torch.manual_seed(3)
    num_qo_heads, num_kv_heads, head_dim = 9, 3, 64
    native_rotary, torch_rotary = (
        RotaryEmbedding(RopeParameters(theta=100000.0), head_dim, 4096, dtype, "cpu",
                        kernels=kernels) for kernels in (native_kernels, TORCH))
    heads = torch.randn(num_tokens, num_qo_heads + 2 * num_kv_heads, head_dim).to(dtype)
    cos, sin = torch_rotary.cos_sin(torch.randint(0, 4096, (num_tokens,)))
    native_q, native_k = native_rotary.apply_qk(heads, num_qo_heads, num_kv_heads, cos, sin)
    torch_q, torch_k = torch_rotary.apply_qk(heads, num_qo_heads, num_kv_heads, cos, sin)
    _assert_twins_close(native_q, torch_q)
    _assert_twins_close(native_k, torch_k)


def _filled_backend(dtype: torch.dtype, page_size: int, num_qo_heads: int,
                    num_kv_heads: int, head_dim: int, kernels: KernelRoute) -> TorchRefBackend:
    torch.manual_seed(4)
    pool = KVCachePool(1, 40, page_size, num_kv_heads, head_dim, dtype)
    pool.caches[0].copy_(torch.randn(pool.caches[0].shape))
    return TorchRefBackend(pool, num_qo_heads, num_kv_heads, head_dim, kernels=kernels)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_qo_heads,num_kv_heads,head_dim", [
    (9, 3, 64), (4, 4, 64), (8, 1, 64), (4, 2, 128), (4, 2, 80), (6, 2, 36)])
def test_decode_attention_and_store_match_the_torch_route(dtype, num_qo_heads, num_kv_heads,
                                                          head_dim, native_kernels):
    """A decode batch of different lengths on scattered pages (one request mid-page, one
    on a page boundary), after a prefill in the same step: the new K/V lands in the same
    cache slots and every request attends over its own pages. GQA groups of 3, 1, 8 and 2
    heads (the kernel bundles them by 3); head dims in whole vectors of 32 columns, with 16
    left over (80), and with 4 left over (36: a part vector)."""
    page_size = 16
    requests = [([5], 37, [7, 3, 12]), ([6], 15, [5]), (list(range(20)), 0, [30, 0]),
                ([7], 63, [9, 21, 2, 33])]
    num_tokens = sum(len(tokens) for tokens, _, _ in requests)
    batch = build_forward_batch(requests, page_size)
    q = torch.randn(num_tokens, num_qo_heads, head_dim).to(dtype)
    k, v = (torch.randn(num_tokens, num_kv_heads, head_dim).to(dtype) for _ in range(2))
    outputs, caches = [], []
    for kernels in (native_kernels, TORCH):
        backend = _filled_backend(dtype, page_size, num_qo_heads, num_kv_heads, head_dim,
                                  kernels)
        assert backend._native == kernels.is_native
        backend.plan(batch)
        outputs.append(backend.forward(0, q, k, v))
        caches.append(backend.kv_pool.caches[0])
    assert torch.equal(caches[0], caches[1])
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(outputs[0], outputs[1], atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("head_dim", [36, 64, 80, 128])
def test_decode_attention_rows_alone_equal_rows_in_a_block(head_dim, native_kernels):
    """The query rows of one request attended together (a prefill chunk: one row block)
    give each row the bits it gets attended alone (a decode), whole vectors or not."""
    torch.manual_seed(3)
    page_size, num_pages, heads, group = 16, 24, 2, 3
    cache = torch.randn(num_pages, 2, page_size, heads, head_dim).bfloat16()
    pages = torch.randperm(num_pages).to(torch.int32)
    num_rows, length = 20, 300  # the rows end at positions 281..300: three ranges
    q = torch.randn(num_rows, heads * group, head_dim).bfloat16()
    lens = torch.arange(length - num_rows + 1, length + 1, dtype=torch.int32)
    scale = head_dim**-0.5
    block = native_kernels.ops.decode_attention(q, cache, pages, torch.zeros(num_rows,
                                                dtype=torch.int32), lens, scale)
    for r in range(num_rows):
        alone = native_kernels.ops.decode_attention(
            q[r:r + 1], cache, pages, torch.tensor([0], dtype=torch.int32), lens[r:r + 1], scale)
        assert torch.equal(alone[0], block[r]), r


def test_store_kv_skips_padding_slots(native_kernels):
    cache = torch.zeros(3, 2, 4, 2, 8)
    k, v = torch.ones(2, 2, 8), torch.full((2, 2, 8), 2.0)
    native_kernels.ops.store_kv(k, v, cache, torch.tensor([-1, 5]))
    assert torch.equal(cache[1, 0, 1], k[1]) and torch.equal(cache[1, 1, 1], v[1])
    assert cache.sum().item() == k[1].sum().item() + v[1].sum().item()


def test_decode_attention_over_a_long_context_is_exact_softmax_attention(native_kernels):
    """4,000 positions in float32 against the dense formula in float64."""
    torch.manual_seed(5)
    page_size, num_pages, heads, dim = 16, 250, 2, 64
    cache = torch.randn(num_pages, 2, page_size, heads, dim)
    order = torch.randperm(num_pages).to(torch.int32)
    q = torch.randn(1, 4, dim)
    out = native_kernels.ops.decode_attention(
        q, cache, order, torch.tensor([0], dtype=torch.int32),
        torch.tensor([num_pages * page_size - 3], dtype=torch.int32), dim**-0.5)
    keys = cache[order.long(), 0].reshape(-1, heads, dim)[:-3].double()
    values = cache[order.long(), 1].reshape(-1, heads, dim)[:-3].double()
    grouped = q.double().view(heads, 2, dim)
    scores = torch.einsum("hgd,lhd->hgl", grouped, keys) * dim**-0.5
    expected = torch.einsum("hgl,lhd->hgd", scores.softmax(-1), values).reshape(1, 4, dim)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


def test_kernels_reject_mismatched_dtypes_with_a_message(native_kernels):
    cache = torch.zeros(2, 2, 4, 1, 8, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="share a dtype"):
        native_kernels.ops.store_kv(torch.zeros(1, 1, 8), torch.zeros(1, 1, 8), cache,
                              torch.tensor([0]))


def test_decode_attention_cuts_requests_into_ranges_independent_of_batch_and_threads(
        native_kernels):
    """Each request's positions are cut into page-aligned ranges of 128, attended in
    parallel and merged: exact attention over the request's pages, and bit for bit the
    same alone or in a batch, on one thread or two."""
    torch.manual_seed(6)
    page_size, dim, group = 16, 64, 4
    lengths, first_pages = [300, 5], [0, 19]
    cache = torch.randn(20, 2, page_size, 1, dim)
    kv_indices = torch.randperm(20).to(torch.int32)
    q = torch.randn(2, group, dim)

    def attend(rows: slice, num_threads: int) -> torch.Tensor:
        previous = torch.get_num_threads()
        torch.set_num_threads(num_threads)
        try:
            return native_kernels.ops.decode_attention(
                q[rows], cache, kv_indices, torch.tensor(first_pages[rows], dtype=torch.int32),
                torch.tensor(lengths[rows], dtype=torch.int32), dim**-0.5)
        finally:
            torch.set_num_threads(previous)

    out = attend(slice(0, 2), 2)
    assert torch.equal(out, attend(slice(0, 2), 1))
    assert torch.equal(out[:1], attend(slice(0, 1), 2))
    for b, (length, first_page) in enumerate(zip(lengths, first_pages)):
        pages = kv_indices[first_page:first_page + -(-length // page_size)].long()
        keys = cache[pages, 0].reshape(-1, dim)[:length].double()
        values = cache[pages, 1].reshape(-1, dim)[:length].double()
        weights = (q[b].double() @ keys.t() * dim**-0.5).softmax(-1)
        torch.testing.assert_close(out[b].double(), weights @ values, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_kernels_give_each_row_the_same_bits_whatever_its_neighbours(dtype, native_kernels):
    """RMSNorm, fused add+RMSNorm, SiLU-and-mul and rotary: a row alone, and as row i of
    a batch of 1 .. 300 rows (split across both threads)."""
    torch.manual_seed(5)
    x, residual = (torch.randn(300, 576).to(dtype) for _ in range(2))
    weight = torch.randn(576).to(dtype)
    gate_up = torch.randn(300, 2 * 1536).to(dtype) * 4
    route = native_kernels
    rotary = RotaryEmbedding(RopeParameters(theta=100000.0), 64, 4096, dtype, "cpu",
                             kernels=route)
    heads = torch.randn(300, 15, 64).to(dtype)
    cos, sin = rotary.cos_sin(torch.randint(0, 4096, (300,)))
    kernels = {
        "rms_norm": lambda rows: rms_norm(x[rows], weight, 1e-5, kernels=route),
        "fused_add_rms_norm": lambda rows: torch.cat(fused_add_rms_norm(
            x[rows], residual[rows], weight, 1e-5, kernels=route), dim=1),
        "silu_and_mul": lambda rows: silu_and_mul(gate_up[rows], kernels=route),
        "rotary": lambda rows: torch.cat(rotary.apply_qk(
            heads[rows], 9, 3, cos[rows], sin[rows]), dim=1),
    }
    for name, kernel in kernels.items():
        alone = torch.cat([kernel(slice(i, i + 1)) for i in range(300)])
        for rows in (slice(0, 300), slice(7, 23), slice(150, 300)):
            assert torch.equal(kernel(rows), alone[rows]), name


@pytest.mark.parametrize("window_left,soft_cap", [(150, 0.0), (-1, 2.5), (40, 2.5), (0, 0.0)])
def test_decode_attention_with_a_window_and_soft_cap_is_exact_attention(
        window_left, soft_cap, native_kernels):
    """Gemma's per-layer attention in the kernel: rows of one request (a block, ends at
    281..300, three ranges; with window 40 the first range lies wholly before every row's
    window) and a short request attend only to their last window_left + 1 positions, with
    tanh-capped scores, as the float64 formula does; each row's bits are those it gets
    alone."""
    torch.manual_seed(7)
    page_size, num_pages, heads, group, dim = 16, 24, 2, 3, 64
    cache = torch.randn(num_pages, 2, page_size, heads, dim)
    pages = torch.randperm(num_pages).to(torch.int32)
    lens = torch.tensor([*range(281, 301), 7], dtype=torch.int32)
    starts = torch.tensor([0] * 20 + [19], dtype=torch.int32)
    q = torch.randn(len(lens), heads * group, dim) * 3
    scale = 0.1
    out = native_kernels.ops.decode_attention(q, cache, pages, starts, lens, scale,
                                              window_left, soft_cap)
    for r, (length, start) in enumerate(zip(lens.tolist(), starts.tolist())):
        rows = pages[start:start + -(-length // page_size)].long()
        keys = cache[rows, 0].reshape(-1, heads, dim)[:length].double()
        values = cache[rows, 1].reshape(-1, heads, dim)[:length].double()
        scores = torch.einsum("hgd,lhd->hgl", q[r].double().view(heads, group, dim),
                              keys) * scale
        if soft_cap > 0:
            scores = torch.tanh(scores / soft_cap) * soft_cap
        if window_left >= 0:
            scores[..., :max(0, length - 1 - window_left)] = float("-inf")
        expected = torch.einsum("hgl,lhd->hgd", scores.softmax(-1), values).reshape(-1, dim)
        torch.testing.assert_close(out[r].double(), expected, atol=1e-5, rtol=1e-5)
        alone = native_kernels.ops.decode_attention(
            q[r:r + 1], cache, pages, starts[r:r + 1], lens[r:r + 1], scale, window_left,
            soft_cap)
        assert torch.equal(alone[0], out[r]), r


@pytest.mark.parametrize("dtype", DTYPES)
def test_windowed_soft_capped_decode_attention_matches_the_torch_route(dtype, native_kernels):
    """TorchRefBackend built with per-layer attention (window, soft cap, scale): the
    native decode kernel against the torch route's masked, capped attention."""
    from toolkit.attention.base import LayerAttention

    page_size, num_qo_heads, num_kv_heads, head_dim = 16, 8, 2, 64
    requests = [([5], 37, [7, 3, 12]), ([6], 15, [5]), (list(range(20)), 0, [30, 0]),
                ([7], 63, [9, 21, 2, 33])]
    num_tokens = sum(len(tokens) for tokens, _, _ in requests)
    batch = build_forward_batch(requests, page_size)
    q = (torch.randn(num_tokens, num_qo_heads, head_dim) * 3).to(dtype)
    k, v = (torch.randn(num_tokens, num_kv_heads, head_dim).to(dtype) for _ in range(2))
    layer = LayerAttention(window_left=20, logits_soft_cap=3.0, scale=0.09)
    outputs = []
    for kernels in (native_kernels, TORCH):
        backend = _filled_backend(dtype, page_size, num_qo_heads, num_kv_heads, head_dim,
                                  kernels)
        backend = TorchRefBackend(backend.kv_pool, num_qo_heads, num_kv_heads, head_dim,
                                  kernels=kernels, layers=[layer])
        backend.plan(batch)
        outputs.append(backend.forward(0, q, k, v))
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(outputs[0], outputs[1], atol=tolerance, rtol=tolerance)


def _lora_case(num_rows: int, num_slots: int, num_shrink: int, in_features: int,
               out_features: int, dtype: torch.dtype):
    """x [n, K], a [S, Q, K], b [S, N, Q] with LoRA-sized values, and each row's slot."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(num_rows, in_features, generator=generator).to(dtype)
    a = (torch.randn(num_slots, num_shrink, in_features, generator=generator) / 8).to(dtype)
    b = (torch.randn(num_slots, out_features, num_shrink, generator=generator) / 8).to(dtype)
    slots = torch.randint(0, num_slots, (num_rows,), generator=generator)
    return x, a, b, slots


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 3, 8, 32, 48), (33, 16, 24, 576, 960), (1, 1, 16, 65, 7)])
def test_lora_bgmv_matches_its_twin(dtype, shape, native_kernels):
    from toolkit.kernels.lora_bgmv import lora_delta_ref

    x, a, b, slots = _lora_case(*shape, dtype)
    native_out = native_kernels.ops.lora_bgmv(x, a, b.transpose(1, 2).contiguous(), slots)
    _assert_twins_close(native_out, lora_delta_ref(x, a, b, slots))


@pytest.mark.parametrize("dtype", DTYPES)
def test_lora_bgmv_gives_a_row_the_same_bits_alone(dtype, native_kernels):
    x, a, b, slots = _lora_case(40, 5, 16, 96, 80, dtype)
    bt = b.transpose(1, 2).contiguous()
    together = native_kernels.ops.lora_bgmv(x, a, bt, slots)
    for rows in (slice(0, 1), slice(3, 4), slice(5, 21)):
        assert torch.equal(native_kernels.ops.lora_bgmv(x[rows], a, bt, slots[rows]),
                           together[rows])


def test_lora_bgmv_refuses_a_slot_out_of_range(native_kernels):
    x, a, b, slots = _lora_case(4, 2, 8, 16, 16, torch.float32)
    slots[2] = 2
    with pytest.raises(RuntimeError, match="slot 2 of row 2 is not one of the 2 slots"):
        native_kernels.ops.lora_bgmv(x, a, b.transpose(1, 2).contiguous(), slots)

