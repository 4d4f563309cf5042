"""Gated activations over fused projections: the kernels' SiLU-and-mul (one Triton kernel
on CUDA, see toolkit.kernels.dispatch; its torch twin elsewhere)."""

from toolkit.kernels.silu_and_mul import silu_and_mul

__all__ = ["silu_and_mul"]
