"""The native decoder stack runs a decode step's layers bit for bit as the layer loop does,
and only the steps it can."""

from __future__ import annotations

import pytest
import torch
from paged_batch import build_forward_batch
from tiny_checkpoint import write_tiny_llama

from toolkit.attention.torch_ref import TorchRefBackend
from toolkit.config.schema import QuantConfig
from toolkit.kernels.route import TORCH
from toolkit.kv.cache_pool import KVCachePool
from toolkit.models.loader import load_model

HEADS, KV_HEADS, HEAD_DIM, PAGE_SIZE = 4, 2, 32, 4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random 3-layer Llama whose projections fit torch's int4 layout (N % 64 == 0)."""
    return write_tiny_llama(tmp_path_factory.mktemp("llama"), vocab_size=96,
                            num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                            hidden_size=HEADS * HEAD_DIM, intermediate_size=256,
                            num_hidden_layers=3)


def _model(checkpoint, kernels, method: str = "q4_1", group_size: int | None = None,
           batch_invariant: bool = False, prepack_weights: bool = True):
    return load_model(checkpoint, torch.bfloat16, "cpu", kernels=kernels,
                      quant=QuantConfig(method=method, group_size=group_size),
                      batch_invariant=batch_invariant, prepack_weights=prepack_weights)


def _attention(model, kernels) -> TorchRefBackend:
    pool = KVCachePool(len(model.layers), num_pages=16, page_size=PAGE_SIZE,
                       num_kv_heads=KV_HEADS, head_dim=HEAD_DIM, dtype=model.dtype)
    return TorchRefBackend(pool, HEADS, KV_HEADS, HEAD_DIM, kernels=kernels)


def _forward(model, attention, batch) -> torch.Tensor:
    attention.plan(batch)
    with torch.no_grad():
        return model(batch.input_ids, batch.positions, attention)  # [T, hidden]


def _decode_rows(lengths: list[int], step: int) -> list[tuple[list[int], int, list[int]]]:
    """One decode token per request, request i on pages 3i+1.. after lengths[i] positions."""
    return [([7 + step + i], length + step, list(range(3 * i + 1, 3 * i + 4)))
            for i, length in enumerate(lengths)]


@pytest.mark.parametrize(("method", "group_size", "batch_invariant", "kernel"), [
    ("q4_1", 32, False, "q4_1"), ("q4_1", 64, False, "int4pack"), ("w8a8", None, False, "w8a8"),
    ("none", None, False, "dense"), ("none", None, True, "dense")])
@pytest.mark.parametrize("num_rows", [1, 3])
def test_decode_steps_equal_the_layer_loop_bit_for_bit(checkpoint, native_kernels, method,
                                                       group_size, batch_invariant, kernel,
                                                       num_rows):
    """Every projection kernel: q4_1's own (groups of 32), torch's int4 one (64), w8a8's
    int8 rows and int32 matmul, oneDNN's packed bfloat16 matmul (batch-invariant: one row
    padded to two, as the loop pads it); at one row and at three."""
    model = _model(checkpoint, native_kernels, method, group_size, batch_invariant)
    proj = model.layers[0].qkv_proj
    assert proj.method.native_projection(proj).kernel == kernel
    stack = model._native_stack()
    assert stack is not None and stack.max_rows >= 3
    ran = []
    run_stack = stack.forward
    stack.forward = lambda *args: ran.append(run_stack(*args)) or ran[-1]
    attention = _attention(model, native_kernels)
    lengths = [5, 9, 2][:num_rows]
    prompts = [(list(range(10, 10 + n)), 0, list(range(3 * i + 1, 3 * i + 4)))
               for i, n in enumerate(lengths)]
    _forward(model, attention, build_forward_batch(prompts, PAGE_SIZE))  # the loop
    for step in range(3):
        batch = build_forward_batch(_decode_rows(lengths, step), PAGE_SIZE)
        attention.plan(batch)
        assert attention.native_decode_step() is not None
        stacked = _forward(model, attention, batch)
        assert ran.pop() is not None  # the stack ran the step
        caches = [cache.clone() for cache in attention.kv_pool.caches]
        model.decoder_stack = None  # the loop, over the same pages
        looped = _forward(model, attention, batch)
        model.decoder_stack = stack
        assert torch.equal(stacked, looped)
        for cache, written in zip(attention.kv_pool.caches, caches):
            assert torch.equal(cache, written)


def test_prefill_and_mixed_steps_take_the_loop(checkpoint, native_kernels):
    model = _model(checkpoint, native_kernels)
    attention = _attention(model, native_kernels)
    attention.plan(build_forward_batch([([3, 4, 5], 0, [1, 2])], PAGE_SIZE))
    assert attention.native_decode_step() is None
    attention.plan(build_forward_batch([([3], 4, [1, 2]), ([5, 6], 0, [3])], PAGE_SIZE))
    assert attention.native_decode_step() is None


def test_no_stack_without_native_projections_or_the_native_route(checkpoint, native_kernels):
    unpacked = _model(checkpoint, native_kernels, method="none", prepack_weights=False)
    assert unpacked._native_stack() is None
    assert _model(checkpoint, TORCH)._native_stack() is None
    assert _attention(_model(checkpoint, TORCH), TORCH).native_decode_step() is None
