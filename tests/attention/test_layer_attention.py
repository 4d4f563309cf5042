"""Per-layer attention (base.LayerAttention: sliding window, soft-capped logits, scale) in
TorchRefBackend against dense attention, on both CPU routes; its batch invariance; and
FlashInfer's planning of it against fake wrappers with FlashInfer's documented semantics."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from paged_batch import build_forward_batch

from toolkit.attention.base import LayerAttention, model_attention_layers
from toolkit.attention.flashinfer import FlashInferBackend
from toolkit.attention.registry import ATTENTION_BACKENDS
from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.kv.cache_pool import KVCachePool

PAGE_SIZE = 4
NUM_QO_HEADS, NUM_KV_HEADS, HEAD_DIM = 6, 2, 8
LAYERS = (LayerAttention(scale=0.2),  # a global layer with Gemma's query_pre_attn_scalar
          LayerAttention(window_left=3, logits_soft_cap=2.0, scale=0.2),
          LayerAttention(window_left=0))
STEPS = {
    "decode": [(9, 1, [7, 3, 12]), (4, 1, [5]), (13, 1, [30, 0, 2, 21]), (1, 1, [9])],
    "prefill": [(11, 11, [6, 2, 15])],
    "chunked_prefill": [(14, 5, [3, 19, 8, 1])],
    "mixed": [(10, 3, [2, 9, 4]), (7, 1, [13, 6]), (5, 5, [20, 17]), (12, 1, [1, 0, 5])],
}


@pytest.fixture(params=["native", "torch"])
def kernels(request) -> KernelRoute:
    return request.getfixturevalue("native_kernels") if request.param == "native" else TORCH


def _dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           layer: LayerAttention) -> torch.Tensor:
    """q: [Q, Hq, D] at the last Q of S positions; k, v: [S, Hkv, D] -> [Q, Hq, D], in
    float64: scaled, capped scores, causal and windowed."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,shd->hqs", q.double(), k.double()) * layer.scale
    if layer.logits_soft_cap > 0:
        scores = torch.tanh(scores / layer.logits_soft_cap) * layer.logits_soft_cap
    num_q, seq_len = q.shape[0], k.shape[0]
    query_pos = torch.arange(seq_len - num_q, seq_len)[:, None]
    kv_pos = torch.arange(seq_len)[None, :]
    allowed = kv_pos <= query_pos
    if layer.window_left >= 0:
        allowed &= kv_pos >= query_pos - layer.window_left
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("hqs,shd->qhd", scores.softmax(-1), v.double()).float()


def _batch(requests: list[tuple[int, int, list[int]]]):
    """requests: (seq_len after the step, new tokens, page ids) -> the step's metadata."""
    return build_forward_batch([([0] * qo_len, seq_len - qo_len, pages)
                                for seq_len, qo_len, pages in requests], PAGE_SIZE)


def _run(backend, requests) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Cache each request's prefix on every layer, then one step on every layer ->
    (outputs per layer, dense expectations per layer)."""
    torch.manual_seed(0)
    num_layers = len(backend.layers)
    full_k = [[torch.randn(s, NUM_KV_HEADS, HEAD_DIM) for s, _, _ in requests]
              for _ in range(num_layers)]
    full_v = [[torch.randn(s, NUM_KV_HEADS, HEAD_DIM) for s, _, _ in requests]
              for _ in range(num_layers)]
    queries = [torch.randn(n, NUM_QO_HEADS, HEAD_DIM) * 4 for _, n, _ in requests]
    prefix = [(s - n, s - n, pages) for s, n, pages in requests if s > n]
    cached = [i for i, (s, n, _) in enumerate(requests) if s > n]
    if prefix:
        backend.plan(_batch(prefix))
        for layer in range(num_layers):
            ks = torch.cat([full_k[layer][i][:requests[i][0] - requests[i][1]] for i in cached])
            vs = torch.cat([full_v[layer][i][:requests[i][0] - requests[i][1]] for i in cached])
            backend.forward(layer, torch.randn(ks.shape[0], NUM_QO_HEADS, HEAD_DIM), ks, vs)
    backend.plan(_batch(requests))
    outputs, expected = [], []
    for layer in range(num_layers):
        new_k = torch.cat([k[s - n:] for k, (s, n, _) in zip(full_k[layer], requests)])
        new_v = torch.cat([v[s - n:] for v, (s, n, _) in zip(full_v[layer], requests)])
        outputs.append(backend.forward(layer, torch.cat(queries), new_k, new_v))
        expected.append(torch.cat([
            _dense(q, k, v, backend.layers[layer])
            for q, k, v in zip(queries, full_k[layer], full_v[layer])]))
    return outputs, expected


@pytest.mark.parametrize("step", sorted(STEPS))
def test_windowed_soft_capped_layers_equal_dense_attention(step, kernels):
    pool = KVCachePool(len(LAYERS), 32, PAGE_SIZE, NUM_KV_HEADS, HEAD_DIM, torch.float32)
    backend = ATTENTION_BACKENDS.get("torch_ref")(pool, NUM_QO_HEADS, NUM_KV_HEADS, HEAD_DIM,
                                                  kernels=kernels, layers=LAYERS)
    assert backend.has_layer_variants
    outputs, expected = _run(backend, STEPS[step])
    for out, want in zip(outputs, expected, strict=True):
        torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("requests", [
    [(600, 600, list(range(150)))],  # a long prompt: three query blocks
    [(650, 450, list(range(163))), (300, 1, list(range(170, 245)))],  # a chunk + a decode
], ids=["prefill", "chunk_and_decode"])
def test_long_prefills_attend_block_by_block_over_their_windows(requests):
    """Prefills of windowed, soft-capped layers longer than PREFILL_QUERY_BLOCK: each
    block of queries over just the keys its windows reach, as dense attention."""
    pool = KVCachePool(len(LAYERS), 256, PAGE_SIZE, NUM_KV_HEADS, HEAD_DIM, torch.float32)
    layers = [LAYERS[0], dataclasses.replace(LAYERS[1], window_left=100), LAYERS[2]]
    backend = ATTENTION_BACKENDS.get("torch_ref")(pool, NUM_QO_HEADS, NUM_KV_HEADS, HEAD_DIM,
                                                  layers=layers)
    outputs, expected = _run(backend, requests)
    for out, want in zip(outputs, expected, strict=True):
        torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_the_layer_features_change_the_result():
    """The dense expectation is not blind to the features: without the window and the cap
    the windowed layer's output differs."""
    pool = KVCachePool(len(LAYERS), 32, PAGE_SIZE, NUM_KV_HEADS, HEAD_DIM, torch.float32)
    plain = [LayerAttention(scale=0.2)] * len(LAYERS)
    backend = ATTENTION_BACKENDS.get("torch_ref")(pool, NUM_QO_HEADS, NUM_KV_HEADS, HEAD_DIM,
                                                  layers=plain)
    outputs, _ = _run(backend, STEPS["mixed"])
    backend = ATTENTION_BACKENDS.get("torch_ref")(pool, NUM_QO_HEADS, NUM_KV_HEADS, HEAD_DIM,
                                                  layers=LAYERS)
    _, expected = _run(backend, STEPS["mixed"])
    torch.testing.assert_close(outputs[0], expected[0], atol=1e-5, rtol=1e-5)
    assert (outputs[1] - expected[1]).abs().max() > 0.1


def test_layers_default_to_plain_attention_with_the_backend_scale():
    pool = KVCachePool(2, 4, PAGE_SIZE, NUM_KV_HEADS, HEAD_DIM, torch.float32)
    backend = ATTENTION_BACKENDS.get("torch_ref")(pool, NUM_QO_HEADS, NUM_KV_HEADS, HEAD_DIM)
    assert backend.layers == (LayerAttention(scale=HEAD_DIM**-0.5),) * 2
    assert not backend.has_layer_variants
    scaled = ATTENTION_BACKENDS.get("torch_ref")(pool, NUM_QO_HEADS, NUM_KV_HEADS, HEAD_DIM,
                                                 0.5, layers=[LayerAttention(window_left=2),
                                                              LayerAttention()])
    assert [layer.scale for layer in scaled.layers] == [0.5, 0.5]
    with pytest.raises(ValueError, match="3 layer attention specs for a KV pool of 2 layers"):
        ATTENTION_BACKENDS.get("torch_ref")(pool, NUM_QO_HEADS, NUM_KV_HEADS, HEAD_DIM,
                                            layers=LAYERS)
    assert model_attention_layers(object()) is None


def test_windowed_layers_stay_batch_invariant(native_kernels):
    """A windowed, soft-capped layer on the batch-invariant route: every row has the same
    bits prefilled whole, in chunks, decoded, or beside another request."""
    torch.manual_seed(1)
    seq_len, page_size = 300, 16
    pages = list(range(3, 3 + -(-seq_len // page_size)))
    layer = LayerAttention(window_left=150, logits_soft_cap=5.0, scale=0.15)
    q = torch.randn(seq_len, NUM_QO_HEADS, 64, dtype=torch.bfloat16) * 3
    k, v = (torch.randn(seq_len, NUM_KV_HEADS, 64, dtype=torch.bfloat16) for _ in range(2))

    def steps(cuts: list[int], neighbour: bool) -> torch.Tensor:
        pool = KVCachePool(1, 48, page_size, NUM_KV_HEADS, 64, torch.bfloat16)
        backend = ATTENTION_BACKENDS.get("torch_ref")(pool, NUM_QO_HEADS, NUM_KV_HEADS, 64,
                                                      kernels=native_kernels, layers=[layer])
        assert backend.enable_batch_invariance()
        outputs = []
        for start, end in zip(cuts, cuts[1:]):
            requests = [([0] * (end - start), start, pages)]
            if neighbour:  # a 3-token prefill of its own, after the request's rows
                requests.append(([0] * 3, 0, [1]))
            batch = build_forward_batch(requests, page_size)
            backend.plan(batch)
            parts = [x[start:end] for x in (q, k, v)]
            if neighbour:
                parts = [torch.cat((part, part[:3])) for part in parts]
            outputs.append(backend.forward(0, *parts)[:end - start])
        return torch.cat(outputs)

    whole = steps([0, seq_len], False)
    assert torch.equal(steps([0, 37, 200, seq_len], True), whole)
    assert torch.equal(steps([0, *range(260, seq_len + 1)], False), whole)


# --- FlashInfer's planning (CPU, fake wrappers) ---------------------------------------------

def _fake_attention(q, cache, qo_indptr, kv_indptr, kv_indices, last_page_len,
                    layer: LayerAttention) -> torch.Tensor:
    """FlashInfer's documented paged attention with window_left and logits_soft_cap."""
    page_size, num_kv_heads, head_dim = cache.shape[2], cache.shape[3], cache.shape[4]
    out = torch.empty_like(q)
    for i in range(len(last_page_len)):
        pages = kv_indices[kv_indptr[i]:kv_indptr[i + 1]].long()
        kv_len = (len(pages) - 1) * page_size + int(last_page_len[i])
        keys = cache[pages, 0].reshape(-1, num_kv_heads, head_dim)[:kv_len]
        values = cache[pages, 1].reshape(-1, num_kv_heads, head_dim)[:kv_len]
        rows = slice(int(qo_indptr[i]), int(qo_indptr[i + 1]))
        out[rows] = _dense(q[rows].float(), keys.float(), values.float(), layer).to(q.dtype)
    return out


class _FakeWrapper:
    """plan(...) keeps the table and the plan's sm_scale, window_left, logits_soft_cap;
    run(q, cache) attends as FlashInfer documents."""

    def __init__(self, is_decode: bool) -> None:
        self.is_decode = is_decode
        self.plans: list[LayerAttention] = []
        """How each plan() call said to attend."""

    def plan(self, *table, sm_scale=None, window_left=-1, logits_soft_cap=None,
             causal=False, q_data_type=None, kv_data_type=None):
        assert self.is_decode or causal
        layer = LayerAttention(window_left, logits_soft_cap or 0.0, sm_scale)
        self.plans.append(layer)
        self.table = table if not self.is_decode else (
            torch.arange(len(table[2]) + 1, dtype=torch.int32), *table[:3])
        self.layer = layer

    def run(self, q, cache):
        return _fake_attention(q, cache, *self.table[:4], self.layer)


class _FakeBackend(FlashInferBackend):
    def _create_wrappers(self):
        return _FakeWrapper(True), _FakeWrapper(False)


def _flashinfer_against_torch_ref(make_backend, requests, head_dim: int, device: str):
    """The backend ``make_backend(pool, layers)`` and torch_ref, both built with LAYERS
    (their scale filled in), run the same cached prefixes and step on every layer: equal
    outputs, layer by layer -> the backend."""
    torch.manual_seed(2)
    num_layers = len(LAYERS)
    layers = [dataclasses.replace(layer, scale=layer.scale or head_dim**-0.5)
              for layer in LAYERS]
    pools = [KVCachePool(num_layers, 32, PAGE_SIZE, NUM_KV_HEADS, head_dim, torch.bfloat16,
                         device) for _ in range(2)]
    ref = ATTENTION_BACKENDS.get("torch_ref")(pools[0], NUM_QO_HEADS, NUM_KV_HEADS, head_dim,
                                              layers=layers)
    backend = make_backend(pools[1], layers)
    num_new = sum(n for _, n, _ in requests)
    prefix = [(s - n, s - n, pages) for s, n, pages in requests if s > n]
    num_prefix = sum(s for s, _, _ in prefix)

    def randn(*shape, scale: float = 1.0):
        return (torch.randn(*shape) * scale).bfloat16().to(device)

    prefix_kv = [(randn(num_prefix, NUM_KV_HEADS, head_dim),
                  randn(num_prefix, NUM_KV_HEADS, head_dim)) for _ in range(num_layers)]
    step_qkv = [(randn(num_new, NUM_QO_HEADS, head_dim, scale=4.0),
                 randn(num_new, NUM_KV_HEADS, head_dim), randn(num_new, NUM_KV_HEADS,
                                                               head_dim))
                for _ in range(num_layers)]
    outputs = []
    for attention in (ref, backend):
        if prefix:
            batch = _batch(prefix)
            attention.plan(dataclasses.replace(batch, kv_indices=batch.kv_indices.to(device),
                                               slot_mapping=batch.slot_mapping.to(device)))
            for layer, (k, v) in enumerate(prefix_kv):
                attention.forward(layer, randn(num_prefix, NUM_QO_HEADS, head_dim), k, v)
        batch = _batch(requests)
        attention.plan(dataclasses.replace(batch, kv_indices=batch.kv_indices.to(device),
                                           slot_mapping=batch.slot_mapping.to(device)))
        outputs.append([attention.forward(i, *step_qkv[i]) for i in range(num_layers)])
    for want, got in zip(*outputs, strict=True):
        torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)
    return backend


@pytest.mark.parametrize("step", ["decode", "mixed", "prefill"])
def test_flashinfer_plans_each_kind_of_layer_with_its_window_and_cap(step):
    fake = _flashinfer_against_torch_ref(
        lambda pool, layers: _FakeBackend(pool, NUM_QO_HEADS, NUM_KV_HEADS, 64,
                                          layers=layers),
        STEPS[step], 64, "cpu")
    assert len(fake._group_wrappers) == len(LAYERS)
    is_decode = step == "decode"
    for (decode, prefill), layer in zip(fake._group_wrappers, fake.layers, strict=True):
        planned = decode if is_decode else prefill
        assert planned.plans[-1] == layer


@pytest.mark.gpu
@pytest.mark.parametrize("step", ["decode", "mixed", "prefill"])
@pytest.mark.parametrize("head_dim", [64, 256])  # 256: Gemma's
def test_flashinfer_matches_torch_ref_with_windows_and_soft_caps(step, head_dim):
    pytest.importorskip("flashinfer")
    _flashinfer_against_torch_ref(
        lambda pool, layers: ATTENTION_BACKENDS.get("flashinfer")(
            pool, NUM_QO_HEADS, NUM_KV_HEADS, head_dim, layers=layers),
        STEPS[step], head_dim, "cuda")
