"""Hash-chained prefix cache: full KV pages found again by the tokens that filled them.

A full page is named by ``hash_page(parent_hash, token_ids)``: the digest of the previous
page's hash and this page's ``page_size`` token ids, so one hash stands for the whole
prefix up to the page's end. Partial pages are never hashed, so never shared.

The cache only maps hashes to page ids; reference counts and the free/evictable pools live
in PageManager, which owns the pages. Pure Python, no tensors.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

ROOT_HASH = b""
"""The parent hash of a sequence's first page."""

PageKey = Callable[[int, int], bytes]
"""(first position, end position) of a page -> what else its K/V depends on than its
token ids (the hashes of the images whose tokens it holds; b"" for none)."""


def hash_page(parent_hash: bytes, token_ids: Sequence[int], extra_key: bytes = b"") -> bytes:
    """SHA-256 of the parent's hash, the page's token ids and ``extra_key`` (image
    hashes; nothing for a text page) (a 32-byte digest).

    A cryptographic hash: two different prefixes never share a page (Python's built-in
    hash would let crafted prompts collide and read another request's KV)."""
    digest = hashlib.sha256(parent_hash)
    digest.update(array("q", token_ids).tobytes())
    if extra_key:
        digest.update(extra_key)
    return digest.digest()


def hash_pages(token_ids: Sequence[int], page_size: int,
                parent_hash: bytes = ROOT_HASH, page_key: PageKey | None = None,
                first_position: int = 0) -> list[bytes]:
    """The chained hashes of the full pages of ``token_ids`` (a trailing partial page
    is skipped), chaining from ``parent_hash``; ``token_ids[0]`` sits at
    ``first_position`` of the sequence, whose ``page_key`` (if any) adds to each page."""
    hashes = []
    for start in range(0, len(token_ids) - page_size + 1, page_size):
        extra = b""
        if page_key is not None:
            extra = page_key(first_position + start, first_position + start + page_size)
        parent_hash = hash_page(parent_hash, token_ids[start:start + page_size], extra)
        hashes.append(parent_hash)
    return hashes


def lora_page_key(lora_name: str, inner: PageKey | None = None) -> PageKey:
    """``inner`` (or no key) with the LoRA adapter ``lora_name`` added to the key of the
    sequence's first page: every later hash chains from it."""
    tag = b"lora\0" + lora_name.encode()

    def key(start: int, end: int) -> bytes:
        extra = inner(start, end) if inner is not None else b""
        return tag + extra if start == 0 else extra

    return key


@dataclass(frozen=True)
class CachedPrefix:
    """A lookup's result: the longest cached run of a request's leading full pages.

    Valid only until the cache next changes: take it (PageManager.allocate) at once."""

    page_ids: tuple[int, ...] = ()
    """Pages holding the matched pages, in order."""
    page_hashes: tuple[bytes, ...] = ()
    """Their chained hashes (same order)."""
    num_tokens: int = 0
    """Tokens the matched pages hold (their K/V need not be computed again)."""
    num_query_tokens: int = 0
    """Tokens the lookup could have matched (the request's tokens but its last)."""

    @property
    def num_pages(self) -> int:
        return len(self.page_ids)


NO_PREFIX = CachedPrefix()
"""Nothing matched (caching off, prompt logprobs asked, or a miss on the first page)."""


@dataclass
class PrefixCache:
    """``hash -> page`` for cached full pages, and hit-rate counters (in tokens)."""

    page_size: int
    num_query_tokens: int = 0
    """Tokens looked up at admission so far (the /metrics ``prefix_cache_queries``)."""
    num_hit_tokens: int = 0
    """Of those, tokens found cached (the /metrics ``prefix_cache_hits``)."""
    _pages: dict[bytes, int] = field(default_factory=dict)
    _hashes: dict[int, bytes] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._pages)

    def lookup(self, token_ids: Sequence[int], page_key: PageKey | None = None) -> CachedPrefix:
        """The longest run of cached leading full pages of ``token_ids`` (each page keyed
        also by ``page_key``, see hash_pages), never covering the last token (it must
        still be computed to produce logits)."""
        num_query = len(token_ids) - 1
        max_pages = num_query // self.page_size
        parent, page_ids, hashes = ROOT_HASH, [], []
        for index in range(max_pages):
            start, end = index * self.page_size, (index + 1) * self.page_size
            extra = page_key(start, end) if page_key is not None else b""
            parent = hash_page(parent, token_ids[start:end], extra)
            page = self._pages.get(parent)
            if page is None:
                break
            page_ids.append(page)
            hashes.append(parent)
        return CachedPrefix(tuple(page_ids), tuple(hashes), len(page_ids) * self.page_size,
                            max(num_query, 0))

    def record(self, prefix: CachedPrefix) -> None:
        """Count one admission's lookup in the hit-rate counters."""
        self.num_query_tokens += prefix.num_query_tokens
        self.num_hit_tokens += prefix.num_tokens

    def insert(self, page_hash: bytes, page: int) -> bool:
        """Name ``page`` by ``page_hash``; False (no change) when the hash already names a
        page (a page computed twice at once: the first copy stays the cached one)."""
        if page_hash in self._pages:
            return False
        self._pages[page_hash] = page
        self._hashes[page] = page_hash
        return True

    def is_cached(self, page: int) -> bool:
        return page in self._hashes

    def evict(self, page: int) -> None:
        """Forget ``page``'s hash (its page is about to hold other tokens)."""
        page_hash = self._hashes.pop(page)
        del self._pages[page_hash]

    def hit_rate(self) -> float:
        """Hit tokens / queried tokens (0 before any query)."""
        return self.num_hit_tokens / self.num_query_tokens if self.num_query_tokens else 0.0
