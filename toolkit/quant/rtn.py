"""Round-to-nearest AWQ checkpoints: every decoder projection quantized per group with no
calibration (the baseline the AWQ algorithm must beat), written in AutoAWQ's GEMM layout.

    write_rtn_awq_checkpoint("models/smollm2", "models/smollm2-rtn-g64", group_size=64)
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from toolkit.kernels.awq_format import (
    awq_quantization_config,
    quantize_groups,
    to_awq_tensors,
)

PROJECTION_WEIGHT = re.compile(
    r"model\.layers\.\d+\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj\.weight")
"""Checkpoint names of the Llama-family decoder projections (quantized; the rest is kept)."""
INDEX_FILE = "model.safetensors.index.json"


def quantize_tensors(tensors: dict[str, torch.Tensor],
                     group_size: int) -> dict[str, torch.Tensor]:
    """Projection weights [N, K] -> <prefix>.qweight/.qzeros/.scales; others unchanged."""
    out = {}
    for name, tensor in tensors.items():
        if not PROJECTION_WEIGHT.fullmatch(name):
            out[name] = tensor
            continue
        try:
            packed = to_awq_tensors(*quantize_groups(tensor, group_size))
        except ValueError as exc:
            raise ValueError(f"{name} {list(tensor.shape)}: {exc}") from None
        prefix = name[: -len("weight")]
        out.update({prefix + suffix: value for suffix, value in packed.items()})
    return out


def write_rtn_awq_checkpoint(src_dir: pathlib.Path | str, out_dir: pathlib.Path | str,
                             group_size: int) -> pathlib.Path:
    """Quantize the dense safetensors model in ``src_dir`` into ``out_dir`` (one output
    file per input file) with config.json's quantization_config set; tokenizer and other
    files are copied. Returns ``out_dir``."""
    src, out = pathlib.Path(src_dir), pathlib.Path(out_dir)
    config = json.loads((src / "config.json").read_text())
    if config.get("quantization_config"):
        raise ValueError(f"{src} is already quantized: {config['quantization_config']}")
    files = sorted(src.glob("*.safetensors"))
    if not files:
        raise ValueError(f"no *.safetensors weights in {src}")
    out.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for path in files:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = quantize_tensors({name: f.get_tensor(name) for name in f.keys()},  # noqa: SIM118
                                       group_size)
        save_file(tensors, str(out / path.name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, path.name))
    _copy_other_files(src, out)
    if (src / INDEX_FILE).is_file():
        (out / INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map},
                                                 indent=2))
    config["quantization_config"] = awq_quantization_config(group_size)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def _copy_other_files(src: pathlib.Path, out: pathlib.Path) -> None:
    """Tokenizer, chat template, generation config ...: every file but weights and config."""
    for path in src.iterdir():
        if path.is_file() and path.suffix != ".safetensors" and path.name not in (
                "config.json", INDEX_FILE):
            shutil.copy2(path, out / path.name)
