"""The contract between linear layers and a quantization scheme.

A model builds its projections as ``QuantLinear`` layers (toolkit/layers/linear.py) and
never looks inside them. The QuantMethod chosen for the checkpoint decides:

1. ``param_specs``: which tensors a projection has in the checkpoint (``weight`` for dense
   models; ``qweight``/``qzeros``/``scales`` for AWQ; ...), with their shapes, so that the
   loader can copy each HF tensor, or each shard of a fused q/k/v or gate/up projection,
   into place;
2. ``after_load``: a one-time conversion once every tensor is in (repack for a kernel,
   quantize a dense weight to fp8, pre-pack for oneDNN), which may replace the parameters;
3. ``apply``: ``y = x @ W^T + bias`` with the layer's stored tensors.

A method may also offer the model a quantized LM head (``quantize_lm_head``); the head is
otherwise dense.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from toolkit.kernels.route import TORCH, KernelRoute

if TYPE_CHECKING:
    from torch import nn

    from toolkit.quant.int8_lm_head import Int8LMHead



class ModelLoadError(ValueError):
    """A checkpoint that cannot be served as asked: an unsupported architecture, a
    quantization method or setting that contradicts it, missing files (raised by the
    loader and by the quant methods; toolkit.models.loader re-exports it)."""

@dataclass(frozen=True)
class ParamSpec:
    """One checkpoint tensor of a linear layer with ``in_features`` K and ``out_features`` N
    (N of a fused projection is the sum of its parts)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    output_dim: int | None
    """Axis that runs over output features, along which fused parts are concatenated;
    None for tensors shared by every part (GPTQ's g_idx), loaded once and checked equal."""
    output_pack: int = 1
    """Output features per element along ``output_dim`` (8 for int32-packed 4-bit)."""
    input_dim: int | None = None
    """Axis that runs over input features (along which a row-parallel layer is split);
    None for tensors every input feature shares (a per-tensor scale)."""
    input_pack: int = 1
    """Input features per element along ``input_dim`` (8 for GPTQ's packed rows, the
    group size for per-group scales and zeros)."""


@dataclass(frozen=True)
class NativeProjection:
    """A projection's weight as one of the CPU kernels the native decoder stack calls
    (toolkit/kernels/cpu/decoder_stack.cpp) takes it, and the inputs ``apply`` sends there."""

    kernel: str
    """``int4pack``: torch's int4 kernel (toolkit/quant/awq_cpu.py; weight uint8 [N, K/2],
    scales [K/G, N, 2] in the activations' dtype: scales and zeros); ``q4_1``: the native
    Q4_1 x int8 kernel (toolkit/kernels/q4_1_linear.py, its layout); ``w8a8``: per-row int8
    activations, an int32 matmul, dequantization (toolkit/quant/w8a8.py; weight int8 [K, N]
    for torch's ``_int_mm`` or uint8 in q8_linear's layout for the native ``q8_int_mm``,
    scales float32 [N] per output channel); ``dense``: oneDNN's matmul on a
    bfloat16 weight it packed (toolkit/layers/linear.py; no scales)."""
    weight: torch.Tensor
    """The codes (or the packed weight), in the kernel's layout."""
    scales: torch.Tensor | None
    """The scales (and zeros), in the kernel's layout; None for ``dense``."""
    max_rows: int
    """Inputs of at most this many rows take the kernel; longer ones another route."""
    min_rows: int = 1
    """Inputs of fewer rows are padded to this many with copies of their last row (the
    batch-invariant dense route's shortest call, toolkit.layers.linear.invariant_linear)."""


class QuantMethod(ABC):
    """One quantization scheme. Instances are stateless apart from their settings
    (bits, group size ...), so one instance serves every layer of a model."""

    name: str
    """Registry name (``quant.method``)."""
    batch_invariant: bool = False
    """``apply`` gives each output row the same bits whatever other rows share the call
    (set by ``enable_batch_invariance``, before the weights load)."""
    invariant_min_rows: int = 2
    """The batch-invariant route's shortest matmul call (toolkit.layers.linear's
    INVARIANT_MIN_ROWS; build_runtime picks the first that holds on its CPU)."""
    kernels: KernelRoute = TORCH
    """The CPU kernel route of ``apply``'s own elementwise work (w8a8's activation
    quantization and dequantization); the loader sets the model's route before the
    weights load."""

    def enable_batch_invariance(self) -> bool:
        """Make ``apply`` batch-invariant (``device.deterministic``); call before the
        weights load. Returns whether this method can: the default cannot."""
        return False

    @abstractmethod
    def param_specs(self, in_features: int, out_features: int,
                    dtype: torch.dtype) -> dict[str, ParamSpec]:
        """Checkpoint tensor suffix (``weight``, ``qweight`` ...) -> its spec, for a layer
        whose activations are ``dtype``. The bias is not included (it stays dense)."""

    def check_checkpoint(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Raise ModelLoadError when the checkpoint's tensor shapes
        (name -> shape, read before any weight is) contradict this method's settings, e.g.
        AWQ scales whose row count implies another group size. Default: no check."""

    def after_load(self, layer: nn.Module) -> None:
        """Convert the loaded tensors into the form ``apply`` uses (in place, once)."""

    @abstractmethod
    def apply(self, layer: nn.Module, x: torch.Tensor,
              bias: torch.Tensor | None) -> torch.Tensor:
        """x: [T, K] -> [T, N] in x's dtype."""

    def shard_tensor(self, name: str, spec: ParamSpec, tensor: torch.Tensor,
                     output_range: tuple[int, int] | None,
                     input_range: tuple[int, int] | None) -> torch.Tensor:
        """The part of checkpoint tensor ``name`` that a tensor-parallel rank keeps: output
        features ``output_range`` (start, length) of a column-parallel layer, or input
        features ``input_range`` of a row-parallel one (None: the whole axis). Tensors
        without that axis are kept whole."""
        from toolkit.layers.tensor_parallel import narrow_features

        if output_range is not None and spec.output_dim is not None:
            tensor = narrow_features(tensor, spec.output_dim, spec.output_pack, *output_range)
        if input_range is not None and spec.input_dim is not None:
            tensor = narrow_features(tensor, spec.input_dim, spec.input_pack, *input_range)
        return tensor

    def batch_variance(self, layer: nn.Module) -> str | None:
        """Where ``apply`` on ``layer`` gives a row other bits among other rows on this CPU
        (a description), or None; asked by build_runtime when ``batch_invariant``. Default:
        the dense check of its oneDNN-packed weight (toolkit.layers.linear.batch_variance)."""
        from toolkit.layers.linear import batch_variance

        packed = getattr(layer, "packed_weight", None)
        if packed is None:
            return "no packed weight"
        return batch_variance(layer.weight, packed, self.invariant_min_rows)

    def native_projection(self, layer: nn.Module) -> NativeProjection | None:
        """Where ``apply`` is nothing but one of NativeProjection's CPU kernels on ``layer``
        for inputs of up to some rows (then the bias, if any): the kernel, its tensors and
        the row limit, so that native code may run the projection itself
        (toolkit/models/native_decoder.py); None, the default, where it is not."""
        return None

    def quantize_lm_head(self, weight: torch.Tensor) -> Int8LMHead | None:
        """A quantized copy of the LM head [V, H] that the model uses where it applies
        (``Int8LMHead.logits`` returns None elsewhere); None, the default: dense only."""
        return None

    def resident_bytes(self, layer: nn.Module) -> int:
        """Bytes of weight data the layer keeps after ``after_load`` (memory reports)."""
        return sum(t.numel() * t.element_size() for t in layer.buffers()) + sum(
            p.numel() * p.element_size() for p in layer.parameters())



def check_group_size(wanted: int | None, checkpoint_group_size: int) -> None:
    """``quant.group_size`` (None: take the checkpoint's) must equal the checkpoint's."""
    if wanted is not None and wanted != checkpoint_group_size:
        raise ModelLoadError(f"quant.group_size={wanted} but the checkpoint's "
                         f"quantization_config has group_size={checkpoint_group_size}")
