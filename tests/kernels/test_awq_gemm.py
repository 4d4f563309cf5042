"""AWQ GEMM: Triton (TRITON_INTERPRET=1 on CPU) vs the torch twin vs a dense matmul."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from toolkit.kernels.awq_format import dequantize_awq, quantize_groups, to_awq_tensors
from toolkit.kernels.awq_gemm import awq_gemm_ref, choose_split_k

triton = pytest.importorskip("triton")


def _quantized_layer(in_features: int, out_features: int, group_size: int, seed: int = 0):
    """AWQ tensors of a random nn.Linear weight, plus its dense dequantized W [K, N] (fp16
    values, as the format defines W in scales' dtype, held in fp32) built straight from
    quantize_groups' output, independent of the unpacking code."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=generator) * 0.05  # [N, K]
    q, zeros, scales = quantize_groups(weight, group_size)
    tensors = to_awq_tensors(q, zeros, scales)
    half_scales = tensors["scales"].float().t()  # [N, K/G], as stored (fp16)
    dense = (q - zeros.repeat_interleave(group_size, dim=1)).float()
    dense = dense * half_scales.repeat_interleave(group_size, dim=1)  # [N, K]
    return tensors, dense.half().float().t().contiguous()  # [K, N]


def _tolerance(dtype: torch.dtype) -> dict:
    if dtype == torch.float32:
        return {"atol": 1e-4, "rtol": 1e-4}
    return {"atol": 3e-2, "rtol": 2e-2}


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_reference_matches_dense_matmul(group_size: int):
    tensors, dense = _quantized_layer(256, 40, group_size)
    x = torch.randn(3, 256)
    out = awq_gemm_ref(x, tensors["qweight"], tensors["qzeros"], tensors["scales"], group_size)
    torch.testing.assert_close(out, x @ dense, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("group_size", "num_rows", "out_features", "dtype"), [
    (32, 1, 72, torch.float16),
    (64, 5, 40, torch.bfloat16),
    (128, 19, 136, torch.float32),
    (128, 3, 64, torch.float16),
])
def test_fused_kernel_matches_reference_and_dense(group_size, num_rows, out_features, dtype):
    from toolkit.kernels.awq_gemm import awq_gemm

    tensors, dense = _quantized_layer(256, out_features, group_size, seed=group_size)
    x = torch.randn(num_rows, 256).to(dtype)
    args = (tensors["qweight"], tensors["qzeros"], tensors["scales"], group_size)
    out = awq_gemm(x, *args)
    assert out.shape == (num_rows, out_features) and out.dtype == dtype
    torch.testing.assert_close(out.float(), awq_gemm_ref(x.float(), *args), **_tolerance(dtype))
    torch.testing.assert_close(out.float(), x.float() @ dense, **_tolerance(dtype))


@pytest.mark.parametrize("split_k", [1, 2, 4])
def test_split_k_partials_sum_to_the_same_result(split_k: int):
    from toolkit.kernels.awq_gemm import awq_gemm

    tensors, dense = _quantized_layer(256, 48, 64, seed=3)
    x = torch.randn(2, 256)
    out = awq_gemm(x, tensors["qweight"], tensors["qzeros"], tensors["scales"], 64,
                   split_k=split_k)
    torch.testing.assert_close(out, x @ dense, atol=1e-4, rtol=1e-4)


def test_strided_rows_are_read_in_place():
    from toolkit.kernels.awq_gemm import awq_gemm

    tensors, dense = _quantized_layer(128, 24, 32, seed=4)
    x = torch.randn(4, 200)[:, 8:136]  # [4, 128], row stride 200
    out = awq_gemm(x, tensors["qweight"], tensors["qzeros"], tensors["scales"], 32)
    torch.testing.assert_close(out, x @ dense, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("group_size", [32, 128])
def test_triton_dequantize_equals_the_format_dequantizer(group_size: int):
    from toolkit.kernels.awq_gemm import awq_dequantize

    tensors, _ = _quantized_layer(256, 72, group_size, seed=5)
    args = (tensors["qweight"], tensors["qzeros"], tensors["scales"], group_size)
    assert torch.equal(awq_dequantize(*args), dequantize_awq(*args))


def test_large_batches_take_the_dequantize_then_matmul_path():
    from toolkit.kernels.awq_gemm import awq_gemm

    tensors, dense = _quantized_layer(128, 40, 64, seed=6)
    x = torch.randn(6, 128)
    out = awq_gemm(x, tensors["qweight"], tensors["qzeros"], tensors["scales"], 64,
                   max_fused_m=4)
    torch.testing.assert_close(out, x @ dense, atol=1e-4, rtol=1e-4)


def test_no_rows_give_an_empty_result():
    from toolkit.kernels.awq_gemm import awq_gemm

    tensors, _ = _quantized_layer(64, 16, 32)
    out = awq_gemm(torch.empty(0, 64), tensors["qweight"], tensors["qzeros"],
                   tensors["scales"], 32)
    assert out.shape == (0, 16)


def test_mismatched_shapes_are_refused():
    from toolkit.kernels.awq_gemm import awq_gemm

    tensors, _ = _quantized_layer(128, 16, 64)
    args = (tensors["qweight"], tensors["qzeros"], tensors["scales"])
    with pytest.raises(ValueError, match="does not match qweight"):
        awq_gemm(torch.randn(2, 64), *args, 64)
    with pytest.raises(ValueError, match="scales"):
        awq_gemm(torch.randn(2, 128), *args, 32)


def test_split_k_heuristic_fills_the_device_within_bounds():
    assert choose_split_k(num_tiles=1000, num_k_tiles=64, num_sms=132) == 1
    assert choose_split_k(num_tiles=2, num_k_tiles=64, num_sms=132) == 16
    assert choose_split_k(num_tiles=2, num_k_tiles=4, num_sms=132) == 4
    assert choose_split_k(num_tiles=40, num_k_tiles=64, num_sms=132) == 8


def test_importing_the_module_does_not_import_triton():
    code = "import sys, toolkit.kernels.awq_gemm; print('triton' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
