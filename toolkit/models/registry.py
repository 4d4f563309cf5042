"""Model classes by the architecture name in a checkpoint's config.json.

A class is built as ``cls(config, dtype=, device=, quant_method=, kernels=)`` (see
load_model); ``kernels`` is the CPU kernel route (toolkit.kernels.route) its layers take.
``config`` is config.json's dict, plus ``"max_model_len"`` (the served context) when
load_model is given one."""

from __future__ import annotations

from torch import nn

from toolkit.registry import Registry

MODEL_ARCHITECTURES = Registry[type[nn.Module]]("model architecture")


def _llama_family() -> type[nn.Module]:
    from toolkit.models.llama import LlamaForCausalLM

    return LlamaForCausalLM


for _name in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"):
    MODEL_ARCHITECTURES.register(_name)(_llama_family)


def _idefics3() -> type[nn.Module]:
    from toolkit.models.idefics3 import Idefics3ForConditionalGeneration

    return Idefics3ForConditionalGeneration


for _name in ("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration"):
    MODEL_ARCHITECTURES.register(_name)(_idefics3)


@MODEL_ARCHITECTURES.register("Qwen3ForCausalLM")
def _qwen3() -> type[nn.Module]:
    from toolkit.models.qwen3 import Qwen3ForCausalLM

    return Qwen3ForCausalLM


@MODEL_ARCHITECTURES.register("Phi3ForCausalLM")
def _phi3() -> type[nn.Module]:
    from toolkit.models.phi3 import Phi3ForCausalLM

    return Phi3ForCausalLM


@MODEL_ARCHITECTURES.register("Gemma2ForCausalLM")
def _gemma2() -> type[nn.Module]:
    from toolkit.models.gemma2 import Gemma2ForCausalLM

    return Gemma2ForCausalLM


@MODEL_ARCHITECTURES.register("Gemma3ForCausalLM")
def _gemma3() -> type[nn.Module]:
    from toolkit.models.gemma3 import Gemma3ForCausalLM

    return Gemma3ForCausalLM


@MODEL_ARCHITECTURES.register("MixtralForCausalLM")
def _mixtral() -> type[nn.Module]:
    from toolkit.models.mixtral import MixtralForCausalLM

    return MixtralForCausalLM


@MODEL_ARCHITECTURES.register("Qwen3MoeForCausalLM")
def _qwen3_moe() -> type[nn.Module]:
    from toolkit.models.qwen3_moe import Qwen3MoeForCausalLM

    return Qwen3MoeForCausalLM
