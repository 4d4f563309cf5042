"""How much GPU memory the KV cache gets: a profile run under cache.gpu_memory_utilization.

As vLLM does: the engine may use ``total * gpu_memory_utilization`` bytes of the GPU. The
weights, the peak activations of one worst-case forward (max_num_batched_tokens tokens in
one prefill, then logits and sampling for max_num_seqs rows) and the memory the process
took outside torch's allocator (CUDA context growth, library workspaces) come off first;
the KV cache gets the rest. On CPU the KV cache is sized from cache.cpu_kv_cache_gb
instead (toolkit.resolve.resolve_num_pages); nothing here runs there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from toolkit.config.errors import ConfigError
from toolkit.kv.cache_pool import KVCachePool
from toolkit.protocol import Request, SamplingParams
from toolkit.protocol.outputs import ScheduledRequest

GIB = 1 << 30


@dataclass(frozen=True)
class MemorySnapshot:
    """The device's memory at one moment (bytes)."""

    free_bytes: int
    total_bytes: int
    torch_reserved_bytes: int
    """Held by this process's torch caching allocator."""
    torch_allocated_bytes: int
    """In live tensors of this process."""


@dataclass(frozen=True)
class GpuMemoryProfile:
    """What the engine needs besides its KV cache, measured by one profile run (bytes)."""

    total_bytes: int
    free_bytes_at_start: int
    """Free before the weights were loaded (what other processes leave this engine)."""
    weights_bytes: int
    peak_activation_bytes: int
    """Peak of the profiled forward + logits + sampling above the weights."""
    non_torch_bytes: int
    """Taken by this process outside torch's allocator since the start snapshot."""

    def kv_cache_bytes(self, gpu_memory_utilization: float) -> int:
        """Bytes left for KV pages under ``gpu_memory_utilization``; ConfigError when the
        engine's share is more than was free at start (another process holds the GPU)."""
        requested = int(self.total_bytes * gpu_memory_utilization)
        if requested > self.free_bytes_at_start:
            raise ConfigError(
                f"cache.gpu_memory_utilization={gpu_memory_utilization} asks for "
                f"{requested / GIB:.2f} GiB but only {self.free_bytes_at_start / GIB:.2f} GiB "
                f"of {self.total_bytes / GIB:.2f} GiB was free at start; lower it")
        return requested - self.weights_bytes - self.peak_activation_bytes - self.non_torch_bytes

    def summary(self, gpu_memory_utilization: float) -> dict[str, float]:
        """The plan in GiB, for the resolved-config log line."""
        return {
            "total_gib": self.total_bytes / GIB,
            "budget_gib": self.total_bytes * gpu_memory_utilization / GIB,
            "weights_gib": self.weights_bytes / GIB,
            "peak_activation_gib": self.peak_activation_bytes / GIB,
            "non_torch_gib": self.non_torch_bytes / GIB,
            "kv_cache_gib": self.kv_cache_bytes(gpu_memory_utilization) / GIB,
        }


def snapshot(device: torch.device | str) -> MemorySnapshot:
    """The CUDA device's memory now (take one before loading the weights)."""
    torch.cuda.synchronize(device)
    free, total = torch.cuda.mem_get_info(device)
    return MemorySnapshot(free, total, torch.cuda.memory_reserved(device),
                          torch.cuda.memory_allocated(device))


def profile_gpu_memory(model: torch.nn.Module, make_attention: Callable[[KVCachePool], object],
                       start: MemorySnapshot, pool_shape: dict, num_tokens: int,
                       num_sampled: int, device: torch.device | str) -> GpuMemoryProfile:
    """Run one ``num_tokens``-token prefill (then logits and sampling for ``num_sampled``
    rows) on a throwaway KV pool of just enough pages and measure the peak.

    ``pool_shape``: KVCachePool's keyword arguments but num_pages and device
    (num_layers, page_size, num_kv_heads, head_dim, dtype)."""
    torch.cuda.empty_cache()
    weights_bytes = torch.cuda.memory_allocated(device) - start.torch_allocated_bytes
    num_pages = -(-num_tokens // pool_shape["page_size"])
    pool = KVCachePool(num_pages=num_pages, device=device, **pool_shape)
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    profile_step(model, make_attention(pool), pool, num_tokens, num_sampled, device)
    torch.cuda.synchronize(device)
    peak_activation_bytes = torch.cuda.max_memory_allocated(device) - baseline
    del pool
    torch.cuda.empty_cache()
    now = snapshot(device)
    taken = start.free_bytes - now.free_bytes
    torch_growth = now.torch_reserved_bytes - start.torch_reserved_bytes
    return GpuMemoryProfile(start.total_bytes, start.free_bytes, weights_bytes,
                            peak_activation_bytes, max(taken - torch_growth, 0))


@torch.inference_mode()
def profile_step(model: torch.nn.Module, attention, pool: KVCachePool, num_tokens: int,
                 num_sampled: int, device: torch.device | str) -> torch.Tensor:
    """The worst step the scheduler emits: one prefill of num_tokens into ``pool``'s first
    pages, logits for the last num_sampled rows, sampling with top-k/top-p (its sort is
    the sampler's largest temporary). Returns the sampled ids [num_sampled]."""
    from toolkit.runner.batch_builder import build_forward_batch
    from toolkit.runner.sampler import sample

    request = Request("profile", [0] * num_tokens, SamplingParams(max_tokens=1))
    request.page_ids = list(range(-(-num_tokens // pool.page_size)))
    batch = build_forward_batch([ScheduledRequest(request, 0, num_tokens)], pool.page_size,
                                device)
    attention.plan(batch)
    hidden = model(batch.input_ids, batch.positions, attention)  # [T, H]
    logits = model.compute_logits(hidden[-num_sampled:])  # [N, V] float32
    params = [SamplingParams(temperature=1.0, top_k=50, top_p=0.9)] * num_sampled
    return sample(logits, params, [None] * num_sampled)
