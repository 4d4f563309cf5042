"""RMSNorm: a Triton kernel for accelerators and its torch twin (the definition)."""

from __future__ import annotations

import torch


def rmsnorm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x: [T, H], weight: [H] -> [T, H] in x's dtype.

    Normalise in float32, cast back to x's dtype, then scale by the weight (rounded once
    more to x's dtype), as transformers' Llama does.
    """
    x_fp32 = x.float()
    inverse_rms = torch.rsqrt(x_fp32.pow(2).mean(dim=-1, keepdim=True) + eps)  # [T, 1]
    normed = (x_fp32 * inverse_rms).to(x.dtype)
    return (weight.float() * normed.float()).to(x.dtype)


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The Triton kernel (imports triton on first call); same contract as rmsnorm_ref."""
    from toolkit.kernels._rmsnorm_triton import rmsnorm_triton

    return rmsnorm_triton(x, weight, eps)
