"""Gated activations over fused projections (one Triton kernel on CUDA, see
toolkit.kernels.dispatch; the torch ops elsewhere)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from toolkit.kernels.dispatch import use_triton
from toolkit.kernels.silu_and_mul import silu_and_mul_triton


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up: [T, 2 * I] (gate first, then up) -> silu(gate) * up: [T, I]."""
    if use_triton(gate_up):
        return silu_and_mul_triton(gate_up)
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up
