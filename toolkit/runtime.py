"""build_runtime: the only place where a config becomes objects."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from toolkit.attention.base import model_attention_layers
from toolkit.attention.registry import attention_over_pool
from toolkit.config.schema import SpeculativeConfig, ToolkitConfig
from toolkit.determinism import make_deterministic
from toolkit.engine.async_engine import AsyncEngine
from toolkit.engine.core import EngineCore
from toolkit.engine.output_processor import OutputProcessor
from toolkit.kernels.route import TORCH, KernelRoute, route_named
from toolkit.kv.cache_pool import KVCachePool
from toolkit.kv.page_manager import PageManager
from toolkit.parallel.executor import TensorParallelExecutor
from toolkit.parallel.replicas import DataParallelEngine
from toolkit.parallel.shard import ShardSpec, build_shard, local_info, rank_device
from toolkit.resolve import (
    ResolvedConfig,
    check_model_fit,
    resolve_attention,
    resolve_cache_dtype,
    resolve_cpu_kernels,
    resolve_device,
    resolve_max_model_len,
    resolve_num_pages,
)
from toolkit.runner import memory_planner
from toolkit.runner.model_runner import ModelRunner
from toolkit.scheduler.scheduler import Scheduler
from toolkit.tokenizer.tokenizer import Tokenizer
from toolkit.waits import kernel_build_wait, model_lookup_wait, waiting

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything `toolkit serve` and `toolkit generate` run."""

    config: ToolkitConfig
    resolved: ResolvedConfig
    model_dir: Path
    core: EngineCore | None
    """The engine core; None under data parallelism (each replica has its own)."""
    engine: AsyncEngine | DataParallelEngine
    tokenizer: Tokenizer
    executor: TensorParallelExecutor | None = None
    """The other tensor-parallel ranks (parallel.tensor_parallel_size > 1), else None."""

    @property
    def quant_name(self) -> str:
        """The served model's quant method, by name."""
        if self.core is None:
            return self.engine.quant_name
        return self.core.runner.model.quant_method.name

    def close(self) -> None:
        """Stop the engine loop, then the tensor-parallel workers."""
        self.engine.shutdown()
        if self.executor is not None:
            self.executor.close()


def build_runtime(cfg: ToolkitConfig, engine_thread_only: bool = False) -> Runtime:
    """Resolve the model, load it, size the KV cache and wire the engine.

    ``engine_thread_only``: only AsyncEngine's loop thread will run the model (`toolkit
    serve`). On CPU this thread then loads with one torch thread and the loop thread takes
    the configured count: a second OpenMP team in the process (this thread's) makes
    libgomp throttle its spin-waits, and the loop thread's oneDNN matmuls ran ~1.7x slower
    (decode step 84 vs 50 ms for SmolLM2 on 2 cores).
    """
    from toolkit.models.loader import load_model, read_model_info
    from toolkit.models.source import resolve_model_dir

    if cfg.parallel.data_parallel_size > 1:
        return _data_parallel_runtime(cfg)
    device = resolve_device(cfg)
    tp_size = cfg.parallel.tensor_parallel_size
    num_ranks = tp_size * cfg.parallel.pipeline_parallel_size
    # on the CPU, the ranks share the threads equally
    num_threads = max(1, (cfg.device.num_threads or torch.get_num_threads()) // num_ranks)
    cpu_kernels, kernels = None, TORCH
    if device == "cpu":
        torch.set_num_threads(1 if engine_thread_only else num_threads)
    with waiting(*model_lookup_wait(cfg)):
        model_dir = resolve_model_dir(cfg.model.source, cfg.model.path)
    check_model_fit(cfg, model_dir, device)  # before the kernels build and the weights load
    if device == "cpu":
        with waiting(*kernel_build_wait(cfg)):
            kernels = resolve_cpu_kernels(cfg)  # the runtime's one kernel route, handed down
        cpu_kernels = kernels.name
    info = read_model_info(model_dir)
    dtype = getattr(torch, cfg.model.dtype)
    max_model_len = resolve_max_model_len(cfg, info.max_position_embeddings, info.context_window)
    cache_dtype = resolve_cache_dtype(cfg)
    cache_torch_dtype = getattr(torch, cache_dtype)
    bytes_per_page = KVCachePool.bytes_per_page(
        info.num_layers, cfg.cache.page_size, local_info(info, tp_size).num_kv_heads,
        info.head_dim, cache_torch_dtype)
    attention_backend = resolve_attention(cfg, device)
    executor, gpu_plan, lora = None, None, None
    if num_ranks > 1:
        num_pages = resolve_num_pages(cfg, bytes_per_page, max_model_len)
        spec = _shard_spec(cfg, model_dir, device, cpu_kernels, attention_backend, num_pages,
                           cache_dtype, num_threads, max_model_len)
        with waiting(f"starting {num_ranks} ranks, {_parallel_layout(cfg, device)}, and "
                     f"loading their shards of {model_dir.name}", "loaded the shards"):
            executor = TensorParallelExecutor.start(spec, cfg.parallel)
            model, attention = build_shard(spec, executor.parallel(0), rank_device(spec, 0))
    else:
        memory_at_start = memory_planner.snapshot(device) if device == "cuda" else None
        with waiting(f"loading the weights of {model_dir.name} ({cfg.model.dtype}, {device})",
                     "loaded the weights"):
            model = load_model(model_dir, dtype, device,
                               prepack_weights=cfg.device.prepack_weights,
                               allow_pickle=cfg.model.allow_pickle, quant=cfg.quant,
                               batch_invariant=cfg.device.deterministic and device == "cpu",
                               kernels=kernels, max_model_len=max_model_len)
        lora = _lora_manager(cfg, model, device)  # its slot buffers count in the GPU profile
        if memory_at_start is not None and cfg.cache.num_pages is None:
            gpu_plan = _profile_gpu_memory(cfg, model, info, attention_backend,
                                           cache_torch_dtype, max_model_len, memory_at_start)
        gpu_kv_bytes = (gpu_plan.kv_cache_bytes(cfg.cache.gpu_memory_utilization) if gpu_plan
                        else None)
        num_pages = resolve_num_pages(cfg, bytes_per_page, max_model_len, gpu_kv_bytes)
        attention = attention_over_pool(info, num_pages, cfg.cache.page_size,
                                        cache_torch_dtype, device, attention_backend, kernels,
                                        model_attention_layers(model))
    resolved = ResolvedConfig(
        device=device,
        dtype=cfg.model.dtype,
        attention_backend=attention_backend,
        max_model_len=max_model_len,
        num_pages=num_pages,
        page_size=cfg.cache.page_size,
        num_threads=num_threads if device == "cpu" else None,
        eos_token_ids=info.eos_token_ids,
        cpu_kernels=cpu_kernels,
        deterministic=make_deterministic(cfg, device, model, attention, attention_backend,
                                         lora),
        cache_dtype=cache_dtype,
        kv_cache_gib=num_pages * bytes_per_page / (1 << 30),
        gpu_memory_plan=gpu_plan.summary(cfg.cache.gpu_memory_utilization) if gpu_plan else None,
        parallel_layout=_parallel_layout(cfg, device) if executor is not None else None,
    )
    logger.info("resolved config: %s", asdict(resolved))
    if executor is not None:
        executor.configure(model.quant_method.invariant_min_rows, resolved.deterministic)

    runner = ModelRunner(model, attention, resolved.page_size, device, _acceptance(cfg),
                         exact_seeded_drafts=resolved.deterministic,
                         drafter=_drafter(cfg, resolved, info.vocab_size), lora=lora,
                         workers=executor, kernels=kernels)
    if device == "cuda" and cfg.runner.cuda_graphs and executor is None:
        with waiting("capturing CUDA graphs", "captured CUDA graphs"):
            runner.graph_runner = _cuda_graph_runner(cfg, model, attention, resolved)
    tokenizer = Tokenizer(model_dir, info.eos_token_ids)
    guided = _guided_compiler(cfg, tokenizer, info.vocab_size, info.eos_token_ids)
    core, engine = _wire_engine(cfg, resolved, runner, tokenizer, guided)
    if executor is not None:
        executor.on_failure = engine.fail
    return Runtime(cfg, resolved, model_dir, core, engine, tokenizer, executor)


def _data_parallel_runtime(cfg: ToolkitConfig) -> Runtime:
    """parallel.data_parallel_size replicas as Ray actors, each building its own runtime,
    behind one DataParallelEngine; the tokenizer is loaded here, for the API."""
    from toolkit.models.loader import read_model_info
    from toolkit.models.source import resolve_model_dir

    device = resolve_device(cfg)
    with waiting(*model_lookup_wait(cfg)):
        model_dir = resolve_model_dir(cfg.model.source, cfg.model.path)
    check_model_fit(cfg, model_dir, device)
    tokenizer = Tokenizer(model_dir, read_model_info(model_dir).eos_token_ids)
    size = cfg.parallel.data_parallel_size
    with waiting(f"starting {size} data-parallel replicas (Ray actors) of {model_dir.name}",
                 "started the replicas"):
        engine = DataParallelEngine.start_replicas(cfg, tokenizer, build_runtime,
                                                   on_gpu=device == "cuda")
    layout = f"DP {size} (ray)"
    if engine.resolved.parallel_layout:  # each replica's own ranks
        layout += f" x {engine.resolved.parallel_layout}"
    resolved = replace(engine.resolved, parallel_layout=layout)
    logger.info("resolved config (each replica): %s", asdict(resolved))
    return Runtime(cfg, resolved, model_dir, None, engine, tokenizer)


def _parallel_layout(cfg: ToolkitConfig, device: str) -> str:
    """``TP 2 (mp, gloo)``: the ranks, how they were started and their collectives."""
    backend = "nccl" if device == "cuda" else "gloo"
    stages = cfg.parallel.pipeline_parallel_size
    return (f"TP {cfg.parallel.tensor_parallel_size}{f' x PP {stages}' if stages > 1 else ''} "
            f"({cfg.parallel.distributed_executor_backend}, {backend})")


def _shard_spec(cfg: ToolkitConfig, model_dir: Path, device: str, cpu_kernels: str | None,
                attention_backend: str, num_pages: int, cache_dtype: str,
                num_threads: int, max_model_len: int) -> ShardSpec:
    """What every tensor-parallel rank builds its shard from (``num_threads``: each
    rank's torch threads on the CPU)."""
    return ShardSpec(
        model_dir=str(model_dir), dtype=cfg.model.dtype, device=device, quant=cfg.quant,
        prepack_weights=cfg.device.prepack_weights, allow_pickle=cfg.model.allow_pickle,
        batch_invariant=cfg.device.deterministic and device == "cpu", cpu_kernels=cpu_kernels,
        attention_backend=attention_backend, num_pages=num_pages,
        page_size=cfg.cache.page_size, cache_dtype=cache_dtype,
        tensor_parallel_size=cfg.parallel.tensor_parallel_size,
        pipeline_parallel_size=cfg.parallel.pipeline_parallel_size,
        num_micro_batches=(cfg.parallel.num_micro_batches or cfg.parallel.pipeline_parallel_size
                           if cfg.parallel.pipeline_parallel_size > 1 else 1),
        num_threads=num_threads if device == "cpu" else None, max_model_len=max_model_len)


def _cuda_graph_runner(cfg: ToolkitConfig, model: torch.nn.Module, attention,
                       resolved: ResolvedConfig):
    """Decode steps captured per batch size (runner.*), or None where the attention
    backend cannot be captured (torch_ref): then every step runs eagerly."""
    from toolkit.runner.cuda_graph_runner import (
        build_cuda_graph_runner,
        capture_batch_sizes,
    )

    max_num_seqs = cfg.scheduler.max_num_seqs
    max_size = min(cfg.runner.max_cuda_graph_batch_size or max_num_seqs, max_num_seqs)
    sizes = capture_batch_sizes(cfg.runner.cuda_graph_batch_sizes, max_size)
    graph_runner = build_cuda_graph_runner(model, attention, sizes, resolved.max_model_len,
                                           resolved.page_size, resolved.device)
    if graph_runner is None:
        logger.info("CUDA graphs off: attention=%s cannot be captured; decode runs eagerly",
                    resolved.attention_backend)
    else:
        logger.info("captured CUDA graphs for decode batch sizes %s",
                    list(graph_runner.captured_batch_sizes))
    return graph_runner


def _acceptance(cfg: ToolkitConfig):
    """How sampled requests' drafts are verified (speculative.acceptance_method)."""
    from toolkit.runner.acceptance import ACCEPTANCE_METHODS

    spec = cfg.speculative
    return ACCEPTANCE_METHODS.get(spec.acceptance_method)(spec.posterior_threshold,
                                                           spec.posterior_alpha)


def _drafter(cfg: ToolkitConfig, resolved: ResolvedConfig, vocab_size: int):
    """The runner's drafter over the speculative proposer (None for speculative=none); a
    draft model is loaded here."""
    from toolkit.runner.drafter import Drafter
    from toolkit.speculative.base import ProposerContext
    from toolkit.speculative.registry import build_proposer

    spec = cfg.speculative
    if spec.method == "none":
        return None
    draft_model = draft_attention = None
    if spec.method == "draft":
        draft_model, draft_attention = load_draft(
            spec, resolved.device, resolved.attention_backend, resolved.num_pages,
            resolved.page_size, cfg.device.prepack_weights, route_named(resolved.cpu_kernels))
    context = ProposerContext(resolved.device, resolved.num_pages, resolved.page_size,
                              vocab_size, draft_model, draft_attention)
    return Drafter(build_proposer(spec, context), spec.num_speculative_tokens,
                   resolved.max_model_len, spec.disable_by_batch_size)


def load_draft(spec: SpeculativeConfig, device: str, attention_backend: str, num_pages: int,
               page_size: int, prepack_weights: bool = True, kernels: KernelRoute = TORCH):
    """speculative.draft_model through the model loader (its own dtype and quant), with an
    attention backend over a KV pool of ``num_pages`` pages -> (model, attention).
    ``kernels``: the target's CPU kernel route (toolkit.kernels.route), for both."""
    from toolkit.models.loader import load_model, read_model_info
    from toolkit.models.source import resolve_model_dir

    draft = spec.draft_model
    model_dir = resolve_model_dir(draft.source, draft.path)
    info = read_model_info(model_dir)
    dtype = getattr(torch, draft.dtype)
    model = load_model(model_dir, dtype, device, prepack_weights=prepack_weights,
                       allow_pickle=draft.allow_pickle, quant=spec.draft_quant, kernels=kernels)
    return model, attention_over_pool(info, num_pages, page_size, dtype, device,
                                      attention_backend, kernels, model_attention_layers(model))


def _profile_gpu_memory(cfg: ToolkitConfig, model: torch.nn.Module, info, attention_backend: str,
                        cache_torch_dtype: torch.dtype, max_model_len: int,
                        start: memory_planner.MemorySnapshot) -> memory_planner.GpuMemoryProfile:
    """The memory planner's profile run: the worst step the scheduler can emit."""
    from toolkit.attention.registry import ATTENTION_BACKENDS

    backend = ATTENTION_BACKENDS.get(attention_backend)
    pool_shape = {"num_layers": info.num_layers, "page_size": cfg.cache.page_size,
                  "num_kv_heads": info.num_kv_heads, "head_dim": info.head_dim,
                  "dtype": cache_torch_dtype}
    num_tokens = min(cfg.scheduler.max_num_batched_tokens, max_model_len)
    return memory_planner.profile_gpu_memory(
        model, lambda pool: backend(pool, info.num_qo_heads, info.num_kv_heads, info.head_dim,
                                    layers=model_attention_layers(model)),
        start, pool_shape, num_tokens, min(cfg.scheduler.max_num_seqs, num_tokens), "cuda")


def _guided_compiler(cfg: ToolkitConfig, tokenizer: Tokenizer, vocab_size: int,
                     eos_token_ids: tuple[int, ...]):
    """The model's grammar compiler (bitmask width = the logits' width, not the tokenizer's
    length), its compiles time-limited by server.guided."""
    from toolkit.guided.compiler import GuidedCompiler

    guided = cfg.server.guided
    return GuidedCompiler(tokenizer.hf, vocab_size, eos_token_ids,
                          max_threads=max(1, min(8, torch.get_num_threads())),
                          compile_timeout_s=guided.compile_timeout_s,
                          max_compile_workers=guided.max_compile_workers)


def rebuild_engine(runtime: Runtime, cfg: ToolkitConfig) -> Runtime:
    """A runtime for `cfg` around `runtime`'s loaded model and KV pool, with a new runner
    (sharing the model, attention and CUDA graphs), scheduler, engine core and AsyncEngine
    (benchmark sweeps over scheduler knobs).

    NOTE: only `scheduler.*`, `cache.enable_prefix_caching`, `speculative.*` (a draft
    model is loaded anew) and groups that build no objects (server, sampling, bench) may
    differ from runtime.config; the old engine must be idle.
    """
    if runtime.core is None:
        from toolkit.config.errors import ConfigError

        raise ConfigError("parallel.data_parallel_size > 1: the replicas cannot be rebuilt "
                          "around one loaded model; benchmark with data_parallel_size=1")
    old = runtime.core.runner
    drafter, acceptance = old.drafter, old.acceptance
    if cfg.speculative != runtime.config.speculative:
        drafter = _drafter(cfg, runtime.resolved, old.model.config["vocab_size"])
        acceptance = _acceptance(cfg)
    runner = ModelRunner(old.model, old.attention, old.page_size, old.device, acceptance,
                         old.graph_runner, old.exact_seeded_drafts, drafter, lora=old.lora,
                         workers=old.workers, kernels=old.kernels)
    core, engine = _wire_engine(cfg, runtime.resolved, runner, runtime.tokenizer,
                                runtime.core.guided)
    return replace(runtime, config=cfg, core=core, engine=engine)


def _wire_engine(cfg: ToolkitConfig, resolved: ResolvedConfig, runner: ModelRunner,
                 tokenizer: Tokenizer, guided=None) -> tuple[EngineCore, AsyncEngine]:
    """The scheduler, engine core and AsyncEngine around a built runner; ``guided``: the
    GuidedCompiler of guided requests."""
    page_manager = PageManager(resolved.num_pages, resolved.page_size,
                                 cfg.cache.enable_prefix_caching)
    scheduler = Scheduler(cfg.scheduler, page_manager, resolved.max_model_len,
                          max_loras=runner.lora.max_loras if runner.lora is not None else None)
    core = EngineCore(scheduler, runner, OutputProcessor(tokenizer), resolved.eos_token_ids,
                      guided)
    engine = AsyncEngine(core, tokenizer, cfg.model.name, resolved.max_model_len,
                         resolved.num_threads, resolved.deterministic)
    engine.lora = runner.lora  # the API's adapter names and load/unload (None: no LoRA)
    return core, engine


def _lora_manager(cfg: ToolkitConfig, model: torch.nn.Module, device: str):
    """The LoRA adapters of lora.* over ``model`` (None when lora.enable is off), each
    of lora.modules read and validated now."""
    if not cfg.lora.enable:
        return None
    from toolkit.config.errors import ConfigError
    from toolkit.lora.errors import LoraLoadError
    from toolkit.lora.manager import build_lora_manager
    from toolkit.lora.modules import parse_modules

    lora = cfg.lora
    dtype = model.dtype if lora.dtype == "auto" else LORA_DTYPES.get(lora.dtype)
    if dtype is None:
        raise ConfigError(f"lora.dtype={lora.dtype!r}: expected one of "
                          f"{['auto', *LORA_DTYPES]}")
    try:
        modules = parse_modules(lora.modules)
        with waiting(f"reading {len(modules)} LoRA adapters", "read the LoRA adapters"):
            return build_lora_manager(model, modules, lora.max_loras, lora.max_lora_rank,
                                      lora.max_cpu_loras, dtype, device)
    except (LoraLoadError, ValueError) as exc:
        raise ConfigError(f"lora: {str(exc).splitlines()[0]}") from None


LORA_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""lora.dtype's choices besides auto (the model's dtype)."""

