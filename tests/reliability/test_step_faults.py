"""A failure inside a step (sampling, a grammar matcher, detokenizing) fails only the
request it belongs to: that request ends with an error, its pages and per-request state
are released, and the rest of the batch gets exactly the tokens it gets without it (the
engine is deterministic, so a request's tokens do not depend on its batch)."""

from __future__ import annotations

import asyncio

import pytest
from reliability_helpers import FAIL_AFTER, FAULTY_SEED, Faulty, wait_idle

from toolkit.engine.output_processor import OutputProcessor
from toolkit.guided.matchers import GrammarMatchers
from toolkit.protocol import SamplingParams
from toolkit.protocol.guided import GuidedSpec

PROMPTS = ["Tell me a long story about a dragon.", "Count from one to twenty.",
           "Describe the sea in a few sentences."]
REGEX = GuidedSpec("regex", "[a-z ]{4,60}", param="guided_regex")


def prompt_ids(engine, text: str) -> list[int]:
    return engine.tokenizer.apply_chat_template([{"role": "user", "content": text}])


def greedy(max_tokens: int = 12, **fields) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, **fields)


async def run(engine, requests: dict[str, tuple[list[int], SamplingParams]]) -> dict[str, dict]:
    """Send all requests at once; per request its tokens, finish reason and error."""

    async def one(request_id: str, prompt: list[int], params: SamplingParams) -> dict:
        result = {"tokens": [], "finish_reason": None, "error": None}
        async for output in engine.generate(request_id, prompt, params):
            result["tokens"] += output.new_token_ids
            result["finish_reason"] = output.finish_reason
            result["error"] = output.error
        return result

    results = await asyncio.gather(*(one(rid, *request) for rid, request in requests.items()))
    return dict(zip(requests, results))


async def assert_isolated(engine, good: dict, bad: dict, error: str) -> dict:
    """Run ``good`` alone, then ``good`` and ``bad`` together: every bad request fails with
    ``error``, every good one gets the same tokens as alone, and the engine ends healthy
    with no page or per-request state left. Returns the mixed run's results."""
    alone = await run(engine, good)
    errors_before = engine.metrics.finished_requests.get("error", 0)
    mixed = await run(engine, {**good, **bad})
    for request_id in bad:
        assert mixed[request_id]["finish_reason"] == "abort"
        assert mixed[request_id]["error"] == error
    for request_id in good:
        assert mixed[request_id] == alone[request_id], request_id
        assert alone[request_id]["error"] is None
    assert engine.healthy
    assert not any((await wait_idle(engine)).values())
    page_manager = engine.core.scheduler.page_manager
    assert page_manager.num_free_pages == page_manager.num_pages
    assert not any(engine.core.num_request_states().values())
    assert engine.metrics.finished_requests.get("error", 0) == errors_before + len(bad)
    return mixed


async def test_a_sampling_failure_fails_only_its_request(engine, faulty_sampler):
    good = {f"good-{i}": (prompt_ids(engine, p), greedy()) for i, p in enumerate(PROMPTS)}
    good["good-logprobs"] = (prompt_ids(engine, PROMPTS[0]), greedy(logprobs=2))
    bad = {"bad": (prompt_ids(engine, PROMPTS[1]), greedy(seed=FAULTY_SEED))}
    mixed = await assert_isolated(engine, good, bad, "sampling failed for this request")
    assert len(mixed["bad"]["tokens"]) == FAIL_AFTER


@pytest.mark.parametrize("method,error", [
    ("accept_token", "the grammar failed for this request"),
    ("fill_next_token_bitmask", "sampling failed for this request"),  # the mask is sampling's
])
async def test_a_grammar_matcher_failure_fails_only_its_request(engine, monkeypatch, method,
                                                                 error):
    real_add = GrammarMatchers.add

    def add(self, request_id, grammar, stop_token_ids=()):
        real_add(self, request_id, grammar, stop_token_ids)
        if request_id.startswith("bad"):
            self._matchers[request_id] = Faulty(self._matchers[request_id], method, FAIL_AFTER)

    monkeypatch.setattr(GrammarMatchers, "add", add)
    good = {"good-guided": (prompt_ids(engine, PROMPTS[0]), greedy(guided=REGEX)),
            "good-plain": (prompt_ids(engine, PROMPTS[2]), greedy())}
    bad = {"bad-guided": (prompt_ids(engine, PROMPTS[1]), greedy(guided=REGEX))}
    mixed = await assert_isolated(engine, good, bad, error)
    assert len(mixed["bad-guided"]["tokens"]) == FAIL_AFTER


async def test_a_detokenizer_failure_fails_only_its_request(engine, monkeypatch):
    real_add = OutputProcessor.add_request

    def add_request(self, request):
        real_add(self, request)
        if request.request_id.startswith("bad"):
            state = self._states[request.request_id]
            state.detokenizer = Faulty(state.detokenizer, "step", FAIL_AFTER)

    monkeypatch.setattr(OutputProcessor, "add_request", add_request)
    good = {f"good-{i}": (prompt_ids(engine, p), greedy(stop=["zzz"]))
            for i, p in enumerate(PROMPTS)}
    bad = {"bad": (prompt_ids(engine, PROMPTS[1]), greedy(stop=["zzz"]))}
    mixed = await assert_isolated(engine, good, bad, "output processing failed for this request")
    assert len(mixed["bad"]["tokens"]) == FAIL_AFTER

