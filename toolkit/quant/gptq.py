"""The ``gptq`` method: AutoGPTQ / GPTQModel checkpoints, 4 bits, with or without act-order.

Checkpoint tensors per projection (toolkit/quant/gptq_format.py): qweight int32 [K/8, N],
qzeros int32 [K/G, N/8], scales fp16 [K/G, N], g_idx int32 [K]. A fused q/k/v or gate/up
projection shares one g_idx (its parts see the same input, so act-order visits the input
rows in the same order); the loader checks that the parts agree.

Where it runs (``layer.route``, chosen in after_load):

- CPU, bfloat16, N a multiple of 64, G in 32/64/128/256 (``int4pack``): the input rows are
  sorted by g_idx once (act-order: groups become contiguous runs of G rows; plain: nothing
  moves) and repacked into torch's int4 CPU layout (the AWQ CPU route,
  toolkit/quant/awq_cpu.py); the GPTQ tensors are dropped and apply permutes x's columns
  the same way (act-order only).
- CUDA (``awq_triton``): the same row order, converted to AWQ's GEMM layout for the Triton
  AWQ kernel (toolkit/kernels/awq_gemm.py); needs zero points within 0..15.
- Elsewhere (float32 tests, odd shapes, groups of unequal size) (``dequantize``): the
  GPTQ tensors stay and each call dequantizes W (in float32, then the activation dtype).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from toolkit.kernels.awq_format import to_awq_tensors
from toolkit.quant import awq_cpu
from toolkit.quant.base import (
    ModelLoadError,
    NativeProjection,
    ParamSpec,
    QuantMethod,
    check_group_size,
)
from toolkit.quant.gptq_format import (
    PACK_FACTOR,
    ZERO_OFFSETS,
    dequantize_gptq,
    unpack_columns,
    unpack_rows,
)

if TYPE_CHECKING:
    from torch import nn

    from toolkit.config.schema import QuantConfig

GPTQ_TENSORS = ("qweight", "qzeros", "scales", "g_idx")
ROUTE_INT4PACK = "int4pack"
"""CPU bf16: torch's int4 kernel on a repacked weight (rows in group order)."""
ROUTE_AWQ = "awq_triton"
"""CUDA: the Triton AWQ GEMM on the weight converted to AWQ's layout (rows in group order)."""
ROUTE_DEQUANTIZE = "dequantize"
"""Anything else: the GPTQ tensors stay and each call dequantizes W."""


class GPTQMethod(QuantMethod):
    """4-bit GPTQ weights: one zero point and scale per (group, output column), rows
    assigned to groups by g_idx."""

    name = "gptq"

    def __init__(self, group_size: int, zero_offset: int) -> None:
        self.group_size = group_size
        """Input rows per group; -1: one group over all K rows (per-channel)."""
        self.zero_offset = zero_offset
        """Added to stored zero points (1: classic AutoGPTQ format, 0: gptq_v2)."""

    def __repr__(self) -> str:
        return f"GPTQMethod(bits=4, group_size={self.group_size}, zero_offset={self.zero_offset})"

    def group_rows(self, in_features: int) -> int:
        """G for a layer with ``in_features`` inputs."""
        return in_features if self.group_size == -1 else self.group_size

    def param_specs(self, in_features: int, out_features: int,
                    dtype: torch.dtype) -> dict[str, ParamSpec]:
        group = self.group_rows(in_features)
        if in_features % group or in_features % PACK_FACTOR or out_features % PACK_FACTOR:
            raise ModelLoadError(
                f"gptq group_size={self.group_size} needs in_features divisible by it and "
                f"by {PACK_FACTOR}, and out_features by {PACK_FACTOR}; this model has a "
                f"{in_features} -> {out_features} projection")
        num_groups = in_features // group
        return {
            "qweight": ParamSpec((in_features // PACK_FACTOR, out_features), torch.int32, 1,
                                 input_dim=0, input_pack=PACK_FACTOR),
            "qzeros": ParamSpec((num_groups, out_features // PACK_FACTOR), torch.int32, 1,
                                PACK_FACTOR, input_dim=0, input_pack=group),
            "scales": ParamSpec((num_groups, out_features), torch.float16, 1, input_dim=0,
                                input_pack=group),
            "g_idx": ParamSpec((in_features,), torch.int32, None, input_dim=0),
        }

    def check_checkpoint(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Every ``*.qweight`` must come with qzeros/scales/g_idx of this group size."""
        for name, qweight in shapes.items():
            if name.endswith(".qweight"):
                base = name[: -len("qweight")]
                _check_gptq_shapes(base, qweight, {t: shapes.get(base + t) for t in
                                                   GPTQ_TENSORS[1:]}, self.group_size)

    def shard_tensor(self, name: str, spec: ParamSpec, tensor: torch.Tensor,
                     output_range: tuple[int, int] | None,
                     input_range: tuple[int, int] | None) -> torch.Tensor:
        """As the base method; a row-parallel rank's g_idx counts its own groups from 0,
        and a single group (group_size -1) is kept whole by every rank."""
        if input_range is not None and name in ("qzeros", "scales") and self.group_size == -1:
            input_range = None
        sharded = super().shard_tensor(name, spec, tensor, output_range, input_range)
        if name == "g_idx" and input_range is not None and self.group_size != -1:
            first_group = input_range[0] // self.group_size
            sharded = sharded - first_group
            if sharded.min() < 0 or sharded.max() >= input_range[1] // self.group_size:
                raise ModelLoadError("a GPTQ checkpoint with act-order (desc_act) cannot be "
                                     "split across tensor-parallel ranks")
        return sharded

    def after_load(self, layer: nn.Module) -> None:
        group = self.group_rows(layer.in_features)
        order, contiguous = group_order(layer.g_idx, group)
        layer.route = ROUTE_DEQUANTIZE
        if not contiguous:
            return
        zeros = unpack_columns(layer.qzeros) + self.zero_offset  # [K/G, N]
        device = layer.qweight.device
        if awq_cpu.can_use_int4pack(layer.out_features, group, layer.dtype, device):
            layer.route = ROUTE_INT4PACK
        elif device.type == "cuda" and int(zeros.max()) <= 15:
            layer.route = ROUTE_AWQ
        else:
            return
        q = unpack_rows(layer.qweight)  # [K, N]
        q = q if order is None else q[order]
        scales = layer.scales.data
        for name in GPTQ_TENSORS:
            delattr(layer, name)
        layer.register_buffer("input_order", order)  # int64 [K] or None
        if layer.route == ROUTE_INT4PACK:
            packed, scales_and_zeros = to_int4pack(q, zeros, scales, layer.dtype)
            layer.register_buffer("int4_weight", packed)  # uint8 [N, K/2]
            layer.register_buffer("scales_and_zeros", scales_and_zeros)  # [K/G, N, 2]
        else:
            awq = to_awq_tensors(q.t().contiguous(), zeros.t().contiguous(), scales.t())
            for name, tensor in awq.items():  # qweight [K, N/8], qzeros [K/G, N/8], scales
                layer.register_buffer(name, tensor)

    def native_projection(self, layer: nn.Module) -> NativeProjection | None:
        if layer.route != ROUTE_INT4PACK or layer.input_order is not None:
            return None
        return NativeProjection("int4pack", layer.int4_weight, layer.scales_and_zeros,
                                awq_cpu.MAX_INT4_MM_ROWS)

    def apply(self, layer: nn.Module, x: torch.Tensor,
              bias: torch.Tensor | None) -> torch.Tensor:
        if layer.route == ROUTE_DEQUANTIZE:
            weight = dequantize_gptq(layer.qweight, layer.qzeros, layer.scales.float(),
                                     layer.g_idx, self.zero_offset)  # [K, N] float32
            return F.linear(x, weight.t().to(x.dtype), bias)
        if layer.input_order is not None:
            x = x.index_select(1, layer.input_order)  # [T, K] in group order
        if layer.route == ROUTE_INT4PACK:
            return awq_cpu.int4pack_linear(x, layer.int4_weight, layer.scales_and_zeros, bias)
        from toolkit.kernels.awq_gemm import awq_gemm

        out = awq_gemm(x, layer.qweight, layer.qzeros, layer.scales,
                       self.group_rows(layer.in_features))
        return out if bias is None else out + bias


def group_order(g_idx: torch.Tensor, group_size: int) -> tuple[torch.Tensor | None, bool]:
    """(order, contiguous): ``order`` [K] sorts the input rows by group (None when g_idx is
    already k // G); ``contiguous`` says whether the sorted rows form groups of exactly
    ``group_size`` rows, as the int4 layout needs."""
    expected = torch.arange(g_idx.numel(), device=g_idx.device) // group_size
    if torch.equal(g_idx.long(), expected):
        return None, True
    order = torch.argsort(g_idx.long(), stable=True)
    return order, torch.equal(g_idx.long()[order], expected)


def to_int4pack(q: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """q [K, N] (rows in group order), true zero points and scales [K/G, N] -> (int4pack
    uint8 [N, K/2], scales_and_zeros [K/G, N, 2] in ``dtype``), for
    ``W = (q - 8) * scale + zero`` with scale = s and zero = (8 - z) * s."""
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.t().contiguous(), 1)
    s = scales.float()
    zero = (8 - zeros.float()) * s
    return packed, torch.stack([s, zero], dim=-1).to(dtype).contiguous()


def _check_gptq_shapes(base: str, qweight: tuple[int, ...],
                       others: dict[str, tuple[int, ...] | None], group_size: int) -> None:
    """Raise ModelLoadError unless qzeros/scales/g_idx of ``base`` agree with its qweight
    and the configured group size."""
    missing = [base + t for t, shape in others.items() if shape is None]
    if missing:
        raise ModelLoadError(f"{base}qweight has no {', '.join(missing)} beside it")
    in_features, out_features = qweight[0] * PACK_FACTOR, qweight[1]
    qzeros, scales, g_idx = others["qzeros"], others["scales"], others["g_idx"]
    if scales[1] != out_features or qzeros[1] * PACK_FACTOR != out_features or \
            tuple(g_idx) != (in_features,):
        raise ModelLoadError(f"{base}scales {list(scales)} / qzeros {list(qzeros)} / g_idx "
                          f"{list(g_idx)} do not match GPTQ qweight {list(qweight)} "
                          f"({in_features} inputs, {out_features} outputs)")
    group = in_features if group_size == -1 else group_size
    if scales[0] * group != in_features or qzeros[0] != scales[0]:
        implied = in_features // scales[0] if scales[0] else 0
        raise ModelLoadError(
            f"{base}scales has {scales[0]} groups for {in_features} input features (group "
            f"size {implied}), but the quantization config says group_size={group_size}")


def parse_gptq_config(checkpoint: dict[str, Any]) -> tuple[int, int]:
    """(group_size, zero_offset) of a GPTQ quantization_config; ModelLoadError on anything
    this method cannot serve (bits, checkpoint_format, skipped or per-module settings)."""
    if str(checkpoint.get("quant_method", "")).lower() != "gptq":
        raise ModelLoadError(
            "quant.method='gptq' but the checkpoint has no GPTQ quantization_config in its "
            "config.json (quant_method: gptq); use quant=auto")
    bits, group_size = checkpoint.get("bits"), checkpoint.get("group_size", -1)
    checkpoint_format = str(checkpoint.get("checkpoint_format", "gptq")).lower()
    if bits != 4:
        raise ModelLoadError(f"gptq bits={bits} is not supported; supported: 4")
    if checkpoint_format not in ZERO_OFFSETS:
        raise ModelLoadError(f"gptq checkpoint_format={checkpoint_format!r} is not supported; "
                          f"supported: {', '.join(ZERO_OFFSETS)}")
    if not isinstance(group_size, int) or (group_size < 1 and group_size != -1):
        raise ModelLoadError(f"gptq group_size={group_size!r} must be a positive int or -1")
    if checkpoint.get("dynamic") or checkpoint.get("lm_head") or [
            m for m in checkpoint.get("modules_to_not_convert") or [] if m != "lm_head"]:
        raise ModelLoadError("gptq per-module settings (dynamic, lm_head, modules_to_not_convert)"
                          " are not supported: every decoder projection must be quantized "
                          "alike and the LM head must stay dense")
    return group_size, ZERO_OFFSETS[checkpoint_format]


def create_gptq(cfg: QuantConfig, checkpoint: dict[str, Any],
                prepack_weights: bool) -> GPTQMethod:
    """The ``gptq`` factory: the checkpoint's settings, checked against ``quant.group_size``."""
    del prepack_weights  # the int4 repacking always happens on the CPU
    group_size, zero_offset = parse_gptq_config(checkpoint)
    check_group_size(cfg.group_size, group_size)
    return GPTQMethod(group_size, zero_offset)
