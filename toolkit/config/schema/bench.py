"""Offline sampling defaults (`toolkit generate`) and `toolkit bench` / `toolkit tune`."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    roofline: bool = True
    """Measure this machine's bf16 GEMM peak and DRAM bandwidth (~1 s) and report each
    job's distance from the bound that applies: bandwidth at one stream, compute with more
    (toolkit/bench/roofline.py)."""
    slo: SloConfig = field(default_factory=SloConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
