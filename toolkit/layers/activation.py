"""Gated activations over fused projections ``[T, 2 * I]`` (gate, then up) -> ``[T, I]``.

silu_and_mul (Llama's SwiGLU): one Triton kernel on CUDA (see toolkit.kernels.dispatch),
one C++ call on the CPU when given the native route (``kernels=``, see
toolkit.kernels.route), its torch twin elsewhere.
gelu_and_mul (Gemma's GeGLU, ``hidden_activation: gelu_pytorch_tanh``): torch ops on every
device (GELU's tanh approximation, then the product, in the input's dtype, as transformers
computes ``act(gate) * up``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.kernels.silu_and_mul import silu_and_mul

__all__ = ["gelu_and_mul", "silu_and_mul"]


def gelu_and_mul(gate_up: torch.Tensor, *, kernels: KernelRoute = TORCH) -> torch.Tensor:
    """gate_up: [T, 2 * I] -> gelu_tanh(gate) * up, [T, I] in gate_up's dtype.

    ``kernels`` is accepted for symmetry with silu_and_mul; every route runs the torch ops.
    """
    gate, up = gate_up.chunk(2, dim=-1)
    return F.gelu(gate, approximate="tanh") * up
