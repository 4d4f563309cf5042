"""AutoGPTQ / GPTQModel checkpoint layout, 4 bits.

For a linear layer with input K, output N and group size G (G = K for group_size -1):

    qweight int32 [K/8, N]    nibble j (bits 4j..4j+3) of qweight[i, n] holds q[8i + j, n]
    qzeros  int32 [K/G, N/8]  nibble j of qzeros[g, c] holds the stored zero of column 8c + j
    scales  fp16  [K/G, N]
    g_idx   int32 [K]         the group of input row k: k // G, or, with act-order
                              (desc_act), the group of k's position in the quantization order
    W[k, n] = (q[k, n] - z[g_idx[k], n]) * scales[g_idx[k], n]     (W is [K, N]: y = x @ W)

The classic ``checkpoint_format: gptq`` (AutoGPTQ) stores ``z - 1``; GPTQModel's
``gptq_v2`` stores ``z``. ``zero_offset`` (1 or 0) is what gets added back; as in the
exllama kernels the sum is not wrapped to 4 bits, so z runs 1..16 in the classic format.
"""

from __future__ import annotations

import torch

PACK_FACTOR = 8
"""4-bit values per int32."""
ZERO_OFFSETS = {"gptq": 1, "gptq_v2": 0}
"""checkpoint_format -> what is added to a stored zero point."""
_SHIFTS = tuple(4 * j for j in range(PACK_FACTOR))


def pack_rows(values: torch.Tensor) -> torch.Tensor:
    """int [R, C] in 0..15 (R divisible by 8) -> int32 [R/8, C], row 8i + j in nibble j."""
    rows, cols = values.shape
    if rows % PACK_FACTOR:
        raise ValueError(f"{rows} rows do not pack into groups of {PACK_FACTOR}")
    groups = values.to(torch.int64).view(rows // PACK_FACTOR, PACK_FACTOR, cols)
    packed = torch.zeros(rows // PACK_FACTOR, cols, dtype=torch.int64, device=values.device)
    for j, shift in enumerate(_SHIFTS):
        packed |= (groups[:, j] & 0xF) << shift
    return _to_int32(packed)


def unpack_rows(packed: torch.Tensor) -> torch.Tensor:
    """int32 [R/8, C] -> int32 [R, C] in 0..15 (pack_rows inverse)."""
    shifts = torch.tensor(_SHIFTS, dtype=torch.int32, device=packed.device)
    values = (packed.unsqueeze(1) >> shifts[None, :, None]) & 0xF  # [R/8, 8, C]
    return values.reshape(-1, packed.shape[1])


def pack_columns(values: torch.Tensor) -> torch.Tensor:
    """int [R, C] in 0..15 (C divisible by 8) -> int32 [R, C/8], column 8c + j in nibble j."""
    return pack_rows(values.t()).t().contiguous()


def unpack_columns(packed: torch.Tensor) -> torch.Tensor:
    """int32 [R, C/8] -> int32 [R, C] in 0..15 (pack_columns inverse)."""
    return unpack_rows(packed.t()).t().contiguous()


def dequantize_gptq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                    g_idx: torch.Tensor, zero_offset: int) -> torch.Tensor:
    """The dense W [K, N] (scales' dtype) of a GPTQ layer, act-order or not."""
    groups = g_idx.long()  # [K]
    q = unpack_rows(qweight)  # [K, N]
    zeros = unpack_columns(qzeros) + zero_offset  # [K/G, N]
    return (q - zeros[groups]).to(scales.dtype) * scales[groups]


def to_gptq_tensors(q: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor,
                    g_idx: torch.Tensor, zero_offset: int = 1) -> dict[str, torch.Tensor]:
    """Values q [K, N] (0..15), true zero points [K/G, N] and scales [K/G, N] with the rows'
    groups g_idx [K] -> the checkpoint's qweight, qzeros (stored as zero - zero_offset),
    scales (fp16) and g_idx (int32)."""
    stored = zeros - zero_offset
    if bool((stored < 0).any()) or bool((stored > 15).any()):
        raise ValueError(f"zero points minus {zero_offset} must lie in 0..15")
    return {"qweight": pack_rows(q), "qzeros": pack_columns(stored),
            "scales": scales.to(torch.float16), "g_idx": g_idx.to(torch.int32)}


def act_order_g_idx(order: torch.Tensor, group_size: int) -> torch.Tensor:
    """g_idx [K] of an act-order quantization that visited input rows in ``order`` [K]:
    the i-th visited row belongs to group i // group_size."""
    g_idx = torch.empty_like(order)
    g_idx[order] = torch.arange(order.numel(), device=order.device) // group_size
    return g_idx.to(torch.int32)


def _to_int32(values: torch.Tensor) -> torch.Tensor:
    """int64 holding 32-bit patterns -> int32 with the same bits."""
    return torch.where(values >= 1 << 31, values - (1 << 32), values).to(torch.int32)
