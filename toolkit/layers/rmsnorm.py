"""RMSNorm with the numerics of the reference implementations (normalise in float32).

On CUDA (``toolkit.kernels.dispatch.use_triton``) both functions launch one Triton kernel;
on the CPU, when the caller passes the native route (``kernels``, the route its model was
built with; see toolkit.kernels.route), one C++ call; elsewhere they are the torch ops below,
unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from toolkit.kernels.dispatch import use_triton
from toolkit.kernels.fused_add_rmsnorm import fused_add_rmsnorm_triton
from toolkit.kernels.rmsnorm import rmsnorm as rmsnorm_triton
from toolkit.kernels.route import TORCH, KernelRoute


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, *,
             kernels: KernelRoute = TORCH) -> torch.Tensor:
    """x: [T, H] any float dtype, weight: [H] -> [T, H] in x's dtype.

    Normalises in float32, casts back to x's dtype, then scales by ``weight`` (the order
    transformers' Llama uses, so bf16 results match it bit for bit in spirit).
    ``kernels``: the caller's CPU route (native: the C++ kernel for 2-D inputs it takes).
    """
    if use_triton(x):
        return rmsnorm_triton(x, weight, eps)
    if x.dim() == 2 and (ops := kernels.native_ops(x, weight)) is not None:
        return ops.rms_norm(x, weight, eps)
    normed = F.rms_norm(x.float(), (x.shape[-1],), eps=eps)  # [T, H] float32
    return weight * normed.to(x.dtype)


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float, *, kernels: KernelRoute = TORCH,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """x, residual: [T, H], weight: [H] -> (rms_norm(residual + x), residual + x), [T, H] each.

    The residual stream's add and the next sub-layer's norm: one kernel on the Triton
    route and on the native one (``kernels``, as in ``rms_norm``); on the torch route
    exactly the add and ``rms_norm`` a pre-norm layer does.
    """
    if use_triton(x):
        return fused_add_rmsnorm_triton(x, residual, weight, eps)
    if x.dim() == 2 and (ops := kernels.native_ops(x, residual, weight)) is not None:
        return ops.fused_add_rms_norm(x, residual, weight, eps)
    residual = residual + x
    return rms_norm(residual, weight, eps, kernels=kernels), residual
