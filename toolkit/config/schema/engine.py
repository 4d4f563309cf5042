"""The engine: scheduling, KV cache, attention, execution, device, speculation."""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.config.schema.model import ModelConfig, QuantConfig


@dataclass(frozen=True)
class SchedulerConfig:
    """Continuous batching: how many requests and tokens one step may take."""

    max_num_seqs: int = 64
    """Most requests running at once."""
    max_num_batched_tokens: int = 2048
    """Token budget of one step (prefill chunks + decodes)."""
    enable_chunked_prefill: bool = True
    """Split prompts longer than the remaining budget across steps."""
    policy: str = "fcfs"
    """Admission order of waiting requests: fcfs (arrival order) or priority (a request's
    `priority`, lower first, then arrival)."""
    max_waiting: int | None = 1024
    """Most requests waiting to be scheduled; a request beyond it is refused (the API
    answers 503 with Retry-After). null: unbounded."""


@dataclass(frozen=True)
class CacheConfig:
    """The paged KV cache."""

    page_size: int = 16
    """Tokens per KV page."""
    cpu_kv_cache_gb: float = 1.0
    """On CPU: memory given to the KV cache, in GiB (2**30 bytes, as vLLM's
    VLLM_CPU_KVCACHE_SPACE); sets the page count unless num_pages is set."""
    gpu_memory_utilization: float = 0.9
    """On CUDA: fraction (0, 1] of the GPU's total memory this engine may use: weights,
    the peak activations of a profiled max_num_batched_tokens forward, and the KV cache,
    which gets what is left (as vLLM). Ignored when num_pages is set."""
    num_pages: int | None = None
    """Exact number of KV pages (tests, benchmarks); overrides the memory-based sizing."""
    enable_prefix_caching: bool = True
    """Reuse the KV of full blocks whose token prefix was computed before (hash-chained,
    reference counted, LRU-evicted when pages run short); requests asking for prompt
    logprobs skip the lookup."""
    dtype: str = "auto"
    """KV storage: auto (the model dtype) or fp8_e4m3 (float8_e4m3fn with one float32
    scale per token and KV head: ~1.9x the tokens of bfloat16 in the same memory)."""


@dataclass(frozen=True)
class AttentionConfig:
    """Attention implementation."""

    backend: str = "auto"
    """auto picks by device (flashinfer on CUDA when it imports and the KV cache is fp16/bf16,
    torch_ref otherwise), or an attention backend by registry name."""


@dataclass(frozen=True)
class RunnerConfig:
    """Model execution: CUDA graphs for decode steps (CUDA only; the CPU always runs eagerly)."""

    cuda_graphs: bool = True
    """Capture each decode step's forward as a CUDA graph per batch size and replay it
    (FlashInfer attention only; torch_ref runs eagerly). false runs every step eagerly,
    like vLLM's --enforce-eager."""
    cuda_graph_batch_sizes: list[int] | None = None
    """Batch sizes to capture (vLLM's cudagraph_capture_sizes). null: 1, 2, 4, then every
    multiple of 8, up to and including max_cuda_graph_batch_size. A decode step of n
    requests replays the smallest captured size >= n, padded; larger steps run eagerly."""
    max_cuda_graph_batch_size: int | None = None
    """Largest batch size captured by default (vLLM's max_cudagraph_capture_size); null:
    scheduler.max_num_seqs, which also caps it."""


@dataclass(frozen=True)
class DeviceConfig:
    """Where the model runs."""

    device: str = "auto"
    """auto (cuda when available, else cpu), cpu or cuda."""
    num_threads: int | None = None
    """Intra-op CPU threads for the model; null uses every core."""
    prepack_weights: bool = True
    """CPU, bfloat16: pre-pack the matmul weights into oneDNN's blocked layout at load time
    (bit-identical results, ~1.5x faster decode matmuls; costs one extra copy of the
    projection weights in memory). false: plain F.linear."""
    cpu_kernels: str = "auto"
    """CPU: the hot-path kernels (RMSNorm, rotary, SiLU-and-mul, KV store, decode
    attention). native: the C++ kernels of toolkit/kernels/cpu, compiled on first use with
    g++ (~30 s once, then cached) and failing start-up if they do not build; torch: plain
    torch ops; auto: native when it builds, else torch with a warning."""
    deterministic: bool = True
    """Batch-invariant inference: a request's tokens (greedy, or sampled with a seed) never
    depend on what else the server runs (batch, prefix-cache hits, chunked prefill,
    speculative decoding, preemption, thread count). Needs the CPU, the native kernels,
    quant=none and an unquantized KV cache; elsewhere the server says at start-up why it is
    not deterministic. false: the faster, batch-dependent route."""


@dataclass(frozen=True)
class SpeculativeConfig:
    """Speculative decoding: a proposer drafts tokens, the target verifies them in one
    forward pass, and an acceptance method keeps (rejection_sampler: exactly) the target's
    distribution."""

    method: str = "none"
    """Proposer, by name: none (no speculation), ngram (prompt lookup) or draft (a
    smaller model)."""
    num_speculative_tokens: int = 4
    """Most draft tokens proposed per request per step (k); a step emits 1..k+1 tokens."""
    prompt_lookup_min: int = 1
    """ngram: shortest suffix n-gram of the context to look up."""
    prompt_lookup_max: int = 4
    """ngram: longest suffix n-gram to look up (tried first)."""
    draft_model: ModelConfig = field(default_factory=ModelConfig)
    """draft: the draft model (source/path, dtype, max_model_len ...); it must share the
    target's tokenizer. Its KV cache gets as many pages as the target's."""
    draft_quant: QuantConfig = field(default_factory=QuantConfig)
    """draft: the draft model's weight quantization (auto: what its checkpoint declares)."""
    acceptance_method: str = "rejection_sampler"
    """rejection_sampler (lossless: accept with min(1, p/q), resample from the residual)
    or typical_acceptance_sampler (lossy, Medusa's typical acceptance: faster, not exact)."""
    posterior_threshold: float = 0.09
    """typical_acceptance_sampler: a draft token is accepted when its target probability
    exceeds min(posterior_threshold, posterior_alpha * exp(-entropy))."""
    posterior_alpha: float = 0.3
    """typical_acceptance_sampler: scale of the entropy-dependent threshold (usually the
    square root of posterior_threshold)."""
    disable_by_batch_size: int | None = None
    """Speculate only while at most this many requests are running; null: always."""
