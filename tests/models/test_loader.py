"""Loader errors and ModelInfo, on tiny hand-written checkpoints."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
from safetensors.torch import save_file

from toolkit.models.llama import LlamaForCausalLM, WeightLoadError
from toolkit.models.loader import ModelLoadError, load_model, read_model_info

TINY = {"architectures": ["LlamaForCausalLM"], "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
        "vocab_size": 10, "max_position_embeddings": 16, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True, "eos_token_id": 2}


def _tiny_weights() -> dict[str, torch.Tensor]:
    layer = "model.layers.0."
    return {
        "model.embed_tokens.weight": torch.randn(10, 8), "model.norm.weight": torch.ones(8),
        layer + "input_layernorm.weight": torch.ones(8),
        layer + "post_attention_layernorm.weight": torch.ones(8),
        layer + "self_attn.q_proj.weight": torch.randn(8, 8),
        layer + "self_attn.k_proj.weight": torch.randn(4, 8),
        layer + "self_attn.v_proj.weight": torch.randn(4, 8),
        layer + "self_attn.o_proj.weight": torch.randn(8, 8),
        layer + "mlp.gate_proj.weight": torch.randn(16, 8),
        layer + "mlp.up_proj.weight": torch.randn(16, 8),
        layer + "mlp.down_proj.weight": torch.randn(8, 16),
        layer + "self_attn.rotary_emb.inv_freq": torch.randn(2),
    }


def _write(directory: pathlib.Path, config: dict, weights: dict | None = None) -> pathlib.Path:
    (directory / "config.json").write_text(json.dumps(config))
    if weights is not None:
        save_file(weights, str(directory / "model.safetensors"))
    return directory


def test_loads_and_fuses_projections(tmp_path):
    weights = _tiny_weights()
    model = load_model(_write(tmp_path, TINY, weights), torch.bfloat16, "cpu")
    layer = model.layers[0]
    qkv = layer.qkv_proj.weight
    assert qkv.dtype == torch.bfloat16 and qkv.shape == (16, 8)
    assert torch.equal(qkv[8:12].float(),
                       weights["model.layers.0.self_attn.k_proj.weight"].bfloat16().float())
    assert torch.equal(layer.gate_up_proj.weight[16:].float(),
                       weights["model.layers.0.mlp.up_proj.weight"].bfloat16().float())
    assert model.lm_head is model.embed_tokens


def test_unsupported_architecture_lists_supported_ones(tmp_path):
    _write(tmp_path, {**TINY, "architectures": ["GPT2LMHeadModel"]}, _tiny_weights())
    from toolkit.models.registry import MODEL_ARCHITECTURES

    supported = ", ".join(MODEL_ARCHITECTURES.names())
    assert "LlamaForCausalLM, MistralForCausalLM" in supported
    with pytest.raises(ModelLoadError, match=f"supported: {supported}$"):
        load_model(tmp_path, torch.float32, "cpu")


def test_refuses_non_safetensors_weights(tmp_path):
    _write(tmp_path, TINY)
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="only safetensors.*model.allow_pickle=true"):
        load_model(tmp_path, torch.float32, "cpu")


def test_pickle_checkpoints_load_only_when_allowed(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    weights = _tiny_weights()
    torch.save(weights, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="only safetensors"):
        load_model(tmp_path, torch.float32, "cpu")
    model = load_model(tmp_path, torch.float32, "cpu", allow_pickle=True)
    assert torch.equal(model.embed_tokens, weights["model.embed_tokens.weight"])


def test_missing_and_unexpected_weights_are_named():
    model = LlamaForCausalLM(TINY)
    weights = _tiny_weights()
    del weights["model.layers.0.mlp.up_proj.weight"]
    with pytest.raises(WeightLoadError, match="mlp.up_proj.weight"):
        model.load_weights(weights.items())
    with pytest.raises(WeightLoadError, match="unexpected weight 'model.layers.0.extra.weight'"):
        model.load_weights([*_tiny_weights().items(), ("model.layers.0.extra.weight", torch.ones(1))])
    with pytest.raises(WeightLoadError, match="shape \\(3,\\), expected \\(8,\\)"):
        model.load_weights([("model.norm.weight", torch.ones(3))])


def test_model_info_merges_eos_ids(tmp_path):
    _write(tmp_path, {**TINY, "eos_token_id": [2, 7], "bos_token_id": 1})
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [9, 2]}))
    info = read_model_info(tmp_path)
    assert info.eos_token_ids == (9, 2, 7) and info.bos_token_id == 1
    assert (info.num_qo_heads, info.num_kv_heads, info.head_dim) == (2, 1, 4)
