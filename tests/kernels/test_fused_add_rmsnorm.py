"""Residual add + RMSNorm: Triton (interpreter on CPU) vs its torch twin vs the model's ops."""

from __future__ import annotations

import pytest
import torch

from toolkit.kernels.fused_add_rmsnorm import fused_add_rmsnorm, fused_add_rmsnorm_ref
from toolkit.layers.rmsnorm import rms_norm

triton = pytest.importorskip("triton")


def _inputs(num_rows: int, hidden_size: int, dtype: torch.dtype):
    generator = torch.Generator().manual_seed(hidden_size)
    x = torch.randn(num_rows, hidden_size, generator=generator).to(dtype)
    residual = (torch.randn(num_rows, hidden_size, generator=generator) * 4).to(dtype)
    weight = torch.randn(hidden_size, generator=generator).to(dtype)
    return x, residual, weight


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("hidden_size", [48, 64])
def test_kernel_matches_reference(dtype: torch.dtype, hidden_size: int):
    from toolkit.kernels.fused_add_rmsnorm import fused_add_rmsnorm_triton

    x, residual, weight = _inputs(5, hidden_size, dtype)
    normed, new_residual = fused_add_rmsnorm_triton(x, residual, weight, 1e-5)
    ref_normed, ref_residual = fused_add_rmsnorm_ref(x, residual, weight, 1e-5)
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {
        "atol": 2e-2, "rtol": 1e-2}
    # NOTE: the interpreter rounds fp32 -> bf16 toward zero (GPUs round to nearest even),
    # so the bf16 residual may differ from the twin's by one ulp.
    torch.testing.assert_close(new_residual, ref_residual, **tolerance)
    torch.testing.assert_close(normed, ref_normed, **tolerance)


def test_kernel_reads_strided_rows():
    from toolkit.kernels.fused_add_rmsnorm import fused_add_rmsnorm_triton

    wide = torch.randn(4, 100)
    x, residual = wide[:, :40], wide[:, 50:90]  # [4, 40] each, row stride 100
    weight = torch.randn(40)
    got = fused_add_rmsnorm_triton(x, residual, weight, 1e-6)
    want = fused_add_rmsnorm_ref(x, residual, weight, 1e-6)
    torch.testing.assert_close(got, want)


def test_reference_is_the_models_add_then_norm():
    x, residual, weight = _inputs(3, 32, torch.bfloat16)
    normed, new_residual = fused_add_rmsnorm_ref(x, residual, weight, 1e-5)
    hidden = residual + x
    assert torch.equal(new_residual, hidden)
    torch.testing.assert_close(normed, rms_norm(hidden, weight, 1e-5))


def test_dispatch_uses_the_twin_off_cuda():
    x, residual, weight = _inputs(2, 16, torch.float32)
    got = fused_add_rmsnorm(x, residual, weight, 1e-6)
    want = fused_add_rmsnorm_ref(x, residual, weight, 1e-6)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
