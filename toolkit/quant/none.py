"""The ``none`` method: a dense weight [N, K] in the model dtype, as in the checkpoint.

On the CPU in bfloat16 with ``device.prepack_weights``, after_load keeps a oneDNN-packed
copy of the weight beside it (bit-identical results, faster decode matmuls; see
toolkit.layers.linear). Batch-invariant (``device.deterministic``), it packs bfloat16 and
float32 weights and runs every matmul on the invariant route.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from toolkit.layers.linear import PACKED_MAX_TOKENS, linear, pack_weight
from toolkit.quant.base import ModelLoadError, NativeProjection, ParamSpec, QuantMethod

if TYPE_CHECKING:
    from torch import nn

    from toolkit.config.schema import QuantConfig


class NoQuant(QuantMethod):
    """Dense weights; ``prepack_weights`` packs them for oneDNN where that applies."""

    name = "none"

    def __init__(self, prepack_weights: bool = False) -> None:
        self.prepack_weights = prepack_weights

    def param_specs(self, in_features: int, out_features: int,
                    dtype: torch.dtype) -> dict[str, ParamSpec]:
        return {"weight": ParamSpec((out_features, in_features), dtype, output_dim=0,
                                     input_dim=1)}

    def enable_batch_invariance(self) -> bool:
        """Possible wherever oneDNN is: the weights are then always packed."""
        self.batch_invariant = torch.backends.mkldnn.is_available()
        return self.batch_invariant

    def after_load(self, layer: nn.Module) -> None:
        layer.packed_weight = None
        if self.prepack_weights or self.batch_invariant:
            layer.packed_weight = pack_weight(layer.weight, batch_invariant=self.batch_invariant)
        # NOTE: a plain attribute (same storage) skips nn.Module's parameter lookup per call
        layer.dense_weight = layer.weight.detach()

    def apply(self, layer: nn.Module, x: torch.Tensor,
              bias: torch.Tensor | None) -> torch.Tensor:
        return linear(x, layer.dense_weight, bias, layer.packed_weight, self.batch_invariant,
                      self.invariant_min_rows)

    def native_projection(self, layer: nn.Module) -> NativeProjection | None:
        """oneDNN's matmul on the packed bfloat16 weight, with ``linear``'s padding, for the
        inputs ``linear`` sends there whole (its batch-invariant calls are at most
        MAX_INVARIANT_ROWS = PACKED_MAX_TOKENS rows); None where nothing is packed."""
        if layer.packed_weight is None or layer.weight.dtype != torch.bfloat16:
            return None
        min_rows = self.invariant_min_rows if self.batch_invariant else 1
        return NativeProjection("dense", layer.packed_weight, None, PACKED_MAX_TOKENS, min_rows)

    def resident_bytes(self, layer: nn.Module) -> int:
        """The weight (and bias); the packed copy, when there is one, is the same size."""
        packed = 2 if getattr(layer, "packed_weight", None) is not None else 1
        return super().resident_bytes(layer) + (packed - 1) * layer.weight.numel() * \
            layer.weight.element_size()


def create_none(cfg: QuantConfig, checkpoint: dict[str, Any],
                prepack_weights: bool) -> NoQuant:
    """The ``none`` factory; refuses a quantized checkpoint (its weights are not dense)."""
    del cfg
    if checkpoint:
        raise ModelLoadError(
            f"quant.method='none' but the checkpoint is "
            f"{checkpoint.get('quant_method', 'quantized')}-quantized "
            "(config.json quantization_config); use quant=auto")
    return NoQuant(prepack_weights)
