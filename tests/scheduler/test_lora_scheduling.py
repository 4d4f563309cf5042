"""The scheduler keeps at most max_loras distinct LoRA adapters in a step; the prefix
cache never shares pages between adapters (or an adapter and the base model)."""

from __future__ import annotations

from toolkit.config.schema import SchedulerConfig
from toolkit.kv.page_manager import PageManager
from toolkit.protocol import Request, RunnerOutput, SamplingParams
from toolkit.scheduler.scheduler import Scheduler


def _request(rid: str, lora: str | None, prompt: list[int] | None = None,
             max_tokens: int = 3) -> Request:
    return Request(rid, prompt or [1, 2, 3, 4, 5], SamplingParams(
        max_tokens=max_tokens, ignore_eos=True, lora_name=lora))


def _drain(scheduler: Scheduler) -> list[set[str | None]]:
    """Step until done, each request sampling token 7 -> each step's adapter set."""
    steps = []
    while scheduler.num_unfinished:
        output = scheduler.schedule()
        steps.append({item.request.lora_name for item in output.scheduled})
        runner = RunnerOutput()
        for item in output.scheduled:
            runner.sampled_token_ids[item.request.request_id] = [7]
        scheduler.update(output, runner)
    return steps


def test_at_most_max_loras_adapters_per_step():
    scheduler = Scheduler(SchedulerConfig(max_num_seqs=16), PageManager(128, 4),
                          max_model_len=64, max_loras=2)
    for i in range(12):
        scheduler.add_request(_request(f"r{i}", [None, "a", "b", "c", "d"][i % 5]))
    steps = _drain(scheduler)
    assert all(len(step - {None}) <= 2 for step in steps)
    assert {"a", "b", "c", "d", None} <= set().union(*steps)
    first = steps[0]
    assert first == {None, "a", "b"}  # base requests are never held back


def test_a_passed_over_request_keeps_its_place():
    scheduler = Scheduler(SchedulerConfig(max_num_seqs=16), PageManager(128, 4),
                          max_model_len=64, max_loras=1)
    for rid, lora in [("r0", "a"), ("r1", "b"), ("r2", "a"), ("r3", None)]:
        scheduler.add_request(_request(rid, lora))
    admitted = [item.request.request_id for item in scheduler.schedule().scheduled]
    assert admitted == ["r0", "r2", "r3"]
    assert [r.request_id for r in scheduler.waiting] == ["r1"]


def test_no_cap_without_max_loras():
    scheduler = Scheduler(SchedulerConfig(max_num_seqs=16), PageManager(128, 4),
                          max_model_len=64)
    for i, lora in enumerate("abcdef"):
        scheduler.add_request(_request(f"r{i}", lora))
    assert len(scheduler.schedule().scheduled) == 6


def test_prefix_pages_are_keyed_by_adapter():
    pages = PageManager(64, 4)
    prompt = list(range(1, 14))  # three full pages
    first = _request("first", "a", prompt)
    assert pages.allocate(first, len(prompt))
    first.num_computed_tokens = len(prompt)
    pages.free(first)  # its full pages are now cached under adapter a
    assert pages.find_cached_prefix(_request("same", "a", prompt)).num_pages == 3
    assert pages.find_cached_prefix(_request("other", "b", prompt)).num_pages == 0
    assert pages.find_cached_prefix(_request("base", None, prompt)).num_pages == 0
