"""Where a PEFT module name lands in a toolkit model, found from the model itself.

A toolkit decoder keeps its projections as QuantLinear layers on ``model.layers[i]``, some
of them fused (q/k/v as ``qkv_proj``, gate/up as ``gate_up_proj``). A PEFT adapter names
the unfused modules (``q_proj`` ...), so each name maps to a fused projection and the part
of its output it owns; a checkpoint that is fused itself (Phi-3's ``qkv_proj``) names the
whole projection. Any model built from QuantLinear projections under these attribute
names is served without model-specific code; a model may define ``lora_projections``
(same shape as PROJECTIONS) to name its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from toolkit.quant.linear import QuantLinear

PROJECTIONS: dict[str, tuple[str, int | None]] = {
    "q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
    "o_proj": ("o_proj", 0), "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
    "down_proj": ("down_proj", 0), "qkv_proj": ("qkv_proj", None),
    "gate_up_proj": ("gate_up_proj", None),
}
"""PEFT module name -> (QuantLinear attribute of a layer, part index; None: all parts)."""


@dataclass(frozen=True)
class LoraTarget:
    """One PEFT module name's place in one layer."""

    projection: QuantLinear
    part: int | None
    """The fused part it owns (None: the whole output)."""
    in_features: int
    out_features: int
    out_start: int
    """First output feature of the part within the projection."""


def find_targets(model: nn.Module) -> dict[str, list[LoraTarget]]:
    """PEFT module name -> its target in each layer, for the names every layer of
    ``model`` has (a name missing from some layer is not servable)."""
    layers = getattr(model, "layers", None)
    if layers is None or not len(layers):
        raise ValueError(f"{type(model).__name__} has no decoder layers to put LoRA on")
    projections = getattr(model, "lora_projections", PROJECTIONS)
    targets: dict[str, list[LoraTarget]] = {}
    for name, (attribute, part) in projections.items():
        found = [_target(layer, attribute, part) for layer in layers]
        if all(t is not None for t in found):
            targets[name] = found
    return targets


def _target(layer: nn.Module, attribute: str, part: int | None) -> LoraTarget | None:
    try:
        projection = layer.get_submodule(attribute)
    except AttributeError:
        return None
    if not isinstance(projection, QuantLinear):
        return None
    sizes = projection.output_sizes
    if part is None:
        return LoraTarget(projection, None, projection.in_features, projection.out_features, 0)
    if part >= len(sizes):
        return None
    return LoraTarget(projection, part, projection.in_features, sizes[part], sum(sizes[:part]))
