"""Phi-3 and Phi-4 (Phi3ForCausalLM): the Llama layer, with the checkpoint's fused tensors
and LongRoPE.

The math is the Llama family's (toolkit/models/llama.py); what differs is the checkpoint
and the rotary:
- the checkpoint already fuses ``self_attn.qkv_proj`` (q, k, v rows) and
  ``mlp.gate_up_proj`` (gate, up rows); each is split along its output rows into the parts
  of our fused QuantLinear, so any QuantMethod's layout loads as it does for Llama;
- ``rope_scaling`` of type ``longrope`` (Phi-3-mini-128k, Phi-3.5, Phi-4-mini), whose
  short or long factor set is picked once from the served context (``max_model_len``,
  which load_model puts in the config; see toolkit.layers.rotary.RotaryEmbedding), and
  ``partial_rotary_factor`` (Phi-4-mini rotates 3/4 of each head);
- config.json's ``sliding_window`` applies to every layer (transformers masks every layer
  with it), and this model attends over the full context: ModelInfo caps the context to
  the window, within which the two are equal (Phi-3-mini-4k: 2047).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.layers.rotary import RotaryEmbedding, rope_parameters_from_hf_config
from toolkit.models.llama import LlamaForCausalLM, WeightLoadError
from toolkit.quant.base import QuantMethod
from toolkit.quant.linear import QuantLinear, ShardLoadError

_LAYER_NAME = re.compile(r"model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.(\w+)")
_CHECKPOINT_PROJECTIONS = {"self_attn.qkv_proj": "qkv_proj", "self_attn.o_proj": "o_proj",
                           "mlp.gate_up_proj": "gate_up_proj", "mlp.down_proj": "down_proj"}
"""Phi-3 checkpoint module (after ``model.layers.N.``) -> our QuantLinear attribute."""

_LEGACY_ROPE_TYPES = {"su": "longrope", "yarn": "longrope"}
"""Phi-3 rope type names transformers reads as longrope (for Phi-3 only)."""


def _phi3_rope_config(config: dict[str, Any]) -> dict[str, Any]:
    """config with Phi-3's old rope type names read as transformers reads them."""
    key = "rope_parameters" if config.get("rope_parameters") else "rope_scaling"
    params = dict(config.get(key) or {})
    rope_type = params.pop("type", None) or params.get("rope_type")
    if rope_type is None:
        return config
    params["rope_type"] = _LEGACY_ROPE_TYPES.get(rope_type, rope_type)
    return {**config, key: params}


def load_fused_checkpoint_tensor(proj: QuantLinear, suffix: str, tensor: torch.Tensor) -> None:
    """Copy a checkpoint tensor that holds every part of ``proj`` (Phi-3's qkv_proj,
    gate_up_proj) into it: cut along the tensor's output rows (its spec's ``output_dim``,
    in packs of ``output_pack``) into the parts; a tensor without an output dimension is
    shared by the parts."""
    spec = proj.specs.get(suffix)
    if spec is None:
        raise ShardLoadError(f"no tensor {suffix!r}; expected {', '.join(proj.specs)}")
    if spec.output_dim is None:
        for part in range(len(proj.output_sizes)):
            proj.load_shard(suffix, tensor, part)
        return
    sizes = [size // spec.output_pack for size in proj.output_sizes]
    if tensor.shape[spec.output_dim] != sum(sizes):
        raise ShardLoadError(f"shape {tuple(tensor.shape)}: {sum(sizes)} rows expected along "
                             f"dim {spec.output_dim} (parts {proj.output_sizes})")
    for part, piece in enumerate(tensor.split(sizes, dim=spec.output_dim)):
        proj.load_shard(suffix, piece, part)


class Phi3ForCausalLM(LlamaForCausalLM):
    """Phi-3 / Phi-4 dense models (microsoft/Phi-3-mini-4k-instruct, Phi-3.5-mini,
    microsoft/phi-4, Phi-4-mini-instruct) from config.json; see the module docstring.
    ``config["max_model_len"]`` (set by load_model) is the context the rotary serves;
    without it, the checkpoint's max_position_embeddings."""

    def __init__(self, config: dict[str, Any], dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu",
                 quant_method: QuantMethod | None = None, *,
                 kernels: KernelRoute = TORCH) -> None:
        config = _phi3_rope_config(config)
        super().__init__(config, dtype, device, quant_method, kernels=kernels)
        max_positions = config.get("max_model_len") or config["max_position_embeddings"]
        self.rotary = RotaryEmbedding(rope_parameters_from_hf_config(config),
                                      self.layers[0].head_dim, max_positions, dtype, device,
                                      kernels=kernels)

    def _load_one(self, name: str, tensor: torch.Tensor) -> None:
        """Projections by Phi-3's checkpoint names (the fused ones cut into parts); the
        embeddings and norms as for Llama."""
        match = _LAYER_NAME.fullmatch(name)
        if match is None or f"{match[2]}.{match[3]}" not in _CHECKPOINT_PROJECTIONS:
            super()._load_one(name, tensor)
            return
        layer_id, module, proj_name, suffix = match.groups()
        proj = getattr(self.layers[int(layer_id)],
                       _CHECKPOINT_PROJECTIONS[f"{module}.{proj_name}"])
        try:
            load_fused_checkpoint_tensor(proj, suffix, tensor)
        except ShardLoadError as exc:
            raise WeightLoadError(f"{name}: {exc}") from None

    def _expected_names(self) -> set[str]:
        names = {"model.embed_tokens.weight", "model.norm.weight"}
        if not self.tie_word_embeddings:
            names.add("lm_head.weight")
        layer = self.layers[0]
        per_layer = list(layer.dense_weights())
        for module, attribute in _CHECKPOINT_PROJECTIONS.items():
            per_layer += [f"{module}.{suffix}"
                          for suffix in getattr(layer, attribute).checkpoint_names()]
        return names | {f"model.layers.{i}.{n}" for i in range(len(self.layers)) for n in per_layer}
