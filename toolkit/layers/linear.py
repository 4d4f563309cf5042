"""Linear layers with optional oneDNN pre-packed weights for the CPU.

``F.linear`` on a bfloat16 CPU tensor asks oneDNN for a matmul with a plain row-major
weight, which oneDNN reorders (a full copy of the weight) into its blocked layout on every
call. Packing once at load time (``torch.ops.mkldnn._reorder_linear_weight``, the op that
inductor's CPU freezing pass uses) skips that copy: the same kernel runs on the same data
in the same order, so results are bit-identical, and decode-sized matmuls (M = 1 .. 64)
run about 1.5x faster on AVX-512/AMX (bench/decode_step_ab.py shows the whole step).

Bit-identity holds only while F.linear takes the same oneDNN route: above a few hundred
rows (measured: from M = 289 for a 576x576 weight, 342 for 576x1536, with 2 threads) it
switches algorithms, so inputs with more than PACKED_MAX_TOKENS rows (prefill chunks,
where the matmuls are compute bound and the reorder is amortised) keep F.linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PACKED_MAX_TOKENS = 128
"""Inputs with more rows than this use F.linear even when a packed weight exists."""

PACKABLE_DTYPES = (torch.bfloat16,)
"""Dtypes whose CPU linear is packed; float32 stays on MKL sgemm (the parity oracle)."""


def can_pack(weight: torch.Tensor) -> bool:
    """True where a oneDNN-packed copy of ``weight`` [N, K] can be made and pays."""
    return (weight.device.type == "cpu" and weight.dtype in PACKABLE_DTYPES
            and weight.dim() == 2 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def pack_weight(weight: torch.Tensor, batch_size_hint: int = 16) -> torch.Tensor | None:
    """A oneDNN-blocked (opaque, ``is_mkldnn``) copy of ``weight`` [N, K], or None where
    packing does not apply (not a bf16 CPU tensor, or no oneDNN in this torch build)."""
    if not can_pack(weight):
        return None
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), batch_size_hint)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           packed: torch.Tensor | None = None) -> torch.Tensor:
    """x: [T, K], weight: [N, K] -> [T, N]; uses ``packed`` (from pack_weight) when given
    and T <= PACKED_MAX_TOKENS, F.linear otherwise (identical results either way)."""
    if packed is not None and x.shape[0] <= PACKED_MAX_TOKENS:
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    return F.linear(x, weight, bias)
