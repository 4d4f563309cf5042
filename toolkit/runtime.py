"""build_runtime: the only place where a config becomes objects."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from toolkit.config.resolve import (
    ResolvedConfig,
    resolve_attention,
    resolve_device,
    resolve_max_model_len,
    resolve_num_blocks,
)
from toolkit.config.schema import ToolkitConfig
from toolkit.engine.async_engine import AsyncEngine
from toolkit.engine.core import EngineCore
from toolkit.engine.output_processor import OutputProcessor
from toolkit.kv.block_manager import BlockManager
from toolkit.kv.cache_pool import KVCachePool
from toolkit.runner.model_runner import ModelRunner
from toolkit.scheduler.scheduler import Scheduler
from toolkit.tokenizer.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything `toolkit serve` and `toolkit generate` run."""

    config: ToolkitConfig
    resolved: ResolvedConfig
    model_dir: Path
    core: EngineCore
    engine: AsyncEngine
    tokenizer: Tokenizer


def build_runtime(cfg: ToolkitConfig) -> Runtime:
    """Resolve the model, load it, size the KV cache and wire the engine."""
    from toolkit.attention.registry import ATTENTION_BACKENDS
    from toolkit.models.loader import load_model, read_model_info
    from toolkit.models.source import resolve_model_dir

    device = resolve_device(cfg)
    if device == "cpu" and cfg.device.num_threads is not None:
        torch.set_num_threads(cfg.device.num_threads)
    model_dir = resolve_model_dir(cfg.model.source, cfg.model.path)
    info = read_model_info(model_dir)
    dtype = getattr(torch, cfg.model.dtype)
    max_model_len = resolve_max_model_len(cfg, info.max_position_embeddings, info.sliding_window)
    bytes_per_block = KVCachePool.bytes_per_page(
        info.num_layers, cfg.cache.block_size, info.num_kv_heads, info.head_dim, dtype)
    resolved = ResolvedConfig(
        device=device,
        dtype=cfg.model.dtype,
        attention_backend=resolve_attention(cfg, device),
        max_model_len=max_model_len,
        num_blocks=resolve_num_blocks(cfg, bytes_per_block, max_model_len),
        block_size=cfg.cache.block_size,
        num_threads=torch.get_num_threads() if device == "cpu" else None,
        eos_token_ids=info.eos_token_ids,
    )
    logger.info("resolved config: %s", asdict(resolved))

    model = load_model(model_dir, dtype, device, prepack_weights=cfg.device.prepack_weights,
                       allow_pickle=cfg.model.allow_pickle)
    kv_pool = KVCachePool(info.num_layers, resolved.num_blocks, resolved.block_size,
                          info.num_kv_heads, info.head_dim, dtype, device)
    attention = ATTENTION_BACKENDS.get(resolved.attention_backend)(
        kv_pool, info.num_qo_heads, info.num_kv_heads, info.head_dim)
    runner = ModelRunner(model, attention, resolved.block_size, device)
    tokenizer = Tokenizer(model_dir, info.eos_token_ids)
    guided = _guided_compiler(tokenizer, info.vocab_size, info.eos_token_ids)
    core, engine = _wire_engine(cfg, resolved, runner, tokenizer, guided)
    return Runtime(cfg, resolved, model_dir, core, engine, tokenizer)


def _guided_compiler(tokenizer: Tokenizer, vocab_size: int, eos_token_ids: tuple[int, ...]):
    """The model's grammar compiler (bitmask width = the logits' width, not the tokenizer's
    length)."""
    from toolkit.guided.compiler import GuidedCompiler

    return GuidedCompiler(tokenizer.hf, vocab_size, eos_token_ids,
                          max_threads=max(1, min(8, torch.get_num_threads())))


def rebuild_engine(runtime: Runtime, cfg: ToolkitConfig) -> Runtime:
    """A runtime for `cfg` around `runtime`'s loaded model, KV pool and runner, with a new
    scheduler, engine core and AsyncEngine (benchmark sweeps over scheduler knobs).

    NOTE: only `scheduler.*` and groups that build no objects (server, sampling, bench) may
    differ from runtime.config; the old engine must be idle.
    """
    core, engine = _wire_engine(cfg, runtime.resolved, runtime.core.runner, runtime.tokenizer,
                                runtime.core.guided)
    return replace(runtime, config=cfg, core=core, engine=engine)


def _wire_engine(cfg: ToolkitConfig, resolved: ResolvedConfig, runner: ModelRunner,
                 tokenizer: Tokenizer, guided=None) -> tuple[EngineCore, AsyncEngine]:
    """The scheduler, engine core and AsyncEngine around a built runner; ``guided``: the
    GuidedCompiler of guided requests."""
    block_manager = BlockManager(resolved.num_blocks, resolved.block_size)
    scheduler = Scheduler(cfg.scheduler, block_manager, resolved.max_model_len)
    core = EngineCore(scheduler, runner, OutputProcessor(tokenizer), resolved.eos_token_ids,
                      guided)
    engine = AsyncEngine(core, tokenizer, cfg.model.name, resolved.max_model_len)
    return core, engine
