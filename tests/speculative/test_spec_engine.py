"""Speculative decoding through the real engine on tiny random models: greedy outputs,
logprobs and stop strings are exactly those of plain decoding; sampled outputs follow the
target's distribution (chi-square against the plain engine's own probabilities)."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
import torch
from spec_stats import chi2_critical, chi_square
from tiny_models import tiny_runtime, write_tiny_llama

from toolkit.compose import compose_config
from toolkit.protocol import SamplingParams
from toolkit.runtime import rebuild_engine

VOCAB = 512
NUM_PROMPTS = 20


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory):
    """plain / ngram / draft engines around one loaded target (the draft: the target's
    weights plus noise, so it agrees often but not always)."""
    root = tmp_path_factory.mktemp("spec")
    target = write_tiny_llama(root / "target", VOCAB, seed=0)
    draft = write_tiny_llama(root / "draft", VOCAB, seed=0, noise=0.05)
    with_draft = tiny_runtime(target, "speculative=draft", f"speculative.draft_model.path={draft}",
                              "speculative.draft_model.dtype=float32",
                              "speculative.num_speculative_tokens=3")
    base = with_draft.config
    plain = rebuild_engine(with_draft, replace(base, speculative=replace(
        base.speculative, method="none")))
    ngram = rebuild_engine(with_draft, replace(base, speculative=replace(
        base.speculative, method="ngram", num_speculative_tokens=4)))
    return {"plain": plain.core, "ngram": ngram.core, "draft": with_draft.core}


def prompts() -> list[list[int]]:
    """Random prompts, half of them with a repeated span (so prompt lookup finds drafts)."""
    rng = random.Random(0)
    result = []
    for i in range(NUM_PROMPTS):
        tokens = [rng.randrange(3, VOCAB) for _ in range(rng.randrange(4, 20))]
        if i % 2:
            tokens = tokens + tokens[: len(tokens) // 2]
        result.append(tokens)
    return result


def run(core, requests: dict[str, tuple[list[int], SamplingParams]]) -> dict[str, dict]:
    results = {rid: {"tokens": [], "text": "", "finish": None, "logprobs": []}
               for rid in requests}
    for rid, (prompt, params) in requests.items():
        core.add_request(rid, prompt, params)
    while core.has_unfinished:
        for out in core.step():
            result = results[out.request_id]
            result["tokens"] += out.new_token_ids
            result["text"] += out.new_text
            result["finish"] = out.finish_reason
            result["logprobs"] += out.logprobs or []
    return results


def assert_clean(core) -> None:
    assert core.scheduler.page_manager.num_free_pages == core.scheduler.page_manager.num_pages
    assert not any(core.num_request_states().values()), core.num_request_states()


@pytest.mark.parametrize("method", ["ngram", "draft"])
def test_greedy_outputs_identical_with_and_without_speculation(runtimes, method):
    params = SamplingParams(max_tokens=32, temperature=0.0, logprobs=2)
    requests = {f"p{i}": (p, params) for i, p in enumerate(prompts())}
    spec_core = runtimes[method]
    before = replace(spec_core.metrics)
    plain, spec = run(runtimes["plain"], requests), run(spec_core, requests)
    for rid in requests:
        assert spec[rid]["tokens"] == plain[rid]["tokens"], rid
        assert spec[rid]["text"] == plain[rid]["text"] and spec[rid]["finish"] == plain[rid]["finish"]
        assert len(spec[rid]["logprobs"]) == len(spec[rid]["tokens"])
        for a, b in zip(spec[rid]["logprobs"], plain[rid]["logprobs"]):
            assert a.token_id == b.token_id and a.rank == b.rank
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
            assert [t for t, _ in a.top] == [t for t, _ in b.top]
    metrics = spec_core.metrics
    verified = metrics.num_draft_tokens - before.num_draft_tokens
    accepted = metrics.num_accepted_tokens - before.num_accepted_tokens
    assert verified > 0 and 0 < accepted < verified, (verified, accepted)
    assert_clean(spec_core)


def test_stop_string_inside_an_accepted_run_cuts_there(runtimes):
    greedy = SamplingParams(max_tokens=32, temperature=0.0)
    requests = {f"p{i}": (p, greedy) for i, p in enumerate(prompts()) if i % 2}
    plain = run(runtimes["plain"], requests)
    stops = {}
    for rid, result in plain.items():
        text = result["text"]
        if len(text) > 12:
            stops[rid] = text[len(text) // 2: len(text) // 2 + 3]
    assert stops
    stopped = {rid: (requests[rid][0], replace(greedy, stop=(stop,))) for rid, stop in stops.items()}
    expected = run(runtimes["plain"], stopped)
    for method in ("ngram", "draft"):
        got = run(runtimes[method], stopped)
        for rid in stopped:
            assert got[rid] == expected[rid], (method, rid)
            assert got[rid]["finish"] == "stop"
        assert_clean(runtimes[method])


SMALL_VOCAB = 32


@pytest.fixture(scope="module")
def small_runtimes(tmp_path_factory):
    """A 32-token target whose prompt holds every token, so prompt lookup always drafts;
    and a noisier draft model (its sampled q differs from p)."""
    root = tmp_path_factory.mktemp("spec_small")
    target = write_tiny_llama(root / "target", SMALL_VOCAB, seed=3, logit_scale=0.5)
    draft = write_tiny_llama(root / "draft", SMALL_VOCAB, seed=3, logit_scale=0.5, noise=0.1)
    with_draft = tiny_runtime(target, "speculative=draft", f"speculative.draft_model.path={draft}",
                              "speculative.draft_model.dtype=float32")
    base = with_draft.config
    plain = rebuild_engine(with_draft, replace(base, speculative=replace(
        base.speculative, method="none")))
    ngram = rebuild_engine(with_draft, replace(base, speculative=replace(
        base.speculative, method="ngram", prompt_lookup_min=1)))
    return {"plain": plain.core, "ngram": ngram.core, "draft": with_draft.core}


def _next_token_probs(core, prompt: list[int]) -> list[float]:
    """The plain engine's next-token distribution after ``prompt`` (temperature 1, so the
    raw logprobs are the sampling distribution)."""
    params = SamplingParams(max_tokens=1, temperature=1.0, logprobs=SMALL_VOCAB,
                            ignore_eos=True)
    [entry] = run(core, {"q": (prompt, params)})["q"]["logprobs"]
    probs = [0.0] * SMALL_VOCAB
    for token, logprob in entry.top:
        probs[token] = math.exp(logprob)
    return probs


def _two_token_distribution(core, prompt: list[int]) -> dict[tuple[int, int], float]:
    """p(x1, x2 | prompt), by brute force over the vocabulary."""
    first = _next_token_probs(core, prompt)
    return {(x1, x2): p1 * p2 for x1, p1 in enumerate(first)
            for x2, p2 in enumerate(_next_token_probs(core, prompt + [x1]))}


@pytest.mark.parametrize("method", ["ngram", "draft"])
def test_sampled_continuations_follow_the_target(small_runtimes, method):
    """x1 comes from the prefill step; x2 from verifying a draft (max_tokens=3 leaves one
    draft slot), as an accepted draft or a recovered token; x3 (a bonus) is not counted."""
    # the model's own greedy chain: its likely continuations occurred in the prompt, so
    # prompt lookup drafts tokens the target often accepts
    chain = [5, 9, 14]
    greedy = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    prompt = chain + run(small_runtimes["plain"], {"g": (chain, greedy)})["g"]["tokens"]
    expected = _two_token_distribution(small_runtimes["plain"], prompt)
    core = small_runtimes[method]
    before = replace(core.metrics)
    torch.manual_seed(1)
    params = SamplingParams(max_tokens=3, temperature=1.0, ignore_eos=True)
    num_samples = 3000
    results = run(core, {f"s{i}": (prompt, params) for i in range(num_samples)})
    samples = [tuple(r["tokens"][:2]) for r in results.values()]
    stat, df = chi_square(samples, expected)
    assert stat < chi2_critical(df), (stat, df)
    accepted = core.metrics.num_accepted_tokens - before.num_accepted_tokens
    verified = core.metrics.num_draft_tokens - before.num_draft_tokens
    assert verified > num_samples // 2 and 0.1 * verified < accepted < verified, (verified, accepted)
    assert_clean(core)


def test_compose_rejects_bad_speculative_values():
    from toolkit.config.errors import ConfigError

    with pytest.raises(ConfigError, match="valid choices: rejection_sampler, typical_acceptance"):
        compose_config(["speculative=ngram", "speculative.acceptance_method=fast"])
    with pytest.raises(ConfigError, match="num_speculative_tokens=0 must be >= 1"):
        compose_config(["speculative=ngram", "speculative.num_speculative_tokens=0"])
    cfg = compose_config(["speculative=draft", "speculative.draft_model.dtype=float32"])
    assert cfg.speculative.draft_model.dtype == "float32"
