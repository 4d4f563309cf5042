"""Helpers for the reliability tests: request bodies, SSE reading, the engine's idle state."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

MODEL = "smollm2"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def chat(content: str = "Tell me a long story about a dragon.", **fields: Any) -> dict:
    """A greedy chat body (overridable)."""
    return {"model": MODEL, "messages": [{"role": "user", "content": content}],
            "max_tokens": 8, "temperature": 0, **fields}


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The response is ``status`` with an OpenAI-shaped JSON error body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def sse_payloads(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]


def idle_state(engine) -> dict:
    """Every per-request count the engine keeps (all zero when nothing is in flight)."""
    stats = engine.stats()
    return {
        "num_running": stats["num_running"],
        "num_waiting": stats["num_waiting"],
        "kv_cache_usage": stats["kv_cache_usage"],
        "num_streams": stats["num_streams"],
        "num_states_scheduler": stats["num_states_scheduler"],
        "num_states_output_processor": stats["num_states_output_processor"],
        "num_states_runner": stats["num_states_runner"],
    }


async def wait_idle(engine, timeout: float = 20.0) -> dict:
    """Poll until the engine holds no per-request state; return the last state seen."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        state = idle_state(engine)
        if not any(state.values()) or asyncio.get_running_loop().time() > deadline:
            return state
        await asyncio.sleep(0.05)


async def wait_for(predicate, timeout: float = 30.0) -> None:
    """Poll ``predicate()`` until it is true; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def metrics_gauges(text: str) -> dict[str, float]:
    """The unlabelled-name -> value map of a Prometheus scrape's gauges."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "_bucket" not in line:
            name, _, value = line.rpartition(" ")
            values[name.split("{")[0]] = float(value)
    return values


def chunk_json(payload: str) -> dict:
    return json.loads(payload)
