"""quant=q4_1: llama.cpp's Q4_1 blocks made at load time, int4 kernel for short steps."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from test_fp8 import TINY, _logits, _tiny_weights, _write_model

from toolkit.compose import compose_config
from toolkit.config.schema import QuantConfig
from toolkit.kernels.route import TORCH
from toolkit.models.loader import ModelLoadError, load_model
from toolkit.models.source import resolve_model_dir
from toolkit.quant.int8_lm_head import Int8LMHead
from toolkit.quant.linear import QuantLinear
from toolkit.quant.q4_1 import Q4_1Method, create_q4_1, dequantize_q4_1, quantize_q4_1
from toolkit.quant.registry import create_quant_method


def _q4_1_weight(out_features: int, in_features: int, seed: int) -> tuple[torch.Tensor, ...]:
    """W = q * scale + minimum with every group spanning codes 0..15, as llama.cpp's Q4_1
    quantizer leaves them; -> (W float32 [N, K], codes, scale, minimum)."""
    generator = torch.Generator().manual_seed(seed)
    num_groups = in_features // 32
    codes = torch.randint(0, 16, (out_features, num_groups, 32), generator=generator)
    codes[..., 0], codes[..., 1] = 0, 15
    scale = torch.rand(out_features, num_groups, generator=generator) * 0.02 + 0.001
    minimum = -torch.rand(out_features, num_groups, generator=generator) * 0.1
    weight = codes.float() * scale[..., None] + minimum[..., None]
    return weight.view(out_features, in_features), codes.view(out_features, in_features), \
        scale, minimum


def _layer(weight: torch.Tensor, max_int4_tokens: int = 8, kernels=TORCH) -> QuantLinear:
    method = Q4_1Method(32, max_int4_tokens, prepack_weights=True)
    method.kernels = kernels
    layer = QuantLinear(weight.shape[1], (weight.shape[0],), False, method, weight.dtype)
    layer.load_shard("weight", weight)
    layer.finish_loading()
    return layer


def test_requantizing_q4_1_weights_gives_back_their_codes_scales_and_minimums():
    weight, codes, scale, minimum = _q4_1_weight(64, 96, seed=0)
    got_codes, got_scale, got_minimum = quantize_q4_1(weight, 32)
    assert torch.equal(got_codes, codes.to(torch.int32))
    torch.testing.assert_close(got_scale, scale, rtol=1e-5, atol=0)
    torch.testing.assert_close(got_minimum, minimum, rtol=0, atol=0)


def test_a_constant_group_gets_code_zero_and_stays_exact():
    weight = torch.full((64, 32), 0.25)
    codes, scale, minimum = quantize_q4_1(weight, 32)
    assert codes.max() == 0 and scale.max() == 0
    assert torch.equal(dequantize_q4_1(codes, scale, minimum, torch.float32), weight)


def test_smollm2_checkpoint_holds_q4_1_blocks_that_requantize_exactly():
    """The embedded model was converted from a Q4_1 GGUF: requantizing a projection of the
    float32 checkpoint reproduces it (measured: exactly) so q4_1 runs the file's codes."""
    model = compose_config([]).model
    path = resolve_model_dir(model.source, model.path) / "model.safetensors"
    with safe_open(str(path), "pt") as checkpoint:
        weight = checkpoint.get_tensor("model.layers.3.mlp.down_proj.weight")  # [576, 1536]
    codes, scale, minimum = quantize_q4_1(weight, 32)
    groups = codes.view(*scale.shape, 32).float() * scale[..., None] + minimum[..., None]
    error = (groups.view_as(weight) - weight).abs().max().item()
    assert error <= 1e-6 * weight.abs().max().item()


@pytest.mark.parametrize("num_tokens", [1, 5, 8, 9, 40])
def test_both_routes_multiply_the_dequantized_weights(num_tokens):
    """Up to max_int4_tokens rows the int4 kernel runs, above it the packed bf16 copy; both
    equal a float32 matmul of the same dequantized bf16 weights to bf16 rounding."""
    weight = _q4_1_weight(128, 96, seed=1)[0].to(torch.bfloat16)
    layer = _layer(weight)
    assert layer.int4pack is not None and layer.packed_weight is not None
    x = torch.randn(num_tokens, 96, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    expected = x.float() @ layer.dense_weight.float().t()
    got = layer(x).float()
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2 * expected.abs().max().item())
    first_row_alone = layer(x[:1]).float()
    torch.testing.assert_close(first_row_alone, got[:1], rtol=2e-2,
                               atol=2e-2 * expected.abs().max().item())


def test_native_route_takes_the_q4_1_int8_kernel_up_to_max_int4_tokens(native_kernels):
    """On the native route the codes are kept in the Q4_1 x int8 kernel's layout (no torch
    int4 copy); short inputs run it, longer ones the bf16 copy."""
    weight = _q4_1_weight(128, 96, seed=1)[0].to(torch.bfloat16)
    layer = _layer(weight, kernels=native_kernels)
    assert layer.int4pack is None and layer.q4_1_native is not None
    assert layer.method.native_projection(layer).kernel == "q4_1"
    x = torch.randn(9, 96, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    assert torch.equal(layer(x[:8]), native_kernels.ops.q4_1_linear(x[:8], *layer.q4_1_native))
    assert torch.equal(layer(x), x @ layer.dense_weight.t())
    expected = x.float() @ layer.dense_weight.float().t()
    torch.testing.assert_close(layer(x[:8]).float(), expected[:8], rtol=3e-2,
                               atol=3e-2 * expected.abs().max().item())


def test_max_int4_tokens_zero_keeps_every_step_on_the_bf16_copy():
    layer = _layer(_q4_1_weight(64, 64, seed=3)[0].to(torch.bfloat16), max_int4_tokens=0)
    x = torch.randn(1, 64).to(torch.bfloat16)
    assert torch.equal(layer(x), x @ layer.dense_weight.t())


def test_resident_bytes_count_the_codes_and_both_copies():
    layer = _layer(_q4_1_weight(128, 96, seed=4)[0].to(torch.bfloat16))
    dense = 128 * 96 * 2
    assert dense * 2 < layer.method.resident_bytes(layer) < dense * 2.5


def test_float32_model_equals_the_dense_model_of_its_dequantized_weights(tmp_path):
    weights = _tiny_weights(torch.Generator().manual_seed(5))
    requantized = {name: (dequantize_q4_1(*quantize_q4_1(t, 32), torch.float32)
                          if name.endswith("proj.weight") else t) for name, t in weights.items()}
    q4_1 = load_model(_write_model(tmp_path / "dense", weights), torch.float32, "cpu",
                      quant=QuantConfig(method="q4_1"))
    reference = load_model(_write_model(tmp_path / "deq", requantized), torch.float32, "cpu",
                           quant=QuantConfig(method="none"))
    tokens = [3, 17, 5, 29, 11, 0, 38, 21, 7]
    torch.testing.assert_close(_logits(q4_1, tokens), _logits(reference, tokens),
                               atol=1e-5, rtol=1e-5)


def test_q4_1_refuses_a_quantized_checkpoint_and_bad_group_sizes():
    with pytest.raises(ModelLoadError, match="already awq-quantized"):
        create_q4_1(QuantConfig(method="q4_1"), {"quant_method": "awq"}, True)
    with pytest.raises(ModelLoadError, match="group_size=48 is not supported; supported: 32"):
        create_q4_1(QuantConfig(method="q4_1", group_size=48), {}, True)
    with pytest.raises(ModelLoadError, match="group_size=64 does not divide"):
        Q4_1Method(64, 8, True).param_specs(96, 32, torch.bfloat16)
    method = create_quant_method(QuantConfig(method="q4_1"), TINY)
    assert isinstance(method, Q4_1Method) and method.group_size == 32


def _head_weight() -> torch.Tensor:
    return (torch.randn(2000, 96, generator=torch.Generator().manual_seed(8)) * 0.1).to(
        torch.bfloat16)


def _assert_close_to_dense(head: Int8LMHead, weight: torch.Tensor, hidden: torch.Tensor):
    dense = hidden.float() @ weight.float().t()
    logits = head.logits(hidden).float()
    assert ((logits - dense).norm() / dense.norm()).item() < 1e-2
    assert torch.equal(logits.argmax(-1), dense.argmax(-1))


def test_int8_lm_head_is_within_int8_rounding_of_the_dense_head():
    weight = _head_weight()
    head = Int8LMHead.quantize(weight)
    assert head.max_rows == 1 and head.codes.dtype == torch.int8
    _assert_close_to_dense(head, weight, torch.randn(1, 96).to(torch.bfloat16))
    assert head.logits(torch.randn(2, 96).to(torch.bfloat16)) is None  # batches: dense head
    assert Int8LMHead.quantize(weight.float()) is None  # a CPU bfloat16 kernel only


def test_native_int8_lm_head_runs_q8_linear_at_every_row_count(native_kernels):
    weight = _head_weight()
    head = Int8LMHead.quantize(weight, native_kernels)
    assert head.codes.dtype == torch.uint8
    hidden = torch.randn(40, 96, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    _assert_close_to_dense(head, weight, hidden[:8])
    assert torch.equal(head.logits(hidden[:3]),
                       native_kernels.ops.q8_linear(hidden[:3], head.codes, head.scales))
    assert torch.equal(head.logits(hidden)[:3], head.logits(hidden[:3]))
    odd_vocab = Int8LMHead.quantize(weight[:1999], native_kernels)  # not a multiple of 8
    assert odd_vocab.max_rows == 1 and odd_vocab.codes.dtype == torch.int8


def test_q4_1_model_uses_the_int8_head_for_one_row_only(tmp_path):
    directory = _write_model(tmp_path / "dense", _tiny_weights(torch.Generator().manual_seed(9)))
    model = load_model(directory, torch.bfloat16, "cpu", quant=QuantConfig(method="q4_1"))
    assert model.quantized_lm_head is not None
    hidden = torch.randn(2, 32).to(torch.bfloat16)
    assert torch.equal(model.compute_logits(hidden[:1]),
                       model.quantized_lm_head.logits(hidden[:1]).float())
    dense = load_model(directory, torch.bfloat16, "cpu", quant=QuantConfig(method="none"))
    assert dense.quantized_lm_head is None
    torch.testing.assert_close(model.compute_logits(hidden), dense.compute_logits(hidden))
    no_int4 = load_model(directory, torch.bfloat16, "cpu",
                         quant=QuantConfig(method="q4_1", max_int4_tokens=0))
    assert no_int4.quantized_lm_head is None


def test_q4_1_model_on_the_native_route_takes_q8_linear_for_every_step(tmp_path,
                                                                       native_kernels):
    directory = _write_model(tmp_path / "dense", _tiny_weights(torch.Generator().manual_seed(9)))
    model = load_model(directory, torch.bfloat16, "cpu", quant=QuantConfig(method="q4_1"),
                       kernels=native_kernels)
    head = model.quantized_lm_head
    assert head.kernels.is_native
    hidden = torch.randn(20, 32).to(torch.bfloat16)
    assert torch.equal(model.compute_logits(hidden), head.logits(hidden).float())
