"""Micro-batches of one pipeline step: the step's requests cut into consecutive groups that
follow each other through the stages, so that stage s runs micro-batch m while stage s+1
runs micro-batch m-1 (GPipe's schedule within one engine step).

Every rank cuts the broadcast batch the same way (a pure function of the batch and the
count), so the hand-overs between stages pair up without further messages. Requests are
independent within a step (each writes and reads only its own KV pages), so running them
in groups gives each request what the whole batch gives it.
"""

from __future__ import annotations

import torch

from toolkit.attention.base import AttentionBackend
from toolkit.attention.forward_batch import ForwardBatch


def micro_batch_bounds(batch: ForwardBatch, num_micro_batches: int) -> list[tuple[int, int]]:
    """[(first request, end request)] of at most ``num_micro_batches`` non-empty groups of
    consecutive requests, cut where the tokens come closest to equal shares."""
    qo_indptr = batch.qo_indptr.tolist()
    num_tokens, num_requests = qo_indptr[-1], len(qo_indptr) - 1
    cuts = [0]
    for index in range(1, min(num_micro_batches, num_requests)):
        if cuts[-1] + 1 >= num_requests:
            break
        share = num_tokens * index / num_micro_batches
        cut = min(range(cuts[-1] + 1, num_requests), key=lambda b: abs(qo_indptr[b] - share))
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(num_requests)
    return [(start, end) for start, end in zip(cuts, cuts[1:]) if end > start]


def request_slice(batch: ForwardBatch, start: int, end: int) -> ForwardBatch:
    """The ForwardBatch of requests [start, end) of ``batch`` (their tokens, pages and
    logits rows, re-based to the slice)."""
    first_token, end_token = int(batch.qo_indptr[start]), int(batch.qo_indptr[end])
    first_page, end_page = int(batch.kv_indptr[start]), int(batch.kv_indptr[end])
    rows = batch.logits_indices
    own_rows = rows[(rows >= first_token) & (rows < end_token)] - first_token
    return ForwardBatch(
        input_ids=batch.input_ids[first_token:end_token],
        positions=batch.positions[first_token:end_token],
        qo_indptr=batch.qo_indptr[start:end + 1] - first_token,
        kv_indptr=batch.kv_indptr[start:end + 1] - first_page,
        kv_indices=batch.kv_indices[first_page:end_page],
        kv_last_page_len=batch.kv_last_page_len[start:end],
        slot_mapping=batch.slot_mapping[first_token:end_token],
        logits_indices=own_rows,
        page_size=batch.page_size)


def forward_in_micro_batches(model: torch.nn.Module, attention: AttentionBackend,
                             batch: ForwardBatch, num_micro_batches: int) -> torch.Tensor:
    """This rank's part of one step: plan and run each micro-batch in turn (a pipeline
    stage receives, runs its layers and sends on per micro-batch) -> [T, hidden], the
    rows in the batch's order."""
    if num_micro_batches <= 1:
        attention.plan(batch)
        return model(batch.input_ids, batch.positions, attention)
    outputs = []
    for start, end in micro_batch_bounds(batch, num_micro_batches):
        part = request_slice(batch, start, end)
        attention.plan(part)
        outputs.append(model(part.input_ids, part.positions, attention))  # [T_m, hidden]
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)
