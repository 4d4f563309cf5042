"""AWQ 4-bit GEMM: a Triton fused dequantize-GEMM, a Triton dequantizer, and their torch twin.

Layout (AutoAWQ "gemm", see toolkit/kernels/awq_format.py), for K inputs, N outputs, group G:
    x [M, K] fp16/bf16/fp32, qweight int32 [K, N/8], qzeros int32 [K/G, N/8],
    scales [K/G, N]  ->  y = x @ W  [M, N] in x's dtype (no bias: callers add it).
Group size -1 in a checkpoint means one group: pass group_size=K.

``awq_gemm`` runs the fused kernel for decode-sized M (fp32 accumulation, split-K when the
output tiles alone cannot fill the GPU) and, for M >= max_fused_m, dequantizes W once with
``awq_dequantize`` and calls torch.matmul, as vLLM and AutoAWQ do for prefill.
"""

from __future__ import annotations

import functools

import torch

from toolkit.kernels.awq_format import PACK_FACTOR, dequantize_awq

MAX_FUSED_M = 256
"""Rows at or above which awq_gemm dequantizes then calls a dense matmul."""
MAX_SPLIT_K = 16
"""Upper bound on the split-K factor chosen by the heuristic."""
MAX_BLOCK_K = 64
"""Largest K tile of the fused kernel (it must also divide the group size)."""
BLOCK_N = 64
"""Output columns per program of the fused kernel."""
CPU_NUM_SMS = 4
"""Stand-in SM count off CUDA (the interpreter), so that tests exercise split-K."""


def awq_gemm_ref(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor,
                 scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """Torch twin: dense W = dequantize_awq(...), then x @ W in x's dtype. [M, K] -> [M, N]."""
    weight = dequantize_awq(qweight, qzeros, scales, group_size)  # [K, N]
    return torch.matmul(x, weight.to(x.dtype))


def awq_gemm(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor,
             scales: torch.Tensor, group_size: int, *, split_k: int | None = None,
             max_fused_m: int = MAX_FUSED_M) -> torch.Tensor:
    """Triton AWQ GEMM (same contract as awq_gemm_ref); imports triton on first call.

    split_k: K slices summed in fp32 (None: chosen from the tile count and SM count).
    max_fused_m: at or above this many rows, dequantize + dense matmul instead.
    """
    _check_shapes(x, qweight, qzeros, scales, group_size)
    if x.shape[0] == 0:
        return x.new_empty((0, scales.shape[1]))
    if x.shape[0] >= max_fused_m:
        weight = awq_dequantize(qweight, qzeros, scales, group_size)  # [K, N]
        return torch.matmul(x, weight.to(x.dtype))
    from toolkit.kernels._awq_gemm_triton import awq_gemm_triton

    if x.stride(1) != 1:
        x = x.contiguous()
    num_rows, in_features = x.shape
    block_m = _block_m(num_rows)
    block_k = _block_k(group_size)
    if split_k is None:
        num_tiles = -(-num_rows // block_m) * -(-scales.shape[1] // BLOCK_N)
        split_k = choose_split_k(num_tiles, in_features // block_k, _num_sms(x.device))
    return awq_gemm_triton(x, qweight, qzeros, scales, group_size, block_m, BLOCK_N,
                           block_k, split_k)


def awq_dequantize(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                   group_size: int) -> torch.Tensor:
    """Triton twin of awq_format.dequantize_awq: the dense W [K, N] in scales' dtype."""
    from toolkit.kernels._awq_gemm_triton import awq_dequantize_triton

    return awq_dequantize_triton(qweight, qzeros, scales, group_size)


def choose_split_k(num_tiles: int, num_k_tiles: int, num_sms: int) -> int:
    """A power of two so that num_tiles * split_k reaches about two waves of num_sms,
    bounded by MAX_SPLIT_K and by the number of K tiles."""
    split_k = 1
    while (num_tiles * split_k < 2 * num_sms and split_k * 2 <= num_k_tiles
           and split_k * 2 <= MAX_SPLIT_K):
        split_k *= 2
    return split_k


def _block_m(num_rows: int) -> int:
    """Smallest tl.dot-legal row tile (>= 16) covering decode batches, at most 64."""
    return 16 if num_rows <= 16 else 32 if num_rows <= 32 else 64


def _block_k(group_size: int) -> int:
    """Largest power-of-two tile <= MAX_BLOCK_K dividing the group (tl.dot needs >= 16)."""
    block_k = MAX_BLOCK_K
    while group_size % block_k:
        block_k //= 2
    if block_k < 16:
        raise ValueError(f"group_size {group_size} must be a multiple of 16 for awq_gemm")
    return block_k


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return _cuda_num_sms(device.index if device.index is not None else 0)
    return CPU_NUM_SMS


@functools.cache
def _cuda_num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _check_shapes(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor,
                  scales: torch.Tensor, group_size: int) -> None:
    """Raise ValueError unless the tensors form one AWQ GEMM problem."""
    in_features, num_packed = qweight.shape
    out_features = num_packed * PACK_FACTOR
    if x.dim() != 2 or x.shape[1] != in_features:
        raise ValueError(f"x {tuple(x.shape)} does not match qweight {tuple(qweight.shape)}")
    if group_size <= 0 or in_features % group_size:
        raise ValueError(f"group_size {group_size} does not divide in_features {in_features}")
    num_groups = in_features // group_size
    if tuple(scales.shape) != (num_groups, out_features):
        raise ValueError(f"scales {tuple(scales.shape)} != ({num_groups}, {out_features})")
    if tuple(qzeros.shape) != (num_groups, num_packed):
        raise ValueError(f"qzeros {tuple(qzeros.shape)} != ({num_groups}, {num_packed})")
    if qweight.dtype != torch.int32 or qzeros.dtype != torch.int32:
        raise ValueError("qweight and qzeros must be int32")
    if not (qweight.is_contiguous() and qzeros.is_contiguous() and scales.is_contiguous()):
        raise ValueError("qweight, qzeros and scales must be contiguous")
