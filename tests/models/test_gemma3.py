"""Gemma 3's text model (Gemma 2's layers plus per-head q/k norms, sliding layers two in
three here with their own rope base, global layers on rope_theta) vs transformers on a
tiny random checkpoint: through the loader and paged KV cache, prefill whole and chunked,
from both config.json spellings, and through a real engine."""

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
    paged_prefill_then_decode,
    reference_logits,
    step_logits,
)
from gemma_parity import PROMPT_LEN, SHAPE, paged_gemma, rewrite_config, save_gemma

from toolkit.attention.base import LayerAttention
from toolkit.kernels.route import TORCH
from toolkit.models.gemma3 import Gemma3ForCausalLM
from toolkit.models.loader import read_model_info

LOCAL_THETA, GLOBAL_THETA = 100.0, 10000.0


def gemma3_config(**overrides) -> transformers.Gemma3TextConfig:
    """Four layers: sliding, sliding, global, sliding (pattern 3); a final soft cap (the
    real checkpoints have none, the code path is there); attn_logit_softcapping set,
    which transformers' Gemma 3 never applies."""
    fields = dict(SHAPE, num_hidden_layers=4, sliding_window_pattern=3,
                  rope_local_base_freq=LOCAL_THETA, rope_theta=GLOBAL_THETA,
                  final_logit_softcapping=3.0, attn_logit_softcapping=2.0)
    return transformers.Gemma3TextConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[object, pathlib.Path]:
    directory = tmp_path_factory.mktemp("gemma3")
    return save_gemma(gemma3_config(), directory), directory


@pytest.fixture(params=["native", "torch"])
def kernels(request):
    return request.getfixturevalue("native_kernels") if request.param == "native" else TORCH


def _tokens(length: int, seed: int = 1) -> list[int]:
    return torch.randint(3, VOCAB_SIZE, (length,),
                         generator=torch.Generator().manual_seed(seed)).tolist()


def test_loader_builds_gemma3_with_its_norms_and_rotations(checkpoint):
    hf_model, directory = checkpoint
    model, attn = paged_gemma(directory)
    assert isinstance(model, Gemma3ForCausalLM)
    sliding, full = LayerAttention(5, 0.0, 24**-0.5), LayerAttention(-1, 0.0, 24**-0.5)
    assert model.attention_layers == (sliding, sliding, full, sliding) == attn.layers
    expected = hf_model.model.layers[2].self_attn.k_norm.weight
    assert torch.equal(model.layers[2].k_norm, expected)
    assert torch.equal(model.layers[2].norm_scales["self_attn.k_norm"], 1 + expected)
    global_angle, local_angle = model.rotary.cos_half[1, 1], model.local_rotary.cos_half[1, 1]
    assert global_angle == pytest.approx(torch.cos(torch.tensor(GLOBAL_THETA ** (-2 / 16))))
    assert local_angle == pytest.approx(torch.cos(torch.tensor(LOCAL_THETA ** (-2 / 16))))
    assert read_model_info(directory).context_window is None


@pytest.mark.parametrize("chunk", [None, 5])
def test_prefill_then_decode_matches_transformers(checkpoint, kernels, chunk):
    hf_model, directory = checkpoint
    model, attn = paged_gemma(directory, kernels)
    tokens = _tokens(PROMPT_LEN + 8)
    ours = paged_prefill_then_decode(model, attn, tokens, prompt_len=PROMPT_LEN, chunk=chunk)
    expected = reference_logits(hf_model, tokens)[PROMPT_LEN - 1:]
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=RTOL)


def test_requests_of_different_lengths_share_a_step(checkpoint, kernels):
    hf_model, directory = checkpoint
    model, attn = paged_gemma(directory, kernels)
    first, second = _tokens(15, 2), _tokens(4, 3)
    step_logits(model, attn, [(first[:12], 0, [4, 12, 7, 9])])
    logits = step_logits(model, attn, [(first[12:], 12, [4, 12, 7, 9]), (second, 0, [20])])
    expected = [reference_logits(hf_model, seq)[-1] for seq in (first, second)]
    torch.testing.assert_close(logits, torch.stack(expected), atol=ATOL, rtol=RTOL)


def test_the_local_rope_base_and_the_windows_are_live(checkpoint):
    """Rotating the sliding layers with the global base, or dropping their windows,
    leaves transformers' logits: the parity above depends on both."""
    hf_model, directory = checkpoint
    tokens = _tokens(PROMPT_LEN + 3)
    expected = reference_logits(hf_model, tokens)[PROMPT_LEN - 1:]
    model, attn = paged_gemma(directory)
    model.local_rotary = model.rotary
    ours = paged_prefill_then_decode(model, attn, tokens, prompt_len=PROMPT_LEN)
    assert (ours - expected).abs().max() > 1e-2
    model, attn = paged_gemma(directory, layers=[LayerAttention(scale=24**-0.5)] * 4)
    ours = paged_prefill_then_decode(model, attn, tokens, prompt_len=PROMPT_LEN)
    assert (ours - expected).abs().max() > 1e-2


def test_the_classic_config_spelling_loads_alike(checkpoint, tmp_path):
    """google/gemma-3-1b-it's config.json: rope_theta, rope_local_base_freq,
    sliding_window_pattern, no layer_types nor per-layer-type rope_parameters."""
    hf_model, directory = checkpoint
    for name in directory.iterdir():
        (tmp_path / name.name).write_bytes(name.read_bytes())
    rewrite_config(tmp_path, layer_types=None, rope_parameters=None, rope_scaling=None,
                   rope_theta=GLOBAL_THETA, rope_local_base_freq=LOCAL_THETA,
                   sliding_window_pattern=3, hidden_act="gelu_pytorch_tanh")
    model, attn = paged_gemma(tmp_path)
    assert [x.window_left for x in model.attention_layers] == [5, 5, -1, 5]
    tokens = _tokens(PROMPT_LEN + 2)
    ours = paged_prefill_then_decode(model, attn, tokens, prompt_len=PROMPT_LEN, chunk=6)
    expected = reference_logits(hf_model, tokens)[PROMPT_LEN - 1:]
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("scheduler", [
    ["scheduler.max_num_batched_tokens=2048"],  # the whole prompt in one step
    ["scheduler.max_num_batched_tokens=8"],  # prefill in chunks of <= 8 tokens
], ids=["whole_prefill", "chunked_prefill"])
def test_engine_generates_what_transformers_generates(checkpoint, scheduler):
    hf_model, directory = checkpoint
    tokens, resolved = check_engine_parity(hf_model, directory, _tokens(27, 5),
                                           max_tokens=10, overrides=scheduler)
    assert len(set(tokens)) > 1
    assert resolved.max_model_len == SHAPE["max_position_embeddings"]  # not the window
