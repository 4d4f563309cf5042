"""Phi-3 / Phi-4 (fused qkv and gate_up in the checkpoint, LongRoPE, partial rotation) vs
transformers on tiny random checkpoints: through the loader and paged KV cache, and
through a real engine. original_max_position_embeddings is 16, so a 27-token prompt
takes LongRoPE's long factors (transformers picks them for a sequence past 16 tokens; our
rotary for a served context past 16) and a context capped at 16 the short ones."""

from __future__ import annotations

import pathlib

import pytest
import torch
import transformers
from arch_parity import (
    ATOL,
    RTOL,
    VOCAB_SIZE,
    check_engine_parity,
    paged_model,
    paged_prefill_then_decode,
    reference_logits,
    save_random_checkpoint,
)
from safetensors.torch import load_file, save_file

from toolkit.kernels.route import TORCH
from toolkit.models.llama import WeightLoadError
from toolkit.models.loader import load_model, read_model_info
from toolkit.models.phi3 import Phi3ForCausalLM

ORIGINAL_MAX = 16
MAX_POSITIONS = 96


def phi3_config(rotary_dim: int = 16, **overrides) -> transformers.Phi3Config:
    """Two layers, GQA 4/2, head_dim 16; LongRoPE over ``rotary_dim`` dims of each head
    (distinct short and long factors), 96 positions from 16 at pre-training."""
    num_factors = rotary_dim // 2
    rope = dict(rope_type="longrope", rope_theta=10000.0,
                short_factor=[1.0 + 0.05 * i for i in range(num_factors)],
                long_factor=[1.0 + 0.9 * i for i in range(num_factors)])
    fields = dict(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=112,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=MAX_POSITIONS,
                  original_max_position_embeddings=ORIGINAL_MAX, rope_scaling=rope,
                  partial_rotary_factor=rotary_dim / 16, rms_norm_eps=1e-5,
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return transformers.Phi3Config(**{**fields, **overrides})


CONFIGS = {
    "phi3_longrope": dict(),  # Phi-3.5-mini's shape: every dimension rotated
    "phi4_mini_partial_tied": dict(rotary_dim=12, tie_word_embeddings=True),  # Phi-4-mini's
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def checkpoint(request, tmp_path_factory) -> tuple[object, pathlib.Path]:
    directory = tmp_path_factory.mktemp(request.param)
    hf_model = save_random_checkpoint(phi3_config(**CONFIGS[request.param]), directory,
                                      head_scale=8.0)
    return hf_model, directory


@pytest.fixture(params=["native", "torch"])
def kernels(request):
    return request.getfixturevalue("native_kernels") if request.param == "native" else TORCH


def _prompt(length: int, seed: int = 1) -> list[int]:
    return torch.randint(3, VOCAB_SIZE, (length,),
                         generator=torch.Generator().manual_seed(seed)).tolist()


def test_loader_splits_the_fused_checkpoint_tensors(checkpoint):
    hf_model, directory = checkpoint
    model, _ = paged_model(directory)
    assert isinstance(model, Phi3ForCausalLM)
    layer, hf_layer = model.layers[0], hf_model.model.layers[0]
    assert layer.qkv_proj.output_sizes == (64, 32, 32)
    assert torch.equal(layer.qkv_proj.weight, hf_layer.self_attn.qkv_proj.weight)
    assert torch.equal(layer.gate_up_proj.weight, hf_layer.mlp.gate_up_proj.weight)
    assert model.rotary.rotary_dim == int(16 * hf_model.config.partial_rotary_factor)


@pytest.mark.parametrize("chunk", [None, 5])
def test_long_context_prefill_then_decode_matches_transformers(checkpoint, kernels, chunk):
    """A 21-token prefill (past 16: long factors) and 8 decodes, chunked or not."""
    hf_model, directory = checkpoint
    model, attn = paged_model(directory, kernels)
    tokens = _prompt(29)
    ours = paged_prefill_then_decode(model, attn, tokens, prompt_len=21, chunk=chunk)
    expected = reference_logits(hf_model, tokens)[20:]
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=RTOL)


def test_context_within_the_original_one_takes_the_short_factors(checkpoint):
    """Served with max_model_len=16, the rotary takes the short factors: transformers'
    logits for a 16-token sequence; the long factors would give others."""
    hf_model, directory = checkpoint
    tokens = _prompt(ORIGINAL_MAX, seed=3)
    expected = reference_logits(hf_model, tokens)[9:]
    short_model, attn = paged_model(directory, max_model_len=ORIGINAL_MAX)
    ours = paged_prefill_then_decode(short_model, attn, tokens, prompt_len=10, chunk=4)
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=RTOL)
    long_model, attn = paged_model(directory)
    other = paged_prefill_then_decode(long_model, attn, tokens, prompt_len=10)
    assert (other - expected).abs().max() > 10 * ATOL  # beyond the tolerance above


@pytest.mark.parametrize("scheduler", [
    ["scheduler.max_num_batched_tokens=2048"],
    ["scheduler.max_num_batched_tokens=8"],
], ids=["whole_prefill", "chunked_prefill"])
def test_engine_generates_what_transformers_generates(checkpoint, scheduler):
    hf_model, directory = checkpoint
    tokens, resolved = check_engine_parity(hf_model, directory, _prompt(27, seed=2),
                                           max_tokens=10, overrides=scheduler)
    assert resolved.max_model_len == MAX_POSITIONS  # past 16: the long factors
    if not hf_model.config.tie_word_embeddings:  # a tied tiny model repeats its last token
        assert len(set(tokens)) > 1


def test_engine_within_the_original_context_matches_transformers(tmp_path):
    """model.max_model_len=16: short factors, as transformers for a 16-token sequence."""
    hf_model = save_random_checkpoint(phi3_config(), tmp_path, head_scale=8.0)
    _, resolved = check_engine_parity(hf_model, tmp_path, _prompt(9, seed=4), max_tokens=7,
                                      overrides=["model.max_model_len=16",
                                                 "scheduler.max_num_batched_tokens=4"])
    assert resolved.max_model_len == ORIGINAL_MAX


def test_sliding_window_on_every_layer_caps_the_context(tmp_path):
    """Phi-3-mini-4k's config slides a window over every layer (transformers masks each
    with it): the context is capped to the window, within which full attention is equal."""
    hf_model = save_random_checkpoint(phi3_config(sliding_window=12), tmp_path)
    info = read_model_info(tmp_path)
    assert (info.sliding_window, info.context_window) == (12, 12)
    model, attn = paged_model(tmp_path, max_model_len=info.context_window)  # short factors
    tokens = _prompt(12, seed=5)
    ours = paged_prefill_then_decode(model, attn, tokens, prompt_len=7, chunk=3)
    torch.testing.assert_close(ours, reference_logits(hf_model, tokens)[6:], atol=ATOL,
                               rtol=RTOL)


def test_a_fused_tensor_of_the_wrong_size_is_a_one_line_error(tmp_path):
    save_random_checkpoint(phi3_config(), tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    name = "model.layers.1.self_attn.qkv_proj.weight"
    weights[name] = weights[name][:-16]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightLoadError, match=rf"^{name}: shape \(112, 64\): 128 rows "
                                              r"expected along dim 0 \(parts \(64, 32, 32\)\)$"):
        load_model(tmp_path, torch.float32, "cpu")
