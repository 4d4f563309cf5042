"""The scheduler with drafts from the runner: 1 + k tokens per decode, rewinds, pages,
stops; and a whole run through a fake runner that drafts after sampling."""

from __future__ import annotations

from toolkit.config.schema import SchedulerConfig
from toolkit.kv.page_manager import PageManager
from toolkit.protocol import Request, RequestStatus, RunnerOutput, SamplingParams
from toolkit.runner.drafter import Drafter
from toolkit.runner.proposer import Proposal, Proposer
from toolkit.scheduler.scheduler import Scheduler

EOS = 0
PAGE_SIZE = 4


def make(max_model_len=64, budget=64, num_pages=64) -> Scheduler:
    config = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=budget)
    page_manager = PageManager(num_pages, PAGE_SIZE, enable_prefix_caching=False)
    return Scheduler(config, page_manager, max_model_len)


def request(i: int, prompt_len: int = 6, max_tokens: int = 20, **kw) -> Request:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, eos_token_ids=(EOS,), **kw)
    return Request(f"r{i}", [10 + (i + j) % 7 for j in range(prompt_len)], params)


def step(scheduler, emitted: dict[str, list[int]], drafts: dict[str, list[int]] | None = None):
    output = scheduler.schedule()
    scheduler.update(output, RunnerOutput({k: list(v) for k, v in emitted.items()},
                                          draft_token_ids=drafts or {}))
    return output


def test_prefill_does_not_speculate_then_decode_gets_one_plus_k():
    scheduler = make()
    r = request(0)
    scheduler.add_request(r)
    first = step(scheduler, {"r0": [4]}, {"r0": [5, 6, 7]})
    assert first.scheduled[0].num_tokens == 6 and not first.scheduled[0].draft_token_ids
    assert r.draft_token_ids == [5, 6, 7]
    output = scheduler.schedule()
    [item] = output.scheduled
    assert (item.start, item.num_tokens, item.draft_token_ids) == (6, 4, [5, 6, 7])
    assert len(r.page_ids) == 3  # 6 + 1 + 3 = 10 slots
    # two drafts accepted, the third rejected: the target emitted 5, 6 and then 9
    scheduler.update(output, RunnerOutput({"r0": [5, 6, 9]}))
    assert r.output_token_ids == [4, 5, 6, 9] and r.draft_token_ids == []
    assert r.num_computed_tokens == 9  # 6 prompt + last token + 2 accepted drafts
    assert r.num_tokens - r.num_computed_tokens == 1
    assert len(r.page_ids) == 3  # the rejected slot stays allocated, to be overwritten


def test_all_rejected_and_all_accepted():
    scheduler = make()
    r = request(0)
    scheduler.add_request(r)
    step(scheduler, {"r0": [4]}, {"r0": [5, 6, 7]})
    step(scheduler, {"r0": [1]}, {"r0": [5, 6, 7]})  # every draft rejected
    assert r.output_token_ids == [4, 1] and r.num_computed_tokens == 7
    step(scheduler, {"r0": [5, 6, 7, 3]})  # all accepted plus the bonus
    assert r.output_token_ids == [4, 1, 5, 6, 7, 3] and r.num_computed_tokens == 11


def test_stop_token_in_the_middle_of_a_run_drops_the_rest_and_frees_pages():
    scheduler = make()
    r = request(0)
    scheduler.add_request(r)
    step(scheduler, {"r0": [4]}, {"r0": [5, 6, 7]})
    step(scheduler, {"r0": [5, EOS, 7, 3]}, {"r0": [1, 2]})
    assert r.output_token_ids == [4, 5, EOS]
    assert r.status == RequestStatus.FINISHED_STOPPED
    assert scheduler.page_manager.num_free_pages == 64 and not scheduler.requests


def test_stop_token_ids_and_min_tokens_apply_token_by_token():
    scheduler = make()
    r = request(0, stop_token_ids=(6,), min_tokens=4)
    scheduler.add_request(r)
    step(scheduler, {"r0": [4]}, {"r0": [5, 6, 7]})
    step(scheduler, {"r0": [5, 6, 7, 6]})  # the first 6 is below min_tokens; the second stops
    assert r.output_token_ids == [4, 5, 6, 7, 6] and r.status == RequestStatus.FINISHED_STOPPED


def test_budget_trims_drafts_and_no_budget_or_pages_fall_back_to_one_token():
    scheduler = make(budget=3)
    scheduler.add_request(request(0, prompt_len=3))
    step(scheduler, {"r0": [4]}, {"r0": [5, 6, 7]})
    assert [s.draft_token_ids for s in scheduler.schedule().scheduled] == [[5, 6]]
    scheduler = make(num_pages=2)
    r = request(0, prompt_len=7)
    scheduler.add_request(r)
    step(scheduler, {"r0": [4]}, {"r0": [5, 6, 7]})  # 8 tokens: both pages in use
    [item] = scheduler.schedule().scheduled
    assert item.num_tokens == 1 and not item.draft_token_ids and len(r.page_ids) == 2


def test_preemption_drops_the_drafts():
    scheduler = make(num_pages=4)
    first, second = request(0, prompt_len=8), request(1, prompt_len=8)
    scheduler.add_request(first)
    scheduler.add_request(second)
    step(scheduler, {"r0": [4], "r1": [4]}, {"r0": [5], "r1": [5]})
    output = scheduler.schedule()  # r0's ninth token needs a third page of four: r1 goes
    assert output.preempted_ids == ["r1"] and second.draft_token_ids == []
    assert [(s.request, s.num_tokens) for s in output.scheduled] == [(first, 1)]


class HalfRight(Proposer):
    """Right on every other draft of a fabricated target (token = f(tokens so far))."""

    def propose(self, requests):
        out = []
        for r in requests:
            tokens, drafts = list(r.token_ids), []
            for j in range(r.max_num_tokens):
                drafts.append(target(tokens) if j % 2 == 0 else 99)
                tokens.append(drafts[-1])
            out.append(Proposal(drafts))
        return out


def target(tokens: list[int]) -> int:
    return 1 + (sum(tokens) * 7 + len(tokens)) % 13


def fake_runner_step(scheduler: Scheduler, drafter: Drafter | None) -> None:
    """One step where the fabricated target verifies drafts and the drafter drafts after
    sampling, as ModelRunner.execute does."""
    output = scheduler.schedule()
    runner_output = RunnerOutput()
    for s in output.scheduled:
        if not s.samples:
            continue
        tokens, got = list(s.request.all_token_ids), []
        for d in s.draft_token_ids + [None]:
            got.append(target(tokens))
            tokens.append(got[-1])
            if got[-1] != d:
                break
        runner_output.sampled_token_ids[s.request.request_id] = got
    if drafter is not None:
        drafter.propose(output.scheduled, runner_output)
    scheduler.update(output, runner_output)


def test_run_to_completion_matches_the_non_speculative_tokens():
    """Speculation with drafts that are right half the time produces exactly the tokens
    of plain decoding, in fewer steps, and never drafts past max_tokens."""
    def run(scheduler, drafter):
        steps = 0
        while scheduler.num_unfinished:
            fake_runner_step(scheduler, drafter)
            steps += 1
        return steps

    plain, spec = make(), make()
    requests = {name: [request(i, max_tokens=15) for i in range(3)] for name in ("a", "b")}
    for r in requests["a"]:
        plain.add_request(r)
    for r in requests["b"]:
        spec.add_request(r)
    assert run(spec, Drafter(HalfRight(), 4, max_model_len=64)) < run(plain, None)
    for a, b in zip(requests["a"], requests["b"]):
        assert a.output_token_ids == b.output_token_ids and len(b.output_token_ids) == 15
    assert spec.page_manager.num_free_pages == 64
