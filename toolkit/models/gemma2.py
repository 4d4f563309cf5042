"""Gemma 2 (Gemma2ForCausalLM) in plain torch, and the Gemma layers Gemma 3 builds on.

What differs from the Llama family (toolkit/models/llama.py, whose loading, LM head and
packing this reuses):
- the embeddings are scaled by sqrt(hidden_size), rounded to the model dtype as
  transformers does;
- every RMSNorm multiplies by ``1 + weight`` (in float32, before the cast back);
- "sandwich" norms: the attention output and the MLP output are each normed before they
  join the residual stream (post_attention_layernorm, post_feedforward_layernorm), and the
  MLP input has its own norm (pre_feedforward_layernorm);
- the MLP is GELU(tanh)-gated (``hidden_activation: gelu_pytorch_tanh``);
- attention is scaled by ``query_pre_attn_scalar ** -0.5``, its logits soft-capped
  (``attn_logit_softcapping``) and every other layer (``layer_types``) attends within a
  sliding window: the model states this per layer as ``attention_layers``
  (toolkit.attention.base.LayerAttention), which the attention backend is built with;
- the final logits are soft-capped (``final_logit_softcapping``); embeddings are tied.

The norms take the kernel route (native C++ / Triton) in float32, where ``1 + weight``
times the float32-normed rows is exactly what the kernels compute; in other dtypes they are
torch ops (transformers multiplies before rounding, the kernels after).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.attention.base import AttentionBackend, LayerAttention
from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.layers.activation import gelu_and_mul
from toolkit.layers.rmsnorm import fused_add_rms_norm, rms_norm
from toolkit.layers.rotary import RotaryEmbedding
from toolkit.models.llama import (
    LlamaForCausalLM,
    WeightLoadError,
    _param,
    attention_heads,
)
from toolkit.quant.base import QuantMethod
from toolkit.quant.linear import QuantLinear

SLIDING, FULL = "sliding_attention", "full_attention"
"""transformers' ``layer_types`` entries."""
GELU_TANH = ("gelu_pytorch_tanh", "gelu_tanh")
"""``hidden_activation`` values that are GELU's tanh approximation."""


def gemma_rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float, *,
                   kernels: KernelRoute = TORCH) -> torch.Tensor:
    """x: [T, H], scale: [H] float32 (``1 + weight``) -> [T, H] in x's dtype."""
    if x.dtype == torch.float32:
        return rms_norm(x, scale, eps, kernels=kernels)
    normed = F.rms_norm(x.float(), (x.shape[-1],), eps=eps)  # [T, H] float32
    return (normed * scale).to(x.dtype)


def gemma_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, scale: torch.Tensor,
                       eps: float, *, kernels: KernelRoute = TORCH,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """x, residual: [T, H] -> (gemma_rms_norm(residual + x), residual + x)."""
    if x.dtype == torch.float32:
        return fused_add_rms_norm(x, residual, scale, eps, kernels=kernels)
    residual = residual + x
    return gemma_rms_norm(residual, scale, eps, kernels=kernels), residual


def layer_types(config: dict[str, Any], sliding_every: int) -> list[str]:
    """Each layer's kind: the config's ``layer_types``, else every ``sliding_every``-th
    layer full and the others sliding (transformers' default pattern)."""
    num_layers = config["num_hidden_layers"]
    types = config.get("layer_types") or [
        FULL if (i + 1) % sliding_every == 0 else SLIDING for i in range(num_layers)]
    if len(types) != num_layers or not set(types) <= {SLIDING, FULL}:
        raise WeightLoadError(f"layer_types must give {SLIDING!r} or {FULL!r} for each of "
                              f"the {num_layers} layers, got {types}")
    return list(types)


def attention_layers(config: dict[str, Any], types: list[str],
                     soft_cap: float) -> tuple[LayerAttention, ...]:
    """How each layer attends: scale query_pre_attn_scalar ** -0.5, logits soft-capped at
    ``soft_cap`` (0: not), sliding layers within ``sliding_window`` positions (the query's
    own included, so window_left = sliding_window - 1)."""
    scalar = config.get("query_pre_attn_scalar") or config.get("head_dim") or (
        config["hidden_size"] // config["num_attention_heads"])
    window = config.get("sliding_window")
    if SLIDING in types and not window:
        raise WeightLoadError("sliding layers in layer_types but no sliding_window")
    return tuple(
        LayerAttention(window_left=window - 1 if kind == SLIDING else -1,
                       logits_soft_cap=soft_cap, scale=float(scalar) ** -0.5)
        for kind in types)


class Gemma2DecoderLayer(nn.Module):
    """Sandwich-normed attention + GELU-gated MLP with fused projections.

    The four ``*_layernorm`` parameters hold the checkpoint's weights; ``prepare_norms``
    turns them into the float32 ``1 + weight`` multipliers the forward uses."""

    def __init__(self, config: dict[str, Any], layer_id: int, dtype: torch.dtype,
                 device: torch.device | str, quant_method: QuantMethod, *,
                 kernels: KernelRoute = TORCH) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.kernels = kernels
        hidden = config["hidden_size"]
        self.num_qo_heads, self.num_kv_heads, self.head_dim = attention_heads(config)
        self.eps = config["rms_norm_eps"]
        activation = config.get("hidden_activation") or config.get("hidden_act")
        if activation not in GELU_TANH:
            raise WeightLoadError(f"hidden_activation {activation!r} is not supported "
                                  f"({', '.join(GELU_TANH)})")
        has_bias = bool(config.get("attention_bias", False))
        intermediate = config["intermediate_size"]
        qkv_sizes = (self.num_qo_heads * self.head_dim, self.num_kv_heads * self.head_dim,
                     self.num_kv_heads * self.head_dim)

        def proj(in_features: int, output_sizes: tuple[int, ...], bias: bool) -> QuantLinear:
            return QuantLinear(in_features, output_sizes, bias, quant_method, dtype, device)

        self.qkv_proj = proj(hidden, qkv_sizes, has_bias)
        self.o_proj = proj(qkv_sizes[0], (hidden,), has_bias)
        self.gate_up_proj = proj(hidden, (intermediate, intermediate), False)
        self.down_proj = proj(intermediate, (hidden,), False)
        for name in self._norm_names():
            setattr(self, name, _param((hidden,), dtype, device))
        self.norm_scales: dict[str, torch.Tensor] = {}
        """Norm name -> [width] float32 ``1 + weight`` (set by ``prepare_norms``)."""

    @staticmethod
    def _norm_names() -> tuple[str, ...]:
        return ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                "post_feedforward_layernorm")

    def projections(self) -> tuple[QuantLinear, ...]:
        return self.qkv_proj, self.o_proj, self.gate_up_proj, self.down_proj

    def dense_weights(self) -> dict[str, nn.Parameter]:
        """Checkpoint name (after ``model.layers.N.``) -> parameter, for the norms."""
        return {f"{name}.weight": getattr(self, name) for name in self._norm_names()}

    def prepare_norms(self) -> None:
        """Compute every norm's float32 ``1 + weight`` (after the weights are loaded)."""
        self.norm_scales = {name.removesuffix(".weight"): 1.0 + weight.detach().float()
                            for name, weight in self.dense_weights().items()}

    def rotate_qk(self, heads: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  rotary: RotaryEmbedding) -> tuple[torch.Tensor, torch.Tensor]:
        """heads: [T, Hq + 2 Hkv, D] -> rotated q [T, Hq, D], k [T, Hkv, D]."""
        return rotary.apply_qk(heads, self.num_qo_heads, self.num_kv_heads, cos, sin)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None, cos: torch.Tensor,
                sin: torch.Tensor, rotary: RotaryEmbedding,
                attn: AttentionBackend) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden: [T, hidden], the previous layer's post-normed MLP output (or the scaled
        embeddings, with ``residual`` None); residual: [T, hidden], the stream before it
        -> (this layer's post-normed MLP output, the stream before it), [T, hidden] each."""
        num_tokens = hidden.shape[0]
        kernels, eps, scales = self.kernels, self.eps, self.norm_scales
        if residual is None:
            residual = hidden
            x = gemma_rms_norm(hidden, scales["input_layernorm"], eps, kernels=kernels)
        else:
            x, residual = gemma_add_rms_norm(hidden, residual, scales["input_layernorm"], eps,
                                             kernels=kernels)
        heads = self.qkv_proj(x).view(num_tokens, -1, self.head_dim)  # [T, Hq + 2 Hkv, D]
        q, k = self.rotate_qk(heads, cos, sin, rotary)
        v = heads[:, self.num_qo_heads + self.num_kv_heads:]  # [T, Hkv, D]
        attn_out = attn.forward(self.layer_id, q, k, v)  # [T, Hq, D]
        attn_out = self.o_proj(attn_out.reshape(num_tokens, -1))  # [T, hidden]
        attn_out = gemma_rms_norm(attn_out, scales["post_attention_layernorm"], eps,
                                  kernels=kernels)
        x, residual = gemma_add_rms_norm(attn_out, residual,
                                         scales["pre_feedforward_layernorm"], eps,
                                         kernels=kernels)
        mlp_out = self.down_proj(gelu_and_mul(self.gate_up_proj(x), kernels=kernels))
        return gemma_rms_norm(mlp_out, scales["post_feedforward_layernorm"], eps,
                              kernels=kernels), residual


class Gemma2ForCausalLM(LlamaForCausalLM):
    """Built from a config.json dict; weights arrive through ``load_weights`` (Llama's
    names and fusing, plus the extra norms), after which the norms' ``1 + weight`` are
    prepared. ``attention_layers``: how each layer attends, for the attention backend."""

    decoder_layer_cls = Gemma2DecoderLayer

    @staticmethod
    def sliding_pattern(config: dict[str, Any]) -> int:
        """Without ``layer_types``, every this-many-th layer is global (Gemma 2: 1 in 2)."""
        return 2

    def __init__(self, config: dict[str, Any], dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu",
                 quant_method: QuantMethod | None = None, *,
                 kernels: KernelRoute = TORCH) -> None:
        if config.get("use_bidirectional_attention"):
            raise WeightLoadError("use_bidirectional_attention=true (an embedding model) is "
                                  "not supported")
        types = layer_types(config, self.sliding_pattern(config))
        super().__init__(self._llama_view(config), dtype, device, quant_method,
                         kernels=kernels)
        self.layer_types = types
        self.attention_layers = attention_layers(config, types, self.attn_soft_cap(config))
        """One LayerAttention per layer (toolkit.attention.base.model_attention_layers)."""
        self.final_logit_soft_cap = float(config.get("final_logit_softcapping") or 0.0)
        """Cap of the tanh soft-capping of the logits; 0: none."""
        self.embed_scale = torch.tensor(config["hidden_size"]**0.5, dtype=dtype, device=device)
        """sqrt(hidden_size) in the model dtype (bf16 rounds it, as in transformers)."""
        self.final_norm_scale: torch.Tensor | None = None
        """[hidden] float32 ``1 + norm weight`` (set by ``load_weights``)."""

    @staticmethod
    def attn_soft_cap(config: dict[str, Any]) -> float:
        """The cap of the attention logits' soft-capping (0: none): attn_logit_softcapping."""
        return float(config.get("attn_logit_softcapping") or 0.0)

    @staticmethod
    def _llama_view(config: dict[str, Any]) -> dict[str, Any]:
        """The config as LlamaForCausalLM reads it: tied embeddings unless told otherwise
        (Gemma's default)."""
        return {**config, "tie_word_embeddings": config.get("tie_word_embeddings", True)}

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        super().load_weights(weights)
        for layer in self.layers:
            layer.prepare_norms()
        self.final_norm_scale = 1.0 + self.norm.detach().float()

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [T] -> scaled embeddings [T, hidden] in the model dtype."""
        return F.embedding(input_ids, self.embed_tokens) * self.embed_scale

    def rotations(self, positions: torch.Tensor) -> list[tuple]:
        """positions [T] -> (cos, sin, rotary) of each layer (one table for Gemma 2)."""
        cos, sin = self.rotary.cos_sin(positions)  # [T, 1, D] each
        return [(cos, sin, self.rotary)] * len(self.layers)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                attn: AttentionBackend,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids, positions: [T] -> final-normed hidden states [T, hidden].
        ``inputs_embeds`` [T, hidden]: already scaled input rows to use instead."""
        hidden = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        residual = None
        for layer, (cos, sin, rotary) in zip(self.layers, self.rotations(positions),
                                             strict=True):
            hidden, residual = layer(hidden, residual, cos, sin, rotary, attn)
        if residual is None:
            return gemma_rms_norm(hidden, self.final_norm_scale, self.eps,
                                  kernels=self.kernels)
        return gemma_add_rms_norm(hidden, residual, self.final_norm_scale, self.eps,
                                  kernels=self.kernels)[0]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [N, hidden] -> logits [N, vocab] float32, soft-capped when the config
        says so."""
        logits = super().compute_logits(hidden)
        cap = self.final_logit_soft_cap
        return torch.tanh(logits / cap) * cap if cap > 0 else logits
