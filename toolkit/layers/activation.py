"""Gated activations over fused projections: the kernels' SiLU-and-mul (one Triton kernel
on CUDA, see toolkit.kernels.dispatch; one C++ call on the CPU when given the native route,
``kernels=``, see toolkit.kernels.route; its torch twin elsewhere)."""

from toolkit.kernels.silu_and_mul import silu_and_mul

__all__ = ["silu_and_mul"]
