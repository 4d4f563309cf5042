"""SiLU-and-mul: Triton (interpreter on CPU) vs its torch twin vs toolkit.layers.activation."""

from __future__ import annotations

import pytest
import torch

from toolkit.kernels import silu_and_mul as kernel
from toolkit.layers.activation import silu_and_mul as layer_silu_and_mul

triton = pytest.importorskip("triton")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("intermediate_size", [24, 64])
def test_kernel_matches_reference(dtype: torch.dtype, intermediate_size: int):
    gate_up = (torch.randn(5, 2 * intermediate_size) * 3).to(dtype)
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {
        "atol": 2e-2, "rtol": 1e-2}
    torch.testing.assert_close(kernel.silu_and_mul_triton(gate_up),
                               kernel.silu_and_mul_ref(gate_up), **tolerance)


def test_kernel_splits_wide_rows_across_programs(monkeypatch):
    from toolkit.kernels import _silu_and_mul_triton

    monkeypatch.setattr(_silu_and_mul_triton, "BLOCK_SIZE", 16)
    gate_up = torch.randn(3, 2 * 40)  # 40 columns: three programs per row, the last ragged
    torch.testing.assert_close(kernel.silu_and_mul_triton(gate_up),
                               kernel.silu_and_mul_ref(gate_up))


def test_kernel_reads_strided_rows():
    gate_up = torch.randn(4, 100)[:, :64]  # [4, 64], row stride 100
    torch.testing.assert_close(kernel.silu_and_mul_triton(gate_up),
                               kernel.silu_and_mul_ref(gate_up))


def test_reference_is_the_layers_activation():
    gate_up = torch.randn(3, 32, dtype=torch.bfloat16)
    assert torch.equal(kernel.silu_and_mul_ref(gate_up), layer_silu_and_mul(gate_up))


def test_dispatch_uses_the_twin_off_cuda_on_the_torch_route():
    """A direct call without ``kernels`` takes the torch route."""
    gate_up = torch.randn(2, 16)
    assert torch.equal(kernel.silu_and_mul(gate_up), kernel.silu_and_mul_ref(gate_up))


def test_native_route_falls_back_to_the_twin_for_float16(native_kernels):
    """Given the native route, a dtype its kernels do not take still runs the twin."""
    gate_up = torch.randn(2, 16, dtype=torch.float16)
    assert torch.equal(kernel.silu_and_mul(gate_up, kernels=native_kernels),
                       kernel.silu_and_mul_ref(gate_up))

