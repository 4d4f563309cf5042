"""The awq method's CPU paths against a dense matmul of the dequantized AWQ weight."""

from __future__ import annotations

import pytest
import torch

from toolkit.kernels.awq_format import dequantize_awq, quantize_groups, to_awq_tensors
from toolkit.quant import awq_cpu
from toolkit.quant.awq import AWQMethod
from toolkit.quant.linear import QuantLinear

needs_int4 = pytest.mark.skipif(
    not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"),
    reason="this torch has no int4 CPU matmul")


def _awq_layer(in_features: int, out_features: int, group_size: int, dtype: torch.dtype,
               bias: bool = True, seed: int = 0):
    """A loaded AWQ QuantLinear and its reference dense W [K, N] (float32) and bias."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=generator) / 10
    tensors = to_awq_tensors(*quantize_groups(weight, group_size))
    layer = QuantLinear(in_features, (out_features,), bias, AWQMethod(group_size), dtype)
    for name, tensor in tensors.items():
        layer.load_shard(name, tensor)
    b = torch.randn(out_features, generator=generator) if bias else None
    if bias:
        layer.load_shard("bias", b)
    layer.finish_loading()
    dense = dequantize_awq(tensors["qweight"], tensors["qzeros"], tensors["scales"],
                           group_size).float()
    return layer, dense, (b.to(dtype).float() if bias else None)


def _reference(x: torch.Tensor, dense: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    out = x.float() @ dense
    return out if bias is None else out + bias


@needs_int4
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("num_tokens", [1, 5, 16, awq_cpu.MAX_INT4_MM_ROWS + 7])
def test_bf16_cpu_path_matches_the_dequantized_matmul(group_size: int, num_tokens: int):
    layer, dense, bias = _awq_layer(256, 192, group_size, torch.bfloat16)
    assert layer.int4pack  # repacked for the int4 kernel, AWQ tensors dropped
    assert not hasattr(layer, "qweight")
    x = torch.randn(num_tokens, 256, generator=torch.Generator().manual_seed(1)).bfloat16()
    out = layer(x)
    assert out.shape == (num_tokens, 192) and out.dtype == torch.bfloat16
    expected = _reference(x, dense, bias)
    # bf16 output rounding (values ~3: ulp 0.016) plus bf16 scales/zeros
    torch.testing.assert_close(out.float(), expected, atol=0.06, rtol=0.02)


def test_float32_path_keeps_awq_tensors_and_is_exact():
    layer, dense, bias = _awq_layer(128, 96, 32, torch.float32)
    assert not layer.int4pack and layer.qweight.dtype == torch.int32
    x = torch.randn(7, 128)
    torch.testing.assert_close(layer(x), _reference(x, dense, bias), atol=1e-5, rtol=1e-5)


@needs_int4
def test_empty_input_gives_an_empty_output():
    layer, _, _ = _awq_layer(128, 128, 64, torch.bfloat16)
    assert layer(torch.empty(0, 128, dtype=torch.bfloat16)).shape == (0, 128)


@needs_int4
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_resident_bytes_at_most_035_of_bf16(group_size: int):
    """SmolLM2's gate_up shape: the quantized layer keeps <= 0.35x of its bf16 bytes."""
    layer, _, _ = _awq_layer(576 if group_size != 128 else 512, 3072, group_size,
                             torch.bfloat16, bias=False)
    bf16_bytes = layer.in_features * layer.out_features * 2
    kept = layer.method.resident_bytes(layer)
    assert kept == sum(b.numel() * b.element_size() for b in layer.buffers())
    assert kept <= 0.35 * bf16_bytes, kept / bf16_bytes


@needs_int4
def test_int4pack_layout_and_dequantization_match_awq():
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(128, 192, generator=generator)
    tensors = to_awq_tensors(*quantize_groups(weight, 64))
    packed, scales_and_zeros = awq_cpu.to_int4pack(
        tensors["qweight"], tensors["qzeros"], tensors["scales"], torch.bfloat16)
    assert packed.shape == (128, 96) and scales_and_zeros.shape == (3, 128, 2)
    if not awq_cpu.int4pack_layout_is_known():  # e.g. ATEN_CPU_CAPABILITY=avx2 packs otherwise
        pytest.skip("this build packs int4 in another layout; int4pack_linear then keeps "
                    "every input on the int4 kernel")
    expected = dequantize_awq(tensors["qweight"], tensors["qzeros"], tensors["scales"], 64)
    got = awq_cpu.dequantize_int4pack(packed, scales_and_zeros).float()
    # only the bf16 rounding of scale and zero offset separates the two
    torch.testing.assert_close(got, expected.float(), atol=0.02, rtol=0.01)


def test_odd_output_width_falls_back_to_the_awq_tensors():
    """N not a multiple of 64 cannot use the int4 layout: AWQ tensors stay, results agree."""
    layer, dense, bias = _awq_layer(64, 40, 32, torch.bfloat16)
    assert not layer.int4pack and layer.qweight.shape == (64, 5)
    x = torch.randn(3, 64).bfloat16()
    torch.testing.assert_close(layer(x).float(), _reference(x, dense, bias), atol=0.06,
                               rtol=0.02)


@pytest.mark.gpu
@pytest.mark.parametrize("num_tokens", [1, 16, 300])
def test_cuda_path_matches_the_dequantized_matmul(num_tokens: int):
    """On CUDA, apply runs the Triton awq_gemm (dequantize + matmul for long inputs)."""
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(384, 256, generator=generator) / 10
    tensors = to_awq_tensors(*quantize_groups(weight, 128))
    layer = QuantLinear(256, (384,), True, AWQMethod(128), torch.float16, "cuda")
    for name, tensor in tensors.items():
        layer.load_shard(name, tensor.cuda())
    bias = torch.randn(384, generator=generator)
    layer.load_shard("bias", bias.cuda())
    layer.finish_loading()
    assert not layer.int4pack and layer.qweight.is_cuda
    x = torch.randn(num_tokens, 256, generator=generator).half()
    dense = dequantize_awq(tensors["qweight"], tensors["qzeros"], tensors["scales"], 128)
    expected = x.float() @ dense.float() + bias.half().float()
    torch.testing.assert_close(layer(x.cuda()).float().cpu(), expected, atol=0.03, rtol=0.01)
