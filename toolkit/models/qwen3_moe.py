"""Qwen3-MoE: Qwen3's attention (per-head q/k RMSNorm, toolkit/models/qwen3.py) with the
mixture-of-experts layer of toolkit/models/mixtral.py.

Checkpoint names as transformers writes them: the router ``mlp.gate.weight`` [E, H] and the
experts ``mlp.experts.{e}.gate_proj/up_proj/down_proj.weight``; config.json gives
``num_experts`` (transformers 5 writes ``num_local_experts``), ``num_experts_per_tok``,
``moe_intermediate_size`` and ``norm_topk_prob`` (renormalize the top-k weights). Layers in
``mlp_only_layers``, and those off the ``decoder_sparse_step`` rhythm, keep a dense SwiGLU
MLP of ``intermediate_size`` under the dense names ``mlp.gate_proj/up_proj/down_proj``.
"""

from __future__ import annotations

from typing import Any

import torch

from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.models.mixtral import MixtralDecoderLayer, MixtralForCausalLM, MoeSpec
from toolkit.models.qwen3 import QKNormAttention
from toolkit.quant.base import QuantMethod


def _num_experts(config: dict[str, Any]) -> int:
    return int(config.get("num_experts") or config.get("num_local_experts") or 0)


class Qwen3MoeDecoderLayer(QKNormAttention, MixtralDecoderLayer):
    """Qwen3's q/k-normed attention + the MoE block (or a dense MLP, see the module doc)."""

    moe_prefix = "mlp"
    expert_parts = {"gate_proj": "gate", "up_proj": "up", "down_proj": "down"}

    def __init__(self, config: dict[str, Any], layer_id: int, dtype: torch.dtype,
                 device: torch.device | str, quant_method: QuantMethod, *,
                 kernels: KernelRoute = TORCH) -> None:
        super().__init__(config, layer_id, dtype, device, quant_method, kernels=kernels)
        self.init_qk_norm(dtype, device)

    @classmethod
    def moe_spec(cls, config: dict[str, Any]) -> MoeSpec:
        return MoeSpec(num_experts=_num_experts(config), top_k=config["num_experts_per_tok"],
                       intermediate_size=config["moe_intermediate_size"],
                       renormalize=bool(config.get("norm_topk_prob", False)))

    @classmethod
    def is_sparse(cls, config: dict[str, Any], layer_id: int) -> bool:
        """transformers' rule: not in ``mlp_only_layers``, and every
        ``decoder_sparse_step``-th layer (counting from 1) when there are experts."""
        step = config.get("decoder_sparse_step") or 1
        return (layer_id not in (config.get("mlp_only_layers") or [])
                and _num_experts(config) > 0 and (layer_id + 1) % step == 0)


class Qwen3MoeForCausalLM(MixtralForCausalLM):
    """Qwen3 mixture-of-experts models (Qwen/Qwen3-30B-A3B, Qwen3-235B-A22B) from
    config.json."""

    decoder_layer_cls = Qwen3MoeDecoderLayer
