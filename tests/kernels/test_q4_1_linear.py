"""The native Q4_1 x int8 kernel (toolkit/kernels/cpu/q4_1.cpp) against its torch twin, the
dense weights it stands for, and itself across batch and thread counts."""

from __future__ import annotations

import pytest
import torch

from toolkit.kernels.q4_1_linear import (
    pack_q4_1,
    q4_1_linear_ref,
    quantize_blocks,
    unpack_q4_1,
)


def _weights(out_features: int, in_features: int, seed: int = 0):
    """Random Q4_1 tensors -> (codes int32 [N, K], scale, minimum float32 [N, K/32])."""
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (out_features, in_features), generator=generator)
    scale = torch.rand(out_features, in_features // 32, generator=generator) * 0.02 + 1e-3
    minimum = -torch.rand(out_features, in_features // 32, generator=generator) * 0.1
    return codes.to(torch.int32), scale, minimum


def _x(num_rows: int, in_features: int, dtype=torch.bfloat16, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_rows, in_features, generator=generator).to(dtype)


def test_packing_keeps_every_code_scale_and_zero():
    codes, scale, minimum = _weights(24, 96)
    packed, scales_zeros = pack_q4_1(codes, scale, minimum)
    got_codes, s, z = unpack_q4_1(packed, scales_zeros)
    assert torch.equal(got_codes.to(torch.int32), codes)
    assert torch.equal(s, scale.to(torch.bfloat16).float())
    assert torch.equal(z, (minimum + 8 * scale).to(torch.bfloat16).float())


def test_activation_blocks_round_to_int8_with_their_own_step():
    x = torch.tensor([[0.5] * 31 + [-1.27] + [0.0] * 32])
    xq, dx = quantize_blocks(x)
    assert dx[0, 0].item() == pytest.approx(0.01) and dx[0, 1].item() == 0
    assert xq[0, 0, -1] == -127 and xq[0, 0, 0] == 50 and xq[0, 1].abs().max() == 0


@pytest.mark.parametrize(("out_features", "in_features"), [(64, 32), (24, 576), (16, 1536)])
def test_kernel_equals_its_torch_twin(native_kernels, out_features, in_features):
    tensors = pack_q4_1(*_weights(out_features, in_features))
    x = _x(5, in_features, torch.float32)  # float32 out: no bf16 rounding to hide behind
    got = native_kernels.ops.q4_1_linear(x, *tensors)
    torch.testing.assert_close(got, q4_1_linear_ref(x, *tensors), rtol=1e-5, atol=1e-5)


def test_kernel_is_within_int8_rounding_of_the_dense_weights(native_kernels):
    codes, scale, minimum = _weights(64, 576)
    packed, scales_zeros = pack_q4_1(codes, scale, minimum)
    _, s, z = unpack_q4_1(packed, scales_zeros)
    weight = (codes.view(64, -1, 32) - 8) * s[..., None] + z[..., None]  # [N, K/32, 32]
    x = _x(3, 576)
    dense = x.float() @ weight.view(64, 576).t()
    got = native_kernels.ops.q4_1_linear(x, packed, scales_zeros).float()
    assert ((got - dense).norm() / dense.norm()).item() < 0.02


def test_a_row_has_the_same_bits_alone_in_any_batch_and_on_any_thread_count(native_kernels):
    tensors = pack_q4_1(*_weights(128, 576))
    x = _x(9, 576)
    whole = native_kernels.ops.q4_1_linear(x, *tensors)
    for num_rows in (1, 2, 3, 4, 5, 8):
        assert torch.equal(native_kernels.ops.q4_1_linear(x[:num_rows], *tensors),
                           whole[:num_rows])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(native_kernels.ops.q4_1_linear(x, *tensors), whole)
    finally:
        torch.set_num_threads(threads)


def test_bad_shapes_are_refused(native_kernels):
    packed, scales_zeros = pack_q4_1(*_weights(16, 64))
    with pytest.raises(RuntimeError, match="q4_1_linear"):
        native_kernels.ops.q4_1_linear(_x(1, 96), packed, scales_zeros)
    with pytest.raises(RuntimeError, match="q4_1_linear"):
        native_kernels.ops.q4_1_linear(_x(1, 64), packed, scales_zeros.float())
