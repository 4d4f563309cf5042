"""A QuantLinear loaded from a dense weight, part by part, for the quantize-at-load methods'
tests (fp8, w8a8)."""

from __future__ import annotations

import torch

from toolkit.quant.base import QuantMethod
from toolkit.quant.linear import QuantLinear


def load_dense_layer(method: QuantMethod, weight: torch.Tensor, output_sizes: tuple[int, ...],
                     bias: torch.Tensor | None = None) -> QuantLinear:
    """A QuantLinear under ``method`` whose fused parts ``output_sizes`` are loaded from
    ``weight`` [N, K] (and ``bias`` [N]) as the loader would, then finished."""
    layer = QuantLinear(weight.shape[1], output_sizes, bias is not None, method,
                        weight.dtype, weight.device)
    start = 0
    for shard, size in enumerate(output_sizes):
        layer.load_shard("weight", weight[start:start + size], shard)
        if bias is not None:
            layer.load_shard("bias", bias[start:start + size], shard)
        start += size
    layer.finish_loading()
    return layer
