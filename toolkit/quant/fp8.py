"""The ``fp8`` method: weight-only float8_e4m3fn, one scale per output channel, made at
load time from a dense (bf16/fp16/fp32) checkpoint.

The checkpoint's ``weight`` [N, K] loads as usual; ``after_load`` replaces it by
``weight`` float8_e4m3fn [N, K] and ``weight_scale`` float32 [N] with

    W[n, k] = weight[n, k] * weight_scale[n],   weight_scale[n] ~= amax(|W[n, :]|) / 448

so about one byte per weight stays resident. ``weight_scale`` is rounded to the model
dtype (then clamped values stay within 448), which makes ``fp8 * scale`` exact in float32
and the dequantized weight a single rounding of it in the model dtype.

Where it runs:

- CPU (and CUDA without fp8 tensor cores): each call dequantizes W into the model dtype
  and runs one dense matmul. For bfloat16 (float16) the fp8 bytes become the target
  dtype's bits with two integer ops (sign and exponent/mantissa moved into place, exact up
  to a power of two folded into the scale). Measured on this CPU (1 thread, the four
  projections of one SmolLM2 layer, decode M=1, shared machine): bf16 pre-packed 0.85 ms,
  this route ~13 ms, ``Tensor.to`` dequantization 68 ms, torch._scaled_mm with per-token
  fp8 activations 81 ms, and oneDNN's fp8 qlinear 30 ms for gate_up alone. This CPU has
  no fp8 matmul, so on it fp8 saves memory (~0.5x of bf16), not time.
- CUDA, compute capability >= 8.9, bfloat16: ``torch._scaled_mm`` on fp8 tensor cores,
  with activations quantized per token on the fly (dynamic W8A8, as vLLM's fp8).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.kv.fp8 import BIT_CAST_FACTORS, BIT_CASTS, FP8_MAX, fp8_bits_as
from toolkit.quant.base import ModelLoadError, ParamSpec, QuantMethod

if TYPE_CHECKING:
    from toolkit.config.schema import QuantConfig

FP8 = torch.float8_e4m3fn
def quantize_fp8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [N, K] -> (float8_e4m3fn [N, K], float32 scales [N]); scales are rounded to
    weight's dtype so that ``dequantize_fp8`` is one rounding of an exact product."""
    w = weight.float()
    amax = w.abs().amax(dim=1)  # [N]
    scales = (amax / FP8_MAX).to(weight.dtype).float()
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    values = (w / scales[:, None]).clamp_(-FP8_MAX, FP8_MAX).to(FP8)
    return values, scales


def dequantize_fp8(weight: torch.Tensor, scales: torch.Tensor,
                   dtype: torch.dtype) -> torch.Tensor:
    """The dense W [N, K] in ``dtype`` (the reference definition)."""
    return (weight.float() * scales[:, None]).to(dtype)


def bit_cast_scales(scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """[N, 1] scales in ``dtype`` for ``dequantize_fp8_fast``, or None where ``dtype`` has
    no bit-cast route (float32: plain conversion)."""
    if dtype not in BIT_CASTS:
        return None
    return (scales * BIT_CAST_FACTORS[dtype]).to(dtype)[:, None]


def dequantize_fp8_fast(weight: torch.Tensor, row_scales: torch.Tensor) -> torch.Tensor:
    """``dequantize_fp8`` for bfloat16/float16 (row_scales' dtype, from bit_cast_scales):
    ``fp8_bits_as`` then one multiply by the scale times the bias factor (bit-identical
    to ``dequantize_fp8``)."""
    return fp8_bits_as(weight, row_scales.dtype).mul_(row_scales)


class FP8Method(QuantMethod):
    """Weight-only fp8 (e4m3) with per-output-channel scales, quantized at load time."""

    name = "fp8"

    def __repr__(self) -> str:
        return "FP8Method(float8_e4m3fn, per-channel)"

    def param_specs(self, in_features: int, out_features: int,
                    dtype: torch.dtype) -> dict[str, ParamSpec]:
        return {"weight": ParamSpec((out_features, in_features), dtype, output_dim=0,
                                     input_dim=1)}

    def after_load(self, layer: nn.Module) -> None:
        dtype = layer.weight.dtype
        values, scales = quantize_fp8(layer.weight.data)
        del layer.weight  # the dense copy goes; only the fp8 bytes stay
        layer.weight = nn.Parameter(values, requires_grad=False)  # fp8 [N, K]
        layer.weight_scale = nn.Parameter(scales, requires_grad=False)  # float32 [N]
        layer.register_buffer("row_scales", bit_cast_scales(scales, dtype), persistent=False)
        layer.use_scaled_mm = _can_use_scaled_mm(values, dtype)

    def apply(self, layer: nn.Module, x: torch.Tensor,
              bias: torch.Tensor | None) -> torch.Tensor:
        if layer.use_scaled_mm:
            return scaled_mm_linear(x, layer.weight, layer.weight_scale, bias)
        if layer.row_scales is not None:
            weight = dequantize_fp8_fast(layer.weight, layer.row_scales)
        else:
            weight = dequantize_fp8(layer.weight, layer.weight_scale, x.dtype)
        return F.linear(x, weight, bias)


def _can_use_scaled_mm(weight: torch.Tensor, dtype: torch.dtype) -> bool:
    """CUDA with fp8 tensor cores (sm89+), bf16 activations, dims multiple of 16."""
    if not weight.is_cuda or dtype != torch.bfloat16 or not hasattr(torch, "_scaled_mm"):
        return False
    out_features, in_features = weight.shape
    return (torch.cuda.get_device_capability(weight.device) >= (8, 9)
            and out_features % 16 == 0 and in_features % 16 == 0)


def scaled_mm_linear(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
                     bias: torch.Tensor | None) -> torch.Tensor:
    """x [T, K] bf16 (CUDA) -> [T, N]: per-token fp8 activations times the fp8 weight on
    tensor cores, row-wise scales (scale_a [T, 1], scale_b [1, N])."""
    x_scale = x.abs().amax(dim=1, keepdim=True).float().clamp_(min=1e-12) / FP8_MAX  # [T, 1]
    x_fp8 = (x.float() / x_scale).clamp_(-FP8_MAX, FP8_MAX).to(FP8)
    out = torch._scaled_mm(x_fp8, weight.t(), scale_a=x_scale,
                           scale_b=weight_scale.view(1, -1), out_dtype=x.dtype)
    return out if bias is None else out + bias


def create_fp8(cfg: QuantConfig, checkpoint: dict[str, Any], prepack_weights: bool) -> FP8Method:
    """The ``fp8`` factory: quantizes a dense checkpoint; refuses a quantized one and a
    group size (scales are per output channel)."""
    del prepack_weights  # the fp8 weight is dequantized per call; nothing to pre-pack
    if checkpoint:
        raise ModelLoadError(
            f"quant.method='fp8' quantizes a dense checkpoint at load time, but this one is "
            f"already {checkpoint.get('quant_method', 'quantized')}-quantized "
            "(config.json quantization_config); use quant=auto")
    if cfg.group_size is not None:
        raise ModelLoadError(f"quant.group_size={cfg.group_size} does not apply to fp8 "
                             "(one scale per output channel); leave it null")
    return FP8Method()
