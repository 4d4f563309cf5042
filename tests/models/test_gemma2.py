"""Gemma 2 (scaled embeddings, (1 + w) sandwich norms, GELU-tanh MLP, query_pre_attn_scalar,
soft-capped attention and final logits, alternating 6-position sliding-window and global
layers) vs transformers on a tiny random checkpoint: through the loader and paged KV cache,
prefill whole and chunked, and through a real engine."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest
import torch
import transformers
from arch_parity import (
    ATOL,
    RTOL,
    VOCAB_SIZE,
    build_engine,
    check_engine_parity,
    engine_greedy,
    hf_greedy,
    paged_prefill_then_decode,
    reference_logits,
    step_logits,
)
from gemma_parity import PROMPT_LEN, SHAPE, paged_gemma, rewrite_config, save_gemma

from toolkit.attention.base import LayerAttention
from toolkit.kernels.route import TORCH
from toolkit.models.gemma2 import Gemma2ForCausalLM
from toolkit.models.loader import read_model_info


def gemma2_config(**overrides) -> transformers.Gemma2Config:
    """Four layers (sliding, global, sliding, global), soft caps small enough to bite."""
    fields = dict(SHAPE, num_hidden_layers=4, attn_logit_softcapping=2.0,
                  final_logit_softcapping=3.0)
    return transformers.Gemma2Config(**{**fields, **overrides})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[object, pathlib.Path]:
    directory = tmp_path_factory.mktemp("gemma2")
    return save_gemma(gemma2_config(), directory), directory


@pytest.fixture(params=["native", "torch"])
def kernels(request):
    return request.getfixturevalue("native_kernels") if request.param == "native" else TORCH


def _tokens(length: int, seed: int = 1) -> list[int]:
    return torch.randint(3, VOCAB_SIZE, (length,),
                         generator=torch.Generator().manual_seed(seed)).tolist()


def test_loader_builds_gemma2_with_its_layer_kinds(checkpoint):
    hf_model, directory = checkpoint
    model, attn = paged_gemma(directory)
    assert isinstance(model, Gemma2ForCausalLM) and model.tie_word_embeddings
    sliding = LayerAttention(window_left=5, logits_soft_cap=2.0, scale=24**-0.5)
    full = dataclasses.replace(sliding, window_left=-1)
    assert model.attention_layers == (sliding, full, sliding, full) == attn.layers
    assert model.final_logit_soft_cap == 3.0
    expected = hf_model.model.layers[1].pre_feedforward_layernorm.weight
    assert torch.equal(model.layers[1].pre_feedforward_layernorm, expected)
    assert torch.equal(model.layers[1].norm_scales["pre_feedforward_layernorm"], 1 + expected)
    info = read_model_info(directory)
    assert (info.sliding_window, info.context_window) == (6, None)  # windows cap nothing


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
    first, second, third = _tokens(15, 2), _tokens(4, 3), _tokens(11, 4)
    step_logits(model, attn, [(first[:12], 0, [4, 12, 7, 9]), (third[:10], 0, [30, 31, 32])])
    logits = step_logits(model, attn, [(first[12:], 12, [4, 12, 7, 9]), (second, 0, [20]),
                                       (third[10:], 10, [30, 31, 32])])
    expected = [reference_logits(hf_model, seq)[-1] for seq in (first, second, third)]
    torch.testing.assert_close(logits, torch.stack(expected), atol=ATOL, rtol=RTOL)


def test_windows_and_soft_caps_are_live(checkpoint):
    """The parity above cannot pass by accident: without the windows, or without the
    soft caps, the logits leave transformers'."""
    hf_model, directory = checkpoint
    tokens = _tokens(PROMPT_LEN + 4)
    expected = reference_logits(hf_model, tokens)[PROMPT_LEN - 1:]
    model, _ = paged_gemma(directory)
    variants = {
        "no windows": [dataclasses.replace(x, window_left=-1) for x in model.attention_layers],
        "no attention cap": [dataclasses.replace(x, logits_soft_cap=0.0)
                             for x in model.attention_layers],
    }
    for name, layers in variants.items():
        model, attn = paged_gemma(directory, layers=layers)
        ours = paged_prefill_then_decode(model, attn, tokens, prompt_len=PROMPT_LEN)
        assert (ours - expected).abs().max() > 1e-2, name
    model, attn = paged_gemma(directory)
    model.final_logit_soft_cap = 0.0
    ours = paged_prefill_then_decode(model, attn, tokens, prompt_len=PROMPT_LEN)
    assert (ours - expected).abs().max() > 1e-2, "no final cap"


def test_a_checkpoint_without_layer_types_alternates_from_a_sliding_layer(checkpoint,
                                                                          tmp_path):
    """google/gemma-2-2b-it's config.json predates ``layer_types`` and names the
    activation twice; the default pattern is transformers' (sliding first)."""
    hf_model, directory = checkpoint
    for name in directory.iterdir():
        (tmp_path / name.name).write_bytes(name.read_bytes())
    rewrite_config(tmp_path, layer_types=None, hidden_act="gelu_pytorch_tanh",
                   tie_word_embeddings=None)
    model, attn = paged_gemma(tmp_path)
    assert [x.window_left for x in model.attention_layers] == [5, -1, 5, -1]
    tokens = _tokens(PROMPT_LEN + 2)
    ours = paged_prefill_then_decode(model, attn, tokens, prompt_len=PROMPT_LEN, chunk=7)
    expected = reference_logits(hf_model, tokens)[PROMPT_LEN - 1:]
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=RTOL)


def test_bfloat16_stays_close_to_float32(checkpoint):
    hf_model, directory = checkpoint
    tokens = _tokens(PROMPT_LEN + 3)
    model, attn = paged_gemma(directory, dtype=torch.bfloat16)
    ours = paged_prefill_then_decode(model, attn, tokens, prompt_len=PROMPT_LEN)
    expected = reference_logits(hf_model, tokens)[PROMPT_LEN - 1:]
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, atol=0.15, rtol=0.05)
    assert (ours.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.75


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


def test_the_engine_builds_its_attention_with_the_layers_and_stays_deterministic(checkpoint):
    """build_runtime hands the model's per-layer attention to the backend, and the
    batch-invariant route (device.deterministic, native kernels) takes Gemma's layers."""
    hf_model, directory = checkpoint
    runtime = build_engine(directory, ["device.cpu_kernels=native"])
    try:
        attention = runtime.core.runner.attention
        assert attention.layers == runtime.core.runner.model.attention_layers
        assert runtime.resolved.deterministic and attention.batch_invariant
        prompt = _tokens(19, 6)
        tokens, _, _ = engine_greedy(runtime, prompt, max_tokens=6)
    finally:
        runtime.core.guided.close()
    assert tokens == hf_greedy(hf_model, prompt, 6)


def test_embeddings_keep_the_layers_windows(checkpoint):
    """The Embedder's scratch backend copies the live one's per-layer attention: a
    prompt longer than the window pools transformers' final hidden state."""
    from toolkit.runner.embedder import Embedder

    hf_model, directory = checkpoint
    model, attn = paged_gemma(directory)
    prompt = _tokens(PROMPT_LEN, 7)
    ours = Embedder(model, attn, 4, "cpu").embed([prompt], "last", normalize=False)
    with torch.no_grad():
        expected = hf_model.model(torch.tensor([prompt])).last_hidden_state[0, -1]
    torch.testing.assert_close(torch.tensor(ours[0]), expected, atol=ATOL, rtol=RTOL)
