"""A Llama-family decode step's decoder layers in one native call.

At one stream a small model's CPU decode step is mostly kernel calls of a few microseconds
each, ten a layer, with Python between them: for SmolLM2 under ``quant=q4_1`` that
interpreter time was about a third of the step (experiments/step_breakdown.py). Where a
step is exactly what ``DecoderStack`` (toolkit/kernels/cpu/decoder_stack.cpp) does,
the model hands its layer loop to it:

- every projection takes a native CPU kernel for this many rows, without bias or LoRA
  (QuantMethod.native_projection: q4_1's Q4_1 x int8 kernel; torch's int4 one for AWQ,
  GPTQ and q4_1 where its own does not fit; w8a8's int8 rows and int32 matmul at any
  number of rows; oneDNN's packed bfloat16 matmul, up to 128 rows, for dense weights);
- the model runs the native kernel route, and its attention backend planned a step of
  decode rows only, over an unquantized pool, every layer plain
  (AttentionBackend.native_decode_step);
- the layers are plain LlamaDecoderLayers with a full rotary embedding, no tensor or
  pipeline parallelism (the model checks its own classes).

It runs the same kernels in the same order as the Python loop, so its outputs are
bit-identical to the loop's; any other step takes the loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from toolkit.attention.base import AttentionBackend
from toolkit.kernels.route import KernelRoute
from toolkit.layers.rotary import RotaryEmbedding


class NativeDecoderStack:
    """The layers of one model (LlamaDecoderLayers, toolkit/models/llama.py) as an
    ``DecoderStack``; build with ``for_layers``."""

    def __init__(self, layers: Sequence[nn.Module], kernels: KernelRoute,
                 max_rows: int) -> None:
        first = layers[0]
        self.projections = [proj for layer in layers for proj in layer.projections()]
        self.max_rows = max_rows
        """Steps of at most this many rows run here (every projection's kernel limit)."""
        norms = [norm for layer in layers
                 for norm in (layer.input_layernorm, layer.post_attention_layernorm)]
        routes = [proj.method.native_projection(proj) for proj in self.projections]
        no_scales = torch.empty(0)
        weights = [t for route in routes
                   for t in (route.weight, no_scales if route.scales is None else route.scales)]
        self.stack = kernels.ops.DecoderStack(
            norms, weights, [route.kernel for route in routes],
            [route.min_rows for route in routes], first.num_qo_heads, first.num_kv_heads,
            first.head_dim, first.eps)

    @classmethod
    def for_layers(cls, layers: Sequence[nn.Module], rotary: RotaryEmbedding,
                   kernels: KernelRoute) -> NativeDecoderStack | None:
        """The stack of these plain Llama layers, or None where some projection, the
        rotary embedding or the kernel route is not what it runs (see the module doc)."""
        if not kernels.is_native or not layers or rotary.rotary_dim != layers[0].head_dim:
            return None
        max_rows = None
        for layer in layers:
            for proj in layer.projections():
                route = proj.method.native_projection(proj)
                if route is None or proj.bias_tensor is not None:
                    return None
                max_rows = route.max_rows if max_rows is None else min(max_rows, route.max_rows)
        return cls(layers, kernels, max_rows)

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attn: AttentionBackend) -> tuple[torch.Tensor, torch.Tensor] | None:
        """hidden: [T, hidden], the embeddings; cos, sin: [T, 1, D] -> (the last layer's MLP
        output, the residual stream before it), [T, hidden] each, as the layer loop gives
        them; None when this step is not one the stack runs (then run the loop)."""
        if (hidden.shape[0] > self.max_rows or hidden.dtype != torch.bfloat16
                or not (hidden.is_contiguous() and cos.is_contiguous() and sin.is_contiguous())):
            return None
        if any(proj.lora is not None for proj in self.projections):
            return None
        step = attn.native_decode_step()
        if step is None or step.caches[0].dtype != hidden.dtype:
            return None
        return self.stack.forward(hidden, cos, sin, step.caches, step.slots, step.kv_indices,
                                  step.page_starts, step.seq_lens, step.scale)
