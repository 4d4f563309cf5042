"""Embeddings from the served model: a forward over whole prompts on a scratch KV pool,
then pooling of the final-normed hidden states.

The live KV pool and the scheduler are not touched: each batch gets its own
``KVCachePool`` sized to its prompts and a fresh instance of the runtime's attention
backend class over it, so embedding never competes with generation for pages. The caller
(AsyncEngine's loop) runs batches between engine steps, on the engine thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F

from toolkit.attention.base import AttentionBackend
from toolkit.attention.forward_batch import ForwardBatch
from toolkit.kv.cache_pool import KVCachePool

POOLING_TYPES = ("last", "mean")
"""last: the hidden state of each prompt's last token (vLLM's default for decoder models);
mean: the average over all of its tokens."""


class Embedder:
    """Pools the served model's final-normed hidden states over token-id prompts."""

    def __init__(self, model: torch.nn.Module, attention: AttentionBackend, page_size: int,
                 device: torch.device | str) -> None:
        """``attention``: the runtime's backend; its class, head layout, scale, kernel
        route and per-layer attention are reused over scratch pools with the live pool's
        layer count and dtype."""
        self.model = model
        self.page_size = page_size
        self.device = device
        self._backend_cls = type(attention)
        self._num_layers = len(attention.kv_pool.caches)
        self._kv_dtype = attention.kv_pool.dtype
        self._heads = (attention.num_qo_heads, attention.num_kv_heads, attention.head_dim)
        self._scale = attention.scale
        self._layers = attention.layers
        self._kernels = attention.kernels

    @torch.inference_mode()
    def embed(self, prompts: Sequence[Sequence[int]], pooling: str = "last",
              normalize: bool = True) -> list[list[float]]:
        """One float32 vector per prompt (L2-normalized when ``normalize``), all prompts in
        one forward; the caller bounds the batch's size."""
        if pooling not in POOLING_TYPES:
            raise ValueError(f"pooling must be one of {POOLING_TYPES}, got {pooling!r}")
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        batch = scratch_batch(prompts, self.page_size, self.device)
        attention = self._scratch_attention(int(batch.kv_indptr[-1]))
        attention.plan(batch)
        hidden = self.model(batch.input_ids, batch.positions, attention)  # [T, H]
        pooled = pool_hidden(hidden.float(), batch.qo_indptr.tolist(), pooling)  # [B, H]
        if normalize:
            pooled = F.normalize(pooled, p=2, dim=-1)
        return pooled.cpu().tolist()

    def _scratch_attention(self, num_pages: int) -> AttentionBackend:
        num_qo_heads, num_kv_heads, head_dim = self._heads
        pool = KVCachePool(self._num_layers, num_pages, self.page_size, num_kv_heads, head_dim,
                           self._kv_dtype, self.device)
        return self._backend_cls(pool, num_qo_heads, num_kv_heads, head_dim, self._scale,
                                 kernels=self._kernels, layers=self._layers)


def pool_hidden(hidden: torch.Tensor, qo_indptr: list[int], pooling: str) -> torch.Tensor:
    """hidden [T, H], prompts back to back at ``qo_indptr`` [B+1] -> [B, H]."""
    if pooling == "last":
        return hidden[torch.tensor(qo_indptr[1:], device=hidden.device) - 1]
    return torch.stack([hidden[start:end].mean(dim=0)
                        for start, end in pairwise(qo_indptr)])


def scratch_batch(prompts: Sequence[Sequence[int]], page_size: int,
                  device: torch.device | str) -> ForwardBatch:
    """Whole prompts as one prefill step over pages 0.. of a scratch pool, each prompt on
    its own consecutive pages."""
    input_ids: list[int] = []
    positions: list[int] = []
    qo_indptr, kv_indptr, last_page_len = [0], [0], []
    for prompt in prompts:
        first_page = kv_indptr[-1]
        num_pages = -(-len(prompt) // page_size)
        input_ids.extend(prompt)
        positions.extend(range(len(prompt)))
        qo_indptr.append(len(input_ids))
        kv_indptr.append(first_page + num_pages)
        last_page_len.append(len(prompt) - (num_pages - 1) * page_size)
    slots = [kv_indptr[i] * page_size + p
             for i, prompt in enumerate(prompts) for p in range(len(prompt))]

    def tensor(values: list[int], dtype: torch.dtype, on_device: bool = True) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=device if on_device else "cpu")

    return ForwardBatch(
        input_ids=tensor(input_ids, torch.int64),
        positions=tensor(positions, torch.int64),
        qo_indptr=tensor(qo_indptr, torch.int32, on_device=False),
        kv_indptr=tensor(kv_indptr, torch.int32, on_device=False),
        kv_indices=tensor(list(range(kv_indptr[-1])), torch.int32),
        kv_last_page_len=tensor(last_page_len, torch.int32, on_device=False),
        slot_mapping=tensor(slots, torch.int64),
        logits_indices=tensor([], torch.int64),
        page_size=page_size,
    )
