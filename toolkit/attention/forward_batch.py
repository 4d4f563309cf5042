"""The tensors of one forward step, in FlashInfer's page-table format."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ForwardBatch:
    """Everything the model and the attention backend need for one step.

    B requests, T tokens in all (a prefill chunk contributes its chunk length, a decode 1).
    Tokens are laid out request after request in the order of ``qo_indptr``. The page table
    already includes the pages that receive this step's new K/V.
    """

    input_ids: torch.Tensor
    """[T] int64 token ids."""
    positions: torch.Tensor
    """[T] int64 absolute positions (for RoPE)."""
    qo_indptr: torch.Tensor
    """[B+1] int32 CSR offsets of each request's query tokens; on CPU."""
    kv_indptr: torch.Tensor
    """[B+1] int32 CSR offsets into kv_indices; on CPU."""
    kv_indices: torch.Tensor
    """[kv_indptr[-1]] int32 page ids of every request, concatenated."""
    kv_last_page_len: torch.Tensor
    """[B] int32 tokens in each request's last page, 1..page_size, counting this step's."""
    slot_mapping: torch.Tensor
    """[T] int64 cache slot (page * page_size + offset) where each new token's K/V goes."""
    logits_indices: torch.Tensor
    """[N] int64 rows of the hidden states to turn into logits (the last token of each
    request that samples this step; with k drafts, its last k + 1 tokens)."""
    page_size: int

    @property
    def num_tokens(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_requests(self) -> int:
        return self.qo_indptr.shape[0] - 1

    def seq_lens(self) -> torch.Tensor:
        """[B] int32 KV length of each request after this step."""
        num_pages = self.kv_indptr[1:] - self.kv_indptr[:-1]
        return (num_pages - 1) * self.page_size + self.kv_last_page_len
