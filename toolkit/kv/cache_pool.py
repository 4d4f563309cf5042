"""The KV tensors: one paged cache per layer."""

from __future__ import annotations

import torch


class KVCachePool:
    """Per-layer caches ``[num_pages, 2, page_size, num_kv_heads, head_dim]`` (NHD; [:, 0]
    is K, [:, 1] is V), the layout FlashInfer's paged wrappers take as one tensor."""

    def __init__(self, num_layers: int, num_pages: int, page_size: int, num_kv_heads: int,
                 head_dim: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        self.num_pages = num_pages
        self.page_size = page_size
        shape = (num_pages, 2, page_size, num_kv_heads, head_dim)
        self.caches = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]

    @staticmethod
    def bytes_per_page(num_layers: int, page_size: int, num_kv_heads: int, head_dim: int,
                       dtype: torch.dtype) -> int:
        elem = torch.empty((), dtype=dtype).element_size()
        return num_layers * 2 * page_size * num_kv_heads * head_dim * elem

    def write(self, layer_id: int, slot_mapping: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor) -> None:
        """Store k, v [T, H_kv, D] at slots [T] (slot = page * page_size + offset)."""
        cache = self.caches[layer_id]
        pages = torch.div(slot_mapping, self.page_size, rounding_mode="floor")
        offsets = slot_mapping % self.page_size
        cache[pages, 0, offsets] = k.to(cache.dtype)
        cache[pages, 1, offsets] = v.to(cache.dtype)
