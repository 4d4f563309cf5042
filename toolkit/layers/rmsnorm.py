"""RMSNorm with the numerics of the reference implementations (normalise in float32).

On CUDA (``toolkit.kernels.dispatch.use_triton``) both functions launch one Triton kernel;
on the CPU with the native kernels loaded (``toolkit.kernels.native``) one C++ call; elsewhere
they are the torch ops below, unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from toolkit.kernels import native
from toolkit.kernels.dispatch import use_triton
from toolkit.kernels.fused_add_rmsnorm import fused_add_rmsnorm_triton
from toolkit.kernels.rmsnorm import rmsnorm as rmsnorm_triton


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x: [T, H] any float dtype, weight: [H] -> [T, H] in x's dtype.

    Normalises in float32, casts back to x's dtype, then scales by ``weight`` (the order
    transformers' Llama uses, so bf16 results match it bit for bit in spirit).
    """
    if use_triton(x):
        return rmsnorm_triton(x, weight, eps)
    if x.dim() == 2 and native.use_native(x, weight):
        return native.ops().rms_norm(x, weight, eps)
    normed = F.rms_norm(x.float(), (x.shape[-1],), eps=eps)  # [T, H] float32
    return weight * normed.to(x.dtype)


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x, residual: [T, H], weight: [H] -> (rms_norm(residual + x), residual + x), [T, H] each.

    The residual stream's add and the next sub-layer's norm: one kernel on the Triton
    route; on the torch route exactly the add and ``rms_norm`` a pre-norm layer does.
    """
    if use_triton(x):
        return fused_add_rmsnorm_triton(x, residual, weight, eps)
    if x.dim() == 2 and native.use_native(x, residual, weight):
        return native.ops().fused_add_rms_norm(x, residual, weight, eps)
    residual = residual + x
    return rms_norm(residual, weight, eps), residual
