"""Rope parameters from both config spellings, and rotation against transformers."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

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
    with pytest.raises(UnsupportedRopeError, match="default, linear, llama3, yarn"):
        rope_parameters_from_hf_config({"rope_scaling": {"rope_type": "longrope"}})


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
