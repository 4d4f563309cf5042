"""Qwen3 (per-head q/k RMSNorm, head_dim from config.json) vs transformers on a tiny random
checkpoint: through the loader and paged KV cache, and through a real engine."""

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
    step_logits,
)

from toolkit.kernels.route import TORCH
from toolkit.models.loader import read_model_info
from toolkit.models.qwen3 import Qwen3ForCausalLM

MAX_POSITIONS = 96


def qwen3_config(**overrides) -> transformers.Qwen3Config:
    """Two layers, GQA 4/2, head_dim 24 (not hidden / heads = 16), untied head."""
    fields = dict(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=112,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=24, max_position_embeddings=MAX_POSITIONS, rms_norm_eps=1e-6,
                  rope_theta=1000000.0, tie_word_embeddings=False, bos_token_id=1,
                  eos_token_id=2)
    return transformers.Qwen3Config(**{**fields, **overrides})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[object, pathlib.Path]:
    directory = tmp_path_factory.mktemp("qwen3")
    return save_random_checkpoint(qwen3_config(), directory, head_scale=8.0), directory


@pytest.fixture(params=["native", "torch"])
def kernels(request):
    return request.getfixturevalue("native_kernels") if request.param == "native" else TORCH


def test_loader_builds_qwen3_with_its_norms(checkpoint):
    hf_model, directory = checkpoint
    model, _ = paged_model(directory)
    assert isinstance(model, Qwen3ForCausalLM)
    layer = model.layers[1]
    assert layer.head_dim == 24 and layer.qkv_proj.output_sizes == (96, 48, 48)
    expected = hf_model.model.layers[1].self_attn.k_norm.weight
    assert torch.equal(layer.k_norm, expected) and not torch.equal(expected, torch.ones(24))
    info = read_model_info(directory)
    assert (info.head_dim, info.max_position_embeddings, info.context_window) == (
        24, MAX_POSITIONS, None)


@pytest.mark.parametrize("chunk", [None, 5])
def test_prefill_then_decode_matches_transformers(checkpoint, kernels, chunk):
    hf_model, directory = checkpoint
    model, attn = paged_model(directory, kernels)
    tokens = torch.randint(3, VOCAB_SIZE, (29,), generator=torch.Generator().manual_seed(1))
    tokens = tokens.tolist()
    ours = paged_prefill_then_decode(model, attn, tokens, prompt_len=21, chunk=chunk)
    expected = reference_logits(hf_model, tokens)[20:]
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=RTOL)


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
