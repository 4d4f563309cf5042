"""Paged attention in plain torch: the CPU backend and the oracle for the GPU ones.

It consumes exactly the FlashInfer page table (kv_indptr, kv_indices, kv_last_page_len).
``plan`` turns the table into cache-row indices once per step; each layer then does one
index_copy_ for the new K/V, one gather plus one SDPA call for all decode requests
together, and one gather plus one SDPA call per prefill chunk. An fp8 pool (see
KVCachePool) is quantized as it is written and dequantized to q's dtype as it is gathered.
Built with the native route (``kernels``, toolkit.kernels.route) over a CPU cache the C++
kernels take (float32/bfloat16, or fp8 e4m3 with its scales), the store is one call and
decode attention one call that walks the pages itself, with no gather (an fp8 cache read
in place: half the bytes of bfloat16, the most of a many-stream decode step); this is
decided once, at construction.

Batch-invariant (``enable_batch_invariance``, native kernels only): every query row, prefill
rows included, is attended as a decode of its own position by the native kernel, which cuts
a request's positions into fixed 128-position ranges. A row's output is then the same
whether its request is prefilled whole, in chunks, after a prefix-cache hit, verified with
drafts or decoded, and whatever else shares the step.

Per-layer attention (``layers``, see base.LayerAttention): a sliding window is a mask
(``plan`` builds one per distinct window, for the decode rows and for each prefill) and on
the native route the kernel's ``window_left``; soft-capped logits leave SDPA for explicit
scores, tanh capping, mask and softmax (the native kernel caps in its own loop). Such a
layer's prefill attends PREFILL_QUERY_BLOCK queries at a time over the keys their windows
reach; the native kernel skips the ranges wholly before a row's window. The page table
keeps every page (freeing pages that slid out of every window is an optimisation left
out), and the torch route's decode gathers them all before masking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import torch
import torch.nn.functional as F

from toolkit.attention.base import AttentionBackend, LayerAttention, NativeDecodeStep
from toolkit.attention.forward_batch import ForwardBatch
from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.kv.cache_pool import KVCachePool, dequantize_kv, quantize_kv

PREFILL_QUERY_BLOCK = 256
"""Queries of a windowed or soft-capped layer's prefill attended at a time."""


@dataclass(frozen=True)
class _DecodePlan:
    """The rows attended as decodes: all qo_len == 1 requests (padded to the longest one on
    the torch route), or every query row on the batch-invariant route."""

    num_decodes: int
    """Bd: how many rows decode this step."""
    query_rows: torch.Tensor | None
    """[Bd] int64 rows of q belonging to decode requests; None when they are rows 0..Bd-1."""
    page_starts: torch.Tensor | None
    """[Bd] int32: where each request's pages start in kv_indices; the native route only."""
    seq_lens: torch.Tensor | None
    """[Bd] int32 KV lengths; the native route only."""
    k_rows: torch.Tensor | None
    """[Bd * L] int64 rows of the flat per-layer cache holding K (padding points at row 0);
    None on the native route, which reads the pages through kv_indices."""
    v_rows: torch.Tensor | None
    """[Bd * L] int64 rows holding V (k_rows + page_size); None on the native route."""
    mask: torch.Tensor | None
    """[Bd, 1, 1, L] bool, True where a KV position is real; None when no padding."""
    max_len: int
    """L: the longest KV length among decode requests."""
    window_masks: dict[int, torch.Tensor]
    """window_left -> [Bd, 1, 1, L] bool ``mask`` narrowed to each row's window, for every
    sliding window of the layers; the torch route only."""


@dataclass(frozen=True)
class _PrefillPlan:
    """One request with qo_len > 1 (a whole prompt or a chunk of one)."""

    query_start: int
    """First row of this request in q."""
    query_end: int
    """One past the last row of this request in q."""
    k_rows: torch.Tensor
    """[seq_len] int64 rows of the flat per-layer cache holding K."""
    v_rows: torch.Tensor
    """[seq_len] int64 rows holding V (k_rows + page_size)."""
    mask: torch.Tensor | None
    """[qo_len, seq_len] bool causal mask offset by the cached prefix; None: plain causal."""
    window_masks: dict[int, torch.Tensor]
    """window_left -> [qo_len, seq_len] bool causal mask narrowed to each query's window
    (-1: the causal mask), for every layer that is not plain."""


def _cache_k_rows(batch: ForwardBatch, device: torch.device) -> torch.Tensor:
    """[kv_indptr[-1] * page_size] int64: the flat K row of every position of every page.

    The flat view of a layer cache [num_pages, 2, P, H, D] is [num_pages * 2 * P, H, D];
    K of (page, offset) sits at row page * 2P + offset and V at that row + P.
    """
    page_size = batch.page_size
    pages = batch.kv_indices.to(device=device, dtype=torch.int64)
    offsets = torch.arange(page_size, device=device)
    return (pages[:, None] * (2 * page_size) + offsets).reshape(-1)


def _window_mask(query_pos: torch.Tensor, kv_pos: torch.Tensor,
                 window_left: int) -> torch.Tensor:
    """[Q, K] bool: key position within ``window_left`` before the query's, or at it (the
    causal bound is the caller's)."""
    return kv_pos[None, :] >= query_pos[:, None] - window_left


def _attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
               mask: torch.Tensor | None, is_causal: bool, layer: LayerAttention,
               ) -> torch.Tensor:
    """SDPA with ``layer``'s scale, and its soft-capped logits where it has a cap.

    q [..., Q, D], keys/values [..., K, D], mask broadcastable to [..., Q, K] (True:
    attend), ``is_causal`` (with Q == K) instead of a mask -> [..., Q, D]."""
    cap = layer.logits_soft_cap
    if cap <= 0:
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask,
                                              is_causal=is_causal, scale=layer.scale)
    scores = torch.matmul(q, keys.transpose(-1, -2)) * layer.scale  # [..., Q, K]
    scores = torch.tanh(scores / cap) * cap
    if is_causal:
        mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(values.dtype)
    return torch.matmul(weights, values)


def _blocked_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                       mask: torch.Tensor, layer: LayerAttention) -> torch.Tensor:
    """A prefill's attention for a windowed or soft-capped layer, PREFILL_QUERY_BLOCK
    queries at a time over the keys their windows reach (soft-capped scores of the
    whole prompt at once would take Hq * qo_len * seq_len floats).

    q: [Hq, Q, D] at the last Q of S positions; keys, values: [Hq, S, D]; mask [Q, S]
    (causal, narrowed to each query's window) -> [Hq, Q, D]."""
    num_queries, seq_len = mask.shape
    first_position = seq_len - num_queries
    out = torch.empty_like(q)
    for start in range(0, num_queries, PREFILL_QUERY_BLOCK):
        end = min(start + PREFILL_QUERY_BLOCK, num_queries)
        last_key = first_position + end  # exclusive: the block's last query sees it
        first_key = 0 if layer.window_left < 0 else max(
            0, first_position + start - layer.window_left)
        out[:, start:end] = _attention(
            q[None, :, start:end], keys[None, :, first_key:last_key],
            values[None, :, first_key:last_key], mask[start:end, first_key:last_key],
            False, layer)[0]
    return out


def _native_cache_ops(kernels: KernelRoute, kv_pool: KVCachePool) -> ModuleType | None:
    """The C++ kernels when the route is native and they take the pool's caches: float32
    or bfloat16 on the CPU, or fp8 e4m3 (with float32 scales; q, k and v then go in as
    float32 or bfloat16, see _kernel_dtype)."""
    cache = kv_pool.caches[0]
    if not kv_pool.quantized:
        return kernels.native_ops(cache)
    if kernels.is_native and cache.is_cpu and cache.dtype == torch.float8_e4m3fn:
        return kernels.ops
    return None


def _kernel_dtype(x: torch.Tensor) -> torch.Tensor:
    """x itself in float32/bfloat16, else x in float32 (exact from float16), for the fp8
    kernels."""
    return x if x.dtype in (torch.float32, torch.bfloat16) else x.float()


def _gather_fp8(flat: torch.Tensor, scales: torch.Tensor, rows: torch.Tensor,
                dtype: torch.dtype) -> torch.Tensor:
    """Rows [R] of an fp8 cache (flat [num_pages * 2P, Hkv, D], scales [.., Hkv]),
    dequantized -> [R, Hkv, D] in ``dtype``."""
    return dequantize_kv(flat.index_select(0, rows), scales.index_select(0, rows), dtype)


class TorchRefBackend(AttentionBackend):
    """FlashInfer-compatible paged attention with torch SDPA (any device, any float dtype)."""

    def __init__(self, kv_pool: KVCachePool, num_qo_heads: int, num_kv_heads: int,
                 head_dim: int, scale: float | None = None, *,
                 kernels: KernelRoute = TORCH,
                 layers: Sequence[LayerAttention] | None = None) -> None:
        super().__init__(kv_pool, num_qo_heads, num_kv_heads, head_dim, scale, kernels=kernels,
                         layers=layers)
        self.group_size = num_qo_heads // num_kv_heads
        self._ops = _native_cache_ops(kernels, kv_pool)
        """The C++ kernels that store and attend to decodes (the native route over a pool
        they take), or None: torch ops."""
        self._native = self._ops is not None
        """Every step stores and attends to decodes with the native kernels."""
        self._write_k_rows: torch.Tensor | None = None
        self._write_v_rows: torch.Tensor | None = None
        self._slots: torch.Tensor | None = None
        self._kv_indices: torch.Tensor | None = None
        self._decode: _DecodePlan | None = None
        self._prefills: list[_PrefillPlan] = []
        self._windows = tuple(sorted({layer.window_left for layer in self.layers
                                      if not layer.is_plain}))
        """The distinct window_left of the layers that are not plain (-1: a soft-capped
        layer without a window); plan masks each."""

    def enable_batch_invariance(self) -> bool:
        """Possible when built with the native route over a pool its kernels take (a CPU
        cache of float32/bfloat16, or fp8 e4m3: each position quantized alone)."""
        self.batch_invariant = self._native
        return self.batch_invariant

    def plan(self, batch: ForwardBatch) -> None:
        device = self.kv_pool.caches[0].device
        page_size = batch.page_size
        slots = batch.slot_mapping.to(device=device, dtype=torch.int64)
        if self._native:
            self._slots = slots
            self._kv_indices = batch.kv_indices.to(device=device, dtype=torch.int32)
            if self.batch_invariant:
                self._decode, self._prefills = self._plan_every_row_as_decode(batch), []
                return
        else:
            self._write_k_rows = (slots // page_size) * (2 * page_size) + slots % page_size
            self._write_v_rows = self._write_k_rows + page_size  # [T] each
        qo_indptr = batch.qo_indptr.tolist()
        page_starts = batch.kv_indptr[:-1].tolist()
        seq_lens = batch.seq_lens().tolist()
        decode_ids = [i for i in range(batch.num_requests) if qo_indptr[i + 1] - qo_indptr[i] == 1]
        needs_rows = not self._native or len(decode_ids) < batch.num_requests  # gathers
        flat_k_rows = _cache_k_rows(batch, device) if needs_rows else None
        windows = self._windows
        self._decode = self._plan_decode(decode_ids, qo_indptr, page_starts, seq_lens,
                                         flat_k_rows, page_size, device, self._native,
                                         windows)
        self._prefills = [
            self._plan_prefill(qo_indptr[i], qo_indptr[i + 1], page_starts[i] * page_size,
                               seq_lens[i], flat_k_rows, page_size, device, windows)
            for i in range(batch.num_requests) if qo_indptr[i + 1] - qo_indptr[i] > 1
        ]

    @staticmethod
    def _plan_every_row_as_decode(batch: ForwardBatch) -> _DecodePlan:
        """The batch-invariant plan: query row t of request i attends to the first
        seq_len_i - qo_len_i + 1 + (t - qo_start_i) positions of i's pages."""
        qo_lens = batch.qo_indptr.diff()  # [B]
        row_owner_starts = batch.qo_indptr[:-1].repeat_interleave(qo_lens)  # [T]
        rows = torch.arange(batch.num_tokens, dtype=qo_lens.dtype)
        lens = (batch.seq_lens() - qo_lens).repeat_interleave(qo_lens) + rows - \
            row_owner_starts + 1  # [T]
        return _DecodePlan(
            num_decodes=batch.num_tokens, query_rows=None,
            page_starts=batch.kv_indptr[:-1].repeat_interleave(qo_lens).to(torch.int32),
            seq_lens=lens.to(torch.int32), k_rows=None, v_rows=None, mask=None,
            max_len=int(lens.max()) if batch.num_tokens else 0, window_masks={})

    @staticmethod
    def _plan_decode(decode_ids: list[int], qo_indptr: list[int], page_starts: list[int],
                     seq_lens: list[int], flat_k_rows: torch.Tensor | None, page_size: int,
                     device: torch.device, native_route: bool,
                     windows: tuple[int, ...]) -> _DecodePlan | None:
        if not decode_ids:
            return None
        query_rows = [qo_indptr[i] for i in decode_ids]
        decode_lens = [seq_lens[i] for i in decode_ids]
        max_len = max(decode_lens)
        rows = None if query_rows == list(range(len(query_rows))) else torch.tensor(
            query_rows, device=device)
        lens = torch.tensor(decode_lens, device=device)  # [Bd]
        if native_route:
            return _DecodePlan(
                num_decodes=len(decode_ids), query_rows=rows,
                page_starts=torch.tensor([page_starts[i] for i in decode_ids],
                                         dtype=torch.int32),
                seq_lens=lens.to(torch.int32), k_rows=None, v_rows=None, mask=None,
                max_len=max_len, window_masks={})
        starts = torch.tensor([page_starts[i] * page_size for i in decode_ids], device=device)
        position = torch.arange(max_len, device=device)  # [L]
        valid = position[None, :] < lens[:, None]  # [Bd, L]
        gather = torch.where(valid, starts[:, None] + position[None, :], 0)  # [Bd, L]
        needs_mask = min(decode_lens) != max_len
        k_rows = flat_k_rows[gather.reshape(-1)]  # [Bd * L]
        window_masks = {
            window: (valid & _window_mask(lens - 1, position, window))[:, None, None, :]
            for window in windows if window >= 0}
        return _DecodePlan(
            num_decodes=len(decode_ids),
            query_rows=rows,
            page_starts=None,
            seq_lens=None,
            k_rows=k_rows,
            v_rows=k_rows + page_size,
            mask=valid[:, None, None, :] if needs_mask else None,
            max_len=max_len,
            window_masks=window_masks,
        )

    @staticmethod
    def _plan_prefill(query_start: int, query_end: int, first_row: int, seq_len: int,
                      flat_k_rows: torch.Tensor, page_size: int, device: torch.device,
                      windows: tuple[int, ...]) -> _PrefillPlan:
        qo_len = query_end - query_start
        mask, window_masks = None, {}
        if seq_len != qo_len or windows:
            query_pos = torch.arange(seq_len - qo_len, seq_len, device=device)  # [qo_len]
            kv_pos = torch.arange(seq_len, device=device)  # [seq_len]
            causal = kv_pos[None, :] <= query_pos[:, None]  # [qo_len, seq_len]
            mask = causal if seq_len != qo_len else None
            window_masks = {window: causal & _window_mask(query_pos, kv_pos, window)
                            if window >= 0 else causal for window in windows}
        k_rows = flat_k_rows[first_row:first_row + seq_len]
        return _PrefillPlan(query_start, query_end, k_rows, k_rows + page_size, mask,
                            window_masks)

    def forward(self, layer_id: int, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> torch.Tensor:
        cache = self.kv_pool.caches[layer_id]
        flat = cache.view(-1, self.num_kv_heads, self.head_dim)  # [num_pages * 2P, Hkv, D]
        scales = None
        if self.kv_pool.scales is not None and self._native:
            self._ops.store_kv_fp8(_kernel_dtype(k), _kernel_dtype(v), cache,
                                   self.kv_pool.scales[layer_id], self._slots)
            scales = self.kv_pool.scales[layer_id].view(-1, self.num_kv_heads)
        elif self.kv_pool.scales is not None:
            scales = self._write_fp8(layer_id, flat, k, v)
        else:
            if k.dtype != cache.dtype:  # (a no-op .to still costs a dispatch per layer)
                k, v = k.to(cache.dtype), v.to(cache.dtype)
            if self._native:
                self._ops.store_kv(k, v, cache, self._slots)
            else:
                flat.index_copy_(0, self._write_k_rows, k)
                flat.index_copy_(0, self._write_v_rows, v)
        layer = self.layers[layer_id]
        if self._decode is not None and not self._prefills and self._decode.query_rows is None:
            return self._attend_decode(cache, flat, q, scales, layer)
        out = torch.empty_like(q)  # [T, Hq, D]
        if self._decode is not None:
            rows = self._decode.query_rows
            num_decodes = self._decode.num_decodes
            decode_q = q[:num_decodes] if rows is None else q.index_select(0, rows)
            decode_out = self._attend_decode(cache, flat, decode_q, scales, layer)
            if rows is None:
                out[:num_decodes] = decode_out
            else:
                out.index_copy_(0, rows, decode_out)
        for prefill in self._prefills:
            out[prefill.query_start:prefill.query_end] = self._attend_prefill(
                flat, q[prefill.query_start:prefill.query_end], prefill, scales, layer)
        return out

    def _write_fp8(self, layer_id: int, flat: torch.Tensor, k: torch.Tensor,
                   v: torch.Tensor) -> torch.Tensor:
        """Quantize k, v [T, Hkv, D] into the fp8 cache rows of this step; returns the
        layer's flat scales [num_pages * 2P, Hkv]."""
        scales = self.kv_pool.scales[layer_id].view(-1, self.num_kv_heads)
        raw = flat.view(torch.uint8)  # NOTE: index_copy_ has no float8 kernel on CPU
        for rows, x in ((self._write_k_rows, k), (self._write_v_rows, v)):
            values, x_scales = quantize_kv(x, flat.dtype)
            raw.index_copy_(0, rows, values.view(torch.uint8))
            scales.index_copy_(0, rows, x_scales)
        return scales

    def native_decode_step(self) -> NativeDecodeStep | None:
        plan = self._decode
        if (not self._native or self._prefills or plan is None or plan.query_rows is not None
                or self.has_layer_variants or self.kv_pool.quantized):
            return None
        return NativeDecodeStep(self.kv_pool.caches, self._slots, self._kv_indices,
                                plan.page_starts, plan.seq_lens, self.scale)

    def _attend_decode(self, cache: torch.Tensor, flat: torch.Tensor, q: torch.Tensor,
                       scales: torch.Tensor | None, layer: LayerAttention) -> torch.Tensor:
        """q: [Bd, Hq, D] -> [Bd, Hq, D]. GQA groups ride on SDPA's query-length axis.
        ``scales``: the layer's flat fp8 scales, None for an unquantized cache; ``layer``:
        how this layer attends."""
        plan = self._decode
        if self._native:
            out = self._ops.decode_attention(
                _kernel_dtype(q) if scales is not None else q.to(cache.dtype), cache,
                self._kv_indices,
                plan.page_starts, plan.seq_lens, layer.scale, layer.window_left,
                layer.logits_soft_cap, kv_scales=scales)
            return out.to(q.dtype)  # [Bd, Hq, D]
        num_decodes = q.shape[0]
        shape = (num_decodes, plan.max_len, self.num_kv_heads, self.head_dim)
        if scales is None:
            keys = flat.index_select(0, plan.k_rows).view(shape).transpose(1, 2)  # [Bd, Hkv, L, D]
            values = flat.index_select(0, plan.v_rows).view(shape).transpose(1, 2)
        else:
            keys = _gather_fp8(flat, scales, plan.k_rows, q.dtype).view(shape).transpose(1, 2)
            values = _gather_fp8(flat, scales, plan.v_rows, q.dtype).view(shape).transpose(1, 2)
        grouped_q = q.view(num_decodes, self.num_kv_heads, self.group_size, self.head_dim)
        if q.dtype != keys.dtype:
            grouped_q = grouped_q.to(keys.dtype)
        mask = plan.window_masks[layer.window_left] if layer.window_left >= 0 else plan.mask
        out = _attention(grouped_q, keys, values, mask, False, layer)  # [Bd, Hkv, G, D]
        out = out.reshape(num_decodes, self.num_qo_heads, self.head_dim)
        return out if out.dtype == q.dtype else out.to(q.dtype)

    def _attend_prefill(self, flat: torch.Tensor, q: torch.Tensor, plan: _PrefillPlan,
                        scales: torch.Tensor | None, layer: LayerAttention) -> torch.Tensor:
        """q: [qo_len, Hq, D] -> [qo_len, Hq, D], causal over the request's KV."""
        if scales is None:
            keys = flat.index_select(0, plan.k_rows).transpose(0, 1)  # [Hkv, S, D]
            values = flat.index_select(0, plan.v_rows).transpose(0, 1)
        else:
            keys = _gather_fp8(flat, scales, plan.k_rows, q.dtype).transpose(0, 1)
            values = _gather_fp8(flat, scales, plan.v_rows, q.dtype).transpose(0, 1)
        # NOTE: on the CPU only 4-D inputs without enable_gqa reach SDPA's flash kernel; 3-D
        # ones took its unfused math path (a 2000-token prompt: 12.9 s, 92 % of it there)
        if self.group_size > 1:
            keys = keys.repeat_interleave(self.group_size, dim=0)  # [Hq, S, D]
            values = values.repeat_interleave(self.group_size, dim=0)
        queries = q.transpose(0, 1).to(keys.dtype)  # [Hq, qo_len, D]
        if layer.is_plain:
            out = _attention(queries[None], keys[None], values[None], plan.mask,
                             plan.mask is None, layer)[0]
        else:
            out = _blocked_attention(queries, keys, values,
                                     plan.window_masks[layer.window_left], layer)
        return out.transpose(0, 1).to(q.dtype)  # [qo_len, Hq, D]
