"""A functional Llama-family decoder layer over one layer's dense HF-named tensors.

Calibration (toolkit/quantize.py) runs layer by layer on whole blocks of
tokens and swaps weights in and out between trials, so it works on plain dicts of tensors
rather than on the serving model: ``weights["self_attn.q_proj.weight"]`` etc., with the
optional q/k/v/o biases of Qwen2-style checkpoints. Activations are [B, L, H] (B blocks of
L tokens, causal within a block); math is in the tensors' dtype (float32 for calibration).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from toolkit.layers.rotary import RotaryEmbedding, rope_parameters_from_hf_config

LayerWeights = dict[str, torch.Tensor]
"""One decoder layer's tensors by HF name relative to ``model.layers.<i>.``."""

LINEAR_NAMES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
"""Every projection of a layer, in checkpoint order."""


@dataclass(frozen=True)
class LayerContext:
    """What a layer needs besides its weights, shared by every layer of a model."""

    num_heads: int
    """Query heads."""
    num_kv_heads: int
    """Key/value heads (fewer under GQA)."""
    head_dim: int
    """Width of one head."""
    rms_norm_eps: float
    """RMSNorm epsilon."""
    cos: torch.Tensor
    """[L, 1, D] rotary cosines of positions 0..L-1 (RotaryEmbedding.cos_sin)."""
    sin: torch.Tensor
    """[L, 1, D] signed rotary sines."""
    rope: RotaryEmbedding
    """Applies the rotation."""


def layer_context(config: dict, seq_len: int, dtype: torch.dtype,
                  device: torch.device | str) -> LayerContext:
    """The context of a config.json's layers for blocks of ``seq_len`` tokens."""
    num_heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // num_heads
    rope = RotaryEmbedding(rope_parameters_from_hf_config(config), head_dim, seq_len,
                           dtype, device)
    cos, sin = rope.cos_sin(torch.arange(seq_len, device=device))
    return LayerContext(num_heads=num_heads,
                        num_kv_heads=config.get("num_key_value_heads") or num_heads,
                        head_dim=head_dim, rms_norm_eps=config.get("rms_norm_eps", 1e-6),
                        cos=cos, sin=sin, rope=rope)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """[..., H] -> [..., H]."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def linear(weights: LayerWeights, name: str, x: torch.Tensor) -> torch.Tensor:
    """[..., K] -> [..., N] through projection ``name`` (with its bias, if any)."""
    return F.linear(x, weights[f"{name}.weight"], weights.get(f"{name}.bias"))


def attention_core(weights: LayerWeights, ctx: LayerContext, x: torch.Tensor) -> torch.Tensor:
    """Normed x [B, L, H] -> causal attention output [B, L, num_heads * D] (o_proj's input)."""
    batch, seq_len, _ = x.shape
    q = linear(weights, "self_attn.q_proj", x).view(batch, seq_len, ctx.num_heads, ctx.head_dim)
    k = linear(weights, "self_attn.k_proj", x).view(batch, seq_len, ctx.num_kv_heads,
                                                    ctx.head_dim)
    v = linear(weights, "self_attn.v_proj", x).view(batch, seq_len, ctx.num_kv_heads,
                                                    ctx.head_dim)
    q, k = ctx.rope.apply(q, ctx.cos, ctx.sin), ctx.rope.apply(k, ctx.cos, ctx.sin)
    out = F.scaled_dot_product_attention(  # [B, num_heads, L, D]
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
        enable_gqa=ctx.num_kv_heads != ctx.num_heads)
    return out.transpose(1, 2).reshape(batch, seq_len, ctx.num_heads * ctx.head_dim)


def self_attn(weights: LayerWeights, ctx: LayerContext, x: torch.Tensor) -> torch.Tensor:
    """Normed x [B, L, H] -> attention block output [B, L, H] (before the residual)."""
    return linear(weights, "self_attn.o_proj", attention_core(weights, ctx, x))


def mlp_inner(weights: LayerWeights, x: torch.Tensor) -> torch.Tensor:
    """Normed x [B, L, H] -> silu(gate(x)) * up(x) [B, L, I] (down_proj's input)."""
    return F.silu(linear(weights, "mlp.gate_proj", x)) * linear(weights, "mlp.up_proj", x)


def mlp(weights: LayerWeights, x: torch.Tensor) -> torch.Tensor:
    """Normed x [B, L, H] -> SwiGLU output [B, L, H] (before the residual)."""
    return linear(weights, "mlp.down_proj", mlp_inner(weights, x))


def decoder_layer(weights: LayerWeights, ctx: LayerContext, x: torch.Tensor,
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """x [B, L, H] -> (layer output [B, L, H], every projection's input by linear name)."""
    attn_in = rms_norm(x, weights["input_layernorm.weight"], ctx.rms_norm_eps)
    attn_mid = attention_core(weights, ctx, attn_in)
    h = x + linear(weights, "self_attn.o_proj", attn_mid)
    mlp_in = rms_norm(h, weights["post_attention_layernorm.weight"], ctx.rms_norm_eps)
    mlp_mid = mlp_inner(weights, mlp_in)
    out = h + linear(weights, "mlp.down_proj", mlp_mid)
    inputs = {"self_attn.q_proj": attn_in, "self_attn.k_proj": attn_in,
              "self_attn.v_proj": attn_in, "self_attn.o_proj": attn_mid,
              "mlp.gate_proj": mlp_in, "mlp.up_proj": mlp_in, "mlp.down_proj": mlp_mid}
    return out, inputs
