"""SchedulerOutput -> ForwardBatch: token ids, positions, page table and slots."""

from __future__ import annotations

import torch

from toolkit.protocol.outputs import ScheduledRequest
from toolkit.runner.forward_batch import ForwardBatch


def build_forward_batch(scheduled: list[ScheduledRequest], page_size: int,
                        device: torch.device | str = "cpu") -> ForwardBatch:
    """Lay the scheduled requests out back to back, in the scheduler's order."""
    input_ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    qo_indptr = [0]
    kv_indptr = [0]
    kv_indices: list[int] = []
    last_page_len: list[int] = []
    logits_indices: list[int] = []
    for item in scheduled:
        request, start, end = item.request, item.start, item.start + item.num_tokens
        input_ids.extend(_token_slice(request.prompt_token_ids, request.output_token_ids,
                                      start, end))
        positions.extend(range(start, end))
        pages = request.block_ids[: -(-end // page_size)]
        slots.extend(pages[p // page_size] * page_size + p % page_size
                     for p in range(start, end))
        qo_indptr.append(len(input_ids))
        kv_indices.extend(pages)
        kv_indptr.append(len(kv_indices))
        last_page_len.append(end - (len(pages) - 1) * page_size)
        if item.samples:
            logits_indices.append(len(input_ids) - 1)

    def tensor(values: list[int], dtype: torch.dtype, on_device: bool = True) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=device if on_device else "cpu")

    return ForwardBatch(
        input_ids=tensor(input_ids, torch.int64),
        positions=tensor(positions, torch.int64),
        qo_indptr=tensor(qo_indptr, torch.int32, on_device=False),
        kv_indptr=tensor(kv_indptr, torch.int32, on_device=False),
        kv_indices=tensor(kv_indices, torch.int32),
        kv_last_page_len=tensor(last_page_len, torch.int32, on_device=False),
        slot_mapping=tensor(slots, torch.int64),
        logits_indices=tensor(logits_indices, torch.int64),
        page_size=page_size,
    )


def _token_slice(prompt: list[int], output: list[int], start: int, end: int) -> list[int]:
    """tokens[start:end] of prompt + output without concatenating the whole sequence."""
    num_prompt = len(prompt)
    if start >= num_prompt:
        return output[start - num_prompt:end - num_prompt]
    if end <= num_prompt:
        return prompt[start:end]
    return prompt[start:] + output[: end - num_prompt]
