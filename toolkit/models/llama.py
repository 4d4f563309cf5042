"""The Llama family (Llama 2/3/3.1, Mistral, Qwen2, SmolLM2) in plain torch.

Ragged layout: tokens of all requests are concatenated, ``[T, hidden]``, no batch axis.
Attention goes through an AttentionBackend that the runner has already planned.
q/k/v and gate/up are fused at load time so a decode step runs few, large matmuls.
Mistral's sliding window is not applied: build_runtime caps max_model_len to
``sliding_window``, within which full attention equals windowed attention.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.attention.base import AttentionBackend
from toolkit.layers.activation import silu_and_mul
from toolkit.layers.linear import linear, pack_weight
from toolkit.layers.rmsnorm import rms_norm
from toolkit.layers.rotary import RotaryEmbedding, rope_parameters_from_hf_config

_LAYER_NAME = re.compile(r"model\.layers\.(\d+)\.(.+)")
_QKV_PARTS = {"q_proj": 0, "k_proj": 1, "v_proj": 2}
_GATE_UP_PARTS = {"gate_proj": 0, "up_proj": 1}


class WeightLoadError(ValueError):
    """Checkpoint names or shapes that do not fit the model."""


def _param(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, dtype=dtype, device=device), requires_grad=False)


class LlamaDecoderLayer(nn.Module):
    """Pre-norm attention + SwiGLU MLP with fused projections."""

    def __init__(self, config: dict[str, Any], layer_id: int, dtype: torch.dtype,
                 device: torch.device | str) -> None:
        super().__init__()
        self.layer_id = layer_id
        hidden = config["hidden_size"]
        self.num_qo_heads = config["num_attention_heads"]
        self.num_kv_heads = config.get("num_key_value_heads") or self.num_qo_heads
        self.head_dim = config.get("head_dim") or hidden // self.num_qo_heads
        self.eps = config["rms_norm_eps"]
        self.qkv_sizes = (self.num_qo_heads * self.head_dim, self.num_kv_heads * self.head_dim,
                          self.num_kv_heads * self.head_dim)
        intermediate = config["intermediate_size"]
        is_qwen2 = _architecture(config).startswith("Qwen2")
        has_qkv_bias = bool(config.get("attention_bias", False)) or is_qwen2
        has_o_bias = bool(config.get("attention_bias", False)) and not is_qwen2
        if config.get("mlp_bias", False):
            raise WeightLoadError("mlp_bias=True is not supported")
        if config.get("hidden_act", "silu") != "silu":
            raise WeightLoadError(f"hidden_act {config['hidden_act']!r} is not supported (silu)")
        self.input_layernorm = _param((hidden,), dtype, device)
        self.qkv_proj = _param((sum(self.qkv_sizes), hidden), dtype, device)
        self.qkv_proj_bias = _param((sum(self.qkv_sizes),), dtype, device) if has_qkv_bias else None
        self.o_proj = _param((hidden, self.qkv_sizes[0]), dtype, device)
        self.o_proj_bias = _param((hidden,), dtype, device) if has_o_bias else None
        self.post_attention_layernorm = _param((hidden,), dtype, device)
        self.gate_up_proj = _param((2 * intermediate, hidden), dtype, device)
        self.down_proj = _param((hidden, intermediate), dtype, device)
        self.packed: dict[str, torch.Tensor | None] = {}
        """oneDNN-packed copies of the projection weights (see ``pack_weights``)."""

    def pack_weights(self) -> None:
        """Make oneDNN-packed copies of the four projections (bf16 on CPU; else no-op)."""
        self.packed = {name: pack_weight(getattr(self, name))
                       for name in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")}

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                rotary: RotaryEmbedding, attn: AttentionBackend) -> torch.Tensor:
        """hidden: [T, hidden] -> [T, hidden]."""
        num_tokens = hidden.shape[0]
        packed = self.packed
        x = rms_norm(hidden, self.input_layernorm, self.eps)
        # [T, (Hq + 2 Hkv) * D]
        qkv = linear(x, self.qkv_proj, self.qkv_proj_bias, packed.get("qkv_proj"))
        heads = qkv.view(num_tokens, -1, self.head_dim)  # [T, Hq + 2 Hkv, D]
        num_rotated = self.num_qo_heads + self.num_kv_heads
        qk = rotary.apply(heads[:, :num_rotated], cos, sin)  # [T, Hq + Hkv, D]
        q, k = qk.split((self.num_qo_heads, self.num_kv_heads), dim=1)
        v = heads[:, num_rotated:]  # [T, Hkv, D]
        attn_out = attn.forward(self.layer_id, q, k, v)  # [T, Hq, D]
        hidden = hidden + linear(attn_out.reshape(num_tokens, -1), self.o_proj, self.o_proj_bias,
                                 packed.get("o_proj"))
        x = rms_norm(hidden, self.post_attention_layernorm, self.eps)
        gate_up = linear(x, self.gate_up_proj, None, packed.get("gate_up_proj"))
        mlp_out = linear(silu_and_mul(gate_up), self.down_proj, None, packed.get("down_proj"))
        return hidden + mlp_out


def _architecture(config: dict[str, Any]) -> str:
    return (config.get("architectures") or ["LlamaForCausalLM"])[0]


class LlamaForCausalLM(nn.Module):
    """Built from a config.json dict; weights arrive later through ``load_weights``."""

    def __init__(self, config: dict[str, Any], dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.config = config
        self.dtype = dtype
        hidden = config["hidden_size"]
        vocab_size = config["vocab_size"]
        self.eps = config["rms_norm_eps"]
        self.tie_word_embeddings = bool(config.get("tie_word_embeddings", False))
        self.embed_tokens = _param((vocab_size, hidden), dtype, device)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config, i, dtype, device) for i in range(config["num_hidden_layers"])
        )
        self.norm = _param((hidden,), dtype, device)
        self.lm_head = self.embed_tokens if self.tie_word_embeddings else _param(
            (vocab_size, hidden), dtype, device)
        head_dim = self.layers[0].head_dim
        self.rotary = RotaryEmbedding(rope_parameters_from_hf_config(config), head_dim,
                                      config["max_position_embeddings"], dtype, device)
        self.packed_lm_head: torch.Tensor | None = None

    def pack_weights(self) -> None:
        """Pre-pack every projection and the LM head for oneDNN (bit-identical results).

        Applies to bfloat16 weights on the CPU and is a no-op otherwise. Call after
        ``load_weights``; the packed copies are not parameters (load_weights drops them).
        """
        for layer in self.layers:
            layer.pack_weights()
        self.packed_lm_head = pack_weight(self.lm_head)

    def unpack_weights(self) -> None:
        """Drop the packed copies; matmuls go back to F.linear on the parameters."""
        for layer in self.layers:
            layer.packed = {}
        self.packed_lm_head = None

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                attn: AttentionBackend) -> torch.Tensor:
        """input_ids, positions: [T] -> final-normed hidden states [T, hidden]."""
        hidden = F.embedding(input_ids, self.embed_tokens)  # [T, hidden]
        cos, sin = self.rotary.cos_sin(positions)  # [T, 1, D] each
        for layer in self.layers:
            hidden = layer(hidden, cos, sin, self.rotary, attn)
        return rms_norm(hidden, self.norm, self.eps)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [N, hidden] -> logits [N, vocab] float32."""
        return linear(hidden, self.lm_head, None, self.packed_lm_head).float()

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors in, fusing q/k/v and gate/up; every parameter must be set."""
        self.unpack_weights()  # stale after new weights; pack_weights() again afterwards
        expected = self._expected_names()
        seen: set[str] = set()
        for name, tensor in weights:
            if name.endswith("rotary_emb.inv_freq"):
                continue
            if name == "lm_head.weight" and self.tie_word_embeddings:
                continue
            if name not in expected:
                architecture = _architecture(self.config)
                raise WeightLoadError(f"unexpected weight {name!r} for {architecture}")
            target = self._target_slice(name)
            if tuple(tensor.shape) != tuple(target.shape):
                raise WeightLoadError(f"{name}: shape {tuple(tensor.shape)}, "
                                      f"expected {tuple(target.shape)}")
            target.copy_(tensor)
            seen.add(name)
        missing = sorted(expected - seen)
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise WeightLoadError(f"{len(missing)} weights missing from the checkpoint: {shown}")

    def _expected_names(self) -> set[str]:
        names = {"model.embed_tokens.weight", "model.norm.weight"}
        if not self.tie_word_embeddings:
            names.add("lm_head.weight")
        per_layer = ["input_layernorm.weight", "post_attention_layernorm.weight",
                     "self_attn.o_proj.weight", "mlp.down_proj.weight"]
        per_layer += [f"self_attn.{p}.weight" for p in _QKV_PARTS]
        per_layer += [f"mlp.{p}.weight" for p in _GATE_UP_PARTS]
        if self.layers[0].qkv_proj_bias is not None:
            per_layer += [f"self_attn.{p}.bias" for p in _QKV_PARTS]
        if self.layers[0].o_proj_bias is not None:
            per_layer.append("self_attn.o_proj.bias")
        return names | {f"model.layers.{i}.{n}" for i in range(len(self.layers)) for n in per_layer}

    def _target_slice(self, name: str) -> torch.Tensor:
        """The (view of the) parameter that the HF tensor ``name`` fills."""
        top_level = {"model.embed_tokens.weight": self.embed_tokens,
                     "model.norm.weight": self.norm, "lm_head.weight": self.lm_head}
        if name in top_level:
            return top_level[name].data
        layer_id, rest = _LAYER_NAME.fullmatch(name).groups()
        layer = self.layers[int(layer_id)]
        proj, kind = rest.split(".")[-2:]
        if proj in _QKV_PARTS:
            fused = layer.qkv_proj if kind == "weight" else layer.qkv_proj_bias
            start = sum(layer.qkv_sizes[: _QKV_PARTS[proj]])
            return fused.data[start:start + layer.qkv_sizes[_QKV_PARTS[proj]]]
        if proj in _GATE_UP_PARTS:
            half = layer.gate_up_proj.shape[0] // 2
            start = half * _GATE_UP_PARTS[proj]
            return layer.gate_up_proj.data[start:start + half]
        return getattr(layer, proj if kind == "weight" else f"{proj}_bias").data
