"""GGUF name mapping, q/k row order and config building (the SmolLM2 test runs it all)."""

from __future__ import annotations

import pytest
import torch

from toolkit.models.gguf_convert import (
    GGUFConversionError,
    build_hf_config,
    hf_tensor_name,
    unpermute_rotary_rows,
)

SMALL_LLAMA_META = {
    "general.architecture": "llama", "llama.attention.head_count": 4,
    "llama.attention.head_count_kv": 2, "llama.embedding_length": 32,
    "llama.feed_forward_length": 64, "llama.block_count": 2, "llama.context_length": 128,
    "llama.attention.layer_norm_rms_epsilon": 1e-5, "llama.rope.freq_base": 50000.0,
    "llama.vocab_size": 100, "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
}


def _llama_cpp_permute(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """What llama.cpp's converter does to HF q/k rows."""
    half = weight.shape[0] // num_heads // 2
    return weight.reshape(num_heads, 2, half, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


@pytest.mark.parametrize("shape", [(24, 5), (24,)])
def test_unpermute_inverts_llama_cpp_permutation(shape):
    weight = torch.randn(shape)
    assert torch.equal(unpermute_rotary_rows(_llama_cpp_permute(weight, 3), 3), weight)


def test_tensor_names():
    assert hf_tensor_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_tensor_name("blk.11.attn_k.weight") == "model.layers.11.self_attn.k_proj.weight"
    assert hf_tensor_name("blk.0.ffn_norm.weight") == "model.layers.0.post_attention_layernorm.weight"
    assert hf_tensor_name("blk.3.attn_q.bias") == "model.layers.3.self_attn.q_proj.bias"
    with pytest.raises(GGUFConversionError, match="blk.0.ffn_gate_exps.weight"):
        hf_tensor_name("blk.0.ffn_gate_exps.weight")


def test_config_from_metadata():
    config = build_hf_config(SMALL_LLAMA_META, has_output=False)
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_key_value_heads"], config["head_dim"], config["rope_theta"]) == (2, 8, 50000.0)
    assert config["tie_word_embeddings"] is True
    assert build_hf_config(SMALL_LLAMA_META, has_output=True)["tie_word_embeddings"] is False


def test_config_rejects_other_architectures_and_rope_scalings():
    with pytest.raises(GGUFConversionError, match="'qwen3'"):
        build_hf_config({**SMALL_LLAMA_META, "general.architecture": "qwen3"}, has_output=True)
    with pytest.raises(GGUFConversionError, match="'yarn'"):
        build_hf_config({**SMALL_LLAMA_META, "llama.rope.scaling.type": "yarn"}, has_output=True)
