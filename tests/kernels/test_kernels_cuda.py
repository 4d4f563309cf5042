"""Every kernel's CUDA dispatch (Triton) against its torch twin at model-sized shapes.

(Compiled kernels when TRITON_INTERPRET is unset; tests/conftest.py sets it by default.)"""

from __future__ import annotations

import pytest
import torch

from toolkit.kernels.awq_format import quantize_groups, to_awq_tensors
from toolkit.kernels.awq_gemm import awq_gemm, awq_gemm_ref
from toolkit.kernels.fused_add_rmsnorm import fused_add_rmsnorm, fused_add_rmsnorm_ref
from toolkit.kernels.kv_store import store_kv, store_kv_ref
from toolkit.kernels.rotary import apply_rotary, apply_rotary_ref
from toolkit.kernels.silu_and_mul import silu_and_mul, silu_and_mul_ref

pytestmark = pytest.mark.gpu
TOLERANCE = {"atol": 3e-2, "rtol": 2e-2}


@pytest.mark.parametrize("num_rows", [1, 7, 64, 300])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_awq_gemm(num_rows: int, dtype: torch.dtype):
    weight = torch.randn(576, 1024) * 0.05  # [N, K]
    tensors = {name: t.cuda() for name, t in to_awq_tensors(*quantize_groups(weight, 128)).items()}
    x = torch.randn(num_rows, 1024, device="cuda").to(dtype)
    args = (tensors["qweight"], tensors["qzeros"], tensors["scales"], 128)
    torch.testing.assert_close(awq_gemm(x, *args).float(), awq_gemm_ref(x.float(), *args),
                               **TOLERANCE)


def test_fused_add_rmsnorm():
    x, residual = (torch.randn(9, 576, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    weight = torch.randn(576, device="cuda", dtype=torch.bfloat16)
    got = fused_add_rmsnorm(x, residual, weight, 1e-5)
    want = fused_add_rmsnorm_ref(x, residual, weight, 1e-5)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **TOLERANCE)


def test_rotary():
    cos, sin = torch.randn(2, 9, 1, 64, device="cuda", dtype=torch.bfloat16).unbind(0)
    heads = torch.randn(9, 15, 64, device="cuda", dtype=torch.bfloat16)  # fused q, k, v
    q, k = heads[:, :9], heads[:, 9:12]
    got, want = apply_rotary(q, k, cos, sin), apply_rotary_ref(q, k, cos, sin)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **TOLERANCE)


def test_silu_and_mul():
    gate_up = torch.randn(9, 2 * 1536, device="cuda", dtype=torch.bfloat16)
    torch.testing.assert_close(silu_and_mul(gate_up), silu_and_mul_ref(gate_up), **TOLERANCE)


def test_store_kv():
    got = torch.zeros(16, 2, 16, 3, 64, device="cuda", dtype=torch.bfloat16)
    want = torch.zeros_like(got)
    slots = torch.tensor([5, 17, -1, 255, 100], device="cuda")
    k, v = torch.randn(2, 5, 3, 64, device="cuda", dtype=torch.bfloat16).unbind(0)
    store_kv(got, slots, k, v)
    store_kv_ref(want, slots, k, v)
    assert torch.equal(got, want)
