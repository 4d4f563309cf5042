"""A bounded soak on loopback: mixed chat/completions, stream/non-stream, some guided requests, a third
cancelled at random points (queued, in prefill, mid-stream); every request completes or is
cleanly cancelled, and the engine returns to idle (no pages, streams or per-request state).

TOOLKIT_SOAK_REQUESTS sets the count (CI's default is small; a manual run uses thousands).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random

import httpx
from reliability_helpers import (
    CHAT,
    COMPLETIONS,
    MODEL,
    chat,
    metrics_gauges,
    wait_idle,
)

NUM_REQUESTS = int(os.environ.get("TOOLKIT_SOAK_REQUESTS", "150"))
CONCURRENCY = 24
CANCEL_FRACTION = 1 / 3
GUIDED_FRACTION = 1 / 5


def _body(rng: random.Random, i: int, stream: bool) -> tuple[str, dict]:
    fields = {"max_tokens": rng.randint(1, 24), "stream": stream,
              "temperature": rng.choice([0, 0.8]), "seed": rng.choice([None, i])}
    if rng.random() < GUIDED_FRACTION:
        fields["guided_choice"] = ["yes", "no", "maybe later"]
    if rng.random() < 0.5:
        return CHAT, chat(f"Story {i}: tell me about number {i}.", **fields)
    return COMPLETIONS, {"model": MODEL, "prompt": f"Number {i} is", **fields}


def _check_finished(payload: dict) -> None:
    choice = payload["choices"][0]
    assert choice["finish_reason"] in ("stop", "length"), payload


async def _streamed(http: httpx.AsyncClient, url: str, body: dict,
                    cancel_after: int | None) -> str:
    payloads = []
    async with http.stream("POST", url, json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                payloads.append(line[len("data: "):])
            if cancel_after is not None and len(payloads) > cancel_after:
                return "cancelled"
    assert payloads[-1] == "[DONE]", payloads
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert not any("error" in c for c in chunks), chunks
    _check_finished(next(c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]))
    return "completed"


async def _whole(http: httpx.AsyncClient, url: str, body: dict,
                 cancel_at: float | None) -> str:
    task = asyncio.create_task(http.post(url, json=body))
    if cancel_at is not None:
        done, _ = await asyncio.wait({task}, timeout=cancel_at)
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return "cancelled"
    response = await task
    assert response.status_code == 200, response.text
    _check_finished(response.json())
    return "completed"


async def _one(http: httpx.AsyncClient, base: str, rng: random.Random, i: int) -> str:
    stream = rng.random() < 0.5
    path, body = _body(rng, i, stream)
    cancel = rng.random() < CANCEL_FRACTION
    if stream:
        return await _streamed(http, base + path, body, rng.randint(0, 4) if cancel else None)
    return await _whole(http, base + path, body, rng.uniform(0.0, 0.6) if cancel else None)


async def test_soak_every_request_completes_or_is_cancelled_cleanly(
        engine, serve, scheduler_limits, caplog):
    scheduler_limits(max_num_seqs=8)
    base, _ = await serve()
    rng = random.Random(1234)
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY * 2)

    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        async def bounded(i: int) -> str:
            async with gate:
                return await _one(http, base, random.Random(rng.random()), i)

        with caplog.at_level(logging.ERROR):
            outcomes = await asyncio.gather(*(bounded(i) for i in range(NUM_REQUESTS)))
            state = await wait_idle(engine)
        scrape = metrics_gauges((await http.get(base + "/metrics")).text)

    assert sorted(set(outcomes)) == ["cancelled", "completed"]
    assert outcomes.count("cancelled") >= NUM_REQUESTS // 5
    assert not any(state.values()), state
    assert scrape["vllm:num_requests_running"] == 0
    assert scrape["vllm:num_requests_waiting"] == 0
    assert scrape["vllm:kv_cache_usage_perc"] == 0
    assert engine.healthy
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    print(f"soak: {outcomes.count('completed')} completed, "
          f"{outcomes.count('cancelled')} cancelled")
