"""Scheduler and block manager on CPU, driven by a fabricated runner."""

from __future__ import annotations

import pytest

from toolkit.config.schema import SchedulerConfig
from toolkit.kv.page_manager import PageManager
from toolkit.protocol import Request, RequestStatus, RunnerOutput, SamplingParams
from toolkit.scheduler.scheduler import Scheduler

EOS = 0


def next_token(request: Request) -> int:
    """A deterministic 'model': the token depends only on the request and its length."""
    return 1 + (sum(request.prompt_token_ids) * 31 + request.num_tokens * 7) % 97


def fake_runner(output) -> RunnerOutput:
    return RunnerOutput({s.request.request_id: [next_token(s.request)]
                         for s in output.scheduled if s.samples})


def make_scheduler(num_pages=64, page_size=4, max_num_seqs=8, budget=32, chunked=True,
                   max_model_len=256) -> Scheduler:
    config = SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=budget,
                             enable_chunked_prefill=chunked)
    return Scheduler(config, PageManager(num_pages, page_size), max_model_len)


def make_request(i: int, prompt_len: int, max_tokens: int = 8, **kw) -> Request:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, eos_token_ids=(EOS,), **kw)
    return Request(f"r{i}", [(i * 13 + j) % 50 + 1 for j in range(prompt_len)], params)


def run_to_completion(scheduler: Scheduler, max_steps: int = 1000) -> list:
    trace = []
    for _ in range(max_steps):
        if not scheduler.num_unfinished:
            return trace
        output = scheduler.schedule()
        trace.append(output)
        scheduler.update(output, fake_runner(output))
    raise AssertionError("requests did not finish")


def expected_outputs(request: Request) -> list[int]:
    """What the fabricated model produces for a request run alone."""
    probe = Request("probe", list(request.prompt_token_ids), request.sampling_params)
    while len(probe.output_token_ids) < request.sampling_params.max_tokens:
        probe.output_token_ids.append(next_token(probe))
    return probe.output_token_ids


def test_admission_respects_max_num_seqs_and_token_budget():
    scheduler = make_scheduler(max_num_seqs=3, budget=20)
    for i in range(5):
        scheduler.add_request(make_request(i, prompt_len=6))
    output = scheduler.schedule()
    assert [s.num_tokens for s in output.scheduled] == [6, 6, 6]
    assert output.num_tokens <= 20
    assert len(scheduler.running) == 3 and len(scheduler.waiting) == 2


def test_chunked_prefill_splits_a_long_prompt_and_samples_only_at_its_end():
    scheduler = make_scheduler(budget=16)
    request = make_request(0, prompt_len=40, max_tokens=2)
    scheduler.add_request(request)
    chunks = []
    for _ in range(3):
        output = scheduler.schedule()
        chunks.append([(s.start, s.num_tokens, s.samples) for s in output.scheduled])
        scheduler.update(output, fake_runner(output))
    assert chunks == [[(0, 16, False)], [(16, 16, False)], [(32, 8, True)]]
    assert request.num_output_tokens == 1


def test_without_chunking_a_prompt_over_budget_waits():
    scheduler = make_scheduler(budget=16, chunked=False)
    scheduler.add_request(make_request(0, prompt_len=10))
    scheduler.add_request(make_request(1, prompt_len=10))
    output = scheduler.schedule()
    assert [s.request.request_id for s in output.scheduled] == ["r0"]


def test_decodes_join_and_leave_every_step():
    scheduler = make_scheduler()
    short, long = make_request(0, 4, max_tokens=2), make_request(1, 4, max_tokens=6)
    scheduler.add_request(short)
    scheduler.add_request(long)
    scheduler.update(out := scheduler.schedule(), fake_runner(out))
    late = make_request(2, 4, max_tokens=2)
    scheduler.add_request(late)
    output = scheduler.schedule()
    assert [(s.request.request_id, s.num_tokens) for s in output.scheduled] == [
        ("r0", 1), ("r1", 1), ("r2", 4)]
    scheduler.update(output, fake_runner(output))
    assert short.status is RequestStatus.FINISHED_LENGTH
    assert [s.request.request_id for s in scheduler.schedule().scheduled] == ["r1", "r2"]


def test_preemption_recomputes_and_outputs_are_not_corrupted():
    scheduler = make_scheduler(num_pages=10, page_size=4, budget=64)
    requests = [make_request(i, prompt_len=6, max_tokens=12) for i in range(4)]
    for request in requests:
        scheduler.add_request(request)
    trace = run_to_completion(scheduler)
    assert any(output.preempted_ids for output in trace)
    assert sum(r.num_preemptions for r in requests) > 0
    for request in requests:
        assert request.output_token_ids == expected_outputs(request)
    assert scheduler.page_manager.num_free_pages == 10


def test_pages_cover_exactly_the_scheduled_tokens():
    scheduler = make_scheduler(page_size=4)
    request = make_request(0, prompt_len=9, max_tokens=5)
    scheduler.add_request(request)
    while scheduler.num_unfinished:
        output = scheduler.schedule()
        for item in output.scheduled:
            assert len(item.request.page_ids) == -(-(item.start + item.num_tokens) // 4)
        scheduler.update(output, fake_runner(output))
    assert request.page_ids == []


def test_abort_frees_pages_wherever_the_request_is():
    scheduler = make_scheduler(num_pages=16, max_num_seqs=1)
    running, queued = make_request(0, 8), make_request(1, 8)
    scheduler.add_request(running)
    scheduler.add_request(queued)
    scheduler.update(out := scheduler.schedule(), fake_runner(out))
    assert scheduler.page_manager.num_free_pages < 16
    scheduler.finish_request("r0", RequestStatus.FINISHED_ABORTED)
    scheduler.finish_request("r1", RequestStatus.FINISHED_ABORTED)
    assert running.status is RequestStatus.FINISHED_ABORTED and queued.finished
    assert scheduler.page_manager.num_free_pages == 16
    assert not scheduler.running and not scheduler.waiting and not scheduler.num_unfinished


@pytest.mark.parametrize("stop", [{"eos": True}, {"stop_token_ids": True}])
def test_stop_tokens_finish_with_stop(stop):
    scheduler = make_scheduler()
    request = make_request(0, 4, max_tokens=50)
    first = next_token(request)
    if "eos" in stop:
        request.sampling_params = SamplingParams(max_tokens=50, eos_token_ids=(first,))
    else:
        request.sampling_params = SamplingParams(max_tokens=50, stop_token_ids=(first,))
    scheduler.add_request(request)
    scheduler.update(out := scheduler.schedule(), fake_runner(out))
    assert request.status is RequestStatus.FINISHED_STOPPED
    assert request.output_token_ids == [first]


def test_ignore_eos_and_context_limit():
    scheduler = make_scheduler(max_model_len=10)
    request = make_request(0, 6, max_tokens=50)
    request.sampling_params = SamplingParams(
        max_tokens=50, ignore_eos=True, eos_token_ids=tuple(range(100)))
    scheduler.add_request(request)
    run_to_completion(scheduler)
    assert request.status is RequestStatus.FINISHED_LENGTH
    assert request.num_tokens == 10


def test_many_requests_under_pressure_finish_without_leaks():
    scheduler = make_scheduler(num_pages=24, page_size=4, max_num_seqs=6, budget=24)
    requests = [make_request(i, prompt_len=3 + i % 9, max_tokens=4 + i % 7) for i in range(30)]
    for request in requests:
        scheduler.add_request(request)
    run_to_completion(scheduler, max_steps=5000)
    assert all(r.status is RequestStatus.FINISHED_LENGTH for r in requests)
    for request in requests:
        assert request.output_token_ids == expected_outputs(request)
    assert scheduler.page_manager.num_free_pages == 24
