"""PageManager: reference counts, the free / evictable pools, LRU eviction, no leaks."""

from __future__ import annotations

import pytest

from toolkit.kv.page_manager import PageManager
from toolkit.protocol import Request, SamplingParams

BLOCK = 4


def make_request(rid: str, tokens: list[int], **params) -> Request:
    return Request(rid, list(tokens), SamplingParams(max_tokens=4, **params))


def admit(manager: PageManager, request: Request) -> int:
    """Admission as the scheduler does it: take the cached prefix, allocate the whole
    prompt, and mark it computed (as if the step ran); then the next step's allocate
    caches its full pages. Returns the matched tokens."""
    prefix = manager.find_cached_prefix(request)
    assert manager.allocate(request, request.num_tokens, prefix)
    request.num_computed_tokens = request.num_tokens
    assert manager.allocate(request, request.num_tokens)
    return prefix.num_tokens


def decode(manager: PageManager, request: Request, token: int) -> None:
    """One decode step: the sampled token is appended, then its K/V slot allocated."""
    request.output_token_ids.append(token)
    assert manager.allocate(request, request.num_tokens)
    request.num_computed_tokens = request.num_tokens


def test_allocate_grows_and_free_returns_every_page():
    manager = PageManager(8, BLOCK, enable_prefix_caching=False)
    request = make_request("a", range(10))
    assert manager.allocate(request, 10)
    assert len(request.page_ids) == 3 and manager.num_free_pages == 5
    assert manager.allocate(request, 12) and len(request.page_ids) == 3
    assert not manager.allocate(request, 100)
    assert len(request.page_ids) == 3, "a failed allocation changes nothing"
    manager.free(request)
    assert request.page_ids == [] and manager.num_free_pages == 8
    assert manager.num_cached_pages == 0


def test_shared_prefix_blocks_are_reference_counted():
    manager = PageManager(16, BLOCK)
    first = make_request("a", list(range(10)))
    admit(manager, first)
    second = make_request("b", list(range(8)) + [99, 98, 97])
    assert admit(manager, second) == 8
    assert second.page_ids[:2] == first.page_ids[:2]
    assert second.page_ids[2] != first.page_ids[2], "partial pages are never shared"
    assert [manager.ref_count(p) for p in first.page_ids] == [2, 2, 1]
    manager.free(first)
    assert [manager.ref_count(p) for p in second.page_ids] == [1, 1, 1]
    manager.free(second)
    assert manager.num_free_pages == 16, "every page is free or evictable"
    assert all(manager.ref_count(p) == 0 for p in range(16))


def test_a_whole_cached_prompt_still_computes_its_last_token():
    manager = PageManager(16, BLOCK)
    tokens = list(range(12))
    admit(manager, make_request("a", tokens))
    again = make_request("b", tokens)
    prefix = manager.find_cached_prefix(again)
    assert prefix.num_tokens == 8, "the last full page is recomputed to give logits"
    assert prefix.num_query_tokens == 11


def test_partial_and_uncomputed_blocks_are_not_cached():
    manager = PageManager(16, BLOCK)
    request = make_request("a", list(range(10)))
    assert manager.allocate(request, 10)  # scheduled, not yet computed
    request.num_computed_tokens = 6  # a chunk ran: one full page is final
    assert manager.allocate(request, 10)
    assert manager.num_cached_pages == 1
    probe = make_request("p", list(range(10)))
    assert manager.find_cached_prefix(probe).num_tokens == 4
    request.num_computed_tokens = 10
    manager.free(request)
    assert manager.num_cached_pages == 2, "the partial third page stays uncached"


def test_blocks_filled_by_decode_become_cached():
    manager = PageManager(16, BLOCK)
    request = make_request("a", [1, 2, 3])
    admit(manager, request)
    for token in (4, 5, 6, 7, 8):
        decode(manager, request, token)
    # tokens 1..8 are computed; 1..4 and 5..8 form two full final pages
    manager.free(request)
    follow_up = make_request("b", [1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert manager.find_cached_prefix(follow_up).num_tokens == 8


def test_tokens_beyond_the_settled_progress_are_never_cached():
    """Speculative tokens past num_computed_tokens may still be rewritten."""
    manager = PageManager(16, BLOCK)
    request = make_request("a", [1, 2, 3])
    admit(manager, request)
    request.output_token_ids += [4, 5, 6, 7, 8]  # drafts appended, then rejected:
    assert manager.allocate(request, 8)
    request.num_computed_tokens = 4  # progress rewound to the first accepted token
    del request.output_token_ids[2:]
    manager.free(request)
    assert manager.num_cached_pages == 1
    assert manager.find_cached_prefix(make_request("b", [1, 2, 3, 4, 5, 6, 7, 8, 9])
                                      ).num_tokens == 4


def test_eviction_takes_free_pages_first_then_least_recently_released():
    manager = PageManager(6, BLOCK)
    old = make_request("old", list(range(100, 109)))     # 2 full pages + 1 partial
    new = make_request("new", list(range(200, 209)))
    admit(manager, old)
    admit(manager, new)
    manager.free(old)
    manager.free(new)
    assert manager.num_cached_pages == 4 and manager.num_free_pages == 6
    filler = make_request("f", list(range(300, 308)))
    assert manager.allocate(filler, 8)  # the 2 uncached free pages: nothing evicted
    assert manager.num_cached_pages == 4
    grow = make_request("g", list(range(400, 404)))
    assert manager.allocate(grow, 4)  # evicts old's tail page first (released in reverse)
    assert manager.find_cached_prefix(make_request("x", list(range(100, 109)))).num_tokens == 4
    assert manager.allocate(grow, 8)  # then old's head
    assert manager.find_cached_prefix(make_request("x", list(range(100, 109)))).num_tokens == 0
    assert manager.find_cached_prefix(make_request("y", list(range(200, 209)))).num_tokens == 8


def test_a_hit_refreshes_recency():
    manager = PageManager(4, BLOCK)
    a, b = make_request("a", list(range(5))), make_request("b", list(range(50, 55)))
    admit(manager, a)
    admit(manager, b)
    manager.free(a)
    manager.free(b)  # LRU order: a's page, then b's
    again = make_request("a2", list(range(5)))
    admit(manager, again)  # takes a's page back and one new page
    manager.free(again)  # a's page is now the most recently released
    assert manager.allocate(make_request("z", list(range(90, 102))), 12)  # 2 free + 1 evicted
    assert manager.find_cached_prefix(make_request("p", list(range(5)))).num_tokens == 4
    assert manager.find_cached_prefix(make_request("q", list(range(50, 55)))).num_tokens == 0


def test_a_hit_on_evictable_pages_counts_against_the_space():
    manager = PageManager(3, BLOCK)
    first = make_request("a", list(range(9)))
    admit(manager, first)
    first_pages = list(first.page_ids)
    manager.free(first)  # 2 evictable cached pages + 1 free page
    too_long = make_request("b", list(range(8)) + [7] * 5)  # 2 hits + 2 new > 3 pages
    assert not manager.allocate(too_long, 13, manager.find_cached_prefix(too_long))
    fits = make_request("c", list(range(8)) + [7] * 3)  # 2 hits + 1 new
    assert manager.allocate(fits, 11, manager.find_cached_prefix(fits))
    assert fits.page_ids[:2] == first_pages[:2] and manager.num_free_pages == 0


def test_failed_allocation_with_a_prefix_takes_no_reference():
    manager = PageManager(4, BLOCK)
    first = make_request("a", list(range(9)))
    admit(manager, first)
    manager.free(first)  # 2 evictable cached pages, 2 free
    longer = make_request("b", list(range(8)) + list(range(50, 70)))  # 2 hits + 5 new pages
    prefix = manager.find_cached_prefix(longer)
    assert prefix.num_tokens == 8
    queried = manager.prefix_cache.num_query_tokens
    assert not manager.allocate(longer, longer.num_tokens, prefix)
    assert longer.page_ids == [] and manager.num_free_pages == 4
    assert all(manager.ref_count(p) == 0 for p in range(4))
    assert manager.prefix_cache.num_query_tokens == queried, "only admissions are counted"


def test_prompt_logprobs_requests_skip_the_lookup():
    manager = PageManager(8, BLOCK)
    admit(manager, make_request("a", list(range(9))))
    asking = make_request("b", list(range(9)), prompt_logprobs=1)
    assert manager.find_cached_prefix(asking).num_tokens == 0


def test_hit_rate_counters_are_in_tokens():
    manager = PageManager(16, BLOCK)
    admit(manager, make_request("a", list(range(9))))
    admit(manager, make_request("b", list(range(9))))
    cache = manager.prefix_cache
    assert (cache.num_query_tokens, cache.num_hit_tokens) == (16, 8)
    assert cache.hit_rate() == pytest.approx(0.5)
    assert manager.prefix_cache_counters() == {"prefix_cache_queries": 16,
                                               "prefix_cache_hits": 8}
    counted = PageManager(8, BLOCK)
    admit(counted, make_request("short", [1, 2, 3]))  # queried 2 tokens, cached nothing
    assert counted.num_cached_pages == 0
    assert counted.prefix_cache_counters()["prefix_cache_queries"] == 2
    off = PageManager(4, BLOCK, enable_prefix_caching=False)
    assert off.prefix_cache_counters() == {"prefix_cache_queries": 0, "prefix_cache_hits": 0}


def test_duplicate_blocks_computed_at_once_are_freed_without_leaking():
    manager = PageManager(8, BLOCK)
    a, b = make_request("a", list(range(9))), make_request("b", list(range(9)))
    for request in (a, b):  # admitted in the same step: neither sees the other's pages
        assert manager.allocate(request, 9, manager.find_cached_prefix(request))
    for request in (a, b):
        request.num_computed_tokens = 9
    manager.free(a)
    manager.free(b)
    assert manager.num_cached_pages == 2
    assert manager.num_free_pages == 8
