"""What the mixture-of-experts model tests share (tests/models/test_mixtral.py,
test_qwen3_moe.py), beside the architecture harness in arch_parity.py: checks that the
experts loaded where transformers keeps them, and a transformers model carrying the
weights that ``quant=q4_1`` multiplies."""

from __future__ import annotations

import copy
import re

import torch

from toolkit.quant.q4_1 import DEFAULT_GROUP_SIZE, dequantize_q4_1, quantize_q4_1

_PROJECTION = re.compile(r".*\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight")
_STACKED_EXPERTS = re.compile(r".*\.experts\.(gate_up_proj|down_proj)")


def assert_experts_loaded(model, hf_model) -> None:
    """Every sparse layer's router and stacked experts equal transformers' (its in-memory
    ``mlp.gate.weight``, ``mlp.experts.gate_up_proj`` [E, 2I, H] and ``down_proj``)."""
    sparse = [i for i, layer in enumerate(model.layers) if layer.moe is not None]
    assert sparse
    for i in sparse:
        moe, reference = model.layers[i].moe, hf_model.model.layers[i].mlp
        assert torch.equal(moe.router.weight, reference.gate.weight)
        assert torch.equal(moe.experts.w13, reference.experts.gate_up_proj)
        assert torch.equal(moe.experts.w2, reference.experts.down_proj)


def _q4_1_round_trip(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The weight ``quant=q4_1`` multiplies in ``dtype``: the checkpoint's weight loaded in
    ``dtype`` (a bfloat16 rounding can move a value across a 4-bit step), requantized,
    dequantized with its scale and zero in ``dtype``; back in float32."""
    codes, scale, minimum = quantize_q4_1(weight.to(dtype), DEFAULT_GROUP_SIZE)
    return dequantize_q4_1(codes, scale, minimum, dtype).float()


def q4_1_reference(hf_model, dtype: torch.dtype = torch.float32):
    """A copy of ``hf_model`` (float32) whose decoder projections and experts hold the
    weights ``quant=q4_1`` runs in ``dtype``; router, norms, embeddings and LM head stay
    as they are."""
    reference = copy.deepcopy(hf_model)
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if _PROJECTION.fullmatch(name):
                param.copy_(_q4_1_round_trip(param, dtype))
            elif _STACKED_EXPERTS.fullmatch(name):
                param.copy_(torch.stack([_q4_1_round_trip(w, dtype) for w in param]))
    return reference
