"""Paged attention on CUDA with FlashInfer's batch wrappers (flashinfer-python 0.6-0.7).

One float workspace serves two wrappers, built once: BatchDecodeWithPagedKVCacheWrapper
for steps where every request has one query token, BatchPrefillWithPagedKVCacheWrapper
(causal, queries aligned to the end of each request's KV, as in torch_ref) for every other
step: prefills, prefill chunks, decodes mixed with them, and 1 + k token verification.
``plan`` plans the chosen wrapper once per step from the ForwardBatch page table; each
layer's ``forward`` stores K/V with the Triton KV-store kernel, then calls ``run``.
For CUDA graphs (toolkit/runner/cuda_graph_runner.py) ``init_cuda_graphs`` adds one
``use_cuda_graph=True`` decode wrapper per captured batch size over static page-table
buffers, and ``plan_cuda_graph`` plans the one of a padded decode batch.

Per-layer attention (``layers``, base.LayerAttention): the layers are grouped by how they
attend (window_left, logits_soft_cap, scale); each group has its own wrappers (decode,
prefill and, for CUDA graphs, one per captured size), all over the one float workspace
(they run one after another on one stream), planned with the group's ``window_left``,
``logits_soft_cap`` and ``sm_scale``, and each layer runs its group's. A model whose layers
all attend alike has one group, as before. The page table keeps every page of a request,
also those wholly outside a sliding window (FlashInfer skips them; freeing them is an
optimisation left out).

flashinfer is imported only here, when the backend is built (see registry.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from toolkit.attention.base import AttentionBackend, LayerAttention
from toolkit.attention.forward_batch import ForwardBatch
from toolkit.kernels.kv_store import store_kv
from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.kv.cache_pool import KVCachePool

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
                 head_dim: int, scale: float | None = None, *,
                 kernels: KernelRoute = TORCH,
                 layers: Sequence[LayerAttention] | None = None) -> None:
        super().__init__(kv_pool, num_qo_heads, num_kv_heads, head_dim, scale, kernels=kernels,
                         layers=layers)
        check_supported(kv_pool, num_qo_heads, num_kv_heads, head_dim)
        self.device = kv_pool.caches[0].device
        self.dtype = kv_pool.caches[0].dtype
        self.use_tensor_cores = num_qo_heads // num_kv_heads >= MIN_TENSOR_CORE_GROUP
        """FlashInfer's decode wrappers take the tensor-core (prefill-kernel) route."""
        self._groups: tuple[LayerAttention, ...] = tuple(dict.fromkeys(self.layers))
        """The distinct ways the layers attend, in order of first use."""
        self._group_of_layer = [self._groups.index(layer) for layer in self.layers]
        """Layer id -> its index in ``_groups`` (and in every wrapper list)."""
        self._workspace: torch.Tensor | None = None
        self._group_wrappers = [self._create_wrappers() for _ in self._groups]
        """(decode wrapper, prefill wrapper) of each group."""
        self._decode, self._prefill = self._group_wrappers[0]  # the first group's
        self._graph_wrappers: dict[int, object] = {}
        """Captured batch size -> its use_cuda_graph decode wrapper (the first group's)
        (init_cuda_graphs)."""
        self._group_graph_wrappers: dict[int, list] = {}
        """Captured batch size -> its use_cuda_graph decode wrapper of each group."""
        self._graph_slots: torch.Tensor | None = None
        self._wrappers: list | None = None
        """This step's planned wrapper of each group."""
        self._wrapper = None
        """This step's planned wrapper of the first group."""
        self._slot_mapping: torch.Tensor | None = None
        self._plan_done: torch.cuda.Event | None = None

    def _create_wrappers(self):
        """(decode wrapper, prefill wrapper) of one group over the backend's one zeroed
        float workspace (allocated by the first call)."""
        if self.device.type != "cuda":
            raise ValueError(f"attention=flashinfer needs a CUDA KV cache, not {self.device}")
        import flashinfer

        if self._workspace is None:
            # NOTE: the decode workspace "must be initialized to 0 for its first use".
            self._workspace = torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8,
                                          device=self.device)
        workspace = self._workspace
        decode = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
            workspace, kv_layout="NHD", use_tensor_cores=self.use_tensor_cores)
        prefill = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, kv_layout="NHD")
        return decode, prefill

    @staticmethod
    def _group_plan_args(group: LayerAttention) -> dict:
        """The plan() keywords of one group: its scale, and its window and soft cap where
        it has them (FlashInfer's defaults otherwise: window_left=-1, no cap)."""
        args = {"sm_scale": group.scale}
        if group.window_left >= 0:
            args["window_left"] = group.window_left
        if group.logits_soft_cap > 0:
            args["logits_soft_cap"] = group.logits_soft_cap
        return args

    def init_cuda_graphs(self, batch_sizes: Sequence[int], max_num_pages: int) -> None:
        """One decode wrapper per batch size (FlashInfer freezes the batch size of a
        use_cuda_graph wrapper), all over shared static buffers that captured kernels read:
        indptr [max B + 1], last_page_len [max B] (sliced per size), indices
        [max_num_pages] and this backend's KV slots [max B]."""
        max_batch_size = max(batch_sizes)

        def buffer(length: int, fill: int, dtype: torch.dtype = torch.int32) -> torch.Tensor:
            return torch.full((length,), fill, dtype=dtype, device=self.device)

        indptr, indices = buffer(max_batch_size + 1, 0), buffer(max_num_pages, 0)
        last_page_len = buffer(max_batch_size, 1)
        self._graph_slots = buffer(max_batch_size, -1, torch.int64)
        self._group_graph_wrappers = {
            size: [self._create_graph_wrapper(indptr[:size + 1], indices, last_page_len[:size])
                   for _ in self._groups]
            for size in batch_sizes}
        self._graph_wrappers = {size: wrappers[0]
                                for size, wrappers in self._group_graph_wrappers.items()}

    def _create_graph_wrapper(self, indptr: torch.Tensor, indices: torch.Tensor,
                              last_page_len: torch.Tensor):
        """A use_cuda_graph decode wrapper for len(last_page_len) requests."""
        import flashinfer

        return flashinfer.BatchDecodeWithPagedKVCacheWrapper(
            self._workspace, kv_layout="NHD", use_cuda_graph=True,
            use_tensor_cores=self.use_tensor_cores,
            paged_kv_indptr_buffer=indptr, paged_kv_indices_buffer=indices,
            paged_kv_last_page_len_buffer=last_page_len)

    def plan_cuda_graph(self, batch: ForwardBatch) -> None:
        """Plan the graph wrapper of a decode-only batch of a captured size (outside the
        graph: before capture and before each replay); its slots go to the static buffer."""
        self._wait_for_previous_plan()
        num_requests = batch.num_requests
        wrappers = self._group_graph_wrappers[num_requests]
        kv_indices = batch.kv_indices.to(self.device, non_blocking=True)  # [num pages] int32
        for wrapper, group in zip(wrappers, self._groups, strict=True):
            wrapper.plan(
                batch.kv_indptr, kv_indices, batch.kv_last_page_len, self.num_qo_heads,
                self.num_kv_heads, self.head_dim, batch.page_size, q_data_type=self.dtype,
                kv_data_type=self.dtype, **self._group_plan_args(group))
        self._graph_slots[:num_requests].copy_(batch.slot_mapping, non_blocking=True)
        self._slot_mapping = self._graph_slots[:num_requests]  # [B], a fixed address
        self._wrappers, self._wrapper = wrappers, wrappers[0]
        self._record_plan()

    def plan(self, batch: ForwardBatch) -> None:
        """Plan each group's decode wrapper (all qo_len == 1) or prefill wrapper, once."""
        self._wait_for_previous_plan()
        kv_indices = batch.kv_indices.to(self.device, non_blocking=True)  # [num pages] int32
        is_decode = int(batch.qo_indptr[-1]) == batch.num_requests
        wrappers = [pair[0 if is_decode else 1] for pair in self._group_wrappers]
        for wrapper, group in zip(wrappers, self._groups, strict=True):
            if is_decode:
                wrapper.plan(
                    batch.kv_indptr, kv_indices, batch.kv_last_page_len, self.num_qo_heads,
                    self.num_kv_heads, self.head_dim, batch.page_size,
                    q_data_type=self.dtype, kv_data_type=self.dtype,
                    **self._group_plan_args(group))
            else:
                wrapper.plan(
                    batch.qo_indptr, batch.kv_indptr, kv_indices, batch.kv_last_page_len,
                    self.num_qo_heads, self.num_kv_heads, self.head_dim, batch.page_size,
                    causal=True, q_data_type=self.dtype, kv_data_type=self.dtype,
                    **self._group_plan_args(group))
        self._wrappers, self._wrapper = wrappers, wrappers[0]
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
        out = self._wrappers[self._group_of_layer[layer_id]].run(query, cache)  # [T, Hq, D]
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
