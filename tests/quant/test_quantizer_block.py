"""The AWQ quantizer's building blocks: the functional layer, fake quantization, scale
folding and the clipping search, each against an independent reference."""

from __future__ import annotations

import pytest
import torch
import transformers

from toolkit.kernels.awq_format import quantize_groups
from toolkit.quant.awq_search import (
    LLAMA_SCALE_GROUPS,
    AwqSettings,
    applies,
    candidate_scales,
    clip_weight,
    fake_quantize,
    fold_scales,
    search_clip,
)
from toolkit.quant.dense_llama import decoder_layer, layer_context, rms_norm

CONFIG = {"vocab_size": 96, "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64,
          "rms_norm_eps": 1e-5}


def _layer_weights(state: dict, index: int) -> dict[str, torch.Tensor]:
    prefix = f"model.layers.{index}."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


@pytest.mark.parametrize("num_kv_heads", [4, 2])
def test_functional_layers_match_transformers(num_kv_heads: int):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**CONFIG, num_key_value_heads=num_kv_heads)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    state = model.state_dict()
    tokens = torch.randint(0, CONFIG["vocab_size"], (3, 16))
    ctx = layer_context(config.to_dict(), 16, torch.float32, "cpu")
    x = state["model.embed_tokens.weight"][tokens]
    for index in range(CONFIG["num_hidden_layers"]):
        x, _ = decoder_layer(_layer_weights(state, index), ctx, x)
    logits = rms_norm(x, state["model.norm.weight"], 1e-5) @ state["lm_head.weight"].t()
    with torch.no_grad():
        expected = model(tokens).logits
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_fake_quantize_is_the_dequantized_checkpoint_arithmetic():
    weight = torch.randn(48, 256) * torch.rand(1, 256) * 3
    q, zeros, scales = quantize_groups(weight, 64)
    expected = (q.view(48, 4, 64) - zeros.unsqueeze(-1)) * scales.unsqueeze(-1)
    assert torch.equal(fake_quantize(weight, 64), expected.view(48, 256))
    groups = fake_quantize(weight, 64).view(48, 4, 64)
    assert max(len(g.unique()) for row in groups for g in row) <= 16  # 4-bit codes
    assert (fake_quantize(weight, 64) - weight).abs().max() <= scales.max() / 2 + 1e-6


def _random_layer(num_kv_heads: int, with_bias: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    hidden, inter, head_dim = CONFIG["hidden_size"], CONFIG["intermediate_size"], 16
    shapes = {"self_attn.q_proj": (hidden, hidden),
              "self_attn.k_proj": (num_kv_heads * head_dim, hidden),
              "self_attn.v_proj": (num_kv_heads * head_dim, hidden),
              "self_attn.o_proj": (hidden, hidden), "mlp.gate_proj": (inter, hidden),
              "mlp.up_proj": (inter, hidden), "mlp.down_proj": (hidden, inter)}
    weights = {f"{name}.weight": torch.randn(shape) * 0.1 for name, shape in shapes.items()}
    if with_bias:
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            weights[f"{name}.bias"] = torch.randn(shapes[name][0]) * 0.1
    for norm in ("input_layernorm", "post_attention_layernorm"):
        weights[f"{norm}.weight"] = 1 + torch.randn(hidden) * 0.2
    return weights


@pytest.mark.parametrize("num_kv_heads,with_bias", [(4, True), (2, False)])
def test_folding_scales_keeps_the_layer_function(num_kv_heads: int, with_bias: bool):
    weights = _random_layer(num_kv_heads, with_bias)
    config = {**CONFIG, "num_key_value_heads": num_kv_heads}
    ctx = layer_context(config, 8, torch.float32, "cpu")
    x = torch.randn(2, 8, CONFIG["hidden_size"])
    expected, _ = decoder_layer(weights, ctx, x)
    folded = weights
    groups = [g for g in LLAMA_SCALE_GROUPS if applies(g, weights)]
    assert len(groups) == (4 if num_kv_heads == 4 else 3)  # v -> o only without GQA
    for group in groups:
        width = weights[f"{group.linears[0]}.weight"].shape[1]
        folded = fold_scales(folded, group, torch.rand(width) * 4 + 0.25)
    out, _ = decoder_layer(folded, ctx, x)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    assert not torch.equal(folded["mlp.down_proj.weight"], weights["mlp.down_proj.weight"])


def test_candidate_scales_are_centred_and_follow_the_activations():
    x_mean, w_mean = torch.tensor([1.0, 10.0, 0.1, 2.0]), torch.tensor([0.5, 0.5, 0.5, 0.5])
    assert torch.allclose(candidate_scales(x_mean, w_mean, 0.0, duo_scaling=False),
                          torch.ones(4))
    scales = candidate_scales(x_mean, w_mean, 0.5, duo_scaling=True)
    assert scales.argmax() == 1 and scales.argmin() == 2
    assert torch.isclose(scales.max() * scales.min(), torch.tensor(1.0))


def _group_error(quantized: torch.Tensor, weight: torch.Tensor, x: torch.Tensor,
                 group_size: int) -> torch.Tensor:
    """Per (row, group) MSE of the partial dot products x_g . Q(quantized_g) vs
    x_g . weight_g, computed directly: [N, K/G]."""
    n, k = weight.shape
    delta = (fake_quantize(quantized, group_size) - weight).view(n, k // group_size, group_size)
    xs = x.view(-1, k // group_size, group_size)
    return torch.einsum("tgc,ngc->tng", xs, delta).pow(2).mean(0)


def test_clip_search_lowers_the_error_it_measures():
    torch.manual_seed(2)
    settings = AwqSettings(group_size=32, num_clip_tokens=256)
    weight = torch.randn(16, 128) * 0.1
    weight[torch.arange(16), torch.randint(0, 128, (16,))] = 2.0  # one outlier per row
    x = torch.randn(256, 128)
    bound = search_clip(weight, x, settings)
    assert bound.shape == (16, 4)
    max_abs = weight.abs().view(16, 4, 32).amax(-1)
    assert (bound <= max_abs).all() and (bound >= max_abs * 0.5 - 1e-6).all()
    assert (bound < max_abs).any()
    clipped = clip_weight(weight, bound, 32)
    before, after = _group_error(weight, weight, x, 32), _group_error(clipped, weight, x, 32)
    assert (after <= before * (1 + 1e-4) + 1e-9).all()
    assert after.sum() < before.sum() and (after < 0.9 * before).any()
