"""Gemma 3's text model (Gemma3ForCausalLM) in plain torch: Gemma 2's layers (see
gemma2.py) plus

- per-head RMSNorms of q and k (``self_attn.q_norm`` / ``k_norm``, ``1 + weight``, over
  head_dim) before the rotation;
- sliding-window layers five in six (``layer_types``, else ``sliding_window_pattern``),
  which rotate with their own base (``rope_local_base_freq``, or transformers-5's
  ``rope_parameters["sliding_attention"]``) while the global layers take ``rope_theta``
  and ``rope_scaling`` (``rope_parameters["full_attention"]``);
- no soft-capping of the attention logits, whatever ``attn_logit_softcapping`` says
  (transformers' Gemma 3 attention reads it but never applies it; checkpoints set none);
  the final logits are capped where ``final_logit_softcapping`` is set.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.layers.rotary import RotaryEmbedding, rope_parameters_from_hf_config
from toolkit.models.gemma2 import (
    FULL,
    SLIDING,
    Gemma2DecoderLayer,
    Gemma2ForCausalLM,
    gemma_rms_norm,
)
from toolkit.models.llama import _param
from toolkit.quant.base import QuantMethod

DEFAULT_LOCAL_ROPE_THETA = 10000.0
"""transformers' rope_local_base_freq default."""


def _rope_configs(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(global, local) config views that rope_parameters_from_hf_config reads, from either
    spelling: transformers-5 ``rope_parameters`` keyed by layer type, or the classic
    ``rope_theta`` + ``rope_scaling`` (global) and ``rope_local_base_freq`` (local)."""
    params = config.get("rope_parameters") or {}
    if FULL in params or SLIDING in params:
        full = params.get(FULL) or {"rope_type": "default"}
        local = params.get(SLIDING) or {
            "rope_type": "default",
            "rope_theta": config.get("rope_local_base_freq", DEFAULT_LOCAL_ROPE_THETA)}
        return ({**config, "rope_parameters": full, "rope_scaling": None},
                {**config, "rope_parameters": local, "rope_scaling": None})
    local = {"rope_type": "default",
             "rope_theta": config.get("rope_local_base_freq", DEFAULT_LOCAL_ROPE_THETA)}
    return config, {**config, "rope_parameters": local, "rope_scaling": None}


class Gemma3DecoderLayer(Gemma2DecoderLayer):
    """Gemma 2's layer with q and k normed per head before the rotation."""

    def __init__(self, config: dict[str, Any], layer_id: int, dtype: torch.dtype,
                 device: torch.device | str, quant_method: QuantMethod, *,
                 kernels: KernelRoute = TORCH) -> None:
        super().__init__(config, layer_id, dtype, device, quant_method, kernels=kernels)
        self.q_norm = _param((self.head_dim,), dtype, device)
        self.k_norm = _param((self.head_dim,), dtype, device)

    def dense_weights(self) -> dict[str, nn.Parameter]:
        return {**super().dense_weights(), "self_attn.q_norm.weight": self.q_norm,
                "self_attn.k_norm.weight": self.k_norm}

    def rotate_qk(self, heads: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  rotary: RotaryEmbedding) -> tuple[torch.Tensor, torch.Tensor]:
        """heads: [T, Hq + 2 Hkv, D] -> q, k normed per head, then rotated:
        [T, Hq, D], [T, Hkv, D]."""
        num_tokens, num_qo, num_kv = heads.shape[0], self.num_qo_heads, self.num_kv_heads
        q = gemma_rms_norm(heads[:, :num_qo].reshape(-1, self.head_dim),
                           self.norm_scales["self_attn.q_norm"], self.eps,
                           kernels=self.kernels)  # [T * Hq, D]
        k = gemma_rms_norm(heads[:, num_qo:num_qo + num_kv].reshape(-1, self.head_dim),
                           self.norm_scales["self_attn.k_norm"], self.eps,
                           kernels=self.kernels)  # [T * Hkv, D]
        qk = torch.cat((q.view(num_tokens, num_qo, -1), k.view(num_tokens, num_kv, -1)),
                       dim=1)  # [T, Hq + Hkv, D]
        return rotary.apply_qk(qk, num_qo, num_kv, cos, sin)


class Gemma3ForCausalLM(Gemma2ForCausalLM):
    """Gemma 2's model with Gemma 3's layers, layer pattern and two rotary tables
    (``rotary`` for the global layers, ``local_rotary`` for the sliding ones)."""

    decoder_layer_cls = Gemma3DecoderLayer

    @staticmethod
    def sliding_pattern(config: dict[str, Any]) -> int:
        """Without ``layer_types``: five sliding layers, then a global one (or as
        ``sliding_window_pattern`` says)."""
        return int(config.get("sliding_window_pattern") or 6)

    def __init__(self, config: dict[str, Any], dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu",
                 quant_method: QuantMethod | None = None, *,
                 kernels: KernelRoute = TORCH) -> None:
        super().__init__(config, dtype, device, quant_method, kernels=kernels)
        local_config = _rope_configs(config)[1]
        self.local_rotary = RotaryEmbedding(
            rope_parameters_from_hf_config(local_config), self.layers[0].head_dim,
            config["max_position_embeddings"], dtype, device, kernels=kernels)

    @staticmethod
    def _llama_view(config: dict[str, Any]) -> dict[str, Any]:
        """Gemma 2's view with the global layers' rope settings at the top level."""
        return Gemma2ForCausalLM._llama_view(_rope_configs(config)[0])

    @staticmethod
    def attn_soft_cap(config: dict[str, Any]) -> float:
        """0: Gemma 3 does not soft-cap attention logits."""
        return 0.0

    def rotations(self, positions: torch.Tensor) -> list[tuple]:
        """positions [T] -> (cos, sin, rotary) of each layer: the local table for sliding
        layers, the global one for the others."""
        tables = {}
        for kind, rotary in ((FULL, self.rotary), (SLIDING, self.local_rotary)):
            if kind in self.layer_types:
                tables[kind] = (*rotary.cos_sin(positions), rotary)  # [T, 1, D] cos, sin
        return [tables[kind] for kind in self.layer_types]
