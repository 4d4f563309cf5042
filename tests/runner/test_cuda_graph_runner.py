"""CUDA-graph decode: captured sizes, eligibility and padding (CPU); the runner's static
buffers, planning and slicing against fake FlashInfer wrappers and an eager stand-in for
the graph (CPU); graph replay vs eager logits on real FlashInfer kernels (@gpu)."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest
import torch
import transformers
from paged_batch import build_forward_batch

from toolkit.attention.flashinfer import FlashInferBackend
from toolkit.attention.torch_ref import TorchRefBackend
from toolkit.compose import compose_config
from toolkit.kv.cache_pool import KVCachePool
from toolkit.models.loader import load_model, read_model_info
from toolkit.runner.cuda_graph_runner import (
    PADDING_SLOT,
    SCRATCH_PAGE,
    CudaGraphRunner,
    GraphAttention,
    build_cuda_graph_runner,
    capture_batch_sizes,
    default_batch_sizes,
    empty_batch,
    graph_eligible,
    is_decode_only,
    pad_decode_batch,
    padded_batch_size,
)
from toolkit.runner.model_runner import ModelRunner

PAGE_SIZE = 4
NUM_PAGES = 32
DECODE = [([7], 9, [3, 11, 5]), ([2], 4, [8, 6]), ([40], 0, [20])]
"""(new token, its position, pages): three decode requests."""
PREFIX = [([5, 17, 33, 2, 90, 41, 8, 8, 60], 0, [3, 11, 5]), ([71, 3, 12, 55], 0, [8, 6])]
"""The cached tokens before DECODE (the third request starts at position 0)."""


# --- sizes, eligibility, padding (CPU) ---------------------------------------------------

def test_default_sizes_are_vllm_style_and_end_at_the_maximum():
    assert default_batch_sizes(1) == (1,)
    assert default_batch_sizes(3) == (1, 2, 3)
    assert default_batch_sizes(8) == (1, 2, 4, 8)
    assert default_batch_sizes(30) == (1, 2, 4, 8, 16, 24, 30)
    assert default_batch_sizes(64)[-3:] == (48, 56, 64)


def test_configured_sizes_win_sorted_and_deduplicated():
    assert capture_batch_sizes([16, 1, 4, 4], 64) == (1, 4, 16)
    assert capture_batch_sizes(None, 12) == (1, 2, 4, 8, 12)
    with pytest.raises(ValueError, match="must be sizes >= 1"):
        capture_batch_sizes([0, 2], 8)
    with pytest.raises(ValueError, match="max_cuda_graph_batch_size=0"):
        capture_batch_sizes(None, 0)


def test_a_batch_pads_to_the_smallest_captured_size_that_holds_it():
    sizes = (1, 2, 4, 8)
    assert [padded_batch_size(sizes, n) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, None]


def test_only_decode_only_batches_within_the_sizes_are_eligible():
    decode = build_forward_batch(DECODE, PAGE_SIZE)
    prefill = build_forward_batch(PREFIX, PAGE_SIZE)
    mixed = build_forward_batch([DECODE[0], PREFIX[1]], PAGE_SIZE)
    assert is_decode_only(decode) and not is_decode_only(prefill)
    assert not is_decode_only(mixed) and not is_decode_only(empty_batch(PAGE_SIZE, "cpu"))
    assert graph_eligible(decode, (1, 4)) and not graph_eligible(decode, (1, 2))
    assert not graph_eligible(prefill, (1, 2, 4, 8))


def test_padding_keeps_real_rows_and_points_padding_at_the_scratch_page_read_only():
    batch = build_forward_batch(DECODE, PAGE_SIZE)
    padded = pad_decode_batch(batch, 5)
    assert padded.input_ids.tolist() == [7, 2, 40, 0, 0]
    assert padded.positions.tolist() == [9, 4, 0, 0, 0]
    assert padded.qo_indptr.tolist() == [0, 1, 2, 3, 4, 5]
    assert padded.kv_indptr.tolist() == [0, 3, 5, 6, 7, 8]
    assert padded.kv_indices.tolist() == [3, 11, 5, 8, 6, 20, SCRATCH_PAGE, SCRATCH_PAGE]
    assert padded.kv_last_page_len.tolist() == [2, 1, 1, 1, 1]
    assert padded.slot_mapping.tolist() == batch.slot_mapping.tolist() + [PADDING_SLOT] * 2
    assert torch.equal(padded.logits_indices, batch.logits_indices)
    assert padded.seq_lens().tolist()[3:] == [1, 1]
    for name in ("qo_indptr", "kv_indptr", "kv_indices", "kv_last_page_len"):
        assert getattr(padded, name).dtype == torch.int32
    assert pad_decode_batch(batch, 3) is batch


def test_padding_refuses_prefills_and_smaller_sizes():
    with pytest.raises(ValueError, match="cannot pad"):
        pad_decode_batch(build_forward_batch(PREFIX, PAGE_SIZE), 8)
    with pytest.raises(ValueError, match="cannot pad"):
        pad_decode_batch(build_forward_batch(DECODE, PAGE_SIZE), 2)


def test_a_capture_batch_is_all_padding():
    batch = pad_decode_batch(empty_batch(PAGE_SIZE, "cpu"), 3)
    assert batch.num_requests == batch.num_tokens == 3
    assert batch.slot_mapping.tolist() == [PADDING_SLOT] * 3
    assert batch.kv_indptr.tolist() == [0, 1, 2, 3]


def test_runner_config_composes_and_resolves():
    cfg = compose_config([])
    assert cfg.runner.cuda_graphs and cfg.runner.cuda_graph_batch_sizes is None
    cfg = compose_config(["runner.cuda_graphs=false", "runner.cuda_graph_batch_sizes=[1,2,8]",
                          "runner.max_cuda_graph_batch_size=8"])
    assert not cfg.runner.cuda_graphs
    assert capture_batch_sizes(cfg.runner.cuda_graph_batch_sizes, 8) == (1, 2, 8)


# --- the runner against fake FlashInfer wrappers (CPU) -----------------------------------

def _paged_decode(q, cache, kv_indptr, kv_indices, last_page_len, sm_scale):
    """FlashInfer's documented decode: request i's one query attends to its
    (num_pages - 1) * P + last_page_len positions in pages kv_indices[kv_indptr[i]:...]."""
    page_size, num_kv_heads, head_dim = cache.shape[2], cache.shape[3], cache.shape[4]
    out = torch.empty_like(q)  # [B, Hq, D]
    for i in range(len(last_page_len)):
        pages = kv_indices[int(kv_indptr[i]):int(kv_indptr[i + 1])].long()
        kv_len = (len(pages) - 1) * page_size + int(last_page_len[i])
        keys = cache[pages, 0].reshape(-1, num_kv_heads, head_dim)[:kv_len].float()
        values = cache[pages, 1].reshape(-1, num_kv_heads, head_dim)[:kv_len].float()
        group = q.shape[1] // num_kv_heads
        keys, values = keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1)
        scores = torch.einsum("hd,khd->hk", q[i].float(), keys) * sm_scale
        out[i] = torch.einsum("hk,khd->hd", scores.softmax(-1), values).to(q.dtype)
    return out


class _FakeDecodeWrapper:
    """A decode wrapper: plan keeps the page table, run attends over it. With static
    buffers (use_cuda_graph=True) plan copies into them, as FlashInfer does, and run reads
    only the buffers: what a replayed graph sees."""

    def __init__(self, indptr=None, indices=None, last_page_len=None) -> None:
        self.buffers = (indptr, indices, last_page_len)
        self.num_runs = 0

    def plan(self, indptr, indices, last_page_len, num_qo_heads, num_kv_heads, head_dim,
             page_size, *, sm_scale=None, q_data_type="float16", kv_data_type=None):
        assert indptr.dtype == indices.dtype == last_page_len.dtype == torch.int32
        self.sm_scale = sm_scale
        if self.buffers[0] is None:
            self.table = (indptr, indices, last_page_len)
            return
        indptr_buf, indices_buf, last_page_len_buf = self.buffers
        assert len(last_page_len) == len(last_page_len_buf), "the batch size is frozen"
        indptr_buf.copy_(indptr)
        last_page_len_buf.copy_(last_page_len)
        indices_buf[:len(indices)].copy_(indices)
        self.table = self.buffers

    def run(self, q, paged_kv_cache):
        self.num_runs += 1
        return _paged_decode(q, paged_kv_cache, *self.table, self.sm_scale)


class _FakeGraphBackend(FlashInferBackend):
    """The real backend's planning with fake wrappers, so that it runs on CPU."""

    def _create_wrappers(self):
        return _FakeDecodeWrapper(), None

    def _create_graph_wrapper(self, indptr, indices, last_page_len):
        return _FakeDecodeWrapper(indptr, indices, last_page_len)


class _EagerGraphRunner(CudaGraphRunner):
    """A 'graph' that re-runs the captured forward on the static inputs and copies the
    result into the static output: the replay contract, without CUDA."""

    def _capture_graph(self, forward, pool):
        output = forward()
        self.num_replays = 0

        def replay() -> None:
            self.num_replays += 1
            output.copy_(forward())

        return replay, output


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory) -> pathlib.Path:
    """A random 2-layer Llama with head_dim 64 (a FlashInfer size), saved once."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny_llama_graphs")
    config = transformers.LlamaConfig(
        vocab_size=96, hidden_size=128, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
        rms_norm_eps=1e-5)
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def _model_and_pool(model_dir: pathlib.Path, dtype: torch.dtype, device: str):
    model = load_model(model_dir, dtype, device)
    info = read_model_info(model_dir)
    pool = KVCachePool(info.num_layers, NUM_PAGES, PAGE_SIZE, info.num_kv_heads, info.head_dim,
                       dtype, device)
    return model, info, pool


def _to(batch, device: str):
    """kv_indices, slots, ids and positions on ``device`` (CSR offsets stay on the CPU)."""
    return dataclasses.replace(
        batch, input_ids=batch.input_ids.to(device), positions=batch.positions.to(device),
        kv_indices=batch.kv_indices.to(device), slot_mapping=batch.slot_mapping.to(device),
        logits_indices=batch.logits_indices.to(device))


def _prefill(model, backend, device: str) -> None:
    """Cache PREFIX's K/V: an eager step (prefill goes through torch_ref-equivalent math)."""
    batch = _to(build_forward_batch(PREFIX, PAGE_SIZE), device)
    backend.plan(batch)
    model(batch.input_ids, batch.positions, backend)


def test_runner_replays_padded_decodes_like_eager_and_writes_only_real_slots(tiny_llama_dir):
    dtype = torch.bfloat16
    model, info, eager_pool = _model_and_pool(tiny_llama_dir, dtype, "cpu")
    graph_pool = KVCachePool(info.num_layers, NUM_PAGES, PAGE_SIZE, info.num_kv_heads,
                             info.head_dim, dtype)
    args = (info.num_qo_heads, info.num_kv_heads, info.head_dim)
    eager = _FakeGraphBackend(eager_pool, *args)
    graphed = _FakeGraphBackend(graph_pool, *args)
    prefix_attn = TorchRefBackend(eager_pool, *args)
    with torch.inference_mode():
        _prefill(model, prefix_attn, "cpu")
        for eager_cache, graph_cache in zip(eager_pool.caches, graph_pool.caches, strict=True):
            graph_cache.copy_(eager_cache)
        runner = _EagerGraphRunner(model, graphed, (1, 2, 4), max_num_pages_per_request=4,
                                   page_size=PAGE_SIZE, device="cpu")
        untouched = [cache.clone() for cache in graph_pool.caches]
        runner.capture()
        assert runner.captured_batch_sizes == (1, 2, 4)
        assert all(torch.equal(a, b) for a, b in zip(untouched, graph_pool.caches, strict=True))
        batch = build_forward_batch(DECODE, PAGE_SIZE)
        assert runner.can_run(batch)
        got = runner.run(batch)  # [3, hidden], replayed at size 4
        eager.plan(batch)
        want = model(batch.input_ids, batch.positions, eager)
    assert runner.num_replays == 1 and got.shape == want.shape
    torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)
    for eager_cache, graph_cache in zip(eager_pool.caches, graph_pool.caches, strict=True):
        assert torch.equal(eager_cache, graph_cache)  # padding rows wrote nothing
    assert graphed._wrapper is graphed._graph_wrappers[4]


def test_model_runner_replays_decodes_and_runs_other_steps_eagerly(tiny_llama_dir):
    model, info, pool = _model_and_pool(tiny_llama_dir, torch.bfloat16, "cpu")
    backend = _FakeGraphBackend(pool, info.num_qo_heads, info.num_kv_heads, info.head_dim)
    graph_runner = _EagerGraphRunner(model, backend, (4,), 4, PAGE_SIZE, "cpu")
    with torch.inference_mode():
        graph_runner.capture()
    runner = ModelRunner(model, backend, PAGE_SIZE, "cpu", graph_runner=graph_runner)
    with torch.inference_mode():
        runner._forward(build_forward_batch(DECODE, PAGE_SIZE))
        assert graph_runner.num_replays == 1
        runner._forward(build_forward_batch(DECODE * 2, PAGE_SIZE))  # 6 > 4: eager
        assert graph_runner.num_replays == 1
        assert backend._wrapper is backend._decode


def test_backends_without_graph_support_get_no_runner(tiny_llama_dir):
    model, info, pool = _model_and_pool(tiny_llama_dir, torch.float32, "cpu")
    torch_ref = TorchRefBackend(pool, info.num_qo_heads, info.num_kv_heads, info.head_dim)
    assert not isinstance(torch_ref, GraphAttention)
    assert build_cuda_graph_runner(model, torch_ref, (1, 2), 64, PAGE_SIZE, "cpu") is None
    with pytest.raises(TypeError, match="TorchRefBackend cannot be captured"):
        CudaGraphRunner(model, torch_ref, (1, 2), 16, PAGE_SIZE, "cpu")


# --- graph replay vs eager on real kernels (GPU) ------------------------------------------

@pytest.mark.gpu
def test_graph_replay_matches_eager_logits_on_cuda(tiny_llama_dir):
    pytest.importorskip("flashinfer")
    from toolkit.attention.registry import ATTENTION_BACKENDS

    backend_cls = ATTENTION_BACKENDS.get("flashinfer")
    model, info, pool = _model_and_pool(tiny_llama_dir, torch.bfloat16, "cuda")
    args = (info.num_qo_heads, info.num_kv_heads, info.head_dim)
    attn = backend_cls(pool, *args)
    with torch.inference_mode():
        _prefill(model, attn, "cuda")
        graph_runner = build_cuda_graph_runner(model, attn, (1, 2, 4, 8), 64, PAGE_SIZE, "cuda")
        assert graph_runner is not None and graph_runner.captured_batch_sizes == (1, 2, 4, 8)
        before = [cache.clone() for cache in pool.caches]
        batch = _to(build_forward_batch(DECODE, PAGE_SIZE), "cuda")
        got = model.compute_logits(graph_runner.run(batch)[batch.logits_indices])
        after_graph = [cache.clone() for cache in pool.caches]
        for cache, saved in zip(pool.caches, before, strict=True):
            cache.copy_(saved)
        attn.plan(batch)
        hidden = model(batch.input_ids, batch.positions, attn)
        want = model.compute_logits(hidden[batch.logits_indices])
        torch.cuda.synchronize()
    torch.testing.assert_close(got, want, atol=3e-2, rtol=3e-2)
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    for graph_cache, eager_cache in zip(after_graph, pool.caches, strict=True):
        assert torch.equal(graph_cache, eager_cache)  # padding rows wrote nothing
