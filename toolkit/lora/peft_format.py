"""A PEFT LoRA adapter directory -> LoraAdapter, validated against the model's targets.

PEFT's format: ``adapter_config.json`` (peft_type LORA, r, lora_alpha, use_rslora,
target_modules, rank_pattern / alpha_pattern ...) and ``adapter_model.safetensors`` with
``base_model.model.<module path>.lora_A.weight`` [r, in] and ``...lora_B.weight``
[out, r]. The delta of a module is ``scale * B @ A``, scale = alpha / r (alpha / sqrt(r)
with rsLoRA); the scale is folded into B here.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from toolkit.lora.errors import LoraLoadError
from toolkit.lora.targets import LoraTarget

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_KEY = re.compile(r"(?:base_model\.model\.)?(?P<module>.*\.layers\.(?P<layer>\d+)\.(?:.*\.)?"
                  r"(?P<name>[^.]+))\.lora_(?P<kind>[AB])(?:\.[^.]+)?\.weight")
"""A LoRA tensor key: module path, layer index, module name, A or B (an adapter name
between ``lora_A`` and ``weight`` is allowed)."""
UNSUPPORTED_OPTIONS = {
    "use_dora": "DoRA adapters", "fan_in_fan_out": "fan_in_fan_out (Conv1D) adapters",
    "modules_to_save": "modules_to_save (fully trained extra modules)",
    "layer_replication": "layer_replication", "use_qalora": "QA-LoRA",
}


@dataclass(frozen=True)
class LoraWeights:
    """One module's low-rank pair in one layer."""

    layer: int
    name: str
    """The PEFT module name (q_proj ...)."""
    a: torch.Tensor
    """[r, in]"""
    b: torch.Tensor
    """[out, r], already multiplied by the scale."""


@dataclass(frozen=True)
class LoraAdapter:
    """A validated adapter, its weights on the CPU in the serving dtype."""

    name: str
    path: str
    rank: int
    """The largest rank of its modules."""
    target_modules: tuple[str, ...]
    weights: tuple[LoraWeights, ...]

    @property
    def num_bytes(self) -> int:
        return sum(w.a.nbytes + w.b.nbytes for w in self.weights)


def read_adapter(name: str, path: str | Path, targets: dict[str, list[LoraTarget]],
                 max_rank: int, dtype: torch.dtype) -> LoraAdapter:
    """Read and validate the adapter in directory ``path``; a LoraLoadError says what is
    wrong (missing files, unsupported options, rank above ``max_rank``, a module the
    model lacks, shapes of another base model)."""
    directory = Path(path).expanduser()
    config = _read_config(name, directory)
    _check_options(name, config, targets)
    tensors = _read_tensors(name, directory)
    pairs = _pair_tensors(name, tensors, targets)
    weights = []
    for (layer, module_name, module_path), (a, b) in sorted(pairs.items()):
        target = targets[module_name][layer]
        rank = a.shape[0]
        _check_shapes(name, module_path, a, b, target, rank, max_rank)
        scale = _scale(config, module_path, rank)
        weights.append(LoraWeights(layer, module_name, a.to(dtype).contiguous(),
                                   (b.double() * scale).to(dtype).contiguous()))
    if not weights:
        raise LoraLoadError(f"LoRA adapter {name!r}: {WEIGHTS_FILE} holds no LoRA weights")
    return LoraAdapter(name, str(directory), max(w.a.shape[0] for w in weights),
                       tuple(sorted({w.name for w in weights})), tuple(weights))


def _read_config(name: str, directory: Path) -> dict[str, Any]:
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise LoraLoadError(f"LoRA adapter {name!r}: no {CONFIG_FILE} in {directory}")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise LoraLoadError(f"LoRA adapter {name!r}: {config_path} is not valid JSON "
                            f"({exc})") from None
    if not isinstance(config, dict):
        raise LoraLoadError(f"LoRA adapter {name!r}: {config_path} is not a JSON object")
    return config


def _check_options(name: str, config: dict[str, Any],
                   targets: dict[str, list[LoraTarget]]) -> None:
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise LoraLoadError(f"LoRA adapter {name!r}: peft_type {peft_type} is not supported "
                            "(LORA)")
    for option, what in UNSUPPORTED_OPTIONS.items():
        if config.get(option):
            raise LoraLoadError(f"LoRA adapter {name!r}: {what} are not supported")
    if config.get("bias", "none") not in ("none", None):
        raise LoraLoadError(f"LoRA adapter {name!r}: bias={config['bias']!r} is not "
                            "supported (none)")
    wanted = config.get("target_modules")
    if isinstance(wanted, (list, tuple)):
        missing = sorted({str(m).rpartition(".")[2] for m in wanted} - set(targets))
        if missing:
            raise LoraLoadError(f"LoRA adapter {name!r}: target modules {missing} are not "
                                f"in this model; valid: {sorted(targets)}")


def _read_tensors(name: str, directory: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise LoraLoadError(f"LoRA adapter {name!r}: no {WEIGHTS_FILE} in {directory} "
                            "(PEFT's safetensors format is required)")
    try:
        return load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise LoraLoadError(f"LoRA adapter {name!r}: {weights_path} is not a readable "
                            f"safetensors file ({exc})") from None


def _pair_tensors(name: str, tensors: dict[str, torch.Tensor],
                  targets: dict[str, list[LoraTarget]]
                  ) -> dict[tuple[int, str, str], tuple[torch.Tensor, torch.Tensor]]:
    """(layer, module name, module path) -> (A, B); every key must be a LoRA A/B weight of
    a module the model has."""
    found: dict[tuple[int, str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KEY.fullmatch(key)
        if match is None:
            raise LoraLoadError(f"LoRA adapter {name!r}: tensor {key!r} is not a LoRA A/B "
                                "weight of a decoder layer (embeddings, lm_head, biases and "
                                "modules_to_save are not supported)")
        module_name, layer = match["name"], int(match["layer"])
        if module_name not in targets:
            raise LoraLoadError(f"LoRA adapter {name!r}: module {module_name!r} ({key}) is "
                                f"not in this model; valid: {sorted(targets)}")
        if layer >= len(targets[module_name]):
            raise LoraLoadError(f"LoRA adapter {name!r}: {key} is for layer {layer}, the "
                                f"model has {len(targets[module_name])} layers")
        found.setdefault((layer, module_name, match["module"]), {})[match["kind"]] = tensor
    pairs = {}
    for key, pair in found.items():
        if set(pair) != {"A", "B"}:
            missing = "lora_B" if "A" in pair else "lora_A"
            raise LoraLoadError(f"LoRA adapter {name!r}: {key[2]} has no {missing} weight")
        pairs[key] = (pair["A"], pair["B"])
    return pairs


def _check_shapes(name: str, module_path: str, a: torch.Tensor, b: torch.Tensor,
                  target: LoraTarget, rank: int, max_rank: int) -> None:
    if rank > max_rank:
        raise LoraLoadError(f"LoRA adapter {name!r}: rank {rank} of {module_path} is above "
                            f"lora.max_lora_rank={max_rank}")
    expected_a, expected_b = (rank, target.in_features), (target.out_features, rank)
    if a.dim() != 2 or tuple(a.shape) != expected_a or tuple(b.shape) != expected_b:
        raise LoraLoadError(
            f"LoRA adapter {name!r}: {module_path} has lora_A {tuple(a.shape)} and lora_B "
            f"{tuple(b.shape)}, this model needs {expected_a} and {expected_b}: was it "
            "trained on another base model?")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise LoraLoadError(f"LoRA adapter {name!r}: {module_path} is not floating point")


def _scale(config: dict[str, Any], module_path: str, rank: int) -> float:
    """lora_alpha / r (alpha / sqrt(r) with rsLoRA), with PEFT's per-module patterns."""
    alpha = _pattern_value(config.get("alpha_pattern") or {}, module_path,
                           config.get("lora_alpha", 8))
    if config.get("use_rslora"):
        return float(alpha) / math.sqrt(rank)
    return float(alpha) / rank


def _pattern_value(patterns: dict[str, Any], module_path: str, default: Any) -> Any:
    """PEFT's rank/alpha pattern lookup: the first key matching the module path's tail."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?{key}$", module_path):
            return value
    return default
