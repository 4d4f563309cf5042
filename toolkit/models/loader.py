"""Read a safetensors model directory: its facts (ModelInfo) and the model itself."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from torch import nn

from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.models.registry import MODEL_ARCHITECTURES
from toolkit.quant.base import ModelLoadError

if TYPE_CHECKING:
    from toolkit.config.schema import QuantConfig


@dataclass(frozen=True)
class ModelInfo:
    """The facts about a checkpoint that the rest of the toolkit sizes itself by."""

    architecture: str
    """config.json "architectures"[0], e.g. "LlamaForCausalLM"."""
    num_layers: int
    """Decoder layers."""
    hidden_size: int
    """Residual stream width."""
    num_qo_heads: int
    """Query (and output) heads."""
    num_kv_heads: int
    """Key/value heads (< num_qo_heads under GQA)."""
    head_dim: int
    """Width of one attention head."""
    vocab_size: int
    """Rows of the embedding and of the logits."""
    max_position_embeddings: int
    """Longest context the checkpoint declares."""
    eos_token_ids: tuple[int, ...]
    """Every id that ends generation (generation_config.json and config.json, merged)."""
    bos_token_id: int | None
    """Beginning-of-sequence id, if the checkpoint has one."""
    sliding_window: int | None
    """Attention window when the checkpoint uses one (Mistral v0.1); the model attends
    over the full context, so the context is capped to it."""


def _read_json(path: pathlib.Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _as_ids(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)


def read_config(model_dir: pathlib.Path | str) -> dict:
    """config.json of a model directory as a dict."""
    path = pathlib.Path(model_dir) / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{model_dir} has no config.json")
    return json.loads(path.read_text())


def read_model_info(model_dir: pathlib.Path | str) -> ModelInfo:
    """ModelInfo from config.json + generation_config.json (optional)."""
    config = read_config(model_dir)
    generation = _read_json(pathlib.Path(model_dir) / "generation_config.json")
    eos_ids = _as_ids(generation.get("eos_token_id")) + _as_ids(config.get("eos_token_id"))
    num_qo_heads = config["num_attention_heads"]
    bos = generation.get("bos_token_id", config.get("bos_token_id"))
    return ModelInfo(
        architecture=(config.get("architectures") or ["?"])[0],
        num_layers=config["num_hidden_layers"],
        hidden_size=config["hidden_size"],
        num_qo_heads=num_qo_heads,
        num_kv_heads=config.get("num_key_value_heads") or num_qo_heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // num_qo_heads,
        vocab_size=config["vocab_size"],
        max_position_embeddings=config["max_position_embeddings"],
        eos_token_ids=tuple(dict.fromkeys(eos_ids)),
        bos_token_id=bos,
        sliding_window=config.get("sliding_window") if config.get(
            "use_sliding_window", True) else None,
    )


def _weight_files(model_dir: pathlib.Path, allow_pickle: bool) -> list[pathlib.Path]:
    """*.safetensors; PyTorch pickle checkpoints (*.bin) only when explicitly allowed."""
    files = sorted(model_dir.glob("*.safetensors"))
    pickles = sorted(model_dir.glob("*.bin")) + sorted(model_dir.glob("*.pt*"))
    if files:
        return files
    if pickles and allow_pickle:
        return pickles
    hint = ""
    if pickles:
        hint = (f" (found {', '.join(p.name for p in pickles)}: only safetensors are loaded; "
                "model.allow_pickle=true loads pickle checkpoints you trust)")
    raise ModelLoadError(f"no *.safetensors weights in {model_dir}{hint}")


def iter_weights(files: list[pathlib.Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) from safetensors files, or from pickle checkpoints read with
    ``torch.load(weights_only=True)`` (tensors and plain containers only, no code)."""
    if files[0].suffix == ".safetensors":
        yield from iter_safetensors(files)
        return
    for path in files:
        yield from torch.load(path, map_location="cpu", weights_only=True, mmap=True).items()


def iter_safetensors(files: list[pathlib.Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of every file, one tensor in memory at a time."""
    for path in files:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                yield name, f.get_tensor(name)


def tensor_shapes(files: list[pathlib.Path]) -> dict[str, tuple[int, ...]]:
    """name -> shape of every tensor, from the safetensors headers (no data read); {} for
    pickle checkpoints, whose shapes are only known once loaded."""
    if files[0].suffix != ".safetensors":
        return {}
    shapes = {}
    for path in files:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def load_model(model_dir: pathlib.Path | str, dtype: torch.dtype,
               device: torch.device | str, prepack_weights: bool = True,
               allow_pickle: bool = False, quant: QuantConfig | None = None,
               batch_invariant: bool = False, kernels: KernelRoute = TORCH) -> nn.Module:
    """Build the config's architecture on ``device`` in ``dtype`` and stream the weights in.

    ``prepack_weights``: let the model pre-pack its matmul weights for oneDNN where that
    applies (bfloat16 on CPU, see toolkit.layers.linear); a no-op elsewhere.
    ``allow_pickle``: fall back to *.bin pickle checkpoints when there are no safetensors.
    ``quant``: the quantization config (default ``method=auto``: as the checkpoint's
    config.json declares); a mismatch with the checkpoint raises ModelLoadError.
    ``batch_invariant``: ask the quant method for batch-invariant matmuls
    (``device.deterministic``); ``model.quant_method.batch_invariant`` says whether it could.
    ``kernels``: the CPU kernel route the model's norms, rotary and SiLU-and-mul take
    (toolkit.kernels.route; build_runtime passes the one resolve_cpu_kernels chose); the
    default is the torch ops.
    """
    from toolkit.config.schema import QuantConfig
    from toolkit.quant.registry import create_quant_method

    model_dir = pathlib.Path(model_dir)
    config = read_config(model_dir)
    architectures = config.get("architectures") or []
    if not architectures or architectures[0] not in MODEL_ARCHITECTURES:
        raise ModelLoadError(
            f"{model_dir}: architecture {architectures[:1] or 'missing'} is not supported; "
            f"supported: {', '.join(MODEL_ARCHITECTURES.names())}"
        )
    model_cls = MODEL_ARCHITECTURES.get(architectures[0])()
    files = _weight_files(model_dir, allow_pickle)
    method = create_quant_method(quant or QuantConfig(), config, prepack_weights)
    if batch_invariant:
        method.enable_batch_invariance()
    method.check_checkpoint(tensor_shapes(files))
    model = model_cls(config, dtype=dtype, device=device, quant_method=method, kernels=kernels)
    model.load_weights(iter_weights(files))
    if (prepack_weights or method.batch_invariant) and hasattr(model, "pack_weights"):
        model.pack_weights()
    return model.eval()
