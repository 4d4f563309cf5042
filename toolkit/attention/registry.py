"""Attention backends by name; factories take (kv_pool, num_qo_heads, num_kv_heads,
head_dim, scale=None)."""

from __future__ import annotations

from toolkit.attention.base import AttentionBackend
from toolkit.kv.cache_pool import KVCachePool
from toolkit.registry import Registry

ATTENTION_BACKENDS = Registry[AttentionBackend]("attention backend")


@ATTENTION_BACKENDS.register("torch_ref")
def _torch_ref(kv_pool: KVCachePool, num_qo_heads: int, num_kv_heads: int, head_dim: int,
               scale: float | None = None) -> AttentionBackend:
    from toolkit.attention.torch_ref import TorchRefBackend

    return TorchRefBackend(kv_pool, num_qo_heads, num_kv_heads, head_dim, scale)
