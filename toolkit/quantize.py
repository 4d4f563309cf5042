"""`toolkit quantize quant=awq`: a dense Llama-family checkpoint -> AutoAWQ GEMM checkpoint.

AutoAWQ's flow, layer by layer on calibration text (toolkit/quant/calibration.py):
embed the calibration blocks, then for each decoder layer record every projection's
input and the layer's output with the original weights, search and fold the channel
scales, search the clipping (toolkit/quant/awq_search.py), quantize and pack the
projections (toolkit/quant/awq_writer.py). The next layer's input is the original layer's
output, as in AutoAWQ. One layer's dense weights are in memory at a time (plus the packed
result).
"""

from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass

import torch
from safetensors import safe_open
from tqdm import tqdm

from toolkit.config.errors import ConfigError
from toolkit.config.schema import QuantConfig, ToolkitConfig
from toolkit.models.loader import read_config
from toolkit.quant.awq_search import AwqSettings, awq_layer, cast_weights
from toolkit.quant.awq_writer import (
    QuantizeError,
    dense_fp16,
    packed_linear,
    prepare_output_dir,
    write_awq_checkpoint,
)
from toolkit.quant.calibration import token_blocks
from toolkit.quant.dense_llama import (
    LINEAR_NAMES,
    LayerWeights,
    decoder_layer,
    layer_context,
)

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
LAYER_NORMS = ("input_layernorm.weight", "post_attention_layernorm.weight")
GROUP_SIZES = (32, 64, 128)
DEFAULT_GROUP_SIZE = 128
"""quant.group_size when it is null (AutoAWQ's default)."""
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
"""Tensors some checkpoints carry that the model recomputes."""

__all__ = ["QuantizeError", "QuantizeReport", "quantize_awq", "quantize_from_config"]


@dataclass(frozen=True)
class QuantizeReport:
    """What a quantization run did."""

    out_dir: pathlib.Path
    num_layers: int
    num_calibration_tokens: int
    seconds: float


class _Checkpoint:
    """Tensors of a safetensors model directory by name, read one at a time."""

    def __init__(self, model_dir: pathlib.Path) -> None:
        files = sorted(model_dir.glob("*.safetensors"))
        if not files:
            raise QuantizeError(f"no *.safetensors weights in {model_dir}")
        self._handles = [safe_open(str(f), framework="pt", device="cpu") for f in files]
        self._where: dict[str, object] = {}
        for handle in self._handles:
            self._where.update(dict.fromkeys(handle.keys(), handle))

    def get(self, name: str) -> torch.Tensor:
        if name not in self._where:
            raise QuantizeError(f"the checkpoint has no tensor {name}")
        return self._where[name].get_tensor(name)

    def layer(self, index: int, device: torch.device | str) -> LayerWeights:
        """Layer ``index``'s tensors (relative names) in float32 on ``device``."""
        prefix = f"model.layers.{index}."
        return {name[len(prefix):]: self.get(name).float().to(device)
                for name in self._where
                if name.startswith(prefix) and not name.endswith(IGNORED_SUFFIXES)}


def _check_model(config: dict, settings: AwqSettings) -> None:
    architecture = (config.get("architectures") or ["?"])[0]
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise QuantizeError(f"architecture {architecture} is not supported; supported: "
                            f"{', '.join(SUPPORTED_ARCHITECTURES)}")
    if config.get("hidden_act", "silu") != "silu":
        raise QuantizeError(f"hidden_act {config['hidden_act']!r} is not supported; "
                            "supported: silu")
    widths = {key: config[key] for key in ("hidden_size", "intermediate_size")}
    for key, width in widths.items():
        if width % settings.group_size:
            fitting = [str(g) for g in GROUP_SIZES
                       if all(w % g == 0 for w in widths.values())] or ["none"]
            raise QuantizeError(f"quant.group_size={settings.group_size} does not divide "
                                f"{key}={width}; valid choices for this model: "
                                f"{', '.join(fitting)}")


def _calibration_tokens(model_dir: pathlib.Path, num_samples: int, seq_len: int,
                        ) -> torch.Tensor:
    """int64 [num_samples, seq_len] calibration blocks in the model's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return token_blocks("calibration", lambda text: tokenizer.encode(
        text, add_special_tokens=False), seq_len, num_samples)


def _pack_layer(index: int, weights: LayerWeights, group_size: int,
                ) -> dict[str, torch.Tensor]:
    prefix = f"model.layers.{index}."
    unknown = set(weights) - set(LAYER_NORMS) - {
        f"{n}.{s}" for n in LINEAR_NAMES for s in ("weight", "bias")}
    if unknown:
        raise QuantizeError(f"layer {index} has tensors the quantizer does not know: "
                            f"{', '.join(sorted(unknown))}")
    tensors = {}
    for name in LAYER_NORMS:
        tensors.update(dense_fp16(prefix + name, weights[name]))
    for name in LINEAR_NAMES:
        tensors.update(packed_linear(prefix + name, weights[f"{name}.weight"],
                                     weights.get(f"{name}.bias"), group_size))
    return tensors


def _outer_tensors(checkpoint: _Checkpoint, config: dict) -> dict[str, torch.Tensor]:
    """Embeddings, final norm and (untied) lm_head, dense fp16."""
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    if not config.get("tie_word_embeddings", False):
        names.append("lm_head.weight")
    tensors = {}
    for name in names:
        tensors.update(dense_fp16(name, checkpoint.get(name)))
    return tensors


def quantize_awq(model_dir: pathlib.Path, out_dir: pathlib.Path, settings: AwqSettings,
                 num_calibration_samples: int, calibration_seq_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 progress: bool = True) -> QuantizeReport:
    """Quantize ``model_dir`` with AWQ into ``out_dir`` (created; must not hold files).

    The layers run in ``dtype`` (bfloat16 is ~8x faster than float32 on an AMX CPU);
    scales, clipping and quantization are computed in float32 either way.
    """
    started = time.perf_counter()
    config = read_config(model_dir)
    _check_model(config, settings)
    prepare_output_dir(out_dir, model_dir)
    checkpoint = _Checkpoint(model_dir)
    tokens = _calibration_tokens(model_dir, num_calibration_samples, calibration_seq_len)
    x = checkpoint.get("model.embed_tokens.weight")[tokens].to(device, dtype)  # [B, L, H]
    ctx = layer_context(config, calibration_seq_len, dtype, device)
    tensors = _outer_tensors(checkpoint, config)
    num_layers = config["num_hidden_layers"]
    with torch.inference_mode():
        for index in tqdm(range(num_layers), desc="AWQ", unit="layer", disable=not progress):
            weights = checkpoint.layer(index, device)
            x_next, inputs = decoder_layer(cast_weights(weights, dtype), ctx, x)
            quantized = awq_layer(weights, ctx, inputs, settings)
            tensors.update(_pack_layer(index, quantized, settings.group_size))
            x = x_next
    write_awq_checkpoint(out_dir, model_dir, config, tensors, settings.group_size)
    return QuantizeReport(out_dir, num_layers, tokens.numel(), time.perf_counter() - started)


def settings_from_config(quant: QuantConfig) -> AwqSettings:
    """The quant group's quantizer knobs, checked (ConfigError names the bad key)."""
    if quant.method != "awq":
        raise ConfigError(f"toolkit quantize: quant.method={quant.method!r} cannot be "
                          "written; valid choices: awq (add quant=awq)")
    group_size = quant.group_size or DEFAULT_GROUP_SIZE
    if group_size not in GROUP_SIZES:
        raise ConfigError(f"quant.group_size={group_size} is not supported; valid choices: "
                          f"{', '.join(map(str, GROUP_SIZES))}")
    for key in ("num_calibration_samples", "calibration_seq_len", "num_grid_points",
                "num_clip_tokens"):
        if getattr(quant, key) < 1:
            raise ConfigError(f"quant.{key}={getattr(quant, key)} must be >= 1")
    if not 0 <= quant.max_clip_shrink < 1:
        raise ConfigError(f"quant.max_clip_shrink={quant.max_clip_shrink} must be in [0, 1)")
    return AwqSettings(group_size=group_size, num_grid_points=quant.num_grid_points,
                       duo_scaling=quant.duo_scaling, apply_clip=quant.apply_clip,
                       max_clip_shrink=quant.max_clip_shrink,
                       num_clip_tokens=quant.num_clip_tokens)


def quantize_from_config(cfg: ToolkitConfig, out_dir: pathlib.Path,
                         progress: bool = True) -> QuantizeReport:
    """`toolkit quantize`: the configured model -> ``out_dir``, on the configured device."""
    from toolkit.models.source import resolve_model_dir
    from toolkit.resolve import resolve_device

    settings = settings_from_config(cfg.quant)
    device = resolve_device(cfg)
    if device == "cpu" and cfg.device.num_threads is not None:
        torch.set_num_threads(cfg.device.num_threads)
    model_dir = resolve_model_dir(cfg.model.source, cfg.model.path)
    if read_config(model_dir).get("quantization_config"):
        raise QuantizeError(f"{model_dir} is already quantized (config.json "
                            "quantization_config); quantize a dense checkpoint")
    return quantize_awq(model_dir, out_dir, settings, cfg.quant.num_calibration_samples,
                        cfg.quant.calibration_seq_len, device, getattr(torch, cfg.model.dtype),
                        progress)
