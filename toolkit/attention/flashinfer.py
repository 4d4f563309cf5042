"""Paged attention on CUDA with FlashInfer's batch wrappers (flashinfer-python 0.6-0.7).

One float workspace serves two wrappers, built once: BatchDecodeWithPagedKVCacheWrapper
for steps where every request has one query token, BatchPrefillWithPagedKVCacheWrapper
(causal, queries aligned to the end of each request's KV, as in torch_ref) for every other
step: prefills, prefill chunks, decodes mixed with them, and 1 + k token verification.
``plan`` plans the chosen wrapper once per step from the ForwardBatch page table; each
layer's ``forward`` stores K/V with the Triton KV-store kernel, then calls ``run``.

flashinfer is imported only here, when the backend is built (see registry.py).
"""

from __future__ import annotations

import torch

from toolkit.attention.base import AttentionBackend
from toolkit.kernels.kv_store import store_kv
from toolkit.kv.cache_pool import KVCachePool
from toolkit.runner.forward_batch import ForwardBatch

WORKSPACE_BYTES = 128 * 1024 * 1024
"""Float workspace shared by both wrappers (FlashInfer's recommended size)."""
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16)
"""Cache (and query) dtypes this backend plans for."""
SUPPORTED_HEAD_DIMS = (64, 128, 256)
"""Head sizes FlashInfer's prebuilt and JIT kernels cover."""
MIN_TENSOR_CORE_GROUP = 4
"""Query heads per KV head from which the decode wrapper uses tensor cores."""


def check_supported(kv_pool: KVCachePool, num_qo_heads: int, num_kv_heads: int,
                    head_dim: int) -> None:
    """Raise ValueError (one line) for a pool or model shape this backend cannot serve."""
    cache = kv_pool.caches[0]
    if kv_pool.quantized or cache.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"attention=flashinfer supports float16/bfloat16 KV caches, not "
                         f"{cache.dtype}; use attention=torch_ref")
    if head_dim not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"attention=flashinfer supports head_dim in {SUPPORTED_HEAD_DIMS}, "
                         f"not {head_dim}; use attention=torch_ref")
    if num_qo_heads % num_kv_heads:
        raise ValueError(f"{num_qo_heads} query heads are not a multiple of {num_kv_heads}")


class FlashInferBackend(AttentionBackend):
    """FlashInfer paged attention over a KVCachePool (NHD, [num_pages, 2, P, Hkv, D])."""

    def __init__(self, kv_pool: KVCachePool, num_qo_heads: int, num_kv_heads: int,
                 head_dim: int, scale: float | None = None) -> None:
        super().__init__(kv_pool, num_qo_heads, num_kv_heads, head_dim, scale)
        check_supported(kv_pool, num_qo_heads, num_kv_heads, head_dim)
        self.device = kv_pool.caches[0].device
        self.dtype = kv_pool.caches[0].dtype
        self._decode, self._prefill = self._create_wrappers()
        self._wrapper = None
        self._slot_mapping: torch.Tensor | None = None
        self._plan_done: torch.cuda.Event | None = None

    def _create_wrappers(self):
        """(decode wrapper, prefill wrapper) sharing one zeroed float workspace."""
        if self.device.type != "cuda":
            raise ValueError(f"attention=flashinfer needs a CUDA KV cache, not {self.device}")
        import flashinfer

        # NOTE: the decode workspace "must be initialized to 0 for its first use".
        workspace = torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device=self.device)
        use_tensor_cores = self.num_qo_heads // self.num_kv_heads >= MIN_TENSOR_CORE_GROUP
        decode = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
            workspace, kv_layout="NHD", use_tensor_cores=use_tensor_cores)
        prefill = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, kv_layout="NHD")
        return decode, prefill

    def plan(self, batch: ForwardBatch) -> None:
        """Plan the decode wrapper (all qo_len == 1) or the prefill wrapper, once."""
        self._wait_for_previous_plan()
        kv_indices = batch.kv_indices.to(self.device, non_blocking=True)  # [num pages] int32
        is_decode = int(batch.qo_indptr[-1]) == batch.num_requests
        if is_decode:
            self._decode.plan(
                batch.kv_indptr, kv_indices, batch.kv_last_page_len, self.num_qo_heads,
                self.num_kv_heads, self.head_dim, batch.page_size, sm_scale=self.scale,
                q_data_type=self.dtype, kv_data_type=self.dtype)
            self._wrapper = self._decode
        else:
            self._prefill.plan(
                batch.qo_indptr, batch.kv_indptr, kv_indices, batch.kv_last_page_len,
                self.num_qo_heads, self.num_kv_heads, self.head_dim, batch.page_size,
                causal=True, sm_scale=self.scale, q_data_type=self.dtype,
                kv_data_type=self.dtype)
            self._wrapper = self._prefill
        self._slot_mapping = batch.slot_mapping.to(self.device, non_blocking=True)  # [T]
        self._record_plan()

    def forward(self, layer_id: int, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> torch.Tensor:
        """q [T, Hq, D], k/v [T, Hkv, D] -> [T, Hq, D] in q's dtype."""
        cache = self.kv_pool.caches[layer_id]
        store_kv(cache, self._slot_mapping, k, v)
        query = q if q.dtype == self.dtype else q.to(self.dtype)
        if not query.is_contiguous():  # (some FlashInfer backends misread strided q)
            query = query.contiguous()
        out = self._wrapper.run(query, cache)  # [T, Hq, D]
        return out if out.dtype == q.dtype else out.to(q.dtype)

    def _wait_for_previous_plan(self) -> None:
        """NOTE: plan() stages its metadata in a reused pinned host buffer and copies it
        asynchronously; planning again before that copy ends would corrupt it."""
        if self._plan_done is not None:
            self._plan_done.synchronize()

    def _record_plan(self) -> None:
        if self.device.type == "cuda":
            self._plan_done = torch.cuda.Event()
            self._plan_done.record()
