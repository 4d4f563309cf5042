"""Rotary q/k: Triton (interpreter on CPU) vs its torch twin vs toolkit.layers.rotary."""

from __future__ import annotations

import pytest
import torch

from toolkit.kernels.rotary import apply_rotary, apply_rotary_ref
from toolkit.layers.rotary import RopeParameters, RotaryEmbedding

triton = pytest.importorskip("triton")

HEAD_DIM = 32


def _cos_sin(positions: torch.Tensor, dtype: torch.dtype):
    rotary = RotaryEmbedding(RopeParameters(theta=500.0), HEAD_DIM, 64, dtype, "cpu")
    return rotary, *rotary.cos_sin(positions)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_reference(dtype: torch.dtype):
    from toolkit.kernels.rotary import apply_rotary_triton

    positions = torch.tensor([0, 1, 7, 33, 63])
    _, cos, sin = _cos_sin(positions, dtype)
    q = torch.randn(5, 6, HEAD_DIM).to(dtype)
    k = torch.randn(5, 3, HEAD_DIM).to(dtype)
    got_q, got_k = apply_rotary_triton(q, k, cos, sin)
    want_q, want_k = apply_rotary_ref(q, k, cos, sin)
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {
        "atol": 3e-2, "rtol": 2e-2}
    torch.testing.assert_close(got_q, want_q, **tolerance)
    torch.testing.assert_close(got_k, want_k, **tolerance)


def test_kernel_reads_q_and_k_from_a_fused_qkv_buffer():
    from toolkit.kernels.rotary import apply_rotary_triton

    num_qo_heads, num_kv_heads = 4, 2
    qkv = torch.randn(3, (num_qo_heads + 2 * num_kv_heads) * HEAD_DIM)
    heads = qkv.view(3, -1, HEAD_DIM)  # [T, Hq + 2 Hkv, D]
    q, k = heads[:, :num_qo_heads], heads[:, num_qo_heads:num_qo_heads + num_kv_heads]
    _, cos, sin = _cos_sin(torch.tensor([2, 9, 40]), torch.float32)
    got = apply_rotary_triton(q, k, cos, sin)
    want = apply_rotary_ref(q, k, cos, sin)
    torch.testing.assert_close(got, want)


def test_reference_is_the_layers_rotation():
    positions = torch.tensor([3, 5, 60])
    rotary, cos, sin = _cos_sin(positions, torch.bfloat16)
    q = torch.randn(3, 4, HEAD_DIM, dtype=torch.bfloat16)
    k = torch.randn(3, 2, HEAD_DIM, dtype=torch.bfloat16)
    got_q, got_k = apply_rotary_ref(q, k, cos, sin)
    assert torch.equal(got_q, rotary.apply(q, cos, sin))
    assert torch.equal(got_k, rotary.apply(k, cos, sin))


def test_position_zero_is_the_identity_and_norms_are_kept():
    from toolkit.kernels.rotary import apply_rotary_triton

    _, cos, sin = _cos_sin(torch.tensor([0, 17]), torch.float32)
    q, k = torch.randn(2, 2, HEAD_DIM), torch.randn(2, 1, HEAD_DIM)
    got_q, got_k = apply_rotary_triton(q, k, cos, sin)
    torch.testing.assert_close(got_q[0], q[0])
    torch.testing.assert_close(got_q.norm(dim=-1), q.norm(dim=-1))
    torch.testing.assert_close(got_k.norm(dim=-1), k.norm(dim=-1))


def test_dispatch_uses_the_twin_off_cuda():
    _, cos, sin = _cos_sin(torch.tensor([4]), torch.float32)
    q, k = torch.randn(1, 2, HEAD_DIM), torch.randn(1, 1, HEAD_DIM)
    got, want = apply_rotary(q, k, cos, sin), apply_rotary_ref(q, k, cos, sin)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
