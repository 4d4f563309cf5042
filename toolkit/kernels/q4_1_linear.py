"""Q4_1 weights times int8 activations for decode-sized inputs (``quant=q4_1`` on the
native route): the layout, the torch twin and the call.

llama.cpp multiplies a Q4_1 file's weights with activations quantized per block of 32 to
8 bits (its Q8_1), so each block's dot product is an integer sum; the C++ kernel
(toolkit/kernels/cpu/q4_1.cpp, which states the formula and the layout) does the same
with VNNI, where torch's int4 kernel converts every weight to float. Its rows depend on
themselves alone (batch-invariant); its results differ from the bf16-activation routes by
the activations' int8 rounding, as llama.cpp's do.
"""

from __future__ import annotations

import torch

BLOCK = 32
"""Input features per block (llama.cpp's Q4_1 and Q8_1 blocks)."""
LANES = 8
"""Output rows per row group of the layout (N must be a multiple)."""
MAX_CODE = 127


def pack_q4_1(codes: torch.Tensor, scale: torch.Tensor,
              minimum: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_1 tensors (codes int [N, K] in 0..15, scale and minimum float32 [N, K/32]) ->
    (codes uint8 [N/8, K/32 * 128], scales_zeros bfloat16 [N/8, K/32 * 16]) in the kernel's
    layout, with s = bf16(scale), z = bf16(minimum + 8 scale) as torch's int4 kernel holds
    them (W = (q - 8) s + z)."""
    out_features, in_features = codes.shape
    num_groups, num_blocks = out_features // LANES, in_features // BLOCK
    # element 32g + 16h + 4p + b of row 8r + i -> (r, g, p, i, h, b)
    q = codes.to(torch.uint8).view(num_groups, LANES, num_blocks, 2, 4, 4)
    q = q.permute(0, 2, 4, 1, 3, 5)
    packed = (q[..., 0, :] | (q[..., 1, :] << 4)).reshape(num_groups, -1).contiguous()
    scales = scale.to(torch.bfloat16)
    zeros = (minimum + 8 * scale).to(torch.bfloat16)
    planes = torch.stack([scales, zeros]).view(2, num_groups, LANES, num_blocks)
    return packed, planes.permute(1, 3, 0, 2).reshape(num_groups, -1).contiguous()


def unpack_q4_1(packed: torch.Tensor,
                scales_zeros: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``pack_q4_1``'s output -> codes uint8 [N, K], s and z float32 [N, K/32]."""
    num_groups = packed.shape[0]
    num_blocks = packed.shape[1] // (4 * LANES * 4)
    q = packed.view(num_groups, num_blocks, 4, LANES, 4)  # (r, g, p, i, b)
    halves = torch.stack([q & 0xF, q >> 4], dim=4)  # (r, g, p, i, h, b)
    codes = halves.permute(0, 3, 1, 4, 2, 5).reshape(num_groups * LANES, num_blocks * BLOCK)
    planes = scales_zeros.view(num_groups, num_blocks, 2, LANES).float()
    s, z = planes.permute(2, 0, 3, 1).reshape(2, num_groups * LANES, num_blocks)
    return codes, s, z


def quantize_blocks(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, K] -> (xq int32 [T, K/32, 32], dx float32 [T, K/32]): per block, dx = max|x| /
    127 and xq = round-half-even(x * (1 / dx)) (0 for an all-zero block)."""
    blocks = x.float().view(x.shape[0], -1, BLOCK)
    step = blocks.abs().amax(-1) / MAX_CODE
    inverse = torch.where(step > 0, 1 / step, torch.zeros_like(step))
    return torch.round(blocks * inverse[..., None]).to(torch.int32), step


def q4_1_linear_ref(x: torch.Tensor, packed: torch.Tensor,
                    scales_zeros: torch.Tensor) -> torch.Tensor:
    """The kernel's result in torch: x [T, K] -> [T, N] in x's dtype (the same integer
    sums; float32 sums in another order, so equal to float32 rounding)."""
    codes, s, z = unpack_q4_1(packed, scales_zeros)
    xq, dx = quantize_blocks(x)  # [T, G, 32], [T, G]
    weights = codes.view(codes.shape[0], -1, BLOCK).to(torch.int32)  # [N, G, 32]
    dots = torch.einsum("tgk,ngk->tng", xq.double(), weights.double()).float()  # exact
    xs = dx * xq.sum(-1).float()  # [T, G]
    terms = dots * (s[None] * dx[:, None]) + (z - 8 * s)[None] * xs[:, None]  # [T, N, G]
    return terms.sum(-1).to(x.dtype)
