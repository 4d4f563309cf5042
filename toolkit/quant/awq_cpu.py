"""AWQ weights on the CPU through torch's int4 matmul (packed 4-bit, never dense at rest).

``torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, G, scales_and_zeros)`` computes
``x @ W^T`` with, per group g of G input columns (measured on torch 2.13):

    W[n, k] = (q[n, k] - 8) * scale[g, n] + zero[g, n],   scales_and_zeros [K/G, N, 2]

AWQ stores ``W = (q - z) * s``, which is the same with ``scale = s`` and
``zero = (8 - z) * s``. The packed weight (``_convert_weight_to_int4pack_for_cpu``) is
uint8 [N, K/2]: for each block of INT4PACK_BLOCK_N output columns, K rows of 32 bytes,
byte (k, j) = q[n0 + j, k] | q[n0 + 32 + j, k] << 4. The kernel is fast for decode-sized
inputs; for more than MAX_INT4_MM_ROWS rows (prefill) ``dequantize_int4pack`` rebuilds W
for one dense matmul instead, as the GPU path does.
"""

from __future__ import annotations

import functools

import torch

from toolkit.kernels.awq_format import unpack_awq

INT4PACK_BLOCK_N = 64
"""Output columns per block of the int4pack layout (N must be a multiple)."""
INT4PACK_GROUP_SIZES = (32, 64, 128, 256)
"""Group sizes the int4 CPU kernel accepts."""
MAX_INT4_MM_ROWS = 64
"""Inputs with more rows than this dequantize W and run one dense matmul. Measured with
bench/awq_cpu_matmul.py on SmolLM2's projections (CPU time, one thread): the int4 kernel
takes 0.4-0.8x the time of the packed bf16 matmul at 1 row but grows linearly (3072x576:
104 us at 1 row, 808 at 16, 3222 at 64), while dequantize + matmul is ~flat (2.7-3.5 ms);
they meet near 64 rows."""


def can_use_int4pack(out_features: int, group_size: int, dtype: torch.dtype,
                     device: torch.device) -> bool:
    """True where this torch has the int4 CPU kernel and the layer fits its layout."""
    return (device.type == "cpu" and dtype == torch.bfloat16
            and out_features % INT4PACK_BLOCK_N == 0 and group_size in INT4PACK_GROUP_SIZES
            and hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"))


def to_int4pack(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """AWQ tensors (qweight [K, N/8], qzeros [K/G, N/8], scales [K/G, N]) -> (packed uint8
    [N, K/2], scales_and_zeros [K/G, N, 2] in ``dtype``)."""
    q = unpack_awq(qweight)  # [K, N]
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.t().contiguous(), 1)
    s = scales.float()  # [K/G, N]
    zero = (8 - unpack_awq(qzeros).float()) * s  # [K/G, N]
    return packed, torch.stack([s, zero], dim=-1).to(dtype).contiguous()


def dequantize_int4pack(packed: torch.Tensor, scales_and_zeros: torch.Tensor) -> torch.Tensor:
    """The dense W [K, N] (scales_and_zeros' dtype) that ``packed`` holds."""
    num_groups, out_features, _ = scales_and_zeros.shape
    in_features = packed.shape[1] * 2
    group_size = in_features // num_groups
    num_blocks = out_features // INT4PACK_BLOCK_N
    blocks = packed.view(num_blocks, in_features, INT4PACK_BLOCK_N // 2)
    q = torch.cat([blocks & 0xF, blocks >> 4], dim=-1)  # [N/64, K, 64]
    q = q.view(num_blocks, num_groups, group_size, INT4PACK_BLOCK_N)
    scale, zero = scales_and_zeros.unbind(-1)  # [K/G, N] each

    def per_block(t: torch.Tensor) -> torch.Tensor:  # [K/G, N] -> [N/64, K/G, 1, 64]
        return t.reshape(num_groups, num_blocks, 1, INT4PACK_BLOCK_N).transpose(0, 1).contiguous()

    # NOTE: W = (q - 8) * scale + zero = q * scale + (zero - 8 * scale)
    weight = torch.addcmul(per_block(zero - 8 * scale), q.to(scale.dtype), per_block(scale))
    weight = weight.reshape(num_blocks, in_features, INT4PACK_BLOCK_N)  # [N/64, K, 64]
    return weight.transpose(0, 1).reshape(in_features, out_features)


@functools.cache
def int4pack_layout_is_known() -> bool:
    """Whether this torch packs int4 the way ``dequantize_int4pack`` reads it (checked once
    on a small random weight); if not, every input size uses the int4 kernel."""
    generator = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (2 * INT4PACK_BLOCK_N, 64), dtype=torch.int32, generator=generator)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    ones_zeros = torch.stack([torch.ones(2, q.shape[0]), torch.zeros(2, q.shape[0])], dim=-1)
    weight = dequantize_int4pack(packed, ones_zeros.to(torch.bfloat16))  # [K, N]
    return torch.equal(weight.t().float(), q.float() - 8)


def int4pack_linear(x: torch.Tensor, packed: torch.Tensor, scales_and_zeros: torch.Tensor,
                    bias: torch.Tensor | None) -> torch.Tensor:
    """x: [T, K] bf16 -> x @ W + bias [T, N], by the int4 kernel or, for long inputs, one
    dense matmul of the dequantized weight."""
    if x.shape[0] > MAX_INT4_MM_ROWS and int4pack_layout_is_known():
        out = torch.matmul(x, dequantize_int4pack(packed, scales_and_zeros))  # W [K, N]
        return out if bias is None else out + bias
    group_size = packed.shape[1] * 2 // scales_and_zeros.shape[0]
    out = torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group_size, scales_and_zeros)
    return out if bias is None else out + bias
