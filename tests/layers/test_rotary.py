"""Rope parameters from both config spellings, and rotation against transformers."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers.models.llama.modeling_llama import (
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)

from toolkit.layers.rotary import (
    RopeParameters,
    RotaryEmbedding,
    UnsupportedRopeError,
    rope_parameters_from_hf_config,
)

LLAMA31_SCALING = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                       original_max_position_embeddings=8192)


def test_classic_and_transformers5_spellings_agree():
    classic = {"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", **LLAMA31_SCALING}}
    legacy_type_key = {"rope_theta": 500000.0, "rope_scaling": {"type": "llama3", **LLAMA31_SCALING}}
    modern = {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, **LLAMA31_SCALING}}
    parsed = {rope_parameters_from_hf_config(c) for c in (classic, legacy_type_key, modern)}
    assert parsed == {RopeParameters(rope_type="llama3", theta=500000.0, factor=8.0,
                                     original_max_position_embeddings=8192)}


def test_no_rope_keys_means_default_theta():
    assert rope_parameters_from_hf_config({}) == RopeParameters()


def test_unsupported_rope_type_names_the_supported_ones():
    with pytest.raises(UnsupportedRopeError, match="default, linear, llama3, yarn, longrope"):
        rope_parameters_from_hf_config({"rope_scaling": {"rope_type": "dynamic"}})
    with pytest.raises(UnsupportedRopeError, match="needs short_factor and long_factor"):
        rope_parameters_from_hf_config({"rope_scaling": {"rope_type": "longrope"},
                                        "max_position_embeddings": 64})


@pytest.mark.parametrize("rope_scaling", [
    None,
    {"rope_type": "linear", "factor": 3.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 32},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
])
def test_rotation_matches_transformers(rope_scaling):
    config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=2, rope_theta=10000.0,
                                      max_position_embeddings=128, rope_scaling=rope_scaling)
    ours = RotaryEmbedding(rope_parameters_from_hf_config(config.to_dict()), head_dim=32,
                           max_positions=128, dtype=torch.float32, device="cpu")
    positions = torch.tensor([0, 5, 31, 77, 127])
    x = torch.randn(len(positions), 2, 32)  # [T, H, D]
    cos, sin = ours.cos_sin(positions)
    hf_cos, hf_sin = LlamaRotaryEmbedding(config)(x, positions[None])
    expected, _ = apply_rotary_pos_emb(x.transpose(0, 1)[None], x.transpose(0, 1)[None],
                                       hf_cos, hf_sin)
    torch.testing.assert_close(ours.apply(x, cos, sin), expected[0].transpose(0, 1),
                               atol=1e-5, rtol=1e-5)


def _phi3_config(partial_rotary_factor: float) -> transformers.Phi3Config:
    """head_dim 32; LongRoPE from 32 to 128 positions over the rotated dimensions."""
    num_factors = int(32 * partial_rotary_factor) // 2
    return transformers.Phi3Config(
        hidden_size=64, num_attention_heads=2, max_position_embeddings=128,
        original_max_position_embeddings=32, partial_rotary_factor=partial_rotary_factor,
        pad_token_id=0, rope_scaling={"type": "longrope",
                                      "short_factor": [1 + 0.1 * i for i in range(num_factors)],
                                      "long_factor": [1 + 2.0 * i for i in range(num_factors)]})


@pytest.mark.parametrize("partial_rotary_factor", [1.0, 0.75])
@pytest.mark.parametrize("max_positions", [32, 128])
def test_longrope_and_partial_rotation_match_transformers_phi3(partial_rotary_factor,
                                                               max_positions):
    """Our table serving ``max_positions`` rotates as transformers' Phi-3 does a sequence
    that long: short factors up to original_max_position_embeddings (32), long beyond;
    both with the attention factor sqrt(1 + ln 4 / ln 32); only the rotated part turns."""
    from transformers.models.phi3 import modeling_phi3

    config = _phi3_config(partial_rotary_factor)
    params = rope_parameters_from_hf_config(config.to_dict())
    assert params.rope_type == "longrope" and params.original_max_position_embeddings == 32
    ours = RotaryEmbedding(params, head_dim=32, max_positions=max_positions,
                           dtype=torch.float32, device="cpu")
    positions = torch.arange(max_positions)
    x = torch.randn(max_positions, 2, 32)  # [T, H, D]
    hf_cos, hf_sin = modeling_phi3.Phi3RotaryEmbedding(config)(x, positions[None])
    heads = x.transpose(0, 1)[None]  # [1, H, T, D]
    expected, _ = modeling_phi3.apply_rotary_pos_emb(heads, heads, hf_cos, hf_sin)
    cos, sin = ours.cos_sin(positions)
    rotated = ours.apply(x, cos, sin)
    torch.testing.assert_close(rotated, expected[0].transpose(0, 1), atol=1e-5, rtol=1e-5)
    assert ours.rotary_dim == int(32 * partial_rotary_factor)
    assert torch.equal(rotated[..., ours.rotary_dim:], x[..., ours.rotary_dim:])
