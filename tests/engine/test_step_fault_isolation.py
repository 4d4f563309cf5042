"""EngineCore.step's fault isolation on a tiny random model with n-gram speculation: a
request whose draft verification or prompt logprobs raise fails alone and the others get
the tokens they get without it, also when the forward fails only with it; a failure no
request owns (a forward that fails for every request, memory exhausted) still propagates out
of the step."""

from __future__ import annotations

import pytest
import torch
from tiny_engine import build_tiny_runtime

import toolkit.runner.model_runner as model_runner
from toolkit.protocol import SamplingParams

FAULTY_SEED = 4242
"""The request whose rows carry this seed is the faulty one (its rows are greedy, so the
seed does not change its tokens)."""
PROMPTS = [[1, 2, 3, 4, 1, 2, 3], [5, 6, 5, 6, 5], [7, 3, 7, 3, 7, 3], [2, 4, 2, 4]]
"""Repetitive prompts: the n-gram proposer finds drafts in them."""


@pytest.fixture(scope="module")
def core(tmp_path_factory, runtime):
    """An engine core (never started as an AsyncEngine) over a tiny model, drafting up to
    3 tokens by n-gram lookup."""
    _, tiny = build_tiny_runtime(tmp_path_factory.mktemp("tiny-faults"), runtime.model_dir,
                                 ["speculative.method=ngram",
                                  "speculative.num_speculative_tokens=3"])
    return tiny.core


def greedy(**fields) -> SamplingParams:
    return SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True, **fields)


def run(core, requests: dict[str, tuple[list[int], SamplingParams]]) -> dict[str, dict]:
    """Add all requests, step to completion; per request its tokens, finish and error."""
    results = {rid: {"tokens": [], "finish_reason": None, "error": None} for rid in requests}
    for rid, (prompt, params) in requests.items():
        core.add_request(rid, prompt, params)
    while core.has_unfinished:
        for output in core.step():
            result = results[output.request_id]
            result["tokens"] += output.new_token_ids
            result["finish_reason"] = output.finish_reason
            result["error"] = output.error
    return results


def assert_idle(core) -> None:
    """No request, page or per-request state is left."""
    page_manager = core.scheduler.page_manager
    assert page_manager.num_free_pages == page_manager.num_pages
    assert not any(core.num_request_states().values())


def assert_isolated(core, good: dict, bad: dict, error: str) -> None:
    """``bad`` fails with ``error`` and ``good`` gets its tokens of a run without it."""
    alone = run(core, good)
    mixed = run(core, {**good, **bad})
    for request_id in bad:
        assert (mixed[request_id]["finish_reason"], mixed[request_id]["error"]) == (
            "abort", error)
    for request_id in good:
        assert mixed[request_id] == alone[request_id], request_id
    assert_idle(core)


def is_faulty(params: SamplingParams) -> bool:
    return params.seed == FAULTY_SEED


def test_a_verification_failure_fails_only_its_request(core, monkeypatch):
    real = model_runner.verify_drafts

    def verify_drafts(logits, rows, acceptance, grammar=None):
        if any(is_faulty(row.params) and row.draft_ids for row in rows):
            raise RuntimeError("injected verification failure")
        return real(logits, rows, acceptance, grammar)

    monkeypatch.setattr(model_runner, "verify_drafts", verify_drafts)
    good = {f"good-{i}": (p, greedy()) for i, p in enumerate(PROMPTS[:3])}
    verified_before = core.metrics.num_draft_tokens
    assert_isolated(core, good, {"bad": (PROMPTS[3], greedy(seed=FAULTY_SEED))},
                    "sampling failed for this request")
    assert core.metrics.num_draft_tokens > verified_before, "no drafts were verified"


def test_a_prompt_logprobs_failure_fails_only_its_request(core, monkeypatch):
    real = model_runner.ModelRunner._prompt_logprobs

    def prompt_logprobs(self, item, hidden, start_row):
        if is_faulty(item.request.sampling_params):
            raise RuntimeError("injected prompt logprobs failure")
        return real(self, item, hidden, start_row)

    monkeypatch.setattr(model_runner.ModelRunner, "_prompt_logprobs", prompt_logprobs)
    good = {f"good-{i}": (p, greedy(prompt_logprobs=1)) for i, p in enumerate(PROMPTS[:3])}
    bad = {"bad": (PROMPTS[3], greedy(seed=FAULTY_SEED, prompt_logprobs=1))}
    assert_isolated(core, good, bad, "prompt logprobs failed for this request")


@pytest.mark.parametrize("fault", [
    pytest.param(MemoryError("injected"), id="memory-exhausted"),
    pytest.param(torch.OutOfMemoryError("injected"), id="device-memory-exhausted"),
])
def test_memory_exhausted_while_sampling_is_no_request_s_fault(core, monkeypatch, fault):
    def sample(*args, **kwargs):
        raise fault

    monkeypatch.setattr(model_runner, "sample", sample)
    monkeypatch.setattr(model_runner, "verify_drafts", sample)
    with pytest.raises(type(fault)):
        run(core, {"a": (PROMPTS[0], greedy()), "b": (PROMPTS[1], greedy())})
    abort_all(core)


def test_a_forward_that_fails_with_one_request_fails_only_that_request(core, monkeypatch):
    marker = 99
    real_forward = core.runner._forward

    def forward(batch, *args):
        if (batch.input_ids == marker).any():
            raise RuntimeError("injected forward failure")
        return real_forward(batch, *args)

    monkeypatch.setattr(core.runner, "_forward", forward)
    good = {"good-a": (PROMPTS[0], greedy()), "good-b": (PROMPTS[2], greedy(logprobs=1))}
    bad = {"bad": ([*PROMPTS[1], marker], greedy())}
    assert_isolated(core, good, bad, "the forward failed for this request")


def test_a_failing_forward_propagates(core, monkeypatch):
    def forward(batch, *args):
        raise RuntimeError("injected forward failure")

    monkeypatch.setattr(core.runner, "_forward", forward)
    with pytest.raises(RuntimeError, match="injected forward failure"):
        run(core, {"a": (PROMPTS[0], greedy()), "b": (PROMPTS[1], greedy())})
    abort_all(core)


def abort_all(core) -> None:
    """Abort what a propagated failure left behind; nothing may leak."""
    for request_id in list(core.scheduler.requests):
        core.abort_request(request_id)
    assert_idle(core)
