"""Qwen3-MoE (Qwen3's q/k-normed attention, 4 experts top-2, dense MLPs in
``mlp_only_layers`` and off the ``decoder_sparse_step`` rhythm) vs transformers on tiny
random checkpoints written by save_pretrained: through the real loader and paged KV cache
(prefill whole and chunked, then decode) and through a real engine (greedy generation),
dense and under quant=q4_1."""

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
from moe_parity import assert_experts_loaded, q4_1_reference

from toolkit.compose import compose_config
from toolkit.models.qwen3_moe import Qwen3MoeDecoderLayer, Qwen3MoeForCausalLM

MAX_POSITIONS = 96
VARIANTS = {
    # layer 1 dense (mlp_only_layers), top-k weights renormalized (Qwen3-30B-A3B's setting)
    "mlp_only_layer": dict(decoder_sparse_step=1, mlp_only_layers=[1], norm_topk_prob=True),
    # every 2nd layer sparse (layer 1 only), raw top-k softmax weights
    "sparse_step_2": dict(decoder_sparse_step=2, mlp_only_layers=[], norm_topk_prob=False),
}
SPARSE_LAYERS = {"mlp_only_layer": [0, 2], "sparse_step_2": [1]}


def qwen3_moe_config(**overrides) -> transformers.Qwen3MoeConfig:
    """Three layers, GQA 4/2, head_dim 24 (not hidden / heads), 4 experts of width 32,
    top-2; dense layers 96 wide."""
    fields = dict(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=96,
                  moe_intermediate_size=32, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=24, num_experts=4, num_experts_per_tok=2,
                  max_position_embeddings=MAX_POSITIONS, rms_norm_eps=1e-6,
                  initializer_range=0.05, tie_word_embeddings=False, bos_token_id=1,
                  eos_token_id=2)
    return transformers.Qwen3MoeConfig(**{**fields, **overrides})


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def checkpoint(request, tmp_path_factory) -> tuple[object, pathlib.Path, str]:
    directory = tmp_path_factory.mktemp(f"qwen3_moe_{request.param}")
    hf_model = save_random_checkpoint(qwen3_moe_config(**VARIANTS[request.param]), directory,
                                      head_scale=8.0)
    return hf_model, directory, request.param


def test_loader_builds_sparse_and_dense_layers_with_their_norms(checkpoint):
    hf_model, directory, variant = checkpoint
    model, _ = paged_model(directory)
    assert isinstance(model, Qwen3MoeForCausalLM)
    sparse = [i for i, layer in enumerate(model.layers) if layer.moe is not None]
    assert sparse == SPARSE_LAYERS[variant]
    assert_experts_loaded(model, hf_model)
    dense = model.layers[({0, 1, 2} - set(sparse)).pop()]
    assert dense.gate_up_proj.output_sizes == (96, 96)
    for i, layer in enumerate(model.layers):
        assert torch.equal(layer.k_norm, hf_model.model.layers[i].self_attn.k_norm.weight)
    assert model.layers[sparse[0]].moe.renormalize == VARIANTS[variant]["norm_topk_prob"]


@pytest.mark.parametrize("chunk", [None, 5])
def test_prefill_then_decode_matches_transformers(checkpoint, chunk):
    hf_model, directory, _ = checkpoint
    model, attn = paged_model(directory)
    tokens = torch.randint(3, VOCAB_SIZE, (29,), generator=torch.Generator().manual_seed(1))
    tokens = tokens.tolist()
    ours = paged_prefill_then_decode(model, attn, tokens, prompt_len=21, chunk=chunk)
    expected = reference_logits(hf_model, tokens)[20:]
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=RTOL)


def test_native_kernels_and_a_shared_step(checkpoint, native_kernels):
    """The C++ kernel route, two requests of different lengths in one step."""
    hf_model, directory, _ = checkpoint
    model, attn = paged_model(directory, native_kernels)
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
    hf_model, directory, _ = checkpoint
    prompt = torch.randint(3, VOCAB_SIZE, (27,), generator=torch.Generator().manual_seed(2))
    tokens, resolved = check_engine_parity(hf_model, directory, prompt.tolist(),
                                           max_tokens=10, overrides=scheduler)
    assert len(set(tokens)) > 1
    assert resolved.max_model_len == MAX_POSITIONS  # the checkpoint's own limit


def test_q4_1_generates_what_the_dequantized_twin_generates(checkpoint):
    hf_model, directory, _ = checkpoint
    prompt = torch.randint(3, VOCAB_SIZE, (19,), generator=torch.Generator().manual_seed(3))
    check_engine_parity(q4_1_reference(hf_model), directory, prompt.tolist(), max_tokens=8,
                        overrides=["quant=q4_1"])


def test_model_config_composes_and_names_its_source():
    cfg = compose_config(["model=qwen3_moe"])
    assert cfg.model.source == "hf:Qwen/Qwen3-30B-A3B"
    assert cfg.model.name == "qwen3_moe" and cfg.model.dtype == "bfloat16"


def test_hub_config_names_are_read():
    """Qwen/Qwen3-30B-A3B's config.json says ``num_experts`` (transformers 5 writes
    ``num_local_experts``); its layers are all sparse."""
    config = {"num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768,
              "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": []}
    spec = Qwen3MoeDecoderLayer.moe_spec(config)
    assert (spec.num_experts, spec.top_k, spec.intermediate_size, spec.renormalize) == (
        128, 8, 768, True)
    assert all(Qwen3MoeDecoderLayer.is_sparse(config, i) for i in range(48))
