"""quant=fp8: weight-only float8_e4m3fn with per-output-channel scales, made at load time."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
import torch.nn.functional as F
from dense_layer import load_dense_layer
from paged_batch import prefill_logits
from safetensors.torch import save_file

from toolkit.config.schema import QuantConfig
from toolkit.models.loader import ModelLoadError, load_model
from toolkit.quant.fp8 import (
    FP8,
    FP8Method,
    bit_cast_scales,
    create_fp8,
    dequantize_fp8,
    dequantize_fp8_fast,
    quantize_fp8,
    scaled_mm_linear,
)
from toolkit.quant.linear import QuantLinear
from toolkit.quant.registry import create_quant_method


def _fp8_layer(weight: torch.Tensor, output_sizes: tuple[int, ...],
               bias: torch.Tensor | None = None) -> QuantLinear:
    """A QuantLinear under FP8Method, loaded part by part from ``weight`` [N, K]."""
    return load_dense_layer(FP8Method(), weight, output_sizes, bias)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_bit_cast_dequantization_is_exact_for_every_fp8_byte(dtype):
    values = torch.arange(256, dtype=torch.uint8).view(FP8).reshape(256, 1)
    finite = ~values.float().isnan()[:, 0]
    scales = torch.rand(256) + 0.5
    scales = scales.to(dtype).float()  # quantize_fp8's scales are representable in dtype
    fast = dequantize_fp8_fast(values, bit_cast_scales(scales, dtype))
    assert fast.dtype == dtype
    assert torch.equal(fast[finite], dequantize_fp8(values, scales, dtype)[finite])
    unit = dequantize_fp8_fast(values, bit_cast_scales(torch.ones(256), dtype))
    assert torch.equal(unit[finite, 0].float(), values[finite, 0].float())  # every value exact


def test_quantization_error_is_within_fp8_rounding_per_channel():
    torch.manual_seed(0)
    weight = torch.randn(64, 96) * torch.logspace(-3, 1, 64)[:, None]  # channels of all sizes
    weight[5] = 0.0
    values, scales = quantize_fp8(weight)
    assert values.dtype == FP8 and scales.shape == (64,) and scales.dtype == torch.float32
    torch.testing.assert_close(scales[torch.arange(64) != 5],
                               (weight.abs().amax(1) / 448)[torch.arange(64) != 5])
    restored = dequantize_fp8(values, scales, torch.float32)
    bound = torch.maximum(weight.abs() / 16, scales[:, None] * 2**-10)
    assert bool(((restored - weight).abs() <= bound * (1 + 1e-6)).all())
    assert torch.equal(restored[5], torch.zeros(96))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_layer_matches_a_dense_matmul_of_the_dequantized_weight(dtype):
    torch.manual_seed(1)
    weight = (torch.randn(160, 96) * 0.05).to(dtype)  # fused parts 96 + 32 + 32
    bias = torch.randn(160).to(dtype)
    layer = _fp8_layer(weight, (96, 32, 32), bias)
    assert layer.weight.dtype == FP8 and layer.weight.shape == (160, 96)
    x = torch.randn(7, 96).to(dtype)
    expected = F.linear(x, dequantize_fp8(layer.weight, layer.weight_scale, dtype), bias)
    out = layer(x)
    assert out.dtype == dtype and out.shape == (7, 160)
    assert torch.equal(out, expected)


def test_relative_error_against_the_bf16_layer_is_bounded():
    torch.manual_seed(2)
    weight = (torch.randn(256, 192) * 0.02).bfloat16()
    x = torch.randn(16, 192).bfloat16()
    dense = F.linear(x, weight).float()
    out = _fp8_layer(weight, (256,))(x).float()
    relative = ((out - dense).norm() / dense.norm()).item()
    assert relative < 0.04  # e4m3 keeps 3 mantissa bits: ~2-3 % per weight, averaged down


def test_resident_bytes_are_about_one_per_weight():
    weight = torch.randn(512, 384).bfloat16()
    layer = _fp8_layer(weight, (512,))
    dense_bytes = weight.numel() * weight.element_size()
    resident = layer.method.resident_bytes(layer)
    assert resident <= 512 * 384 + 512 * (4 + 2)  # fp8 values + float32 and bf16 row scales
    assert resident < 0.52 * dense_bytes
    assert {n: p.dtype for n, p in layer.named_parameters()} == {
        "weight": FP8, "weight_scale": torch.float32}


TINY = {"architectures": ["LlamaForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 40, "max_position_embeddings": 32, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False}
_SHAPES = {"self_attn.q_proj": (32, 32), "self_attn.k_proj": (16, 32),
           "self_attn.v_proj": (16, 32), "self_attn.o_proj": (32, 32),
           "mlp.gate_proj": (64, 32), "mlp.up_proj": (64, 32), "mlp.down_proj": (32, 64)}


def _tiny_weights(generator: torch.Generator) -> dict[str, torch.Tensor]:
    weights = {"model.embed_tokens.weight": torch.randn(40, 32, generator=generator),
               "model.norm.weight": 1 + 0.1 * torch.randn(32, generator=generator),
               "lm_head.weight": torch.randn(40, 32, generator=generator) * 0.2}
    for i in range(2):
        prefix = f"model.layers.{i}."
        weights[prefix + "input_layernorm.weight"] = torch.ones(32)
        weights[prefix + "post_attention_layernorm.weight"] = torch.ones(32)
        for name, shape in _SHAPES.items():
            weights[f"{prefix}{name}.weight"] = torch.randn(*shape, generator=generator) * 0.2
    return weights


def _write_model(directory: pathlib.Path, weights: dict[str, torch.Tensor],
                 config: dict | None = None) -> pathlib.Path:
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config or TINY))
    save_file(weights, str(directory / "model.safetensors"))
    return directory


def _logits(model, tokens: list[int]) -> torch.Tensor:
    return prefill_logits(model, tokens, 4, 2, 8)


def test_fp8_model_equals_the_dense_model_of_its_dequantized_weights(tmp_path):
    """load_model(quant=fp8) on a dense checkpoint == the dense model holding
    dequantize_fp8(quantize_fp8(W)) (float32: the same matmuls on the same weights)."""
    weights = _tiny_weights(torch.Generator().manual_seed(3))
    requantized = {name: (dequantize_fp8(*quantize_fp8(t), torch.float32)
                          if name.endswith("proj.weight") else t) for name, t in weights.items()}
    fp8 = load_model(_write_model(tmp_path / "dense", weights), torch.float32, "cpu",
                     quant=QuantConfig(method="fp8"))
    reference = load_model(_write_model(tmp_path / "deq", requantized), torch.float32, "cpu",
                           quant=QuantConfig(method="none"))
    dense = load_model(tmp_path / "dense", torch.float32, "cpu", quant=QuantConfig(method="none"))
    assert fp8.layers[0].qkv_proj.weight.dtype == FP8
    tokens = [3, 17, 5, 29, 11, 0, 38, 21, 7]
    ours = _logits(fp8, tokens)
    torch.testing.assert_close(ours, _logits(reference, tokens), atol=1e-5, rtol=1e-5)
    exact = _logits(dense, tokens)
    assert ((ours - exact).norm() / exact.norm()).item() < 0.15  # 2 random layers: ~9 %


def test_quant_fp8_refuses_a_quantized_checkpoint_and_a_group_size():
    with pytest.raises(ModelLoadError, match="already awq-quantized"):
        create_fp8(QuantConfig(method="fp8"), {"quant_method": "awq"}, True)
    with pytest.raises(ModelLoadError, match="quant.group_size=128 does not apply to fp8"):
        create_fp8(QuantConfig(method="fp8", group_size=128), {}, True)
    assert isinstance(create_quant_method(QuantConfig(method="fp8"), TINY), FP8Method)


@pytest.mark.gpu
def test_cuda_scaled_mm_route_stays_close_to_the_dequantized_matmul():
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 tensor cores need sm89+")
    torch.manual_seed(4)
    weight = (torch.randn(512, 256, device="cuda") * 0.02).bfloat16()
    layer = _fp8_layer(weight, (512,))
    assert layer.use_scaled_mm
    x = torch.randn(33, 256, device="cuda").bfloat16()
    expected = F.linear(x, dequantize_fp8(layer.weight, layer.weight_scale, torch.bfloat16))
    out = scaled_mm_linear(x, layer.weight, layer.weight_scale, None)
    assert out.dtype == torch.bfloat16 and out.shape == (33, 512)
    relative = ((out.float() - expected.float()).norm() / expected.float().norm()).item()
    assert relative < 0.05  # the activations' own fp8 rounding
