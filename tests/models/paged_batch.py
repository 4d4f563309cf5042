"""Test-side ForwardBatch builder (the runner's real builder lives elsewhere)."""

from __future__ import annotations

import torch

from toolkit.runner.forward_batch import ForwardBatch


def build_forward_batch(requests: list[tuple[list[int], int, list[int]]],
                        page_size: int) -> ForwardBatch:
    """One step for requests given as (new token ids, position of the first one, page ids).

    The pages must cover every position up to start + len(tokens); each request samples
    from its last token.
    """
    input_ids, positions, slots, kv_indices, logits_indices = [], [], [], [], []
    qo_indptr, kv_indptr, last_page_lens = [0], [0], []
    for tokens, start, pages in requests:
        seq_len = start + len(tokens)
        num_pages = -(-seq_len // page_size)
        assert len(pages) >= num_pages, "not enough pages for the sequence"
        input_ids += tokens
        token_positions = list(range(start, seq_len))
        positions += token_positions
        slots += [pages[p // page_size] * page_size + p % page_size for p in token_positions]
        kv_indices += pages[:num_pages]
        qo_indptr.append(qo_indptr[-1] + len(tokens))
        kv_indptr.append(kv_indptr[-1] + num_pages)
        last_page_lens.append(seq_len - (num_pages - 1) * page_size)
        logits_indices.append(qo_indptr[-1] - 1)
    return ForwardBatch(
        input_ids=torch.tensor(input_ids, dtype=torch.int64),
        positions=torch.tensor(positions, dtype=torch.int64),
        qo_indptr=torch.tensor(qo_indptr, dtype=torch.int32),
        kv_indptr=torch.tensor(kv_indptr, dtype=torch.int32),
        kv_indices=torch.tensor(kv_indices, dtype=torch.int32),
        kv_last_page_len=torch.tensor(last_page_lens, dtype=torch.int32),
        slot_mapping=torch.tensor(slots, dtype=torch.int64),
        logits_indices=torch.tensor(logits_indices, dtype=torch.int64),
        page_size=page_size,
    )
