"""KV-cache store: write this step's k, v into the paged cache at their slots.

Cache layout (toolkit/kv/cache_pool.py, FlashInfer NHD): [num_pages, 2, page_size, Hkv, D],
[:, 0] is K and [:, 1] is V; slot = page * page_size + offset. Values are cast to the
cache dtype, as KVCachePool.write does. Negative slots (padding rows, e.g. of a CUDA-graph
batch) are skipped. ``store_kv`` runs the Triton kernel on CUDA tensors, the twin otherwise.
"""

from __future__ import annotations

import torch


def _check_unquantized(cache: torch.Tensor) -> None:
    """fp8 pages (one-byte floats) carry per-vector scales that only KVCachePool.write
    maintains."""
    if cache.dtype.is_floating_point and cache.element_size() == 1:
        raise ValueError(f"store_kv writes unquantized caches; {cache.dtype} pages need "
                         "KVCachePool.write (it sets their scales)")


def store_kv_ref(cache: torch.Tensor, slot_mapping: torch.Tensor, k: torch.Tensor,
                 v: torch.Tensor) -> None:
    """cache [num_pages, 2, P, Hkv, D] (in place), slot_mapping [T] int, k, v [T, Hkv, D]."""
    _check_unquantized(cache)
    page_size = cache.shape[2]
    valid = slot_mapping >= 0
    if not bool(valid.all()):
        slot_mapping, k, v = slot_mapping[valid], k[valid], v[valid]
    pages = torch.div(slot_mapping, page_size, rounding_mode="floor")
    offsets = slot_mapping % page_size
    cache[pages, 0, offsets] = k.to(cache.dtype)
    cache[pages, 1, offsets] = v.to(cache.dtype)


def store_kv_triton(cache: torch.Tensor, slot_mapping: torch.Tensor, k: torch.Tensor,
                    v: torch.Tensor) -> None:
    """The Triton kernel (imports triton on first call); same contract as the twin.
    k and v may be strided views (slices of a fused QKV output) whose per-token (Hkv, D)
    blocks are contiguous."""
    from toolkit.kernels._kv_store_triton import launch

    _check_unquantized(cache)
    launch(cache, slot_mapping, k, v)


def store_kv(cache: torch.Tensor, slot_mapping: torch.Tensor, k: torch.Tensor,
             v: torch.Tensor) -> None:
    """Triton on CUDA tensors, the torch twin otherwise."""
    if cache.is_cuda:
        store_kv_triton(cache, slot_mapping, k, v)
    else:
        store_kv_ref(cache, slot_mapping, k, v)
