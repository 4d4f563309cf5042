"""Test-side entry to the runner's real ForwardBatch builder, for hand-made steps."""

from __future__ import annotations

import torch

from toolkit.attention.forward_batch import ForwardBatch
from toolkit.attention.torch_ref import TorchRefBackend
from toolkit.kv.cache_pool import KVCachePool
from toolkit.protocol import Request, SamplingParams
from toolkit.protocol.outputs import ScheduledRequest
from toolkit.runner.batch_builder import build_forward_batch as build_from_scheduled


def build_forward_batch(requests: list[tuple[list[int], int, list[int]]],
                        page_size: int) -> ForwardBatch:
    """One step for requests given as (new token ids, position of the first one, page ids).

    The pages must cover every position up to start + len(tokens); each request samples
    from its last token. Earlier positions' token ids are irrelevant (their K/V is cached).
    """
    scheduled = []
    for i, (tokens, start, pages) in enumerate(requests):
        assert len(pages) >= -(-(start + len(tokens)) // page_size), "not enough pages"
        request = Request(f"r{i}", [0] * start + list(tokens), SamplingParams())
        request.page_ids = list(pages)
        scheduled.append(ScheduledRequest(request, start, len(tokens)))
    return build_from_scheduled(scheduled, page_size)


def prefill_logits(model, tokens: list[int], num_heads: int, num_kv_heads: int,
                   head_dim: int, page_size: int = 8) -> torch.Tensor:
    """[len(tokens), V] float32: one prefill of ``tokens`` through a loaded ``model`` on the
    torch reference attention, over a fresh KV pool (its pages 1.. hold the prompt)."""
    pages = list(range(1, 1 - (-len(tokens) // page_size)))
    pool = KVCachePool(len(model.layers), num_pages=len(pages) + 1, page_size=page_size,
                       num_kv_heads=num_kv_heads, head_dim=head_dim, dtype=model.dtype)
    attention = TorchRefBackend(pool, num_heads, num_kv_heads, head_dim)
    batch = build_forward_batch([(tokens, 0, pages)], page_size)
    attention.plan(batch)
    with torch.no_grad():
        return model.compute_logits(model(batch.input_ids, batch.positions, attention)).float()
