"""The contract between the model's attention layers and an attention implementation."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from toolkit.attention.forward_batch import ForwardBatch
from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.kv.cache_pool import KVCachePool


class AttentionBackend(ABC):
    """Paged attention over a KVCachePool, driven by FlashInfer-format page tables.

    Life cycle per step: ``plan(batch)`` once, before the layer loop (host-side work:
    index building, wrapper planning); then ``forward(layer_id, q, k, v)`` once per layer.
    Attention is causal within each request; the queries of request i sit at the last
    ``qo_len_i`` positions of its ``seq_len_i`` KV positions.

    ``kernels``: the CPU kernel route the backend was built with (toolkit.kernels.route;
    build_runtime passes the one it resolved, the default is the torch ops). A backend that
    runs no CPU kernels keeps it only so that a copy of it can be built alike.
    """

    def __init__(self, kv_pool: KVCachePool, num_qo_heads: int, num_kv_heads: int,
                 head_dim: int, scale: float | None = None, *,
                 kernels: KernelRoute = TORCH) -> None:
        self.kv_pool = kv_pool
        self.kernels = kernels
        self.num_qo_heads = num_qo_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = scale if scale is not None else head_dim**-0.5
        self.batch_invariant = False
        """Each query row's output depends only on that row and its request's KV positions
        up to its own: not on the batch, on how many queries its request brought this step,
        nor on which of its pages were cached (set by ``enable_batch_invariance``)."""

    def enable_batch_invariance(self) -> bool:
        """Make ``forward`` batch-invariant (``device.deterministic``); returns whether this
        backend can, on this KV pool. The default cannot (a GPU library's split heuristics
        are its own)."""
        return False

    @abstractmethod
    def plan(self, batch: ForwardBatch) -> None:
        """Prepare this step's metadata; called once per forward."""

    @abstractmethod
    def forward(self, layer_id: int, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> torch.Tensor:
        """Write k/v into the layer's pages at the batch's slots, then attend.

        q: [T, num_qo_heads, head_dim]; k, v: [T, num_kv_heads, head_dim]
        returns [T, num_qo_heads, head_dim]
        """
