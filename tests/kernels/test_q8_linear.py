"""The native int8 x int8 kernel (toolkit/kernels/cpu/q8.cpp) against its torch twin, the
dense weights it stands for, and itself across batch and thread counts."""

from __future__ import annotations

import pytest
import torch

from toolkit.kernels.q8_linear import pack_q8, q8_linear_ref, unpack_q8


def _weights(out_features: int, in_features: int, seed: int = 0):
    """Random int8 codes [N, K] spanning -127..127 and float32 scales [N]."""
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(-127, 128, (out_features, in_features), generator=generator)
    codes[:, 0], codes[:, 1] = -127, 127  # the extremes: 1 and 255 once offset
    scales = torch.rand(out_features, generator=generator) * 0.01 + 1e-4
    return codes.to(torch.int8), scales


def _x(num_rows: int, in_features: int, dtype=torch.bfloat16, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_rows, in_features, generator=generator).to(dtype)


def test_packing_keeps_every_code():
    codes, _ = _weights(24, 96)
    assert torch.equal(unpack_q8(pack_q8(codes)), codes)


@pytest.mark.parametrize(("out_features", "in_features"), [(64, 32), (24, 576), (16, 1536)])
@pytest.mark.parametrize("num_rows", [5, 17])  # 17: two row groups at a time (q8_pair4)
def test_kernel_equals_its_torch_twin(native_kernels, out_features, in_features, num_rows):
    codes, scales = _weights(out_features, in_features)
    packed = pack_q8(codes)
    x = _x(num_rows, in_features, torch.float32)  # float32 out: no bf16 rounding to hide behind
    x[1, :32] = 0  # an all-zero block: step 0
    got = native_kernels.ops.q8_linear(x, packed, scales)
    torch.testing.assert_close(got, q8_linear_ref(x, packed, scales), rtol=1e-5, atol=1e-5)


def test_kernel_is_within_int8_rounding_of_the_dense_weights(native_kernels):
    codes, scales = _weights(64, 576)
    x = _x(3, 576)
    dense = x.float() @ (codes.float() * scales[:, None]).t()
    got = native_kernels.ops.q8_linear(x, pack_q8(codes), scales).float()
    assert ((got - dense).norm() / dense.norm()).item() < 0.01


@pytest.mark.parametrize("out_features", [128, 24])  # 24: three row groups, a pair and one
def test_a_row_has_the_same_bits_alone_in_any_batch_and_on_any_thread_count(native_kernels,
                                                                            out_features):
    """Up to 11 rows each row group alone (q8_group), from 12 two at a time (q8_pair4)."""
    codes, scales = _weights(out_features, 576)
    packed = pack_q8(codes)
    x = _x(19, 576)
    whole = native_kernels.ops.q8_linear(x, packed, scales)
    for num_rows in (1, 2, 3, 4, 5, 8, 11, 12, 13, 16):
        assert torch.equal(native_kernels.ops.q8_linear(x[:num_rows], packed, scales),
                           whole[:num_rows])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(native_kernels.ops.q8_linear(x, packed, scales), whole)
    finally:
        torch.set_num_threads(threads)


def test_bad_shapes_are_refused(native_kernels):
    codes, scales = _weights(16, 64)
    with pytest.raises(RuntimeError, match="K a multiple of 32"):
        native_kernels.ops.q8_linear(_x(1, 48), pack_q8(codes), scales)
    with pytest.raises(RuntimeError, match="float32 scales"):
        native_kernels.ops.q8_linear(_x(1, 64), pack_q8(codes), scales[:8])


@pytest.mark.parametrize(("out_features", "in_features"), [(8, 32), (40, 96), (96, 576),
                                                           (64, 1536)])
def test_int_mm_gives_int_mms_exact_sums_at_every_row_count(native_kernels, out_features,
                                                           in_features):
    """Every tile shape: 1-4 groups of 8 outputs (40 = one tile and a 1-group tail, 96 =
    three tiles) by 1-4 rows (up to 9 rows: two full row blocks and a tail)."""
    codes, _ = _weights(out_features, in_features)
    packed = pack_q8(codes)
    generator = torch.Generator().manual_seed(2)
    xq = torch.randint(-127, 128, (9, in_features), generator=generator, dtype=torch.int8)
    xq[0] = 127  # the largest sums
    for num_rows in (0, 1, 2, 3, 4, 5, 9):
        expected = xq[:num_rows].int() @ codes.int().t()
        assert torch.equal(native_kernels.ops.q8_int_mm(xq[:num_rows], packed), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [False, True])
def test_scaled_mm_is_int_mm_then_dequantize_rows_bit_for_bit(native_kernels, dtype,
                                                              with_bias):
    """q8_scaled_mm = dequantize_rows(q8_int_mm(...)): every tile shape (40 outputs: a
    tile and a 1-group tail), row tails, with and without a bias."""
    codes, col_scales = _weights(40, 96)
    packed = pack_q8(codes)
    generator = torch.Generator().manual_seed(5)
    xq = torch.randint(-127, 128, (9, 96), generator=generator, dtype=torch.int8)
    row_scales = torch.rand(9, generator=generator) * 0.02 + 1e-3
    bias = torch.randn(40, generator=generator).to(dtype) if with_bias else None
    ops = native_kernels.ops
    for num_rows in (0, 1, 3, 4, 5, 9):
        rows = slice(0, num_rows)
        expected = ops.dequantize_rows(ops.q8_int_mm(xq[rows], packed), row_scales[rows],
                                       col_scales, bias, dtype)
        got = ops.q8_scaled_mm(xq[rows], row_scales[rows], packed, col_scales, bias, dtype)
        assert got.dtype == dtype and torch.equal(got, expected)
    with pytest.raises(RuntimeError, match="float32 scales"):
        ops.q8_scaled_mm(xq, row_scales[:3], packed, col_scales, None, dtype)
