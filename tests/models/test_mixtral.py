"""Mixtral (4 experts, top-2, in every layer) vs transformers on a tiny random checkpoint
written by save_pretrained: through the real loader and paged KV cache (prefill whole and
chunked, then decode), through a real engine (greedy generation), dense and under
quant=q4_1; quant methods that cannot hold experts are refused at load."""

from __future__ import annotations

import os
import pathlib

import pytest
import torch
import transformers
from arch_parity import (
    ATOL,
    PAGE_SIZE,
    RTOL,
    VOCAB_SIZE,
    check_engine_parity,
    paged_model,
    paged_prefill_then_decode,
    reference_logits,
    save_random_checkpoint,
    step_logits,
)
from moe_parity import assert_experts_loaded, q4_1_reference

from toolkit.attention.torch_ref import TorchRefBackend
from toolkit.compose import compose_config
from toolkit.config.schema import QuantConfig
from toolkit.kernels.dispatch import forced_triton
from toolkit.kernels.route import TORCH
from toolkit.kv.cache_pool import KVCachePool
from toolkit.layers.linear import MAX_INVARIANT_ROWS
from toolkit.models.loader import load_model, read_model_info
from toolkit.models.mixtral import MixtralForCausalLM
from toolkit.quant.base import ModelLoadError

MAX_POSITIONS = 96


def mixtral_config(**overrides) -> transformers.MixtralConfig:
    """Two layers, GQA 4/2, 4 experts of width 32 (a Q4_1 group multiple), top-2."""
    fields = dict(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=32,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  num_local_experts=4, num_experts_per_tok=2,
                  max_position_embeddings=MAX_POSITIONS, rms_norm_eps=1e-5,
                  initializer_range=0.05, tie_word_embeddings=False, bos_token_id=1,
                  eos_token_id=2)
    return transformers.MixtralConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[object, pathlib.Path]:
    directory = tmp_path_factory.mktemp("mixtral")
    return save_random_checkpoint(mixtral_config(), directory, head_scale=8.0), directory


@pytest.fixture(params=["native", "torch"])
def kernels(request):
    return request.getfixturevalue("native_kernels") if request.param == "native" else TORCH


def test_checkpoint_holds_per_expert_names_and_the_loader_fuses_them(checkpoint):
    hf_model, directory = checkpoint
    from safetensors import safe_open

    with safe_open(str(directory / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert {"model.layers.1.block_sparse_moe.gate.weight",
            "model.layers.1.block_sparse_moe.experts.3.w1.weight",
            "model.layers.1.block_sparse_moe.experts.3.w2.weight",
            "model.layers.1.block_sparse_moe.experts.3.w3.weight"} <= names
    model, _ = paged_model(directory)
    assert isinstance(model, MixtralForCausalLM)
    assert_experts_loaded(model, hf_model)


@pytest.mark.parametrize("chunk", [None, 5])
def test_prefill_then_decode_matches_transformers(checkpoint, kernels, chunk):
    hf_model, directory = checkpoint
    model, attn = paged_model(directory, kernels)
    tokens = torch.randint(3, VOCAB_SIZE, (29,), generator=torch.Generator().manual_seed(1))
    tokens = tokens.tolist()
    ours = paged_prefill_then_decode(model, attn, tokens, prompt_len=21, chunk=chunk)
    expected = reference_logits(hf_model, tokens)[20:]
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                    reason="forcing Triton on CPU tensors needs the interpreter")
def test_triton_route_matches_transformers(checkpoint):
    """Every kernel of the CUDA route, the fused MoE among them, in the interpreter."""
    hf_model, directory = checkpoint
    model, attn = paged_model(directory)
    tokens = [5, 17, 33, 2, 90, 41, 8, 8, 60, 12, 3]
    with forced_triton():
        ours = paged_prefill_then_decode(model, attn, tokens, prompt_len=8)
    torch.testing.assert_close(ours, reference_logits(hf_model, tokens)[7:], atol=ATOL,
                               rtol=RTOL)


def test_batch_invariant_loading_packs_every_expert(checkpoint):
    """device.deterministic asks for batch-invariant matmuls: each expert gets a packed
    weight, and the start-up check covers the expert shapes (with calls of a fixed
    MAX_INVARIANT_ROWS rows, invariant by construction, it finds nothing)."""
    _, directory = checkpoint
    model = load_model(directory, torch.float32, "cpu", prepack_weights=False,
                       batch_invariant=True)
    if not model.quant_method.batch_invariant:
        pytest.skip("no oneDNN")
    for layer in model.layers:
        experts = layer.moe.experts
        assert all(p is not None for p in experts.packed13 + experts.packed2)
    model.quant_method.invariant_min_rows = MAX_INVARIANT_ROWS
    assert model.batch_variance() is None
    for layer in model.layers:
        layer.moe.experts.packed2 = [None] * 4
    assert model.batch_variance() == "no packed weight"


def test_requests_of_different_lengths_share_a_step(checkpoint):
    hf_model, directory = checkpoint
    model, attn = paged_model(directory)
    first, second = [5, 17, 33, 2, 90, 41, 8, 8, 60], [71, 3, 12, 55]
    step_logits(model, attn, [(first[:6], 0, [4, 12, 7])])
    logits = step_logits(model, attn, [(first[6:], 6, [4, 12, 7]), (second, 0, [20, 1])])
    expected = [reference_logits(hf_model, seq)[-1] for seq in (first, second)]
    torch.testing.assert_close(logits, torch.stack(expected), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("scheduler", [
    ["scheduler.max_num_batched_tokens=2048"],  # the whole prompt in one step
    ["scheduler.max_num_batched_tokens=8"],  # prefill in chunks of <= 8 tokens
], ids=["whole_prefill", "chunked_prefill"])
def test_engine_generates_what_transformers_generates(checkpoint, scheduler):
    hf_model, directory = checkpoint
    prompt = torch.randint(3, VOCAB_SIZE, (27,), generator=torch.Generator().manual_seed(2))
    tokens, resolved = check_engine_parity(hf_model, directory, prompt.tolist(),
                                           max_tokens=10, overrides=scheduler)
    assert len(set(tokens)) > 1
    assert resolved.max_model_len == MAX_POSITIONS  # the checkpoint's own limit


def test_q4_1_experts_generate_what_their_dequantized_twin_generates(checkpoint):
    """quant=q4_1 in float32 runs the dequantized Q4_1 weights of every projection and
    expert: transformers given those weights is the reference."""
    hf_model, directory = checkpoint
    reference = q4_1_reference(hf_model)
    prompt = torch.randint(3, VOCAB_SIZE, (19,), generator=torch.Generator().manual_seed(3))
    check_engine_parity(reference, directory, prompt.tolist(), max_tokens=8,
                        overrides=["quant=q4_1", "scheduler.max_num_batched_tokens=8"])


@pytest.mark.parametrize("method", ["none", "q4_1"])
def test_bfloat16_logits_stay_close_to_the_float32_reference(checkpoint, method):
    """bfloat16 on the CPU: dense experts pre-packed for oneDNN, or Q4_1 experts as int4
    codes only (torch's int4 kernel); the logits stay within bfloat16 error of
    transformers in float32 (given the weights Q4_1 makes of the bfloat16 checkpoint)."""
    hf_model, directory = checkpoint
    reference = q4_1_reference(hf_model, torch.bfloat16) if method == "q4_1" else hf_model
    model = load_model(directory, torch.bfloat16, "cpu", quant=QuantConfig(method=method))
    experts = model.layers[0].moe.experts
    if method == "q4_1" and experts.int4_13 is None:
        pytest.skip("this torch has no int4 CPU kernel")
    info = read_model_info(directory)
    pool = KVCachePool(info.num_layers, num_pages=16, page_size=PAGE_SIZE,
                       num_kv_heads=info.num_kv_heads, head_dim=info.head_dim,
                       dtype=torch.bfloat16)
    attn = TorchRefBackend(pool, info.num_qo_heads, info.num_kv_heads, info.head_dim)
    tokens = [5, 17, 33, 2, 90, 41, 8, 8, 60, 12, 3]
    ours = paged_prefill_then_decode(model, attn, tokens, prompt_len=8)
    expected = reference_logits(reference, tokens)[7:]
    torch.testing.assert_close(ours, expected, atol=0.15, rtol=0.05)


def test_a_method_that_cannot_hold_experts_is_refused_at_load(checkpoint):
    _, directory = checkpoint
    with pytest.raises(ModelLoadError) as error:
        load_model(directory, torch.float32, "cpu", quant=QuantConfig(method="fp8"))
    assert str(error.value) == ("quant=fp8 cannot hold mixture-of-experts weights; methods "
                                "that can: none, q4_1")


def test_model_config_composes_and_names_its_source():
    cfg = compose_config(["model=mixtral"])
    assert cfg.model.source == "hf:mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert cfg.model.name == "mixtral" and cfg.model.dtype == "bfloat16"
