"""Writing a checkpoint in AutoAWQ's GEMM layout (see toolkit/kernels/awq_format.py).

The output directory holds config.json with AutoAWQ's quantization_config, one
model.safetensors (projections as qweight/qzeros/scales; embeddings, norms, biases and an
untied lm_head as dense fp16) and the source's tokenizer, chat template and generation
config files.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import torch
from safetensors.torch import save_file

from toolkit.kernels.awq_format import (
    awq_quantization_config,
    quantize_groups,
    to_awq_tensors,
)

COPIED_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "added_tokens.json", "tokenizer.model", "vocab.json", "merges.txt",
                "chat_template.jinja", "chat_template.json", "generation_config.json")
"""Files carried over from the source model directory when present."""


class QuantizeError(ValueError):
    """A model, setting or output directory the quantizer cannot work with (one line)."""


def packed_linear(prefix: str, weight: torch.Tensor, bias: torch.Tensor | None,
                  group_size: int) -> dict[str, torch.Tensor]:
    """weight [N, K] (nn.Linear layout) -> ``prefix``.qweight [K, N/8] int32, .qzeros
    [K/G, N/8] int32, .scales [K/G, N] fp16 (+ .bias [N] fp16), on the CPU."""
    packed = to_awq_tensors(*quantize_groups(weight.float(), group_size))
    tensors = {f"{prefix}.{suffix}": t.cpu() for suffix, t in packed.items()}
    if bias is not None:
        tensors[f"{prefix}.bias"] = bias.to(torch.float16).cpu()
    return tensors


def dense_fp16(name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """A tensor kept dense, as fp16 on the CPU."""
    return {name: tensor.to(torch.float16).cpu().contiguous()}


def prepare_output_dir(out_dir: pathlib.Path, src_dir: pathlib.Path) -> None:
    """Create ``out_dir``; refuse the source directory, a file, or a non-empty directory."""
    if out_dir.resolve() == src_dir.resolve():
        raise QuantizeError(f"output={out_dir} is the source model directory; pick a new one")
    if out_dir.exists() and not out_dir.is_dir():
        raise QuantizeError(f"output={out_dir} is a file, not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise QuantizeError(f"output={out_dir} is not empty; pick a new or empty directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise QuantizeError(f"output={out_dir} cannot be created: {exc.strerror}") from None


def write_awq_checkpoint(out_dir: pathlib.Path, src_dir: pathlib.Path, config: dict,
                         tensors: dict[str, torch.Tensor], group_size: int) -> None:
    """Save ``tensors`` and the quantized config.json, and copy the tokenizer files."""
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    quantized = {**config, "quantization_config": awq_quantization_config(group_size),
                 "torch_dtype": "float16"}
    (out_dir / "config.json").write_text(json.dumps(quantized, indent=2) + "\n")
    for name in COPIED_FILES:
        if (src_dir / name).is_file():
            shutil.copyfile(src_dir / name, out_dir / name)
