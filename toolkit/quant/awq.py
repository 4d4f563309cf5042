"""The ``awq`` method: AutoAWQ GEMM checkpoints (4-bit, zero point, group 32/64/128).

Checkpoint tensors per projection (toolkit/kernels/awq_format.py): qweight int32 [K, N/8],
qzeros int32 [K/G, N/8], scales fp16 [K/G, N]. Where they run:

- CUDA: the Triton ``awq_gemm`` (toolkit/kernels/awq_gemm.py) on the stored tensors; it
  dequantizes + matmuls itself for long inputs.
- CPU, bfloat16, N a multiple of 64: after_load repacks into torch's int4 CPU layout
  (toolkit/quant/awq_cpu.py) and drops the AWQ tensors: about 0.27-0.31x of bf16 bytes.
- Elsewhere (float32 tests, odd N): the AWQ tensors stay; each call dequantizes W.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from toolkit.kernels.awq_format import PACK_FACTOR, dequantize_awq
from toolkit.quant import awq_cpu
from toolkit.quant.base import (
    ModelLoadError,
    NativeProjection,
    ParamSpec,
    QuantMethod,
    check_group_size,
)

if TYPE_CHECKING:
    from torch import nn

    from toolkit.config.schema import QuantConfig

GROUP_SIZES = (32, 64, 128)
"""Group sizes the awq method loads."""
AWQ_TENSORS = ("qweight", "qzeros", "scales")


class AWQMethod(QuantMethod):
    """4-bit AWQ GEMM weights with one zero point and scale per (group, output column)."""

    name = "awq"

    def __init__(self, group_size: int) -> None:
        self.group_size = group_size

    def __repr__(self) -> str:
        return f"AWQMethod(bits=4, group_size={self.group_size})"

    def param_specs(self, in_features: int, out_features: int,
                    dtype: torch.dtype) -> dict[str, ParamSpec]:
        if in_features % self.group_size or out_features % PACK_FACTOR:
            raise ModelLoadError(
                f"awq group_size={self.group_size} needs in_features divisible by it and "
                f"out_features by {PACK_FACTOR}; this model has a {in_features} -> "
                f"{out_features} projection")
        num_groups = in_features // self.group_size
        return {
            "qweight": ParamSpec((in_features, out_features // PACK_FACTOR), torch.int32, 1,
                                 PACK_FACTOR, input_dim=0),
            "qzeros": ParamSpec((num_groups, out_features // PACK_FACTOR), torch.int32, 1,
                                PACK_FACTOR, input_dim=0, input_pack=self.group_size),
            "scales": ParamSpec((num_groups, out_features), torch.float16, 1, input_dim=0,
                                input_pack=self.group_size),
        }

    def check_checkpoint(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Every ``*.qweight`` must come with qzeros/scales of this group size."""
        for name, qweight in shapes.items():
            if not name.endswith(".qweight"):
                continue
            base = name[: -len("qweight")]
            _check_awq_shapes(base, qweight, shapes.get(base + "qzeros"),
                              shapes.get(base + "scales"), self.group_size)

    def after_load(self, layer: nn.Module) -> None:
        out_features = layer.scales.shape[1]
        layer.int4pack = None
        if not awq_cpu.can_use_int4pack(out_features, self.group_size, layer.dtype,
                                        layer.qweight.device):
            return
        packed, scales_and_zeros = awq_cpu.to_int4pack(layer.qweight, layer.qzeros,
                                                       layer.scales, layer.dtype)
        for name in AWQ_TENSORS:
            delattr(layer, name)
        layer.register_buffer("int4_weight", packed)  # uint8 [N, K/2]
        layer.register_buffer("scales_and_zeros", scales_and_zeros)  # [K/G, N, 2]
        layer.int4pack = True

    def native_projection(self, layer: nn.Module) -> NativeProjection | None:
        if not layer.int4pack:
            return None
        return NativeProjection("int4pack", layer.int4_weight, layer.scales_and_zeros,
                                awq_cpu.MAX_INT4_MM_ROWS)

    def apply(self, layer: nn.Module, x: torch.Tensor,
              bias: torch.Tensor | None) -> torch.Tensor:
        if layer.int4pack:
            return awq_cpu.int4pack_linear(x, layer.int4_weight, layer.scales_and_zeros, bias)
        if x.is_cuda:
            from toolkit.kernels.awq_gemm import awq_gemm

            out = awq_gemm(x, layer.qweight, layer.qzeros, layer.scales, self.group_size)
            return out if bias is None else out + bias
        weight = dequantize_awq(layer.qweight, layer.qzeros, layer.scales, self.group_size)
        return F.linear(x, weight.t().to(x.dtype), bias)  # weight [K, N]


def _check_awq_shapes(base: str, qweight: tuple[int, ...], qzeros: tuple[int, ...] | None,
                      scales: tuple[int, ...] | None, group_size: int) -> None:
    """Raise ModelLoadError unless qweight/qzeros/scales of ``base`` agree with group_size."""
    if qzeros is None or scales is None:
        raise ModelLoadError(f"{base}qweight has no {base}qzeros/{base}scales beside it")
    in_features, out_features = qweight[0], qweight[1] * PACK_FACTOR
    if scales[1] != out_features or qzeros[1] != qweight[1]:
        raise ModelLoadError(f"{base}scales {list(scales)} / qzeros {list(qzeros)} do not match "
                          f"qweight {list(qweight)} ({out_features} output features)")
    if scales[0] * group_size != in_features or qzeros[0] != scales[0]:
        implied = in_features // scales[0] if scales[0] else 0
        raise ModelLoadError(
            f"{base}scales has {scales[0]} groups for {in_features} input features (group "
            f"size {implied}), but the quantization config says group_size={group_size}")


def parse_awq_config(checkpoint: dict[str, Any]) -> int:
    """The group size of an AutoAWQ GEMM quantization_config; ModelLoadError on anything
    this method cannot serve (bits, version, zero point, group size, skipped modules)."""
    if str(checkpoint.get("quant_method", "")).lower() != "awq":
        raise ModelLoadError(
            "quant.method='awq' but the checkpoint has no AWQ quantization_config in its "
            "config.json (quant_method: awq); quantize it first (toolkit quantize) or use "
            "quant=auto")
    bits = checkpoint.get("bits", checkpoint.get("w_bit"))
    group_size = checkpoint.get("group_size", checkpoint.get("q_group_size"))
    version = str(checkpoint.get("version", "gemm")).lower()
    if bits != 4:
        raise ModelLoadError(f"awq bits={bits} is not supported; supported: 4")
    if version != "gemm":
        raise ModelLoadError(f"awq version={version!r} is not supported; supported: gemm")
    if checkpoint.get("zero_point", True) is not True:
        raise ModelLoadError("awq zero_point=false is not supported; supported: true")
    if group_size not in GROUP_SIZES:
        raise ModelLoadError(f"awq group_size={group_size} is not supported; supported: "
                          f"{', '.join(map(str, GROUP_SIZES))}")
    skipped = [m for m in checkpoint.get("modules_to_not_convert") or [] if m != "lm_head"]
    if skipped:
        raise ModelLoadError(f"awq modules_to_not_convert={skipped} is not supported (every "
                          "decoder projection must be quantized)")
    return group_size


def create_awq(cfg: QuantConfig, checkpoint: dict[str, Any],
               prepack_weights: bool) -> AWQMethod:
    """The ``awq`` factory: the checkpoint's settings, checked against ``quant.group_size``."""
    del prepack_weights  # the int4 repacking always happens on the CPU
    group_size = parse_awq_config(checkpoint)
    check_group_size(cfg.group_size, group_size)
    return AWQMethod(group_size)
