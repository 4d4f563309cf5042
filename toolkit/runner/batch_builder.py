"""SchedulerOutput -> ForwardBatch: token ids, positions, page table and slots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from toolkit.attention.forward_batch import ForwardBatch
from toolkit.protocol.outputs import ScheduledRequest


class _BatchLists:
    """The batch's index lists, grown chunk by chunk (one chunk per request)."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.input_ids: list[int] = []
        self.positions: list[int] = []
        self.slots: list[int] = []
        self.qo_indptr = [0]
        self.kv_indptr = [0]
        self.kv_indices: list[int] = []
        self.last_page_len: list[int] = []
        self.logits_indices: list[int] = []

    def add(self, token_ids: list[int], start: int, page_ids: list[int],
            num_logits: int) -> None:
        """Tokens at positions start.. with K/V in ``page_ids``; logits for the last
        ``num_logits`` of them."""
        page_size, end = self.page_size, start + len(token_ids)
        self.input_ids.extend(token_ids)
        self.positions.extend(range(start, end))
        pages = page_ids[: -(-end // page_size)]
        self.slots.extend(pages[p // page_size] * page_size + p % page_size
                          for p in range(start, end))
        self.qo_indptr.append(len(self.input_ids))
        self.kv_indices.extend(pages)
        self.kv_indptr.append(len(self.kv_indices))
        self.last_page_len.append(end - (len(pages) - 1) * page_size)
        num_rows = len(self.input_ids)
        self.logits_indices.extend(range(num_rows - num_logits, num_rows))

    def build(self, device: torch.device | str) -> ForwardBatch:
        def tensor(values: list[int], dtype: torch.dtype, on_device: bool = True) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device if on_device else "cpu")

        return ForwardBatch(
            input_ids=tensor(self.input_ids, torch.int64),
            positions=tensor(self.positions, torch.int64),
            qo_indptr=tensor(self.qo_indptr, torch.int32, on_device=False),
            kv_indptr=tensor(self.kv_indptr, torch.int32, on_device=False),
            kv_indices=tensor(self.kv_indices, torch.int32),
            kv_last_page_len=tensor(self.last_page_len, torch.int32, on_device=False),
            slot_mapping=tensor(self.slots, torch.int64),
            logits_indices=tensor(self.logits_indices, torch.int64),
            page_size=self.page_size,
        )


def build_forward_batch(scheduled: list[ScheduledRequest], page_size: int,
                        device: torch.device | str = "cpu") -> ForwardBatch:
    """Lay the scheduled requests out back to back, in the scheduler's order. A request
    that samples gets logits at its last position, or at all 1 + k positions when it
    carries k drafts (fed after its own tokens)."""
    lists = _BatchLists(page_size)
    for item in scheduled:
        request, num_drafts = item.request, len(item.draft_token_ids)
        start, end = item.start, item.start + item.num_tokens - num_drafts
        tokens = _token_slice(request.prompt_token_ids, request.output_token_ids, start, end)
        if num_drafts:
            tokens = tokens + item.draft_token_ids
        lists.add(tokens, start, request.page_ids, num_drafts + 1 if item.samples else 0)
    return lists.build(device)


def lora_token_slots(scheduled: list[ScheduledRequest],
                     slot_of: Mapping[str | None, int]) -> list[int]:
    """Each token's LoRA adapter slot (``slot_of[request.lora_name]``; -1: the base
    model), in build_forward_batch's row order."""
    slots: list[int] = []
    for item in scheduled:
        slots.extend([slot_of[item.request.lora_name]] * item.num_tokens)
    return slots


def build_chunk_batch(chunks: Sequence[tuple[list[int], int, list[int], int]], page_size: int,
                      device: torch.device | str = "cpu") -> ForwardBatch:
    """A batch from raw chunks (token ids, first position, page ids, number of trailing
    positions that get logits); for models driven outside the scheduler (draft models)."""
    lists = _BatchLists(page_size)
    for token_ids, start, page_ids, num_logits in chunks:
        lists.add(token_ids, start, page_ids, num_logits)
    return lists.build(device)


def _token_slice(prompt: list[int], output: list[int], start: int, end: int) -> list[int]:
    """tokens[start:end] of prompt + output without concatenating the whole sequence."""
    num_prompt = len(prompt)
    if start >= num_prompt:
        return output[start - num_prompt:end - num_prompt]
    if end <= num_prompt:
        return prompt[start:end]
    return prompt[start:] + output[: end - num_prompt]
