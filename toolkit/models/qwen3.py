"""Qwen3: the Llama layer with an RMSNorm over each q and k head before the rotation.

Everything else is the Llama family's (toolkit/models/llama.py): fused q/k/v and gate/up,
the residual adds fused with the norms, no q/k/v bias unless ``attention_bias``, and
``head_dim`` from config.json (Qwen3's heads are wider than hidden_size / heads).
``QKNormAttention`` is the reusable piece: a layer class that mixes it in ahead of its
attention layer gets the two norms (checkpoint names ``self_attn.q_norm.weight`` and
``self_attn.k_norm.weight``) and applies them in ``rotate_qk`` (Qwen3-MoE does the same).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.layers.rmsnorm import rms_norm
from toolkit.layers.rotary import RotaryEmbedding
from toolkit.models.llama import LlamaDecoderLayer, LlamaForCausalLM
from toolkit.quant.base import QuantMethod


def per_head_rms_norm(heads: torch.Tensor, weight: torch.Tensor, eps: float, *,
                      kernels: KernelRoute = TORCH) -> torch.Tensor:
    """heads: [T, H, D], weight: [D] -> each head RMS-normalised over D, [T, H, D]
    (contiguous), through the same kernel route as the model's other norms."""
    num_tokens, num_heads, head_dim = heads.shape
    rows = heads.reshape(num_tokens * num_heads, head_dim)  # [T * H, D]
    return rms_norm(rows, weight, eps, kernels=kernels).view(num_tokens, num_heads, head_dim)


class QKNormAttention:
    """Mixin for a LlamaDecoderLayer subclass: per-head RMSNorm on q and k, then rotary.

    Call ``init_qk_norm`` in ``__init__`` after the base layer's; the layer must have
    ``head_dim``, ``num_qo_heads``, ``num_kv_heads``, ``eps`` and ``kernels``.
    """

    def init_qk_norm(self, dtype: torch.dtype, device: torch.device | str) -> None:
        self.q_norm = nn.Parameter(torch.empty(self.head_dim, dtype=dtype, device=device),
                                   requires_grad=False)
        self.k_norm = nn.Parameter(torch.empty(self.head_dim, dtype=dtype, device=device),
                                   requires_grad=False)

    def dense_weights(self) -> dict[str, nn.Parameter]:
        return {**super().dense_weights(), "self_attn.q_norm.weight": self.q_norm,
                "self_attn.k_norm.weight": self.k_norm}

    def rotate_qk(self, heads: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  rotary: RotaryEmbedding) -> tuple[torch.Tensor, torch.Tensor]:
        """heads: [T, Hq + 2 Hkv, D] -> normed and rotated q [T, Hq, D], k [T, Hkv, D]."""
        num_q, num_qk = self.num_qo_heads, self.num_qo_heads + self.num_kv_heads
        q = per_head_rms_norm(heads[:, :num_q], self.q_norm, self.eps, kernels=self.kernels)
        k = per_head_rms_norm(heads[:, num_q:num_qk], self.k_norm, self.eps,
                              kernels=self.kernels)
        normed = torch.cat((q, k), dim=1)  # [T, Hq + Hkv, D]
        return rotary.apply_qk(normed, self.num_qo_heads, self.num_kv_heads, cos, sin)


class Qwen3DecoderLayer(QKNormAttention, LlamaDecoderLayer):
    """The Llama layer with Qwen3's q/k norms."""

    def __init__(self, config: dict[str, Any], layer_id: int, dtype: torch.dtype,
                 device: torch.device | str, quant_method: QuantMethod, *,
                 kernels: KernelRoute = TORCH) -> None:
        super().__init__(config, layer_id, dtype, device, quant_method, kernels=kernels)
        self.init_qk_norm(dtype, device)


class Qwen3ForCausalLM(LlamaForCausalLM):
    """Qwen3 dense models (Qwen/Qwen3-0.6B ... 32B), built from config.json; a sliding
    window, where config.json turns one on, caps the context (ModelInfo) as for Mistral."""

    decoder_layer_cls = Qwen3DecoderLayer
