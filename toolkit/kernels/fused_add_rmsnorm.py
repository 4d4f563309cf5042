"""Residual add fused with RMSNorm: one pass instead of an add and a norm per sub-layer.

    residual' = residual + x          (rounded to the model dtype, as the layer's ``+`` is)
    normed    = rmsnorm(residual', weight, eps)

``fused_add_rmsnorm`` runs the Triton kernel where ``dispatch.use_triton`` says so (CUDA
tensors), the torch twin otherwise.
"""

from __future__ import annotations

import torch

from toolkit.kernels.dispatch import use_triton
from toolkit.kernels.rmsnorm import rmsnorm_ref


def fused_add_rmsnorm_ref(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                          eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x, residual: [T, H], weight: [H] -> (normed [T, H], new residual [T, H])."""
    new_residual = residual + x
    return rmsnorm_ref(new_residual, weight, eps), new_residual


def fused_add_rmsnorm_triton(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                             eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton kernel (imports triton on first call); same contract as the twin."""
    from toolkit.kernels._fused_add_rmsnorm_triton import launch

    return launch(x, residual, weight, eps)


def fused_add_rmsnorm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                      eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton on CUDA tensors, the torch twin otherwise."""
    if use_triton(x):
        return fused_add_rmsnorm_triton(x, residual, weight, eps)
    return fused_add_rmsnorm_ref(x, residual, weight, eps)
