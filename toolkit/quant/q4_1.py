"""The ``q4_1`` method: llama.cpp's Q4_1 scheme applied to dense weights at load time.

Per group of G (32, like the GGUF block) input features of each output row, Q4_1 keeps a
4-bit code q in 0..15, a step ``scale = (max - min) / 15`` and the group's ``minimum``:

    W[n, k] = q[n, k] * scale[n, g] + minimum[n, g]

A checkpoint converted from a Q4_1 GGUF (the embedded SmolLM2) holds exactly such values,
so requantizing them gives back the file's codes: the model then runs the same 4-bit
weights llama.cpp does (up to bfloat16 rounding of the scales). On any other dense
checkpoint it is plain round-to-nearest 4-bit.

A GGUF file whose projections are all Q4_1 (served as it is, toolkit.models.gguf_model)
brings llama.cpp's blocks themselves (``q4_1_blocks``: per 32 weights of a row, fp16 ``d``,
fp16 ``m``, 16 bytes of codes, element j in the low nibble of byte j, element 16 + j in its
high nibble): they map one to one onto (codes, scale = d, minimum = m), so the method
loads them without requantizing (``unpack_gguf_q4_1``).

Where it runs (CPU, bfloat16): steps of at most ``max_int4_tokens`` rows (decode: bound
by memory bandwidth) read the 4-bit codes, about 0.3x of the bf16 bytes; on the native
kernel route through the Q4_1 x int8 kernel (toolkit/kernels/q4_1_linear.py: activations
quantized per block of 32 to 8 bits and integer dot products, as llama.cpp computes its
Q4_1 files; batch-invariant; 1.1-1.9x faster than torch's kernel at 1-8 rows), on the
torch route (N a multiple of 64) through torch's int4 kernel with bf16 activations.
Longer inputs (prefill, large batches: bound by compute) use a bf16 copy of the same
dequantized weights on oneDNN/AMX. Every path multiplies the same weights; the int8
activations of the native one add their rounding (measured in experiments/perplexity.py,
``q4_1_decode``). Elsewhere (float32, CUDA) the dequantized weights run dense.
Resident: the bf16 weight (twice with ``device.prepack_weights``, as for ``none``) plus the
4-bit codes: ~2.3x of the plain bf16 bytes, ~1.3x without pre-packing.
The LM head gets an int8 copy (toolkit/quant/int8_lm_head.py: every step on the native
route, one-row steps on the torch one), as llama.cpp's Q4_1 file keeps its output matrix in
8 bits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from toolkit.kernels.q4_1_linear import LANES, pack_q4_1
from toolkit.quant import awq_cpu
from toolkit.quant.base import ModelLoadError, NativeProjection, ParamSpec, QuantMethod
from toolkit.quant.int8_lm_head import Int8LMHead
from toolkit.quant.none import NoQuant

if TYPE_CHECKING:
    from torch import nn

    from toolkit.config.schema import QuantConfig

DEFAULT_GROUP_SIZE = 32
"""Input features per group: llama.cpp's Q4_1 block."""
MAX_CODE = 15
GGUF_BLOCK_BYTES = 20
"""Bytes of one llama.cpp Q4_1 block of 32 weights: fp16 d, fp16 m, 16 bytes of nibbles."""
GGUF_BLOCKS = "q4_1_blocks"
"""The checkpoint tensor of a projection given as llama.cpp blocks (uint8 [N, K/32*20])."""


def quantize_q4_1(weight: torch.Tensor,
                  group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """weight [N, K] -> codes int32 [N, K] in 0..15, scale and minimum float32 [N, K/G]."""
    out_features, in_features = weight.shape
    groups = weight.float().view(out_features, in_features // group_size, group_size)
    minimum = groups.amin(-1)  # [N, K/G]
    scale = (groups.amax(-1) - minimum) / MAX_CODE
    step = torch.where(scale > 0, scale, torch.ones_like(scale))  # constant group: code 0
    codes = torch.round((groups - minimum[..., None]) / step[..., None]).clamp_(0, MAX_CODE)
    return codes.view(out_features, in_features).to(torch.int32), scale, minimum


def unpack_gguf_q4_1(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """llama.cpp Q4_1 blocks uint8 [N, K/32 * 20] -> codes int32 [N, K] in 0..15, scale
    (the blocks' d) and minimum (m) float32 [N, K/32]; ``codes * scale + minimum`` is
    llama.cpp's (and gguf's) dequantization."""
    out_features = blocks.shape[0]
    groups = blocks.view(out_features, -1, GGUF_BLOCK_BYTES)  # [N, K/32, 20]
    halves = groups[..., :4].contiguous().view(torch.float16).float()  # [N, K/32, 2]
    nibbles = groups[..., 4:]  # [N, K/32, 16]
    codes = torch.cat([nibbles & 0xF, nibbles >> 4], dim=-1)  # [N, K/32, 32]
    return codes.view(out_features, -1).to(torch.int32), halves[..., 0], halves[..., 1]


def to_int4pack(codes: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_1 tensors -> (packed uint8 [N, K/2], scales_and_zeros [K/G, N, 2] in ``dtype``).

    The int4 kernel computes ``(q - 8) * scale + zero``, so ``zero = minimum + 8 * scale``.
    """
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    zero = minimum + 8 * scale
    return packed, torch.stack([scale.t(), zero.t()], dim=-1).to(dtype).contiguous()


def dequantize_q4_1(codes: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor,
                    dtype: torch.dtype) -> torch.Tensor:
    """Q4_1 tensors -> W [N, K] in ``dtype``, from scale and zero rounded to ``dtype`` as
    the int4 kernel holds them (so both paths multiply the same weights)."""
    out_features, in_features = codes.shape
    num_groups = scale.shape[1]
    step = scale.to(dtype).float()[..., None]  # [N, K/G, 1]
    zero = (minimum + 8 * scale).to(dtype).float()[..., None]
    groups = codes.view(out_features, num_groups, -1).float()
    return ((groups - 8) * step + zero).view(out_features, in_features).to(dtype)


class Q4_1Method(QuantMethod):
    """Dense checkpoint weights requantized to Q4_1 at load time (see the module doc)."""

    name = "q4_1"

    def __init__(self, group_size: int, max_int4_tokens: int, prepack_weights: bool,
                 gguf_blocks: bool = False) -> None:
        self.group_size = group_size
        self.max_int4_tokens = max_int4_tokens
        self.gguf_blocks = gguf_blocks
        """The checkpoint gives llama.cpp's blocks (``q4_1_blocks``), not dense weights."""
        self.dense = NoQuant(prepack_weights)
        """Stores and multiplies the dequantized bf16 copy (the route of long inputs)."""

    def __repr__(self) -> str:
        return (f"Q4_1Method(group_size={self.group_size}, "
                f"max_int4_tokens={self.max_int4_tokens})")

    def param_specs(self, in_features: int, out_features: int,
                    dtype: torch.dtype) -> dict[str, ParamSpec]:
        if in_features % self.group_size:
            raise ModelLoadError(f"q4_1 group_size={self.group_size} does not divide this "
                             f"model's {in_features} -> {out_features} projection")
        if self.gguf_blocks:
            num_bytes = in_features // self.group_size * GGUF_BLOCK_BYTES
            return {GGUF_BLOCKS: ParamSpec((out_features, num_bytes), torch.uint8, output_dim=0)}
        return self.dense.param_specs(in_features, out_features, dtype)

    def after_load(self, layer: nn.Module) -> None:
        if self.gguf_blocks:
            codes, scale, minimum = unpack_gguf_q4_1(layer.q4_1_blocks.data)
            delattr(layer, GGUF_BLOCKS)
            layer.weight = torch.nn.Parameter(
                dequantize_q4_1(codes, scale, minimum, layer.dtype), requires_grad=False)
        else:
            codes, scale, minimum = quantize_q4_1(layer.weight, self.group_size)
            layer.weight.copy_(dequantize_q4_1(codes, scale, minimum, layer.weight.dtype))
        self.dense.after_load(layer)
        layer.int4pack = layer.q4_1_native = None
        device = layer.weight.device
        if self._native_kernel_fits(layer):
            layer.q4_1_native = pack_q4_1(codes, scale, minimum)
        elif awq_cpu.can_use_int4pack(layer.out_features, self.group_size, layer.dtype, device):
            layer.int4pack = to_int4pack(codes, scale, minimum, layer.dtype)

    def _native_kernel_fits(self, layer: nn.Module) -> bool:
        """The native Q4_1 x int8 kernel takes this layer: the native route, a bf16 CPU
        layer, llama.cpp's 32-wide groups and N a multiple of 8."""
        return (self.kernels.is_native and layer.dtype == torch.bfloat16
                and layer.weight.device.type == "cpu" and self.group_size == DEFAULT_GROUP_SIZE
                and layer.out_features % LANES == 0)

    def apply(self, layer: nn.Module, x: torch.Tensor,
              bias: torch.Tensor | None) -> torch.Tensor:
        if x.shape[0] <= self.max_int4_tokens:
            if layer.q4_1_native is not None and x.dtype == torch.bfloat16:
                out = self.kernels.ops.q4_1_linear(x.contiguous(), *layer.q4_1_native)
                return out if bias is None else out + bias  # [T, N]
            if layer.int4pack is not None:
                return awq_cpu.int4pack_linear(x, *layer.int4pack, bias)  # [T, N]
        return self.dense.apply(layer, x, bias)

    def native_projection(self, layer: nn.Module) -> NativeProjection | None:
        if layer.q4_1_native is not None:
            return NativeProjection("q4_1", *layer.q4_1_native, self.max_int4_tokens)
        if layer.int4pack is None:
            return None
        max_rows = min(self.max_int4_tokens, awq_cpu.MAX_INT4_MM_ROWS)
        return NativeProjection("int4pack", *layer.int4pack, max_rows)

    def quantize_lm_head(self, weight: torch.Tensor) -> Int8LMHead | None:
        if self.max_int4_tokens < 1:  # every step on the bf16 copy: the head too
            return None
        return Int8LMHead.quantize(weight, self.kernels)

    def resident_bytes(self, layer: nn.Module) -> int:
        """The dense copy (twice when oneDNN-packed) plus the int4 codes and scales."""
        total = self.dense.resident_bytes(layer)
        for codes in (layer.int4pack, layer.q4_1_native):
            if codes is not None:
                total += sum(t.numel() * t.element_size() for t in codes)
        return total


def create_q4_1(cfg: QuantConfig, checkpoint: dict[str, Any],
                prepack_weights: bool) -> Q4_1Method:
    """The ``q4_1`` factory: a dense checkpoint, ``quant.group_size`` (null: 32); or a
    GGUF of Q4_1 projections (quantization_config format gguf), loaded as its blocks."""
    if checkpoint.get("format") == "gguf" and checkpoint.get("quant_method") == "q4_1":
        if cfg.group_size not in (None, DEFAULT_GROUP_SIZE):
            raise ModelLoadError(f"quant.group_size={cfg.group_size} but llama.cpp's Q4_1 "
                                 f"blocks hold {DEFAULT_GROUP_SIZE} weights")
        return Q4_1Method(DEFAULT_GROUP_SIZE, cfg.max_int4_tokens, prepack_weights,
                          gguf_blocks=True)
    if checkpoint:
        raise ModelLoadError(f"quant.method='q4_1' quantizes a dense checkpoint, but this one is "
                         f"already {checkpoint.get('quant_method', 'quantized')}-quantized")
    group_size = cfg.group_size or DEFAULT_GROUP_SIZE
    if group_size not in awq_cpu.INT4PACK_GROUP_SIZES:
        raise ModelLoadError(f"q4_1 group_size={group_size} is not supported; supported: "
                         f"{', '.join(map(str, awq_cpu.INT4PACK_GROUP_SIZES))}")
    return Q4_1Method(group_size, cfg.max_int4_tokens, prepack_weights)
