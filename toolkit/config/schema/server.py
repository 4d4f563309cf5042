"""The HTTP server and its OpenAI API."""

from __future__ import annotations

from dataclasses import dataclass, field


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
