"""Read a safetensors model directory: its facts (ModelInfo) and the model itself."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from torch import nn

from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.layers.pipeline_parallel import PipelineStage
from toolkit.layers.tensor_parallel import TensorParallel
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
    """Attention window of the checkpoint's sliding layers, None when no layer slides
    (see ``sliding_window_of``)."""
    caps_context_to_window: bool = False
    """The served context must stay within ``sliding_window`` (see
    ``caps_context_to_window``): Mistral v0.1, Phi-3-mini-4k; not Gemma 2/3."""

    @property
    def context_window(self) -> int | None:
        """The sliding window that caps the context (resolve_max_model_len), or None."""
        return self.sliding_window if self.caps_context_to_window else None


WINDOWED_ARCHITECTURES = frozenset({"Gemma2ForCausalLM", "Gemma3ForCausalLM",
                                    "Gemma3ForConditionalGeneration"})
"""Architectures whose model applies each layer's sliding window itself (alternating
sliding and global layers, the page table serving both): their window caps nothing."""


def sliding_window_of(config: dict) -> int | None:
    """The window of a config.json's sliding layers; None when no layer slides: no
    ``sliding_window``, ``use_sliding_window: false`` (Qwen), or ``layer_types`` with no
    "sliding_attention" layer (Qwen's ``max_window_layers`` at the layer count)."""
    window = config.get("sliding_window")
    if not window or not config.get("use_sliding_window", True):
        return None
    layer_types = config.get("layer_types")
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None
    if layer_types is None and config.get("max_window_layers", 0) >= config["num_hidden_layers"]:
        return None
    return window


def caps_context_to_window(config: dict) -> bool:
    """True when the context must be capped to the sliding window: some layer slides and
    the architecture's model attends over the full context, which equals windowed
    attention only within the window (the Llama family and Phi-3, whose every layer slides
    when a window is set; also Qwen's sliding upper layers). False for the architectures
    in WINDOWED_ARCHITECTURES, which apply the window per layer."""
    architecture = (config.get("architectures") or ["?"])[0]
    return sliding_window_of(config) is not None and architecture not in WINDOWED_ARCHITECTURES


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
    """ModelInfo from config.json + generation_config.json (optional); a vision-language
    checkpoint's facts are its language model's (``text_config``)."""
    config = read_config(model_dir)
    if "text_config" in config:
        config = {**config, **config["text_config"], "architectures": config.get("architectures")}
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
        sliding_window=sliding_window_of(config),
        caps_context_to_window=caps_context_to_window(config),
    )


def _weight_files(model_dir: pathlib.Path, allow_pickle: bool) -> list[pathlib.Path]:
    """*.safetensors; PyTorch pickle checkpoints (*.bin) only when explicitly allowed; the
    GGUF file of a GGUF model directory (toolkit.models.gguf_model)."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files and (gguf_files := sorted(model_dir.glob("*.gguf"))):
        return gguf_files[:1]
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


def iter_weights(files: list[pathlib.Path], config: dict | None = None,
                 keep_q4_1_blocks: bool = False,
                 keep: Callable[[str], bool] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) from safetensors files, from a GGUF file (HF names; dequantized, or
    Q4_1 projections as their blocks with ``keep_q4_1_blocks``, see
    gguf_model.iter_gguf_weights; ``config`` is the model's config.json), or from pickle
    checkpoints read with ``torch.load(weights_only=True)`` (tensors and plain containers
    only, no code). ``keep``: only the tensors whose name it accepts (safetensors skip the
    others unread; a pipeline stage's own tensors)."""
    if files[0].suffix == ".gguf":
        from toolkit.models.gguf_model import iter_gguf_weights

        weights = iter_gguf_weights(files[0], config or {}, keep_q4_1_blocks)
        yield from (item for item in weights if keep is None or keep(item[0]))
        return
    if files[0].suffix == ".safetensors":
        yield from iter_safetensors(files, keep)
        return
    for path in files:
        weights = torch.load(path, map_location="cpu", weights_only=True, mmap=True).items()
        yield from (item for item in weights if keep is None or keep(item[0]))


def iter_safetensors(files: list[pathlib.Path], keep: Callable[[str], bool] | None = None
                     ) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of every file (that ``keep`` accepts, the others
    unread), one tensor in memory at a time."""
    for path in files:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                if keep is None or keep(name):
                    yield name, f.get_tensor(name)


def tensor_shapes(files: list[pathlib.Path]) -> dict[str, tuple[int, ...]]:
    """name -> shape of every tensor, from the safetensors headers (no data read); {} for
    pickle and GGUF checkpoints, whose shapes are only known once loaded."""
    if files[0].suffix != ".safetensors":
        return {}
    shapes = {}
    for path in files:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


TENSOR_PARALLEL_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
"""Architectures whose model shards itself across tensor-parallel ranks."""


def check_tensor_parallel(config: dict, size: int) -> None:
    """Raise ModelLoadError, in one line, when the checkpoint's model cannot be split
    ``size`` ways: an architecture without tensor parallelism, or widths ``size`` does not
    divide."""
    from toolkit.layers.tensor_parallel import ShardingError, check_divisible

    architecture = (config.get("architectures") or ["?"])[0]
    if architecture not in TENSOR_PARALLEL_ARCHITECTURES:
        raise ModelLoadError(f"tensor_parallel_size={size}: {architecture} has no tensor "
                             f"parallelism yet (it has: {', '.join(TENSOR_PARALLEL_ARCHITECTURES)})")
    try:
        check_divisible(config, size)
    except ShardingError as exc:
        raise ModelLoadError(str(exc)) from None


def check_pipeline_parallel(config: dict, size: int) -> None:
    """Raise ModelLoadError, in one line, when the checkpoint's model cannot be split into
    ``size`` stages: an architecture without pipeline parallelism (the same as tensor
    parallelism's), or more stages than layers (uneven stages are fine)."""
    from toolkit.layers.pipeline_parallel import StageSplitError, stage_layers

    architecture = (config.get("architectures") or ["?"])[0]
    if architecture not in TENSOR_PARALLEL_ARCHITECTURES:
        supported = ", ".join(TENSOR_PARALLEL_ARCHITECTURES)
        raise ModelLoadError(f"pipeline_parallel_size={size}: {architecture} has no pipeline "
                             f"parallelism yet (it has: {supported})")
    try:
        stage_layers(config["num_hidden_layers"], size, 0)
    except StageSplitError as exc:
        raise ModelLoadError(str(exc)) from None


def load_model(model_dir: pathlib.Path | str, dtype: torch.dtype,
               device: torch.device | str, prepack_weights: bool = True,
               allow_pickle: bool = False, quant: QuantConfig | None = None,
               batch_invariant: bool = False, kernels: KernelRoute = TORCH,
               max_model_len: int | None = None,
               parallel: TensorParallel | None = None,
               pipeline: PipelineStage | None = None) -> nn.Module:
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
    ``max_model_len``: the context the model will serve (build_runtime's resolved one);
    the model finds it as ``config["max_model_len"]`` (LongRoPE picks its factors by it).
    ``parallel``: build this tensor-parallel rank's shard (architectures in
    TENSOR_PARALLEL_ARCHITECTURES only).
    ``pipeline``: build this pipeline stage's layers only, reading only their tensors (the
    same architectures).
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
    method.kernels = kernels
    if batch_invariant:
        method.enable_batch_invariance()
    method.check_checkpoint(tensor_shapes(files))
    if max_model_len is not None:
        config = {**config, "max_model_len": max_model_len}
    sharding = {}
    if parallel is not None and parallel.size > 1:
        check_tensor_parallel(config, parallel.size)
        sharding = {"parallel": parallel}
    if pipeline is not None and pipeline.num_stages > 1:
        check_pipeline_parallel(config, pipeline.num_stages)
        sharding["pipeline"] = pipeline
    model = model_cls(config, dtype=dtype, device=device, quant_method=method, kernels=kernels,
                      **sharding)
    keep = model.owns_weight if "pipeline" in sharding else None
    model.load_weights(iter_weights(files, config, getattr(method, "gguf_blocks", False), keep))
    if (prepack_weights or method.batch_invariant) and hasattr(model, "pack_weights"):
        model.pack_weights()
    return model.eval()
