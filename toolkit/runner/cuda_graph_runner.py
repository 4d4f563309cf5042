"""CUDA graphs for decode steps: capture the model's forward once per batch size, replay it.

A decode step (every request has one query token) of n requests is padded up to the
smallest captured batch size >= n, its token ids and positions are copied into the static
input buffers, the attention backend plans the captured size's wrapper (on the host,
outside the graph), and the graph replays: one launch sequence instead of a few hundred
kernel launches from Python. Other steps (prefills, mixed steps, speculative verification,
batches above the largest captured size) run eagerly.

Padding rows are harmless: their K/V slot is -1 (the KV-store kernel skips negative
slots, so nothing is written) and they attend to one position of ``SCRATCH_PAGE``, which
they only read; their hidden states are sliced off.

Only attention backends that implement ``GraphAttention`` (FlashInfer: decode wrappers
built with ``use_cuda_graph=True`` over fixed-size page-table buffers) can be captured.
The pure functions here (sizes, eligibility, padding) are tested on the CPU; capture and
replay need CUDA.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch

from toolkit.attention.forward_batch import ForwardBatch

SCRATCH_PAGE = 0
"""The page padding rows attend to (read only: their slot is -1, so nothing is written)."""
PADDING_SLOT = -1
"""Slot of padding rows; the KV-store kernels skip negative slots."""
NUM_WARMUP_RUNS = 2
"""Eager forwards per batch size before capture (Triton compiles, allocator settles)."""
SMALL_BATCH_SIZES = (1, 2, 4)
"""Default captured sizes below the first multiple of BATCH_SIZE_STEP."""
BATCH_SIZE_STEP = 8
"""Default captured sizes from BATCH_SIZE_STEP on are its multiples (vLLM's scheme)."""

Forward = Callable[[], torch.Tensor]
"""The model's forward over the static inputs: () -> hidden [B, hidden]."""


@runtime_checkable
class GraphAttention(Protocol):
    """What an attention backend provides so that decode steps can be captured."""

    def init_cuda_graphs(self, batch_sizes: Sequence[int], max_num_pages: int) -> None:
        """Build per-size graph-safe decode state over static buffers that hold up to
        ``max_num_pages`` page ids; called once, before any capture."""

    def plan_cuda_graph(self, batch: ForwardBatch) -> None:
        """Plan a decode-only batch whose size is one of the captured sizes, writing its
        page table and slots into the static buffers; before capture and every replay."""


def default_batch_sizes(max_batch_size: int) -> tuple[int, ...]:
    """1, 2, 4, then multiples of 8, up to and including ``max_batch_size``."""
    sizes = [size for size in SMALL_BATCH_SIZES if size < max_batch_size]
    sizes += range(BATCH_SIZE_STEP, max_batch_size, BATCH_SIZE_STEP)
    return (*sizes, max_batch_size)


def capture_batch_sizes(configured: Sequence[int] | None, max_batch_size: int) -> tuple[int, ...]:
    """The sorted batch sizes to capture: ``configured`` when given (runner.
    cuda_graph_batch_sizes), else ``default_batch_sizes(max_batch_size)``."""
    if max_batch_size < 1:
        raise ValueError(f"max_cuda_graph_batch_size={max_batch_size} must be >= 1")
    if configured is None:
        return default_batch_sizes(max_batch_size)
    if not configured or min(configured) < 1:
        raise ValueError(f"cuda_graph_batch_sizes={list(configured)} must be sizes >= 1")
    return tuple(sorted(set(configured)))


def padded_batch_size(batch_sizes: Sequence[int], num_requests: int) -> int | None:
    """The smallest of the sorted ``batch_sizes`` >= ``num_requests``; None when none is."""
    index = bisect.bisect_left(batch_sizes, num_requests)
    return batch_sizes[index] if index < len(batch_sizes) else None


def is_decode_only(batch: ForwardBatch) -> bool:
    """True when the batch has requests and each has exactly one query token."""
    return 0 < batch.num_requests == batch.num_tokens


def graph_eligible(batch: ForwardBatch, batch_sizes: Sequence[int]) -> bool:
    """Whether a captured graph can run ``batch``: decode-only, at most the largest size."""
    return is_decode_only(batch) and batch.num_requests <= batch_sizes[-1]


def empty_batch(page_size: int, device: torch.device | str) -> ForwardBatch:
    """A batch of no requests (what ``pad_decode_batch`` turns into a capture batch)."""

    def tensor(dtype: torch.dtype, on_device: bool = True, length: int = 0) -> torch.Tensor:
        return torch.zeros(length, dtype=dtype, device=device if on_device else "cpu")

    return ForwardBatch(
        input_ids=tensor(torch.int64), positions=tensor(torch.int64),
        qo_indptr=tensor(torch.int32, on_device=False, length=1),
        kv_indptr=tensor(torch.int32, on_device=False, length=1),
        kv_indices=tensor(torch.int32), kv_last_page_len=tensor(torch.int32, on_device=False),
        slot_mapping=tensor(torch.int64), logits_indices=tensor(torch.int64),
        page_size=page_size)


def pad_decode_batch(batch: ForwardBatch, batch_size: int) -> ForwardBatch:
    """A decode-only batch of n requests -> the same batch with ``batch_size - n`` padding
    requests appended: token 0 at position 0, one KV position on SCRATCH_PAGE, slot
    PADDING_SLOT. Real rows, their page table and ``logits_indices`` are unchanged."""
    num_requests = batch.num_requests
    num_padding = batch_size - num_requests
    if num_padding < 0 or num_requests != batch.num_tokens:
        raise ValueError(f"cannot pad a batch of {num_requests} requests and "
                         f"{batch.num_tokens} tokens to a decode batch of {batch_size}")
    if num_padding == 0:
        return batch

    def padded(values: torch.Tensor, fill: int) -> torch.Tensor:
        tail = torch.full((num_padding,), fill, dtype=values.dtype, device=values.device)
        return torch.cat((values, tail))

    last_indptr = int(batch.kv_indptr[-1])
    padding_indptr = torch.arange(last_indptr + 1, last_indptr + num_padding + 1,
                                  dtype=torch.int32)  # [num_padding]
    return dataclasses.replace(
        batch,
        input_ids=padded(batch.input_ids, 0),  # [batch_size]
        positions=padded(batch.positions, 0),  # [batch_size]
        qo_indptr=torch.arange(batch_size + 1, dtype=torch.int32),  # [batch_size + 1]
        kv_indptr=torch.cat((batch.kv_indptr, padding_indptr)),  # [batch_size + 1]
        kv_indices=padded(batch.kv_indices, SCRATCH_PAGE),  # [kv_indptr[-1]]
        kv_last_page_len=padded(batch.kv_last_page_len, 1),  # [batch_size]
        slot_mapping=padded(batch.slot_mapping, PADDING_SLOT),  # [batch_size]
    )


class CudaGraphRunner:
    """Decode forwards of ``model`` replayed from CUDA graphs, one per captured batch size.

    Build, then ``capture()`` once (after the KV cache exists); then per step
    ``can_run(batch)`` and ``run(batch)``. The hidden states ``run`` returns live in the
    graph's output buffer: valid until the next ``run``.
    """

    def __init__(self, model: torch.nn.Module, attention: GraphAttention,
                 batch_sizes: Sequence[int], max_num_pages_per_request: int, page_size: int,
                 device: torch.device | str) -> None:
        if not isinstance(attention, GraphAttention):
            raise TypeError(f"{type(attention).__name__} cannot be captured in CUDA graphs")
        self.model = model
        self.attention = attention
        self.batch_sizes = tuple(sorted(batch_sizes))
        self.page_size = page_size
        self.device = device
        max_batch_size = self.batch_sizes[-1]
        self._input_ids = torch.zeros(max_batch_size, dtype=torch.int64, device=device)
        self._positions = torch.zeros(max_batch_size, dtype=torch.int64, device=device)
        self._replays: dict[int, Callable[[], None]] = {}
        self._outputs: dict[int, torch.Tensor] = {}  # size -> [size, hidden]
        attention.init_cuda_graphs(self.batch_sizes, max_batch_size * max_num_pages_per_request)

    @property
    def captured_batch_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(self._replays))

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture every batch size, largest first, into one shared memory pool."""
        pool = torch.cuda.graph_pool_handle() if self._uses_cuda_graphs() else None
        for size in reversed(self.batch_sizes):
            batch = pad_decode_batch(empty_batch(self.page_size, self.device), size)
            self.attention.plan_cuda_graph(batch)
            input_ids, positions = self._input_ids[:size], self._positions[:size]

            def forward(input_ids=input_ids, positions=positions) -> torch.Tensor:
                return self.model(input_ids, positions, self.attention)  # [size, hidden]

            for _ in range(NUM_WARMUP_RUNS):
                forward()
            self._replays[size], self._outputs[size] = self._capture_graph(forward, pool)

    def can_run(self, batch: ForwardBatch) -> bool:
        """Whether ``run`` takes ``batch`` (decode-only, within the captured sizes)."""
        return bool(self._replays) and graph_eligible(batch, self.batch_sizes)

    def run(self, batch: ForwardBatch) -> torch.Tensor:
        """Replay the graph of the padded size: -> hidden [num_requests, hidden]."""
        num_requests = batch.num_requests
        size = padded_batch_size(self.batch_sizes, num_requests)
        padded = pad_decode_batch(batch, size)
        self._input_ids[:size].copy_(padded.input_ids, non_blocking=True)
        self._positions[:size].copy_(padded.positions, non_blocking=True)
        self.attention.plan_cuda_graph(padded)
        self._replays[size]()
        return self._outputs[size][:num_requests]

    def _uses_cuda_graphs(self) -> bool:
        return torch.device(self.device).type == "cuda"

    def _capture_graph(self, forward: Forward,
                       pool) -> tuple[Callable[[], None], torch.Tensor]:
        """Record ``forward`` into a CUDA graph: -> (replay, static output [B, hidden])."""
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            output = forward()
        torch.cuda.synchronize()
        return graph.replay, output


def build_cuda_graph_runner(model: torch.nn.Module, attention: object,
                            batch_sizes: Sequence[int], max_model_len: int, page_size: int,
                            device: torch.device | str) -> CudaGraphRunner | None:
    """A captured CudaGraphRunner, or None when ``attention`` cannot be captured."""
    if not isinstance(attention, GraphAttention):
        return None
    max_num_pages_per_request = -(-max_model_len // page_size)
    runner = CudaGraphRunner(model, attention, batch_sizes, max_num_pages_per_request,
                             page_size, device)
    runner.capture()
    return runner
