"""SiLU-and-mul over a fused gate/up projection (toolkit/layers/activation.py's contract).

``silu_and_mul`` runs the Triton kernel where ``dispatch.use_triton`` says so (CUDA tensors),
the C++ kernel on the native route it is given (``kernels``, see toolkit/kernels/route.py)
for CPU tensors it takes, the torch twin otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from toolkit.kernels.dispatch import use_triton
from toolkit.kernels.route import TORCH, KernelRoute


def silu_and_mul_ref(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up: [T, 2 * I] (gate first, then up) -> silu(gate) * up: [T, I]."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def silu_and_mul_triton(gate_up: torch.Tensor) -> torch.Tensor:
    """The Triton kernel (imports triton on first call); same contract as the twin."""
    from toolkit.kernels._silu_and_mul_triton import launch

    return launch(gate_up)


def silu_and_mul(gate_up: torch.Tensor, *, kernels: KernelRoute = TORCH) -> torch.Tensor:
    """Triton on CUDA tensors; C++ on 2-D CPU ones when ``kernels`` (the caller's route,
    chosen when it was built) is native; the torch twin otherwise."""
    if use_triton(gate_up):
        return silu_and_mul_triton(gate_up)
    if gate_up.dim() == 2 and (ops := kernels.native_ops(gate_up)) is not None:
        return ops.silu_and_mul(gate_up)
    return silu_and_mul_ref(gate_up)
