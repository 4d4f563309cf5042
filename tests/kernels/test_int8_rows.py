"""The native per-row int8 kernels (ops.cpp quantize_rows, dequantize_rows) against their
torch twins in toolkit/kernels/int8_rows.py: bit for bit, float32 and bfloat16."""

from __future__ import annotations

import pytest
import torch

from toolkit.kernels.int8_rows import (
    MAX_CODE,
    dequantize_rows,
    dequantize_rows_ref,
    quantize_rows,
    quantize_rows_ref,
)
from toolkit.kernels.route import TORCH

SHAPES = [(1, 7, 5), (2, 64, 33), (3, 577, 961), (17, 96, 160), (300, 40, 24)]
"""(T, K, N): one row, odd widths, more rows than one parallel chunk."""
DTYPES = [torch.float32, torch.bfloat16]


def _rows(num_rows: int, width: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Rows of very different magnitudes, with an all-zero row and a repeated extreme."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_rows, width, generator=generator)
    x *= torch.logspace(-3, 2, num_rows)[:, None]
    if num_rows > 2:
        x[1] = 0.0
        x[2, : width // 2] = x[2].abs().max()  # ties of amax
    return x.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_quantize_rows_native_equals_twin(native_kernels, dtype, shape):
    num_rows, width, _ = shape
    x = _rows(num_rows, width, dtype, seed=width)
    codes, scales = quantize_rows(x, native_kernels)
    ref_codes, ref_scales = quantize_rows_ref(x)
    assert codes.dtype == torch.int8 and scales.dtype == torch.float32
    assert codes.shape == (num_rows, width) and scales.shape == (num_rows,)
    assert torch.equal(codes, ref_codes) and torch.equal(scales, ref_scales)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_dequantize_rows_native_equals_twin(native_kernels, dtype, shape, with_bias):
    num_rows, _, width = shape
    generator = torch.Generator().manual_seed(num_rows * width)
    acc = torch.randint(-(1 << 26), 1 << 26, (num_rows, width), dtype=torch.int32,
                        generator=generator)  # beyond 2**24: the int -> float32 rounding too
    row_scales = torch.rand(num_rows, generator=generator) * 0.1
    col_scales = torch.rand(width, generator=generator) * 1e-3
    bias = torch.randn(width, generator=generator).to(dtype) if with_bias else None
    out = dequantize_rows(acc, row_scales, col_scales, bias, dtype, native_kernels)
    assert out.dtype == dtype and out.shape == (num_rows, width)
    assert torch.equal(out, dequantize_rows_ref(acc, row_scales, col_scales, bias, dtype))


def test_twin_quantizes_each_row_by_its_own_amax():
    x = _rows(5, 33, torch.float32, seed=1)
    codes, scales = quantize_rows(x, TORCH)
    assert torch.equal(scales[1], torch.tensor(1.0)) and not codes[1].any()  # zero row
    nonzero = torch.tensor([0, 2, 3, 4])
    torch.testing.assert_close(scales[nonzero], x[nonzero].abs().amax(1) / MAX_CODE)
    assert int(codes.abs().max()) == MAX_CODE
    assert bool(((codes.float() * scales[:, None] - x).abs() <= scales[:, None] / 2 * 1.0001).all())
