"""Helpers for the reliability tests: request bodies, SSE reading, the engine's idle state."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from toolkit.api.app import build_app
from toolkit.config.schema import ServerConfig

MODEL = "smollm2"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


FAULTY_SEED = 4242
"""A greedy request with this seed (the seed does not change its tokens) is the one whose
sampling fails under the ``faulty_sampler`` fixture."""
FAIL_AFTER = 3
"""Injected faults let the faulty request get this many tokens first: it fails mid-batch."""


class Faulty:
    """``target`` with one method that raises once it has been called ``after`` times."""

    def __init__(self, target: Any, method: str, after: int) -> None:
        self._target, self._method, self._after = target, method, after
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if name != self._method:
            return attribute

        def call(*args, **kwargs):
            self.calls += 1
            if self.calls > self._after:
                raise RuntimeError(f"injected failure in {name}")
            return attribute(*args, **kwargs)

        return call


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
        "num_states_grammars": stats["num_states_grammars"],
        "num_states_drafter": stats["num_states_drafter"],
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


@contextmanager
def server_thread(engine, config: ServerConfig) -> Iterator[str]:
    """The app over ``engine`` served by uvicorn in its own thread (for synchronous tests
    such as hypothesis ones); yields its base URL and stops it on exit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(build_app(engine, config), log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
