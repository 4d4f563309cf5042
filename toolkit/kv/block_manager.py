"""Hands out fixed-size KV pages to requests (pure Python, no tensors)."""

from __future__ import annotations

from collections import deque

from toolkit.protocol import Request


class BlockManager:
    """A free list of page ids. A request holds ``ceil(tokens / block_size)`` pages for the
    tokens whose K/V it has (or is about to have) in the cache."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free: deque[int] = deque(range(num_blocks))

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of pages in use."""
        return 1.0 - len(self._free) / self.num_blocks

    def num_blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def allocate(self, request: Request, num_tokens: int) -> bool:
        """Grow the request's pages to cover ``num_tokens`` slots; False (and no change)
        when not enough pages are free."""
        missing = self.num_blocks_for(num_tokens) - len(request.block_ids)
        if missing <= 0:
            return True
        if missing > len(self._free):
            return False
        request.block_ids.extend(self._free.popleft() for _ in range(missing))
        return True

    def free(self, request: Request) -> None:
        """Return every page of the request to the free list."""
        self._free.extend(request.block_ids)
        request.block_ids = []
