"""Mixtral: the Llama attention with a sparse mixture-of-experts MLP in every layer.

Each layer's MLP is a SparseMoeBlock (toolkit/layers/moe.py): a dense router (checkpoint
``block_sparse_moe.gate.weight`` [E, H]) picks ``num_experts_per_tok`` of
``num_local_experts`` SwiGLU experts per token, with the top-k softmax weights
renormalized. The experts load as transformers' ``save_pretrained`` writes them,
``block_sparse_moe.experts.{e}.w1/w3/w2.weight`` (gate [I, H], up [I, H], down [H, I]),
into stacked tensors that the model's QuantMethod stores and multiplies
(toolkit/quant/experts.py: ``none`` and ``q4_1``; other methods are refused at load).
The experts run grouped per expert on the CPU and through the Triton fused-MoE kernel on
CUDA.

``MixtralDecoderLayer`` is the reusable piece: a subclass names its own checkpoint prefix
and expert names, reads its own MoE settings from config.json (``moe_spec``) and says
which layers are sparse (``is_sparse``); Qwen3-MoE (toolkit/models/qwen3_moe.py) does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from toolkit.attention.base import AttentionBackend
from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.layers.activation import silu_and_mul
from toolkit.layers.linear import batch_variance
from toolkit.layers.moe import SparseMoeBlock
from toolkit.layers.rmsnorm import fused_add_rms_norm, rms_norm
from toolkit.layers.rotary import RotaryEmbedding
from toolkit.models.llama import (
    _LAYER_NAME,
    LlamaForCausalLM,
    WeightLoadError,
    _param,
    attention_heads,
)
from toolkit.quant.base import QuantMethod
from toolkit.quant.experts import create_expert_weights, expert_storage
from toolkit.quant.linear import QuantLinear, ShardLoadError

_ATTENTION_PROJECTIONS = {"q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1),
                          "v_proj": ("qkv_proj", 2), "o_proj": ("o_proj", 0)}
_DENSE_MLP_PROJECTIONS = {"gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
                          "down_proj": ("down_proj", 0)}
"""HF projection name -> (fused QuantLinear attribute, part index)."""


@dataclass(frozen=True)
class MoeSpec:
    """One architecture's mixture-of-experts settings, read from config.json."""

    num_experts: int
    """Experts per sparse layer (E)."""
    top_k: int
    """Experts each token is routed to."""
    intermediate_size: int
    """Width of one expert's gate/up output (I)."""
    renormalize: bool
    """Rescale the top_k routing weights to sum to one."""


class MixtralDecoderLayer(nn.Module):
    """Pre-norm attention (fused q/k/v, rotary) + a sparse MoE MLP, or a dense SwiGLU MLP
    where ``is_sparse`` says no; norms and SiLU-and-mul take the CPU kernel route
    ``kernels``."""

    moe_prefix = "block_sparse_moe"
    """Checkpoint module of the MoE block (after ``model.layers.N.``)."""
    expert_parts = {"w1": "gate", "w3": "up", "w2": "down"}
    """Checkpoint name of an expert matrix -> its part (toolkit.quant.experts)."""

    def __init__(self, config: dict[str, Any], layer_id: int, dtype: torch.dtype,
                 device: torch.device | str, quant_method: QuantMethod, *,
                 kernels: KernelRoute = TORCH) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.kernels = kernels
        hidden = config["hidden_size"]
        self.num_qo_heads, self.num_kv_heads, self.head_dim = attention_heads(config)
        self.eps = config["rms_norm_eps"]
        if config.get("hidden_act", "silu") != "silu":
            raise WeightLoadError(f"hidden_act {config['hidden_act']!r} is not supported (silu)")
        self.input_layernorm = _param((hidden,), dtype, device)
        self.post_attention_layernorm = _param((hidden,), dtype, device)
        self._init_attention(config, dtype, device, quant_method)
        self.moe: SparseMoeBlock | None = None
        if self.is_sparse(config, layer_id):
            self._init_moe(config, dtype, device, quant_method)
        else:
            intermediate = config["intermediate_size"]
            self.gate_up_proj = QuantLinear(hidden, (intermediate, intermediate), False,
                                            quant_method, dtype, device)
            self.down_proj = QuantLinear(intermediate, (hidden,), False, quant_method, dtype,
                                         device)

    @classmethod
    def moe_spec(cls, config: dict[str, Any]) -> MoeSpec:
        """Mixtral's config.json names."""
        return MoeSpec(num_experts=config["num_local_experts"],
                       top_k=config["num_experts_per_tok"],
                       intermediate_size=config["intermediate_size"], renormalize=True)

    @classmethod
    def is_sparse(cls, config: dict[str, Any], layer_id: int) -> bool:
        """Whether layer ``layer_id`` has the MoE MLP (Mixtral: every layer)."""
        return True

    def _init_attention(self, config: dict[str, Any], dtype: torch.dtype,
                        device: torch.device | str, quant_method: QuantMethod) -> None:
        hidden = config["hidden_size"]
        bias = bool(config.get("attention_bias", False))
        self.qkv_sizes = (self.num_qo_heads * self.head_dim, self.num_kv_heads * self.head_dim,
                          self.num_kv_heads * self.head_dim)
        self.qkv_proj = QuantLinear(hidden, self.qkv_sizes, bias, quant_method, dtype, device)
        self.o_proj = QuantLinear(self.qkv_sizes[0], (hidden,), bias, quant_method, dtype,
                                  device)

    def _init_moe(self, config: dict[str, Any], dtype: torch.dtype,
                  device: torch.device | str, quant_method: QuantMethod) -> None:
        spec = self.moe_spec(config)
        hidden = config["hidden_size"]
        storage = expert_storage(quant_method)  # refuses a method that cannot hold experts
        router = QuantLinear(hidden, (spec.num_experts,), False,
                             storage.router_method(quant_method), dtype, device)
        experts = create_expert_weights(quant_method, spec.num_experts, hidden,
                                        spec.intermediate_size, dtype, device)
        self.moe = SparseMoeBlock(router, experts, spec.top_k, spec.renormalize,
                                  kernels=self.kernels)

    def projections(self) -> tuple[QuantLinear, ...]:
        """The layer's QuantLinear layers (the router among them, not the experts)."""
        if self.moe is None:
            return self.qkv_proj, self.o_proj, self.gate_up_proj, self.down_proj
        return self.qkv_proj, self.o_proj, self.moe.router

    def dense_weights(self) -> dict[str, nn.Parameter]:
        """Checkpoint name (after ``model.layers.N.``) -> parameter: the norms."""
        return {"input_layernorm.weight": self.input_layernorm,
                "post_attention_layernorm.weight": self.post_attention_layernorm}

    def checkpoint_names(self) -> list[str]:
        """Every checkpoint tensor of this layer (after ``model.layers.N.``)."""
        names = list(self.dense_weights())
        projections = {f"self_attn.{name}": getattr(self, attribute)
                       for name, (attribute, _) in _ATTENTION_PROJECTIONS.items()}
        if self.moe is None:
            projections.update({f"mlp.{name}": getattr(self, attribute)
                                for name, (attribute, _) in _DENSE_MLP_PROJECTIONS.items()})
        else:
            projections[f"{self.moe_prefix}.gate"] = self.moe.router
            names += [f"{self.moe_prefix}.experts.{e}.{name}.weight"
                      for e in range(self.moe.experts.num_experts) for name in self.expert_parts]
        for module, proj in projections.items():
            names += [f"{module}.{suffix}" for suffix in proj.checkpoint_names()]
        return names

    def load_tensor(self, rest: str, tensor: torch.Tensor) -> None:
        """Copy one checkpoint tensor named ``rest`` (after ``model.layers.N.``) in."""
        dense = self.dense_weights()
        if rest in dense:
            if tuple(tensor.shape) != tuple(dense[rest].shape):
                raise ShardLoadError(f"shape {tuple(tensor.shape)}, "
                                     f"expected {tuple(dense[rest].shape)}")
            dense[rest].data.copy_(tensor)
            return
        module, _, rest_of_name = rest.partition(".")
        if module == self.moe_prefix and self.moe is not None:
            self._load_moe_tensor(rest_of_name, tensor)
            return
        proj_name, _, suffix = rest_of_name.partition(".")
        attribute, part = {**_ATTENTION_PROJECTIONS, **_DENSE_MLP_PROJECTIONS}[proj_name]
        getattr(self, attribute).load_shard(suffix, tensor, part)

    def _load_moe_tensor(self, name: str, tensor: torch.Tensor) -> None:
        """``gate.<suffix>`` (the router) or ``experts.<e>.<matrix>.weight``."""
        if name.startswith("gate."):
            self.moe.router.load_shard(name.removeprefix("gate."), tensor)
            return
        _, expert, matrix, _ = name.split(".")
        self.moe.experts.load_expert(self.expert_parts[matrix], int(expert), tensor)

    def rotate_qk(self, heads: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  rotary: RotaryEmbedding) -> tuple[torch.Tensor, torch.Tensor]:
        """heads: [T, Hq + 2 Hkv, D] -> rotated q [T, Hq, D], k [T, Hkv, D] (a subclass
        may change q and k first: Qwen3-MoE's per-head norms)."""
        return rotary.apply_qk(heads, self.num_qo_heads, self.num_kv_heads, cos, sin)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, H] (post-attention normed) -> [T, H]."""
        if self.moe is not None:
            return self.moe(x)
        return self.down_proj(silu_and_mul(self.gate_up_proj(x), kernels=self.kernels))

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None, cos: torch.Tensor,
                sin: torch.Tensor, rotary: RotaryEmbedding,
                attn: AttentionBackend) -> tuple[torch.Tensor, torch.Tensor]:
        """LlamaDecoderLayer.forward's contract: (previous MLP output, residual stream
        before it) -> (this layer's MLP output, residual stream before it), [T, H] each."""
        num_tokens = hidden.shape[0]
        kernels = self.kernels
        if residual is None:
            residual = hidden
            x = rms_norm(hidden, self.input_layernorm, self.eps, kernels=kernels)
        else:
            x, residual = fused_add_rms_norm(hidden, residual, self.input_layernorm, self.eps,
                                             kernels=kernels)
        heads = self.qkv_proj(x).view(num_tokens, -1, self.head_dim)  # [T, Hq + 2 Hkv, D]
        q, k = self.rotate_qk(heads, cos, sin, rotary)
        v = heads[:, self.num_qo_heads + self.num_kv_heads:]  # [T, Hkv, D]
        attn_out = attn.forward(self.layer_id, q, k, v)  # [T, Hq, D]
        attn_out = self.o_proj(attn_out.reshape(num_tokens, -1))  # [T, H]
        x, residual = fused_add_rms_norm(attn_out, residual, self.post_attention_layernorm,
                                         self.eps, kernels=kernels)
        return self.mlp(x), residual


class MixtralForCausalLM(LlamaForCausalLM):
    """Mixtral (mistralai/Mixtral-8x7B-Instruct-v0.1 ...) from config.json: the Llama
    model's embeddings, final norm, LM head, rotary and forward, with MoE layers."""

    decoder_layer_cls = MixtralDecoderLayer

    def _sparse_layers(self) -> list[MixtralDecoderLayer]:
        return [layer for layer in self.layers if layer.moe is not None]

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Llama's loading (every tensor expected, projections converted by their
        QuantMethod), with the experts reset before and converted after."""
        for layer in self._sparse_layers():
            layer.moe.experts.create_params()
        super().load_weights(weights)
        for layer in self._sparse_layers():
            layer.moe.experts.finish_loading()

    def _load_one(self, name: str, tensor: torch.Tensor) -> None:
        match = _LAYER_NAME.fullmatch(name)
        if match is None:
            super()._load_one(name, tensor)
            return
        layer_id, rest = match.groups()
        try:
            self.layers[int(layer_id)].load_tensor(rest, tensor)
        except ShardLoadError as exc:
            raise WeightLoadError(f"{name}: {exc}") from None

    def _expected_names(self) -> set[str]:
        names = {"model.embed_tokens.weight", "model.norm.weight"}
        if not self.tie_word_embeddings:
            names.add("lm_head.weight")
        for i, layer in enumerate(self.layers):
            names.update(f"model.layers.{i}.{name}" for name in layer.checkpoint_names())
        return names

    def batch_variance(self) -> str | None:
        """Llama's check over the projections and LM head, then one expert per matrix
        shape of every storage that runs the dense matmul."""
        variance = super().batch_variance()
        if variance is not None:
            return variance
        pairs = {tuple(w.shape): (w, packed) for layer in self._sparse_layers()
                 for w, packed in layer.moe.experts.weight_pairs()}
        for weight, packed in pairs.values():
            variance = "no packed weight" if packed is None else batch_variance(
                weight, packed, self.quant_method.invariant_min_rows)
            if variance is not None:
                return variance
        return None
