"""Deterministic inference (device.deterministic, the default) on the real SmolLM2 in
bfloat16: a request's token ids, greedy or seeded, are bitwise the same alone and with a
cold cache as in a batch of 7, 16 or 64, after a full or partial prefix-cache hit, prefilled
in chunks, verified with ngram or draft-model speculation, preempted and recomputed, and on
one thread. Every comparison is between two runs of this build: nothing here depends on one
CPU's rounding."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from toolkit.protocol import SamplingParams
from toolkit.runtime import rebuild_engine

pytestmark = pytest.mark.slow

SYSTEM = ("You are a careful assistant for a small museum of maritime history. Answer in "
          "plain English, in at most two sentences, and never invent facts about the ships.")
QUESTIONS = [
    "What is a lighthouse for?", "Name three kinds of sailing ships.", "Why is the sea salty?",
    "How does a compass work?", "What is a knot in sailing?", "Who was Magellan?",
    "What does a harbour master do?", "Why do ships have bulkheads?", "What is a sextant?",
    "How deep is the Atlantic Ocean?", "What is the Plimsoll line?", "Why are anchors heavy?",
]
PLAIN = [
    "Hello\nthere", "Write a haiku about the sea.", "Count from one to twenty in words.",
    "Translate 'good morning' into French, Spanish and German.", "What is 17 times 23?",
    "Give me a recipe for pancakes.", "List the planets of the solar system in order.",
    "Explain recursion to a child.", "What is the capital of Australia?",
    "Summarise the plot of Hamlet in three sentences.",
    "Repeat this exactly: the quick brown fox jumps over the lazy dog, the quick brown fox "
    "jumps over the lazy dog, the quick brown fox jumps over the lazy dog.",
    " ".join(["Tell me about the history of the printing press and its effects on Europe,"] * 12),
]
MAX_TOKENS = 12


def _corpus(tokenizer) -> dict[str, tuple[list[int], SamplingParams]]:
    """30 requests: questions behind one shared system prompt (partial prefix hits), plain
    prompts of 3 to ~200 tokens, greedy and seeded."""
    greedy = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    chats = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
             for q in QUESTIONS] + [[{"role": "user", "content": p}] for p in PLAIN]
    corpus = {}
    for i, messages in enumerate(chats):
        ids = tokenizer.apply_chat_template(messages)
        corpus[f"greedy{i}"] = (ids, greedy)
        if i % 4 == 0:
            corpus[f"seeded{i}"] = (ids, replace(greedy, temperature=0.8, top_p=0.9, seed=i))
    assert len(corpus) == 30
    return corpus


def _fillers(count: int, seed: int) -> dict[str, tuple[list[int], SamplingParams]]:
    """``count`` unrelated requests of random lengths and sampling, to share the steps."""
    rng = random.Random(seed)
    return {f"filler{seed}_{i}": ([rng.randrange(100, 40000) for _ in range(rng.randrange(2, 90))],
                                  SamplingParams(max_tokens=rng.randrange(1, 20),
                                                 temperature=rng.choice([0.0, 1.0])))
            for i in range(count)}


def _run(core, requests, preemptions: dict[str, int] | None = None) -> dict[str, list[int]]:
    """Every request added at once, stepped to completion -> request id: token ids.
    ``preemptions`` collects how often each request was preempted."""
    tokens = {rid: [] for rid in requests}
    for rid, (prompt, params) in requests.items():
        core.add_request(rid, prompt, params)
    while core.has_unfinished:
        for output in core.step():
            tokens[output.request_id] += output.new_token_ids
        if preemptions is not None:
            preemptions |= {rid: r.num_preemptions for rid, r in core.scheduler.requests.items()}
    return tokens


def _engine(runtime, **groups):
    """A new engine core (a new, empty prefix cache) around this module's model, in the
    default configuration (prefix caching on) but for ``groups``, which replace config
    groups' fields, e.g. scheduler={"enable_chunked_prefill": True}."""
    cfg = runtime.config
    for group, fields in groups.items():
        cfg = replace(cfg, **{group: replace(getattr(cfg, group), **fields)})
    return rebuild_engine(runtime, cfg).core


@pytest.fixture(scope="module")
def corpus(own_runtime):
    return _corpus(own_runtime.tokenizer)


@pytest.fixture(scope="module")
def reference(own_runtime, corpus):
    """Each request alone on a cold cache (no prefix caching, no speculation)."""
    assert own_runtime.resolved.deterministic
    core = _engine(own_runtime, cache={"enable_prefix_caching": False})
    return {rid: _run(core, {rid: request})[rid] for rid, request in corpus.items()}


def _assert_same(reference, got):
    differing = [rid for rid in reference if got[rid] != reference[rid]]
    assert not differing, f"{len(differing)} of {len(reference)} differ: {differing}"


@pytest.mark.parametrize("batch_size", [7, 16, 64])
def test_in_a_batch(own_runtime, corpus, reference, batch_size):
    core = _engine(own_runtime)
    ids = list(corpus)
    got = {}
    for start in range(0, len(ids), batch_size):
        chunk = {rid: corpus[rid] for rid in ids[start:start + batch_size]}
        fillers = _fillers(max(0, batch_size - len(chunk)), seed=start + batch_size)
        got |= _run(core, chunk | fillers)
    _assert_same(reference, got)


def test_after_full_and_partial_prefix_cache_hits(own_runtime, corpus, reference):
    core = _engine(own_runtime, cache={"enable_prefix_caching": True})
    first = {}
    for rid, request in corpus.items():  # one by one: later questions hit the system prompt
        first |= _run(core, {rid: request})
    counters = core.scheduler.page_manager.prefix_cache_counters
    partial_hits = counters()["prefix_cache_hits"]
    assert partial_hits >= 16 * (len(QUESTIONS) - 1)  # at least the system prompt's page
    _assert_same(reference, first)
    _assert_same(reference, _run(core, corpus))  # every prompt's full pages cached
    assert counters()["prefix_cache_hits"] - partial_hits > 1000


@pytest.mark.parametrize("chunk", [16, 37])
def test_chunked_prefill(own_runtime, corpus, reference, chunk):
    core = _engine(own_runtime,
                   scheduler={"enable_chunked_prefill": True, "max_num_batched_tokens": chunk})
    _assert_same(reference, _run(core, corpus))


@pytest.mark.parametrize("method", ["ngram", "draft"])
def test_speculative_decoding(own_runtime, corpus, reference, method):
    core = _engine(own_runtime, speculative={"method": method, "num_speculative_tokens": 3})
    accepted_before = core.metrics.num_accepted_tokens
    _assert_same(reference, _run(core, corpus))
    assert core.metrics.num_accepted_tokens > accepted_before


def test_preempted_and_recomputed(own_runtime, corpus, reference):
    small = replace(own_runtime, resolved=replace(own_runtime.resolved, num_pages=40))
    core = rebuild_engine(small, own_runtime.config).core
    preemptions = {}
    got = _run(core, corpus, preemptions)
    assert sum(preemptions.values()) > 0, "40 pages should not hold 30 requests at once"
    _assert_same(reference, got)


def test_on_one_thread(own_runtime, corpus, reference):
    core = _engine(own_runtime)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got = _run(core, corpus)
    finally:
        torch.set_num_threads(threads)
    _assert_same(reference, got)
