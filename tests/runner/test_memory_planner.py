"""KV memory planning: cache.cpu_kv_cache_gb on CPU, cache.gpu_memory_utilization after a
profile run on CUDA."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import pytest
import torch

from toolkit.compose import compose_config
from toolkit.config.errors import ConfigError
from toolkit.kv.cache_pool import KVCachePool
from toolkit.resolve import resolve_num_pages, validate
from toolkit.runner.memory_planner import GIB, GpuMemoryProfile, profile_step

NUM_LAYERS, NUM_KV_HEADS, HEAD_DIM = 2, 2, 16


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama (2 layers, 2 KV heads of 16) with SmolLM2's tokenizer."""
    import transformers

    from toolkit.config.schema import ModelConfig
    from toolkit.models.source import resolve_model_dir

    directory = tmp_path_factory.mktemp("tiny_planner")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=NUM_LAYERS,
        num_attention_heads=4, num_key_value_heads=NUM_KV_HEADS, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2)
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    smollm2 = resolve_model_dir(ModelConfig().source)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2 / name, directory / name)
    return directory


def page_bytes(dtype: torch.dtype, page_size: int = 16) -> int:
    return KVCachePool.bytes_per_page(NUM_LAYERS, page_size, NUM_KV_HEADS, HEAD_DIM, dtype)


def build(model_dir: Path, *overrides: str):
    from toolkit.runtime import build_runtime

    return build_runtime(compose_config([f"model.path={model_dir}", "model.dtype=float32",
                                         "model.max_model_len=256", *overrides]))


def test_cpu_sizes_the_cache_from_cpu_kv_cache_gb(tiny_model_dir):
    runtime = build(tiny_model_dir, "device=cpu", "cache.cpu_kv_cache_gb=0.01")
    resolved = runtime.resolved
    expected = int(0.01 * GIB) // page_bytes(torch.float32)
    assert resolved.num_pages == expected
    assert runtime.core.runner.attention.kv_pool.num_pages == expected
    assert resolved.kv_cache_gib == pytest.approx(expected * page_bytes(torch.float32) / GIB)
    assert resolved.kv_cache_gib <= 0.01 and resolved.gpu_memory_plan is None
    doubled = build(tiny_model_dir, "device=cpu", "cache.cpu_kv_cache_gb=0.02").resolved
    assert doubled.num_pages in (2 * expected, 2 * expected + 1)


def test_the_profile_step_runs_the_worst_step_on_cpu(tiny_model_dir):
    runtime = build(tiny_model_dir, "device=cpu", "cache.num_pages=16")
    runner = runtime.core.runner
    pool = KVCachePool(NUM_LAYERS, 5, 16, NUM_KV_HEADS, HEAD_DIM, torch.float32)
    attention = type(runner.attention)(pool, 4, NUM_KV_HEADS, HEAD_DIM)
    ids = profile_step(runner.model, attention, pool, num_tokens=70, num_sampled=3,
                       device="cpu")
    assert ids.shape == (3,) and int(ids.max()) < 49152
    written = pool.caches[0].flatten(1).abs().sum(dim=1) > 0  # [pages]
    assert written.tolist() == [True] * 5, "70 tokens fill 4 pages and start a fifth"


def test_gpu_budget_arithmetic():
    profile = GpuMemoryProfile(total_bytes=80 * GIB, free_bytes_at_start=79 * GIB,
                               weights_bytes=16 * GIB, peak_activation_bytes=3 * GIB,
                               non_torch_bytes=GIB)
    assert profile.kv_cache_bytes(0.9) == int(80 * GIB * 0.9) - 20 * GIB
    assert profile.summary(0.5)["kv_cache_gib"] == pytest.approx(20.0)
    with pytest.raises(ConfigError, match=r"cache.gpu_memory_utilization=1.0 asks for 80.00 GiB "
                                          r"but only 79.00 GiB"):
        profile.kv_cache_bytes(1.0)


def test_gpu_bytes_become_pages_and_too_few_is_a_clear_error():
    cfg = compose_config(["cache.page_size=16", "cache.gpu_memory_utilization=0.5"])
    assert resolve_num_pages(cfg, bytes_per_page=1000, max_model_len=64,
                              gpu_kv_cache_bytes=123_456) == 123
    with pytest.raises(ConfigError, match="cache.gpu_memory_utilization=0.5 .* gives 0 pages"):
        resolve_num_pages(cfg, bytes_per_page=1000, max_model_len=64,
                           gpu_kv_cache_bytes=-5 * GIB)
    exact = compose_config(["cache.num_pages=7"])
    assert resolve_num_pages(exact, 1000, 64, gpu_kv_cache_bytes=10 ** 9) == 7


@pytest.mark.parametrize("override", ["cache.gpu_memory_utilization=1.5",
                                      "cache.gpu_memory_utilization=0",
                                      "cache.cpu_kv_cache_gb=0"])
def test_out_of_range_memory_knobs_are_refused(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=key):
        validate(compose_config([override]))


@pytest.mark.gpu
def test_cuda_sizes_the_cache_from_gpu_memory_utilization_after_a_profile_run(tiny_model_dir):
    runtime = build(tiny_model_dir, "device=cuda", "cache.gpu_memory_utilization=0.3",
                    "scheduler.max_num_batched_tokens=256")
    plan = runtime.resolved.gpu_memory_plan
    assert plan is not None and plan["peak_activation_gib"] > 0 and plan["weights_gib"] > 0
    assert plan["budget_gib"] == pytest.approx(plan["total_gib"] * 0.3)
    pages = int(plan["kv_cache_gib"] * GIB) // page_bytes(torch.float32)
    assert abs(runtime.resolved.num_pages - pages) <= 1
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= plan["budget_gib"] * GIB
    num_pages = runtime.resolved.num_pages
    del runtime
    gc.collect()
    torch.cuda.empty_cache()
    smaller = build(tiny_model_dir, "device=cuda", "cache.gpu_memory_utilization=0.2",
                    "scheduler.max_num_batched_tokens=256")
    assert smaller.resolved.num_pages < num_pages
