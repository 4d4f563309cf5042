"""int8 weights with one scale per output row times int8 activations (the native route of
toolkit/quant/int8_lm_head.py and of quant=w8a8): the layout, the torch twin and the call.

llama.cpp multiplies its Q8_0 output matrix with activations quantized per block of 32 to
8 bits, so each block's dot product is an integer sum; the C++ kernel
(toolkit/kernels/cpu/q8.cpp, which states the formula and the layout) does the same with
VNNI, where torch's int8 weight-only kernel converts every weight to bfloat16. Its rows
depend on themselves alone (batch-invariant); its results differ from bf16 activations by
the activations' int8 rounding (experiments/perplexity.py measures it).

The same layout holds quant=w8a8's weights on the native route (toolkit/quant/w8a8.py):
``q8_int_mm(xq, codes)`` multiplies int8 rows xq [T, K] (one scale per row, applied by the
caller) by them and returns the exact int32 sums [T, N], ``xq @ codes.T`` as torch's
``_int_mm`` gives them; ``q8_scaled_mm(xq, row_scales, codes, col_scales, bias, dtype)``
applies the scales too, as toolkit/kernels/int8_rows.py's ``dequantize_rows`` (same bits),
while each tile of sums is in cache.
"""

from __future__ import annotations

import torch

from toolkit.kernels.q4_1_linear import BLOCK, quantize_blocks

LANES = 8
"""Output rows per row group of the layout (N must be a multiple)."""
STEP = 4
"""Input features per lane and instruction (vpdpbusd's 4 bytes)."""
OFFSET = 128
"""The stored code is the weight plus OFFSET (0..254): vpdpbusd takes unsigned codes."""


def q8_int_mm_preferred() -> bool:
    """Whether quant=w8a8 multiplies with ``q8_int_mm``'s tiles (as ``q8_scaled_mm``) on the
    native route: on CPUs without AMX, where they were measured faster than oneDNN's
    ``_int_mm`` (AVX-512 VNNI, Zen 4: experiments/int8_matmul_ab.py); with AMX tiles,
    oneDNN's AMX int8 path stays (not measured against them, and AMX's tiles outrun VNNI on
    long inputs)."""
    is_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return not (is_amx is not None and is_amx())


def pack_q8(codes: torch.Tensor) -> torch.Tensor:
    """int8 codes [N, K] (-127..127) -> uint8 [N/8, K/32 * 256] in the kernel's layout."""
    out_features, in_features = codes.shape
    num_groups, num_steps = out_features // LANES, in_features // STEP
    stored = (codes.to(torch.int16) + OFFSET).to(torch.uint8)
    # element 4p + b of row 8r + i -> (r, p, i, b); p runs over the whole row (K/4 steps)
    return stored.view(num_groups, LANES, num_steps, STEP).permute(0, 2, 1, 3).reshape(
        num_groups, -1).contiguous()


def unpack_q8(packed: torch.Tensor) -> torch.Tensor:
    """``pack_q8``'s output -> int8 codes [N, K]."""
    num_groups = packed.shape[0]
    num_steps = packed.shape[1] // (LANES * STEP)
    stored = packed.view(num_groups, num_steps, LANES, STEP).permute(0, 2, 1, 3)
    return (stored.reshape(num_groups * LANES, num_steps * STEP).to(torch.int16)
            - OFFSET).to(torch.int8)


def q8_linear_ref(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The kernel's result in torch: x [T, K] -> [T, N] in x's dtype (the same integer sums;
    float32 sums in another order, so equal to float32 rounding)."""
    codes = unpack_q8(packed)
    xq, dx = quantize_blocks(x)  # [T, G, 32], [T, G]
    weights = codes.view(codes.shape[0], -1, BLOCK).double()  # [N, G, 32]
    dots = torch.einsum("tgk,ngk->tng", xq.double(), weights).float()  # exact
    return ((dots * dx[:, None]).sum(-1) * scales.float()).to(x.dtype)
