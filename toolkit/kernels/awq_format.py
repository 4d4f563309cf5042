"""AutoAWQ's GEMM checkpoint layout: 4-bit values packed eight to an int32.

For a linear layer with input K, output N and group size G:
    qweight int32 [K, N/8], qzeros int32 [K/G, N/8], scales fp16 [K/G, N]
    W[k, n] = (q[k, n] - z[k // G, n]) * scales[k // G, n]      (W is [K, N]: y = x @ W)
Nibble i (bits 4i..4i+3) of packed column c holds logical column 8c + AWQ_ORDER[i].
"""

from __future__ import annotations

import torch

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
"""Nibble i of a packed int32 holds logical column AWQ_ORDER[i] of its group of eight."""
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)
"""Logical column j of a group of eight lives in nibble AWQ_REVERSE_ORDER[j]."""
PACK_FACTOR = 8
"""4-bit values per int32."""


def awq_quantization_config(group_size: int) -> dict:
    """config.json's quantization_config of a 4-bit zero-point AutoAWQ GEMM checkpoint."""
    return {"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True,
            "version": "gemm", "modules_to_not_convert": None}


def pack_awq(values: torch.Tensor) -> torch.Tensor:
    """values int [R, C] in 0..15 (C divisible by 8) -> int32 [R, C / 8] in AWQ order."""
    rows, cols = values.shape
    if cols % PACK_FACTOR:
        raise ValueError(f"{cols} columns do not pack into groups of {PACK_FACTOR}")
    groups = values.to(torch.int64).view(rows, cols // PACK_FACTOR, PACK_FACTOR)
    packed = torch.zeros(rows, cols // PACK_FACTOR, dtype=torch.int64, device=values.device)
    for nibble, column in enumerate(AWQ_ORDER):
        packed |= (groups[..., column] & 0xF) << (4 * nibble)
    return _to_int32(packed)


def unpack_awq(packed: torch.Tensor) -> torch.Tensor:
    """int32 [R, C / 8] -> int32 [R, C] in 0..15, logical column order (pack_awq inverse)."""
    shifts = torch.tensor([4 * n for n in AWQ_REVERSE_ORDER], dtype=torch.int32,
                          device=packed.device)
    values = (packed.unsqueeze(-1) >> shifts) & 0xF  # [R, C/8, 8]
    return values.reshape(packed.shape[0], -1)


def dequantize_awq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                   group_size: int) -> torch.Tensor:
    """The dense weight W [K, N] (scales' dtype) of an AWQ GEMM layer."""
    q = unpack_awq(qweight)  # [K, N]
    z = unpack_awq(qzeros).repeat_interleave(group_size, dim=0)  # [K, N]
    s = scales.repeat_interleave(group_size, dim=0)  # [K, N]
    return (q - z).to(scales.dtype) * s


def quantize_groups(weight: torch.Tensor, group_size: int,
                    bits: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric round-to-nearest per group of ``group_size`` input columns.

    weight [N, K] (nn.Linear layout) -> q [N, K] int32, zeros [N, K/G] int32, scales
    [N, K/G] float32, with W ~= (q - zero) * scale per group.
    """
    out_features, in_features = weight.shape
    if in_features % group_size:
        raise ValueError(f"in_features {in_features} is not a multiple of group {group_size}")
    max_q = (1 << bits) - 1
    w = weight.float().reshape(out_features, in_features // group_size, group_size)
    w_max, w_min = w.amax(dim=-1), w.amin(dim=-1)
    scales = ((w_max - w_min).clamp(min=1e-5) / max_q)
    zeros = (-torch.round(w_min / scales)).clamp(0, max_q)
    q = (torch.round(w / scales.unsqueeze(-1)) + zeros.unsqueeze(-1)).clamp(0, max_q)
    return (q.reshape(out_features, in_features).to(torch.int32), zeros.to(torch.int32),
            scales)


def to_awq_tensors(q: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor,
                   ) -> dict[str, torch.Tensor]:
    """quantize_groups' output ([N, K], [N, K/G], [N, K/G]) as AutoAWQ's qweight, qzeros,
    scales (fp16)."""
    return {"qweight": pack_awq(q.t().contiguous()), "qzeros": pack_awq(zeros.t().contiguous()),
            "scales": scales.t().contiguous().to(torch.float16)}


def _to_int32(values: torch.Tensor) -> torch.Tensor:
    """int64 holding 32-bit patterns -> int32 with the same bits."""
    return torch.where(values >= 1 << 31, values - (1 << 32), values).to(torch.int32)
