"""Cross-field checks on a composed config, and the facts derived from it at start-up.

`validate` runs at compose time (no model loaded). `resolve` runs in build_runtime once
the checkpoint's facts are known; its result is logged once and never mutated.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from toolkit.config.errors import ConfigError
from toolkit.config.schema import ToolkitConfig

if TYPE_CHECKING:
    from toolkit.kernels.route import KernelRoute

logger = logging.getLogger(__name__)

DTYPES = ("bfloat16", "float16", "float32")
DEVICES = ("auto", "cpu", "cuda")
CPU_KERNELS = ("auto", "native", "torch")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
SCHEDULER_POLICIES = ("fcfs", "priority")
CACHE_DTYPES = {"auto": None, "fp8_e4m3": "float8_e4m3fn"}
"""cache.dtype -> torch dtype name (None: the model dtype)."""


def validate(cfg: ToolkitConfig) -> None:
    """Raise ConfigError (one line: key, bad value, valid choices) on a bad value."""
    from toolkit.attention.registry import ATTENTION_BACKENDS

    _choice("model.dtype", cfg.model.dtype, DTYPES)
    _choice("device.device", cfg.device.device, DEVICES)
    _choice("device.cpu_kernels", cfg.device.cpu_kernels, CPU_KERNELS)
    _choice("attention.backend", cfg.attention.backend, ("auto", *ATTENTION_BACKENDS.names()))
    from toolkit.quant.registry import method_names

    _choice("quant.method", cfg.quant.method, method_names())
    _at_least("quant.max_int4_tokens", cfg.quant.max_int4_tokens, 0)
    _check_runner(cfg)
    _check_speculative(cfg)
    _check_parallel(cfg)
    _choice("server.log_level", cfg.server.log_level, LOG_LEVELS)
    _choice("scheduler.policy", cfg.scheduler.policy, SCHEDULER_POLICIES)
    _at_least("server.max_logprobs", cfg.server.max_logprobs, 0)
    _at_least("server.max_n", cfg.server.max_n, 1)
    if cfg.server.ssl_cert_reqs not in (0, 1, 2):
        raise ConfigError(f"server.ssl_cert_reqs={cfg.server.ssl_cert_reqs} must be 0, 1 or 2")
    if not cfg.server.response_role:
        raise ConfigError("server.response_role must not be empty")
    _at_least("server.port", cfg.server.port, 0)
    if cfg.server.port > 65535:
        raise ConfigError(f"server.port={cfg.server.port} is not a TCP port (0..65535)")
    _at_least("scheduler.max_num_seqs", cfg.scheduler.max_num_seqs, 1)
    _at_least("scheduler.max_num_batched_tokens", cfg.scheduler.max_num_batched_tokens, 1)
    _check_admission(cfg)
    _at_least("cache.page_size", cfg.cache.page_size, 1)
    _choice("cache.dtype", cfg.cache.dtype, tuple(CACHE_DTYPES))
    if cfg.cache.num_pages is not None:
        _at_least("cache.num_pages", cfg.cache.num_pages, 1)
    if cfg.cache.cpu_kv_cache_gb <= 0:
        raise ConfigError(f"cache.cpu_kv_cache_gb={cfg.cache.cpu_kv_cache_gb} must be > 0")
    if not 0 < cfg.cache.gpu_memory_utilization <= 1:
        raise ConfigError(f"cache.gpu_memory_utilization={cfg.cache.gpu_memory_utilization} "
                          "must be in (0, 1]")
    if cfg.model.max_model_len is not None:
        _at_least("model.max_model_len", cfg.model.max_model_len, 1)
    if cfg.device.num_threads is not None:
        _at_least("device.num_threads", cfg.device.num_threads, 1)
    try:
        sampling_params(cfg)
    except ValueError as exc:
        raise ConfigError(f"sampling.{exc}") from None
    from toolkit.config.bench_checks import validate_bench

    validate_bench(cfg.bench)


def _check_speculative(cfg: ToolkitConfig) -> None:
    """Proposer, acceptance method and their numbers; the draft model's dtype and quant."""
    from toolkit.runner.acceptance import ACCEPTANCE_METHODS
    from toolkit.speculative.registry import PROPOSERS

    spec = cfg.speculative
    _choice("speculative.method", spec.method, ("none", *PROPOSERS.names()))
    _choice("speculative.acceptance_method", spec.acceptance_method, ACCEPTANCE_METHODS.names())
    _at_least("speculative.num_speculative_tokens", spec.num_speculative_tokens, 1)
    _at_least("speculative.prompt_lookup_min", spec.prompt_lookup_min, 1)
    _at_least("speculative.prompt_lookup_max", spec.prompt_lookup_max, spec.prompt_lookup_min)
    if not 0.0 <= spec.posterior_threshold <= 1.0:
        raise ConfigError(f"speculative.posterior_threshold={spec.posterior_threshold} "
                          "must be in [0, 1]")
    if spec.posterior_alpha < 0.0:
        raise ConfigError(f"speculative.posterior_alpha={spec.posterior_alpha} must be >= 0")
    if spec.disable_by_batch_size is not None:
        _at_least("speculative.disable_by_batch_size", spec.disable_by_batch_size, 1)
    if spec.method == "draft":
        from toolkit.quant.registry import method_names

        _choice("speculative.draft_model.dtype", spec.draft_model.dtype, DTYPES)
        _choice("speculative.draft_quant.method", spec.draft_quant.method, method_names())


def _check_admission(cfg: ToolkitConfig) -> None:
    """Queue bound, body limit, deadline and shutdown grace: positive where set."""
    if cfg.scheduler.max_waiting is not None:
        _at_least("scheduler.max_waiting", cfg.scheduler.max_waiting, 1)
    if cfg.server.max_request_body_bytes is not None:
        _at_least("server.max_request_body_bytes", cfg.server.max_request_body_bytes, 1)
    if cfg.server.request_timeout is not None and cfg.server.request_timeout <= 0:
        raise ConfigError(f"server.request_timeout={cfg.server.request_timeout} must be > 0")
    if cfg.server.shutdown_timeout < 0:
        raise ConfigError(f"server.shutdown_timeout={cfg.server.shutdown_timeout} must be >= 0")
    _at_least("server.retry_after_s", cfg.server.retry_after_s, 0)


def sampling_params(cfg: ToolkitConfig):
    """The `sampling` group as SamplingParams (for `toolkit generate`)."""
    from toolkit.protocol import SamplingParams

    return SamplingParams(**dataclasses.asdict(cfg.sampling))


@dataclass(frozen=True)
class ResolvedConfig:
    """Facts derived at start-up from the config, the machine and the checkpoint."""

    device: str
    """cpu or cuda."""
    dtype: str
    attention_backend: str
    """The registry name that `attention.backend=auto` resolved to."""
    max_model_len: int
    num_pages: int
    page_size: int
    num_threads: int | None
    eos_token_ids: tuple[int, ...]
    cpu_kernels: str | None = None
    """On CPU, the kernels device.cpu_kernels resolved to: native or torch."""
    deterministic: bool = False
    """device.deterministic as achieved: every matmul and the attention are batch-invariant."""
    cache_dtype: str = "auto"
    """The torch dtype name the KV pages are stored in (cache.dtype resolved)."""
    kv_cache_gib: float = 0.0
    """Memory the KV pages take (num_pages pages of all layers), in GiB."""
    gpu_memory_plan: dict[str, float] | None = None
    """On CUDA without cache.num_pages: the memory planner's budget in GiB (total, budget
    under gpu_memory_utilization, weights, peak activation, non-torch, KV cache)."""
    parallel_layout: str | None = None
    """How the model is spread over processes (``TP 2 (mp, gloo)``); None: one process.
    num_pages, kv_cache_gib and num_threads are then each rank's."""


def resolve_device(cfg: ToolkitConfig) -> str:
    import torch

    if cfg.device.device != "auto":
        if cfg.device.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device.device=cuda but no CUDA device is available")
        return cfg.device.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_cpu_kernels(cfg: ToolkitConfig) -> KernelRoute:
    """The CPU kernel route device.cpu_kernels asks for, auto resolved: the one decision of
    a runtime, which build_runtime then hands to the model and the attention backend it
    builds (toolkit.kernels.route). native and auto load (building on first use) the C++
    kernels; native fails start-up when they do not build, auto falls back to torch with a
    warning. The route's ``name`` is ResolvedConfig.cpu_kernels."""
    from toolkit.kernels import native
    from toolkit.kernels.route import TORCH, native_route

    if cfg.device.cpu_kernels == "torch":
        return TORCH
    try:
        return native_route()
    except native.NativeBuildError as exc:
        if cfg.device.cpu_kernels == "native":
            raise ConfigError(f"device.cpu_kernels=native: {exc}; "
                              "device.cpu_kernels=torch runs without them") from None
        logger.warning("device.cpu_kernels=auto: %s; running the torch ops instead", exc)
        return TORCH


def resolve_attention(cfg: ToolkitConfig, device: str) -> str:
    """attention.backend with auto resolved: flashinfer on CUDA when it imports and the KV
    cache is float16/bfloat16, torch_ref otherwise. An explicit attention=flashinfer that
    cannot run here is a one-line ConfigError."""
    from toolkit.attention.registry import flashinfer_unavailable

    wanted = cfg.attention.backend
    if wanted not in ("auto", "flashinfer"):
        return wanted
    cache_dtype = resolve_cache_dtype(cfg)
    if cache_dtype in ("float16", "bfloat16"):
        problem = flashinfer_unavailable(device)
    else:
        problem = f"needs a float16/bfloat16 KV cache, not {cache_dtype}"
    if problem is None:
        return "flashinfer"
    if wanted == "auto":
        return "torch_ref"
    raise ConfigError(f"attention.backend=flashinfer {problem}; use attention=torch_ref or auto")


def resolve_max_model_len(cfg: ToolkitConfig, max_position_embeddings: int,
                          sliding_window: int | None = None) -> int:
    """model.max_model_len, else the checkpoint's limit (as vLLM): its
    max_position_embeddings, or ``sliding_window`` when one caps the context
    (ModelInfo.context_window: full attention equals windowed attention only within the
    window). Only an explicit value above the limit is an error; no conf/model file sets
    one, so a checkpoint given by model.path brings its own."""
    limit, what = max_position_embeddings, f"max_position_embeddings={max_position_embeddings}"
    if sliding_window is not None and sliding_window < limit:
        limit, what = sliding_window, f"sliding_window={sliding_window}"
    wanted = cfg.model.max_model_len
    if wanted is None:
        return limit
    if wanted > limit:
        raise ConfigError(f"model.max_model_len={wanted} exceeds the checkpoint's {what}")
    return wanted


def resolve_cache_dtype(cfg: ToolkitConfig) -> str:
    """cache.dtype as a torch dtype name: model.dtype for auto, float8_e4m3fn for fp8_e4m3."""
    return CACHE_DTYPES[cfg.cache.dtype] or cfg.model.dtype


def resolve_num_pages(cfg: ToolkitConfig, bytes_per_page: int, max_model_len: int,
                       gpu_kv_cache_bytes: int | None = None) -> int:
    """Pages from cache.num_pages, else from the memory the KV cache gets: on CUDA
    ``gpu_kv_cache_bytes`` (what the memory planner's profile run left under
    cache.gpu_memory_utilization), on CPU cache.cpu_kv_cache_gb. One full-length request
    must fit, or it could never be scheduled."""
    if cfg.cache.num_pages is not None:
        num_pages, key = cfg.cache.num_pages, f"cache.num_pages={cfg.cache.num_pages}"
    elif gpu_kv_cache_bytes is not None:
        num_pages = max(gpu_kv_cache_bytes, 0) // bytes_per_page
        key = (f"cache.gpu_memory_utilization={cfg.cache.gpu_memory_utilization} "
               f"({gpu_kv_cache_bytes / (1 << 30):.2f} GiB left for KV)")
    else:
        num_pages = int(cfg.cache.cpu_kv_cache_gb * (1 << 30)) // bytes_per_page
        key = f"cache.cpu_kv_cache_gb={cfg.cache.cpu_kv_cache_gb}"
    needed = -(-max_model_len // cfg.cache.page_size)
    if num_pages < needed:
        raise ConfigError(
            f"{key} gives {num_pages} pages but one {max_model_len}-token request needs "
            f"{needed}; raise it or lower model.max_model_len")
    return num_pages


def _check_runner(cfg: ToolkitConfig) -> None:
    """CUDA graph sizes: null or at least 1 each."""
    runner = cfg.runner
    if runner.max_cuda_graph_batch_size is not None:
        _at_least("runner.max_cuda_graph_batch_size", runner.max_cuda_graph_batch_size, 1)
    sizes = runner.cuda_graph_batch_sizes
    if sizes is not None and (not sizes or min(sizes) < 1):
        raise ConfigError(f"runner.cuda_graph_batch_sizes={list(sizes)} must be a non-empty "
                          "list of sizes >= 1, or null")


def _choice(key: str, value: object, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is not valid; valid choices: {', '.join(valid)}")


EXECUTOR_BACKENDS = ("mp", "ray")


def _check_parallel(cfg: ToolkitConfig) -> None:
    """parallel.*: sizes >= 1, what is built, a known executor backend that is installed
    (the device count is check_model_fit's: it needs the machine)."""
    import importlib.util

    parallel = cfg.parallel
    _at_least("parallel.tensor_parallel_size", parallel.tensor_parallel_size, 1)
    for key in ("pipeline_parallel_size", "data_parallel_size"):
        _at_least(f"parallel.{key}", getattr(parallel, key), 1)
    if parallel.data_parallel_size > 1:
        _check_data_parallel(cfg)
    _choice("parallel.distributed_executor_backend", parallel.distributed_executor_backend,
            EXECUTOR_BACKENDS)
    if parallel.init_timeout_s <= 0:
        raise ConfigError(f"parallel.init_timeout_s={parallel.init_timeout_s} must be > 0")
    if parallel.tensor_parallel_size > 1 and cfg.lora.enable:
        raise ConfigError("lora.enable=true with parallel.tensor_parallel_size > 1: LoRA "
                          "adapters are not split over ranks yet")
    if parallel.num_micro_batches is not None:
        _at_least("parallel.num_micro_batches", parallel.num_micro_batches, 1)
    if parallel.pipeline_parallel_size > 1 and cfg.lora.enable:
        raise ConfigError("lora.enable=true with parallel.pipeline_parallel_size > 1: LoRA "
                          "adapters are not split over stages yet")
    if parallel.distributed_executor_backend == "ray":
        if importlib.util.find_spec("ray") is None:
            raise ConfigError("parallel.distributed_executor_backend=ray needs Ray: "
                              "pip install -e '.[ray]'")


def _check_data_parallel(cfg: ToolkitConfig) -> None:
    """data_parallel_size > 1: Ray installed, replicas of one engine each (no TP or LoRA
    inside a replica yet), restarts and imbalance >= 0."""
    import importlib.util

    parallel = cfg.parallel
    size = parallel.data_parallel_size
    _at_least("parallel.data_parallel_max_imbalance", parallel.data_parallel_max_imbalance, 0)
    _at_least("parallel.max_replica_restarts", parallel.max_replica_restarts, 0)
    if parallel.pipeline_parallel_size > 1:
        raise ConfigError(f"parallel.data_parallel_size={size} with pipeline_parallel_size="
                          f"{parallel.pipeline_parallel_size}: replicas of a pipeline are not "
                          "built yet (use one of them)")
    if parallel.tensor_parallel_size > 1 and parallel.distributed_executor_backend != "mp":
        raise ConfigError(f"parallel.data_parallel_size={size} with tensor_parallel_size="
                          f"{parallel.tensor_parallel_size}: each replica starts its ranks as "
                          "local processes; set parallel.distributed_executor_backend=mp")
    if cfg.lora.enable:
        raise ConfigError(f"lora.enable=true with parallel.data_parallel_size={size}: LoRA "
                          "adapters are not served by replicas yet")
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(f"parallel.data_parallel_size={size} runs the replicas as Ray "
                          "actors and needs Ray: pip install -e '.[ray]'")


def _check_local_devices(cfg: ToolkitConfig, device: str) -> None:
    """Local (mp) ranks on CUDA need a GPU each; CPU ranks may share cores (slower, the
    same results); a Ray cluster places ranks on its own machines."""
    size = cfg.parallel.tensor_parallel_size * cfg.parallel.pipeline_parallel_size
    if device != "cuda" or cfg.parallel.distributed_executor_backend == "ray":
        return
    import torch

    if size > torch.cuda.device_count():
        raise ConfigError(f"parallel: {size} ranks (tensor_parallel_size x "
                          f"pipeline_parallel_size) but this machine has "
                          f"{torch.cuda.device_count()} CUDA devices (a Ray cluster spans "
                          "machines: parallel.distributed_executor_backend=ray)")


def _check_local_replicas(cfg: ToolkitConfig, device: str) -> None:
    """Data-parallel replicas on a local Ray instance need tensor_parallel_size GPUs each on
    CUDA (a cluster at parallel.ray.address places them on its own machines)."""
    parallel = cfg.parallel
    if device != "cuda" or parallel.ray.address is not None:
        return
    import torch

    needed = parallel.data_parallel_size * parallel.tensor_parallel_size
    if needed > torch.cuda.device_count():
        raise ConfigError(f"parallel.data_parallel_size={parallel.data_parallel_size} x "
                          f"tensor_parallel_size={parallel.tensor_parallel_size} needs {needed}"
                          f" GPUs but this machine has {torch.cuda.device_count()} CUDA "
                          "devices (a Ray cluster spans machines: parallel.ray.address)")


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{key}={value} must be >= {low}")


def check_model_fit(cfg: ToolkitConfig, model_dir, device: str) -> None:
    """What can be known about a model directory before any kernel is built or weight
    read (build_runtime and `toolkit serve`'s preflight run it first): its architecture is
    supported, ``quant`` fits the checkpoint (a ModelLoadError naming the mismatch, from
    config.json and the safetensors headers), model.max_model_len fits its context and,
    where the KV cache is sized without the model (CPU, or cache.num_pages), one
    full-length request fits in it (ConfigError)."""
    from pathlib import Path

    from toolkit.kv.cache_pool import KVCachePool
    from toolkit.models.loader import read_config, read_model_info, tensor_shapes
    from toolkit.models.registry import MODEL_ARCHITECTURES
    from toolkit.quant.base import ModelLoadError
    from toolkit.quant.registry import create_quant_method

    model_dir = Path(model_dir)
    config = read_config(model_dir)
    architecture = (config.get("architectures") or ["missing"])[0]
    if architecture not in MODEL_ARCHITECTURES:
        raise ModelLoadError(f"{model_dir}: architecture {architecture} is not supported; "
                             f"supported: {', '.join(MODEL_ARCHITECTURES.names())}")
    files = sorted(model_dir.glob("*.safetensors"))
    method = create_quant_method(cfg.quant, config, cfg.device.prepack_weights)
    if files:
        method.check_checkpoint(tensor_shapes(files))
    if cfg.parallel.tensor_parallel_size > 1:
        from toolkit.models.loader import check_tensor_parallel

        check_tensor_parallel(config, cfg.parallel.tensor_parallel_size)
    if cfg.parallel.pipeline_parallel_size > 1:
        from toolkit.models.loader import check_pipeline_parallel

        check_pipeline_parallel(config, cfg.parallel.pipeline_parallel_size)
    if cfg.parallel.tensor_parallel_size * cfg.parallel.pipeline_parallel_size > 1:
        _check_local_devices(cfg, device)
    if cfg.parallel.data_parallel_size > 1:
        _check_local_replicas(cfg, device)
    info = read_model_info(model_dir)
    max_model_len = resolve_max_model_len(cfg, info.max_position_embeddings,
                                          info.context_window)
    if device == "cpu" or cfg.cache.num_pages is not None:
        import torch

        bytes_per_page = KVCachePool.bytes_per_page(
            info.num_layers, cfg.cache.page_size, info.num_kv_heads, info.head_dim,
            getattr(torch, resolve_cache_dtype(cfg)))
        resolve_num_pages(cfg, bytes_per_page, max_model_len)
