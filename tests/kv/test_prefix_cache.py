"""Prefix caching: the hash chain, scheduler admission with hits, and the real engine's
greedy outputs with and without the cache (same tokens, no page leaks)."""

from __future__ import annotations

import dataclasses

import pytest

from toolkit.config.schema import SchedulerConfig
from toolkit.kv.page_manager import PageManager
from toolkit.kv.prefix_cache import ROOT_HASH, PrefixCache, hash_page, hash_pages
from toolkit.protocol import Request, RequestStatus, RunnerOutput, SamplingParams
from toolkit.scheduler.scheduler import Scheduler


def test_hash_chain_names_the_whole_prefix():
    first = hash_page(ROOT_HASH, [1, 2, 3, 4])
    assert first == hash_page(ROOT_HASH, [1, 2, 3, 4])
    assert first != hash_page(ROOT_HASH, [1, 2, 3, 5])
    same_tokens_other_parent = hash_page(hash_page(ROOT_HASH, [9, 9, 9, 9]), [1, 2, 3, 4])
    assert same_tokens_other_parent != first, "a page's name depends on what precedes it"
    chain = hash_pages([1, 2, 3, 4, 5, 6, 7, 8, 9], 4)
    assert len(chain) == 2, "the partial third page gets no hash"
    assert chain == [first, hash_page(first, [5, 6, 7, 8])]
    assert hash_pages([5, 6, 7, 8], 4, parent_hash=first) == chain[1:]
    assert hash_page(ROOT_HASH, [256]) != hash_page(ROOT_HASH, [1, 0]), "ids are 64-bit"


def test_lookup_stops_at_the_first_missing_block():
    cache = PrefixCache(page_size=2)
    tokens = [1, 2, 3, 4, 5, 6, 7]
    first, second, third = hash_pages(tokens, 2)
    cache.insert(first, 10)
    cache.insert(third, 12)  # an orphan: its parent page was evicted
    hit = cache.lookup(tokens)
    assert hit.page_ids == (10,) and hit.num_tokens == 2
    cache.insert(second, 11)
    assert cache.lookup(tokens).page_ids == (10, 11, 12)
    assert not cache.insert(second, 99), "a second copy of a cached page is not cached"
    cache.evict(11)
    assert cache.lookup(tokens).page_ids == (10,)
    assert not cache.is_cached(11) and cache.is_cached(12)


def fake_runner(output) -> RunnerOutput:
    return RunnerOutput({s.request.request_id: [1 + (s.request.num_tokens * 7) % 97]
                         for s in output.scheduled if s.samples})


def make_scheduler(num_pages=32, budget=64, page_size=4, caching=True) -> Scheduler:
    config = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=budget)
    return Scheduler(config, PageManager(num_pages, page_size, caching), max_model_len=512)


def make_request(rid: str, tokens: list[int], max_tokens: int = 4, **params) -> Request:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, **params)
    return Request(rid, list(tokens), params)


def run(scheduler: Scheduler, max_steps: int = 500) -> list:
    trace = []
    for _ in range(max_steps):
        if not scheduler.num_unfinished:
            return trace
        output = scheduler.schedule()
        trace.append(output)
        scheduler.update(output, fake_runner(output))
    raise AssertionError("requests did not finish")


def test_a_hit_starts_the_request_at_the_matched_tokens():
    scheduler = make_scheduler()
    shared = list(range(100, 112))
    scheduler.add_request(make_request("a", shared + [1, 2, 3]))
    run(scheduler)
    later = make_request("b", shared + [7, 8])
    scheduler.add_request(later)
    output = scheduler.schedule()
    (item,) = output.scheduled
    assert (item.start, item.num_tokens) == (12, 2)
    assert later.num_computed_tokens == 12
    assert scheduler.page_manager.prefix_cache.num_hit_tokens == 12


def test_a_hit_lets_a_prompt_fit_the_budget_without_chunking():
    scheduler = make_scheduler(budget=8)
    scheduler.config = dataclasses.replace(scheduler.config, enable_chunked_prefill=False)
    shared = list(range(100, 108))
    scheduler.add_request(make_request("a", shared))  # 8 tokens: fits exactly
    run(scheduler)
    scheduler.add_request(make_request("b", shared + [1, 2, 3, 4]))  # 12 > 8, 4 after the hit
    (item,) = scheduler.schedule().scheduled
    assert (item.start, item.num_tokens) == (8, 4)


def test_disabled_cache_and_prompt_logprobs_compute_everything():
    for scheduler, params in ((make_scheduler(caching=False), {}),
                              (make_scheduler(), {"prompt_logprobs": 1})):
        shared = list(range(100, 112))
        scheduler.add_request(make_request("a", shared + [1]))
        run(scheduler)
        scheduler.add_request(make_request("b", shared + [2], **params))
        (item,) = scheduler.schedule().scheduled
        assert item.start == 0 and item.num_tokens == 13


def test_preemption_and_abort_with_shared_prefixes_leave_no_leaks():
    scheduler = make_scheduler(num_pages=14, budget=32)
    shared = list(range(100, 116))
    requests = [make_request(f"r{i}", shared + [i] * (3 + i), max_tokens=10) for i in range(6)]
    for request in requests:
        scheduler.add_request(request)
    trace = run(scheduler)
    assert any(output.preempted_ids for output in trace)
    assert scheduler.page_manager.prefix_cache.num_hit_tokens > 0
    for request in requests:
        assert request.status is RequestStatus.FINISHED_LENGTH
        assert request.num_output_tokens == 10
    aborted = make_request("x", shared + [42] * 9, max_tokens=50)
    scheduler.add_request(aborted)
    scheduler.update(out := scheduler.schedule(), fake_runner(out))
    scheduler.finish_request("x", RequestStatus.FINISHED_ABORTED)
    manager = scheduler.page_manager
    assert manager.num_free_pages == 14, "every page is free or evictable"
    assert all(manager.ref_count(page) == 0 for page in range(14))
    assert manager.num_cached_pages > 0


def test_no_stale_reads_under_sharing_preemption_eviction_and_aborts():
    """A shadow KV pool records which token each slot was written from; every step, each
    scheduled request's pages must hold exactly its own tokens at every position it
    attends to (cached prefix included), and page states must stay consistent."""
    import random

    rng = random.Random(0)
    scheduler = make_scheduler(num_pages=20, budget=10)  # prompts take 2-4 chunks
    manager, page_size = scheduler.page_manager, 4
    slots: dict[int, int] = {}  # slot -> token id written there
    prefixes = [[rng.randrange(1, 90) for _ in range(20)] for _ in range(3)]
    num_preempted = 0
    for step in range(400):
        if rng.random() < 0.3 and scheduler.num_unfinished < 8:
            suffix = [rng.randrange(1, 90) for _ in range(rng.randrange(1, 9))]
            scheduler.add_request(make_request(f"r{step}", rng.choice(prefixes) + suffix,
                                               max_tokens=rng.randrange(1, 12)))
        if scheduler.running and rng.random() < 0.05:
            scheduler.finish_request(rng.choice(scheduler.running).request_id,
                                     RequestStatus.FINISHED_ABORTED)
        output = scheduler.schedule()
        num_preempted += len(output.preempted_ids)
        for item in output.scheduled:
            request, end = item.request, item.start + item.num_tokens
            tokens = request.all_token_ids
            for position in range(item.start, end):  # the step writes the new K/V
                page = request.page_ids[position // page_size]
                slots[page * page_size + position % page_size] = tokens[position]
            held = [slots.get(request.page_ids[p // page_size] * page_size + p % page_size)
                    for p in range(end)]
            assert held == tokens[:end], f"stale KV read by {request.request_id}"
        scheduler.update(output, fake_runner(output))
        holders = [p for r in scheduler.running for p in r.page_ids]
        for page in range(20):
            assert manager.ref_count(page) == holders.count(page)
        assert manager.num_free_pages + len(set(holders)) == 20
    assert manager.prefix_cache.num_hit_tokens > 0 and num_preempted > 0


# --- the real engine -------------------------------------------------------------------

NUM_PAGES = 8  # 128 tokens of KV: the four ~53-token requests cannot all fit at once
SYSTEM = ("You are a careful assistant for a travel agency. Answer in one short sentence, "
          "name the country, and never invent prices or dates.")
QUESTIONS = ["Where is Kyoto?", "Where is Lima?", "Where is Oslo?", "Where is Cairo?"]


@pytest.fixture(scope="module")
def runtime():
    """SmolLM2 in float32 on one thread (restored after: the setting is process-wide)."""
    import torch

    from toolkit.compose import compose_config
    from toolkit.runtime import build_runtime

    num_threads = torch.get_num_threads()
    overrides = ["device=cpu", "device.num_threads=1", "model.dtype=float32",
                 "model.max_model_len=128",
                 f"cache.num_pages={NUM_PAGES}", "cache.page_size=16",
                 "cache.enable_prefix_caching=false", "scheduler.max_num_batched_tokens=96"]
    yield build_runtime(compose_config(overrides))
    torch.set_num_threads(num_threads)


def greedy_run(core, prompts: dict[str, list[int]]) -> tuple[dict[str, list[int]], int]:
    """All prompts at once, stepped to the end: (tokens per request, preempting steps)."""
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    for rid, prompt in prompts.items():
        core.add_request(rid, prompt, params)
    tokens: dict[str, list[int]] = {rid: [] for rid in prompts}
    preempting_steps = 0
    while core.has_unfinished:
        before = sum(r.num_preemptions for r in core.scheduler.requests.values())
        for output in core.step():
            tokens[output.request_id] += output.new_token_ids
        preempting_steps += sum(r.num_preemptions for r in core.scheduler.requests.values()) > before
    return tokens, preempting_steps


def test_greedy_outputs_match_with_and_without_the_cache(runtime):
    from toolkit.runtime import rebuild_engine

    tokenizer = runtime.tokenizer
    prompts = {f"q{i}": tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}])
        for i, q in enumerate(QUESTIONS)}
    assert all(len(p) > 32 for p in prompts.values()), "the system prompt fills full pages"
    without, preempted = greedy_run(runtime.core, prompts)
    assert preempted > 0, "the small cache should force preemption"
    cached_cfg = dataclasses.replace(
        runtime.config, cache=dataclasses.replace(runtime.config.cache,
                                                  enable_prefix_caching=True))
    # NOTE: the uncached core is never stepped again: the cached one now owns the pages.
    core = rebuild_engine(runtime, cached_cfg).core
    first, preempted = greedy_run(core, prompts)
    assert preempted > 0, "sharing the system prompt's pages is not enough to fit them all"
    again, _ = greedy_run(core, {f"{rid}-again": p for rid, p in prompts.items()})
    manager = core.scheduler.page_manager
    assert manager.prefix_cache.num_hit_tokens > 0
    for rid in prompts:
        assert first[rid] == without[rid], rid
        assert again[f"{rid}-again"] == without[rid], rid
    assert manager.num_free_pages == NUM_PAGES, "every page is free or evictable"
    assert all(manager.ref_count(page) == 0 for page in range(NUM_PAGES))
