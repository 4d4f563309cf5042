"""Per-row int8 quantization of activations and the dequantization of an int32 matmul,
for the ``w8a8`` method (toolkit/quant/w8a8.py): the torch twins and the route choice.

    quantize_rows(x [T, K])  -> codes int8 [T, K], scales float32 [T]
        scale[t] = amax(|x[t, :]|) / 127 (1 for an all-zero row), codes round-half-even
        of x / scale clamped to [-127, 127]
    dequantize_rows(acc int32 [T, N], row_scales [T], col_scales [N], bias [N] | None, dtype)
        -> ((float(acc) * row_scale) * col_scale (+ bias)) in float32, rounded to dtype

Each row depends on that row alone, so a row's bits never depend on the rows it shares a
call with. On the native route (toolkit/kernels/route.py) the C++ kernels of
toolkit/kernels/cpu/ops.cpp run them in one call each (the torch twins below take ~5 ops
each, which cost more than the int8 matmul itself at large T); elsewhere the twins run.
"""

from __future__ import annotations

import torch

from toolkit.kernels.route import TORCH, KernelRoute

MAX_CODE = 127
"""Largest int8 code magnitude (symmetric: -127 .. 127)."""


def quantize_rows_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, K] (float32/bfloat16) -> (codes int8 [T, K], scales float32 [T])."""
    xf = x.float()
    amax = xf.abs().amax(dim=1)  # [T]
    scales = torch.where(amax > 0, amax / MAX_CODE, torch.ones_like(amax))
    codes = torch.round(xf / scales[:, None]).clamp_(-MAX_CODE, MAX_CODE).to(torch.int8)
    return codes, scales


def dequantize_rows_ref(acc: torch.Tensor, row_scales: torch.Tensor, col_scales: torch.Tensor,
                        bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """acc int32 [T, N] -> [T, N] in ``dtype`` (float32 products, one rounding at the end)."""
    out = acc.float() * row_scales[:, None]
    out = out * col_scales[None, :]
    if bias is not None:
        out = out + bias.float()
    return out.to(dtype)


def quantize_rows(x: torch.Tensor,
                  kernels: KernelRoute = TORCH) -> tuple[torch.Tensor, torch.Tensor]:
    """``quantize_rows_ref`` through the C++ kernel where the route and ``x`` allow."""
    ops = kernels.native_ops(x)
    if ops is not None and x.dim() == 2:
        return ops.quantize_rows(x)
    return quantize_rows_ref(x)


def dequantize_rows(acc: torch.Tensor, row_scales: torch.Tensor, col_scales: torch.Tensor,
                    bias: torch.Tensor | None, dtype: torch.dtype,
                    kernels: KernelRoute = TORCH) -> torch.Tensor:
    """``dequantize_rows_ref`` through the C++ kernel where the route and tensors allow."""
    ops = kernels.native_ops(row_scales, col_scales)
    if (ops is not None and dtype in (torch.float32, torch.bfloat16) and acc.is_cpu
            and acc.is_contiguous() and acc.dtype == torch.int32
            and (bias is None or (bias.dtype == dtype and bias.is_contiguous()))):
        return ops.dequantize_rows(acc, row_scales, col_scales, bias, dtype)
    return dequantize_rows_ref(acc, row_scales, col_scales, bias, dtype)
