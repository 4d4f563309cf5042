"""AsyncEngine on the real SmolLM2 engine: concurrency, early exit, and loop death."""

from __future__ import annotations

import asyncio
import threading

from toolkit.engine.async_engine import AsyncEngine
from toolkit.protocol import SamplingParams


def prompt(engine, text: str) -> list[int]:
    return engine.tokenizer.apply_chat_template([{"role": "user", "content": text}])


async def collect(engine, request_id: str, prompt_ids: list[int], params: SamplingParams):
    outputs = [o async for o in engine.generate(request_id, prompt_ids, params)]
    return "".join(o.new_text for o in outputs), outputs[-1]


async def wait_idle(engine, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while engine.core.has_unfinished and loop.time() < deadline:
        await asyncio.sleep(0.02)


async def test_concurrent_streams_finish_and_leave_no_pages(engine):
    params = SamplingParams(max_tokens=8, temperature=0.0)
    results = await asyncio.gather(*(
        collect(engine, f"c{i}", prompt(engine, f"Count to {i + 3}."), params)
        for i in range(6)))
    assert all(text and last.finished for text, last in results)
    await wait_idle(engine)
    assert engine.stats()["kv_cache_usage"] == 0.0


async def test_leaving_a_stream_early_aborts_the_request(engine):
    params = SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True)
    stream = engine.generate("early", prompt(engine, "Tell me a long story."), params)
    async for output in stream:
        assert not output.finished
        break
    await stream.aclose()
    await wait_idle(engine)
    assert not engine.core.has_unfinished
    assert engine.stats()["kv_cache_usage"] == 0.0


class _DyingCore:
    """A core whose step raises once it has work: stands in for a bug in the engine loop."""

    has_unfinished = False
    guided = None

    def add_request(self, *args) -> None:
        self.has_unfinished = True

    def step(self):
        raise RuntimeError("boom")


async def test_a_dead_engine_loop_fails_pending_requests_and_reports_it():
    fatal = threading.Event()
    engine = AsyncEngine(_DyingCore(), tokenizer=None, model_name="m", max_model_len=16)
    engine.start(on_fatal=fatal.set)
    outputs = [o async for o in engine.generate("x", [1, 2], SamplingParams())]
    assert outputs[-1].error and outputs[-1].finish_reason == "abort"
    assert await asyncio.to_thread(fatal.wait, 5)
    assert not engine.healthy
    try:
        await anext(engine.generate("y", [1], SamplingParams()))
    except RuntimeError as exc:
        assert "not running" in str(exc)
    else:
        raise AssertionError("a dead engine accepted a request")
