"""Hands out fixed-size KV pages to requests, sharing cached prefix pages (pure Python).

Every page is in exactly one of three states:

- held: one or more requests reference it (``ref_count > 0``);
- free: unreferenced and holding no cached page (the ``_free`` deque);
- evictable: unreferenced but still naming a cached full page (``_evictable``, least
  recently released first), so a later request with the same prefix can take it back.

Allocation takes free pages first and evicts the least recently used evictable page only
when none is free, so cached pages live as long as the space allows.

NOTE: a page is cached only once its tokens are final: when it lies wholly below
``min(request.num_computed_tokens, request.num_tokens)`` at an ``allocate`` or ``free``
call. Callers settle ``num_computed_tokens`` (rewind rejected speculative tokens) before
either call, so a cached page is never written again.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from toolkit.kv.prefix_cache import (
    NO_PREFIX,
    ROOT_HASH,
    CachedPrefix,
    PageKey,
    PrefixCache,
    hash_pages,
    lora_page_key,
)
from toolkit.protocol import Request


class PageManager:
    """Pages for requests: a request holds ``ceil(tokens / page_size)`` pages for the
    tokens whose K/V it has (or is about to have) in the cache; with prefix caching its
    leading full pages may be shared with other requests (reference counted)."""

    def __init__(self, num_pages: int, page_size: int,
                 enable_prefix_caching: bool = True) -> None:
        self.num_pages = num_pages
        self.page_size = page_size
        self.prefix_cache = PrefixCache(page_size) if enable_prefix_caching else None
        """None when prefix caching is off."""
        self._free: deque[int] = deque(range(num_pages))
        self._evictable: OrderedDict[int, None] = OrderedDict()
        self._ref_counts = [0] * num_pages
        self._page_hashes: dict[str, list[bytes]] = {}
        """Per request: the chained hashes of its leading full, final pages."""

    @property
    def num_free_pages(self) -> int:
        """Pages an allocation can take: free ones plus evictable cached ones."""
        return len(self._free) + len(self._evictable)

    @property
    def num_cached_pages(self) -> int:
        """Pages the prefix cache names (held or evictable)."""
        return len(self.prefix_cache) if self.prefix_cache is not None else 0

    @property
    def usage(self) -> float:
        """Fraction of pages held by requests (evictable cached pages count as free)."""
        return 1.0 - self.num_free_pages / self.num_pages

    def prefix_cache_counters(self) -> dict[str, int]:
        """Hit-rate counters in tokens since start (for /metrics; zeros when caching is
        off): ``prefix_cache_queries`` looked up at admission, ``prefix_cache_hits`` found."""
        if self.prefix_cache is None:
            return {"prefix_cache_queries": 0, "prefix_cache_hits": 0}
        return {"prefix_cache_queries": self.prefix_cache.num_query_tokens,
                "prefix_cache_hits": self.prefix_cache.num_hit_tokens}

    def ref_count(self, page: int) -> int:
        """How many requests hold ``page``."""
        return self._ref_counts[page]

    def num_pages_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.page_size)

    def find_cached_prefix(self, request: Request) -> CachedPrefix:
        """The longest cached run of a waiting request's leading full pages (never its
        last token). NO_PREFIX when caching is off, the request already holds pages, or it
        asks for prompt logprobs (those need logits at every prompt position)."""
        if (self.prefix_cache is None or request.page_ids
                or request.sampling_params.prompt_logprobs is not None):
            return NO_PREFIX
        return self.prefix_cache.lookup(request.all_token_ids, _page_key(request))

    def allocate(self, request: Request, num_tokens: int,
                 prefix: CachedPrefix = NO_PREFIX) -> bool:
        """Grow the request's pages to cover ``num_tokens`` slots, starting from the
        shared pages of ``prefix`` (a fresh find_cached_prefix result, for a request that
        holds no pages); False (and no change) when not enough pages are available.

        Full pages the request has finished computing are cached first."""
        self._cache_computed_pages(request)
        held = len(request.page_ids) + prefix.num_pages
        missing = max(self.num_pages_for(num_tokens) - held, 0)
        reclaimed = sum(1 for page in prefix.page_ids if self._ref_counts[page] == 0)
        if missing > self.num_free_pages - reclaimed:
            return False
        if prefix.num_query_tokens:
            self._take_prefix(request, prefix)
        request.page_ids.extend(self._pop_free() for _ in range(missing))
        return True

    def free(self, request: Request) -> None:
        """Drop the request's references (after caching its computed full pages); pages
        nobody else holds become free, or evictable when they name a cached page."""
        self._cache_computed_pages(request)
        for page in reversed(request.page_ids):  # a prefix's tail is evicted before its head
            self._release(page)
        request.page_ids = []
        self._page_hashes.pop(request.request_id, None)

    def _take_prefix(self, request: Request, prefix: CachedPrefix) -> None:
        assert not request.page_ids, "a prefix hit is taken only by a request with no pages"
        for page in prefix.page_ids:
            if self._ref_counts[page] == 0:
                del self._evictable[page]
            self._ref_counts[page] += 1
        request.page_ids = list(prefix.page_ids)
        self._page_hashes[request.request_id] = list(prefix.page_hashes)
        self.prefix_cache.record(prefix)

    def _pop_free(self) -> int:
        if self._free:
            page = self._free.popleft()
        else:
            page, _ = self._evictable.popitem(last=False)
            self.prefix_cache.evict(page)
        self._ref_counts[page] = 1
        return page

    def _release(self, page: int) -> None:
        self._ref_counts[page] -= 1
        if self._ref_counts[page]:
            return
        if self.prefix_cache is not None and self.prefix_cache.is_cached(page):
            self._evictable[page] = None
        else:
            self._free.append(page)

    def _cache_computed_pages(self, request: Request) -> None:
        """Cache the request's full pages that lie below its settled KV progress."""
        if self.prefix_cache is None or not request.page_ids:
            return
        hashes = self._page_hashes.setdefault(request.request_id, [])
        num_final = min(request.num_computed_tokens, request.num_tokens)
        num_full = min(num_final // self.page_size, len(request.page_ids))
        if num_full <= len(hashes):
            return
        start, end = len(hashes) * self.page_size, num_full * self.page_size
        new_hashes = hash_pages(request.all_token_ids[start:end], self.page_size,
                                 hashes[-1] if hashes else ROOT_HASH, _page_key(request), start)
        for page, page_hash in zip(request.page_ids[len(hashes):], new_hashes):
            self.prefix_cache.insert(page_hash, page)
        hashes.extend(new_hashes)


def _page_key(request: Request) -> PageKey | None:
    """What the request's pages depend on besides their tokens: its images, if any, and
    its LoRA adapter (keyed into the first page, so the whole hash chain differs: two
    adapters, or an adapter and the base model, never share a page)."""
    image_key = request.multimodal.page_key if request.multimodal is not None else None
    if request.lora_name is None:
        return image_key
    return lora_page_key(request.lora_name, image_key)
