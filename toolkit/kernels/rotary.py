"""Rotary embedding of q and k in one launch, in toolkit/layers/rotary.py's layout.

cos and sin are what ``RotaryEmbedding.cos_sin(positions)`` returns: [T, 1, D] in the
model dtype, cos = [c, c] and signed sin = [-s, s] over the two halves of D, so that
    rotated = x * cos + roll(x, D / 2) * sin          (NeoX / HF "rotate_half")
``apply_rotary`` runs the Triton kernel where ``dispatch.use_triton`` says so (CUDA tensors)
and head_dim is a power of two, the torch twin otherwise.
"""

from __future__ import annotations

import torch

from toolkit.kernels.dispatch import use_triton


def apply_rotary_ref(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                     sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q [T, Hq, D], k [T, Hkv, D], cos/sin [T, 1, D] -> rotated (q, k), same shapes."""
    half = q.shape[-1] // 2
    return (q * cos + q.roll(half, dims=-1) * sin, k * cos + k.roll(half, dims=-1) * sin)


def apply_rotary_triton(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                        sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton kernel (imports triton on first call); same contract as the twin.
    q and k may be strided views (e.g. slices of a fused QKV output) with D contiguous."""
    from toolkit.kernels._rotary_triton import launch

    return launch(q, k, cos, sin)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                 sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton on CUDA tensors (power-of-two head_dim), the torch twin otherwise."""
    head_dim = q.shape[-1]
    if use_triton(q) and head_dim & (head_dim - 1) == 0:
        return apply_rotary_triton(q, k, cos, sin)
    return apply_rotary_ref(q, k, cos, sin)
