"""Model classes by the architecture name in a checkpoint's config.json.

A class is built as ``cls(config, dtype=, device=, quant_method=, kernels=)`` (see
load_model); ``kernels`` is the CPU kernel route (toolkit.kernels.route) its layers take."""

from __future__ import annotations

from torch import nn

from toolkit.registry import Registry

MODEL_ARCHITECTURES = Registry[type[nn.Module]]("model architecture")


def _llama_family() -> type[nn.Module]:
    from toolkit.models.llama import LlamaForCausalLM

    return LlamaForCausalLM


for _name in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"):
    MODEL_ARCHITECTURES.register(_name)(_llama_family)
