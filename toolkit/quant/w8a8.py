"""The ``w8a8`` method: int8 weights and int8 activations with an int32 matmul (CPU: VNNI
in the native ``q8_int_mm``, or VNNI or AMX through oneDNN's ``torch._int_mm``), made at
load time from a dense checkpoint.

Weights: the checkpoint's ``weight`` [N, K] loads as for ``none`` (so fused q/k/v and
gate/up parts and tensor-parallel shards are cut from the dense tensor); ``after_load``
replaces it by per-output-channel symmetric codes and frees the dense copy:

    weight int8 [N, K] = clamp(round(W / weight_scale[:, None]), -127, 127)
    weight_scale float32 [N] = amax(|W[n, :]|) / 127      (1 for an all-zero row)

On the native kernel route (N a multiple of 8, K of 32; a CPU without AMX, where it was
measured: ``q8_int_mm_preferred``) the codes are stored in
q8_linear's layout (toolkit/kernels/q8_linear.py: offset by 128, 8 output channels per
vector) and multiplied by the native ``q8_scaled_mm`` (toolkit/kernels/cpu/q8.cpp, VNNI,
scaled as ``dequantize_rows`` in the same pass): the same exact int32 sums as ``_int_mm``,
so the same bits, in less time (SmolLM2's 30
layers, Zen 4, 2 threads: 1.5-2x faster at 1-16 rows, 1.3x at 64, even from 256 rows up;
``python experiments/int8_matmul_ab.py``). Elsewhere they are
stored [N, K] row-major and handed to ``_int_mm`` as its transpose [K, N]: measured on an
AMD EPYC (AVX-512 VNNI, no AMX, 1 thread), as fast as a [K, N] contiguous copy from 16 rows
up and 3-5x faster at one row (576x3072: 0.029 vs 0.105 ms). Resident: one byte per weight
plus 4 per output channel (~0.5x of bfloat16) either way.

Activations: per-row symmetric int8 (toolkit/kernels/int8_rows.py, native kernels on the
native route), then ``y = (float(x_q @ w_q^T) * x_scale[t]) * w_scale[n] (+ bias)`` in
float32, rounded to the model dtype. Every row is quantized from itself alone and the
int32 sums are exact, so a row's output bits do not depend on the rows beside it: the
method is batch-invariant by construction (``device.deterministic``); ``batch_variance``
still checks it per CPU at start-up, as for the dense route.

Error: per product term |x w - x_q w_q s_x s_w| <= (|x| s_w + |w| s_x) / 2 + 3 s_x s_w / 4,
so a row's output differs from the float matmul by at most the sum of that over K (see
tests/quant/test_w8a8.py, which checks the bound).

The LM head stays dense (bfloat16, oneDNN-packed as for ``none``) by default: it is one
matmul of 49k outputs whose logits feed sampling directly, and int8 logits move some greedy
choices. ``quant.int8_lm_head=true`` makes it int8 as well on the native kernel route
(toolkit/quant/int8_lm_head.py: q8_linear on every step, so still batch-invariant), for
about half the head's time at 16-64 rows.

CPU only: on CUDA ``after_load`` refuses (``_int_mm`` there needs T > 16 and dims that
are multiples of 8; use quant=fp8 for a GPU).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from toolkit.kernels.int8_rows import dequantize_rows, quantize_rows, quantize_rows_ref
from toolkit.kernels.q8_linear import BLOCK, LANES, pack_q8, q8_int_mm_preferred
from toolkit.quant.base import ModelLoadError, NativeProjection, ParamSpec, QuantMethod
from toolkit.quant.int8_lm_head import Int8LMHead

if TYPE_CHECKING:
    from toolkit.config.schema import QuantConfig

VARIANCE_ROW_COUNTS = (1, 2, 3, 16, 64)
"""Row counts whose bits ``batch_variance`` compares with those of a call of 131 rows."""


class W8A8Method(QuantMethod):
    """Per-channel int8 weights, per-token int8 activations, int32 matmul (CPU)."""

    name = "w8a8"

    def __init__(self, int8_lm_head: bool = False) -> None:
        super().__init__()
        self.int8_lm_head = int8_lm_head
        """Whether the model gets an int8 LM head (native kernel route only)."""

    def __repr__(self) -> str:
        return "W8A8Method(int8 per-channel weights, int8 per-token activations)"

    def param_specs(self, in_features: int, out_features: int,
                    dtype: torch.dtype) -> dict[str, ParamSpec]:
        return {"weight": ParamSpec((out_features, in_features), dtype, output_dim=0,
                                     input_dim=1)}

    def enable_batch_invariance(self) -> bool:
        """Always: rows are quantized independently and int32 sums are exact."""
        self.batch_invariant = True
        return True

    def after_load(self, layer: nn.Module) -> None:
        if layer.weight.device.type != "cpu":
            raise ModelLoadError(f"quant.method='w8a8' runs on the CPU only (the weights are "
                                 f"on {layer.weight.device.type}); use quant=fp8 there")
        codes, scales = quantize_rows_ref(layer.weight.data)  # per output channel
        out_features, in_features = codes.shape
        del layer.weight  # the dense copy goes; only the int8 codes stay
        layer.weight_scale = nn.Parameter(scales, requires_grad=False)  # float32 [N]
        # NOTE: plain attributes skip nn.Module's parameter lookup per call
        layer.col_scales = scales
        if (self.kernels.is_native and q8_int_mm_preferred() and out_features % LANES == 0
                and in_features % BLOCK == 0):
            layer.weight = nn.Parameter(pack_q8(codes), requires_grad=False)  # q8 layout
            layer.weight_t = None
        else:
            layer.weight = nn.Parameter(codes, requires_grad=False)  # int8 [N, K]
            layer.weight_t = codes.t()  # [K, N] view, _int_mm's fast layout

    def apply(self, layer: nn.Module, x: torch.Tensor,
              bias: torch.Tensor | None) -> torch.Tensor:
        codes, row_scales = quantize_rows(x, self.kernels)  # int8 [T, K], float32 [T]
        if layer.weight_t is None:  # the int32 matmul and dequantize_rows in one kernel
            return self.kernels.ops.q8_scaled_mm(codes, row_scales, layer.weight,
                                                 layer.col_scales, bias, x.dtype)  # [T, N]
        acc = torch._int_mm(codes, layer.weight_t)  # int32 [T, N]
        return dequantize_rows(acc, row_scales, layer.col_scales, bias, x.dtype, self.kernels)

    def native_projection(self, layer: nn.Module) -> NativeProjection | None:
        """The whole of ``apply`` at any number of rows (the native decoder stack runs the
        same three kernels; quantize_rows and dequantize_rows take the native route there)."""
        weight = layer.weight if layer.weight_t is None else layer.weight_t
        return NativeProjection("w8a8", weight, layer.col_scales, sys.maxsize)

    def quantize_lm_head(self, weight: torch.Tensor) -> Int8LMHead | None:
        """With ``int8_lm_head``, the int8 head where it runs on every step (the native
        route), so that a row's logits still do not depend on the step's other rows."""
        if not self.int8_lm_head:
            return None
        head = Int8LMHead.quantize(weight, self.kernels)
        return head if head is not None and head.kernels.is_native else None

    def batch_variance(self, layer: nn.Module) -> str | None:
        """Where a row's bits differ alone or among a few rows from among 131 rows."""
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(131, layer.in_features, generator=generator).to(layer.dtype)
        whole = self.apply(layer, x, None)
        for num_rows in VARIANCE_ROW_COUNTS:
            if not torch.equal(self.apply(layer, x[:num_rows], None), whole[:num_rows]):
                return f"w8a8 {list(layer.weight.shape)} at {num_rows} rows"
        return None


def create_w8a8(cfg: QuantConfig, checkpoint: dict[str, Any],
                prepack_weights: bool) -> W8A8Method:
    """The ``w8a8`` factory: quantizes a dense checkpoint; refuses a quantized one and a
    group size (scales are per output channel and per token)."""
    del prepack_weights  # the int8 weight is what _int_mm takes; nothing to pre-pack
    if checkpoint:
        raise ModelLoadError(
            f"quant.method='w8a8' quantizes a dense checkpoint at load time, but this one "
            f"is already {checkpoint.get('quant_method', 'quantized')}-quantized "
            "(config.json quantization_config); use quant=auto")
    if cfg.group_size is not None:
        raise ModelLoadError(f"quant.group_size={cfg.group_size} does not apply to w8a8 "
                             "(one scale per output channel); leave it null")
    return W8A8Method(cfg.int8_lm_head)
