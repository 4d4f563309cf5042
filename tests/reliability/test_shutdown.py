"""Graceful shutdown of a real `toolkit serve`: on SIGTERM it stops admitting (503 or a
refused connection), lets in-flight streams finish within server.shutdown_timeout, cuts the
ones that outlast it, and exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.slow  # loads the real SmolLM2

STARTUP_TIMEOUT_S = 180
SHUTDOWN_TIMEOUT_S = 12  # room for the short stream on a loaded 2-core machine


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server():
    """A `toolkit serve` process and its URL; killed at teardown if still running."""
    port = _free_port()
    command = [sys.executable, "-m", "toolkit", "serve", f"server.port={port}",
               "model.max_model_len=2048", "cache.cpu_kv_cache_gb=0.25", "server.log_level=info",
               f"server.shutdown_timeout={SHUTDOWN_TIMEOUT_S}"]
    process = subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        assert process.poll() is None, f"toolkit serve exited early:\n{process.stdout.read()}"
        assert time.monotonic() < deadline, "toolkit serve did not become healthy in time"
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.3)
    yield process, url
    if process.poll() is None:
        process.kill()
        process.wait()


def _body(max_tokens: int) -> dict:
    return {"model": "smollm2", "prompt": "Once upon a time", "max_tokens": max_tokens,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}


async def _read_stream(response: httpx.Response, first: asyncio.Event) -> list[str]:
    payloads = []
    try:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                payloads.append(line[len("data: "):])
                first.set()
    except httpx.RemoteProtocolError:
        payloads.append("<cut>")
    return payloads


async def _stream(url: str, max_tokens: int, first: asyncio.Event) -> list[str]:
    async with (httpx.AsyncClient(timeout=120) as client,
                client.stream("POST", f"{url}/v1/completions", json=_body(max_tokens)) as r):
        assert r.status_code == 200
        return await _read_stream(r, first)


async def _new_request_outcome(url: str) -> str:
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(f"{url}/v1/completions", json=_body(4))
    except httpx.TransportError:
        return "refused"
    assert response.json()["error"]["type"] == "server_error", response.text
    return str(response.status_code)


async def _drain_scenario(process: subprocess.Popen, url: str) -> tuple:
    short_started, long_started = asyncio.Event(), asyncio.Event()
    short = asyncio.create_task(_stream(url, 16, short_started))
    long = asyncio.create_task(_stream(url, 2000, long_started))
    await asyncio.wait_for(asyncio.gather(short_started.wait(), long_started.wait()), 120)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.05)
    refused = await _new_request_outcome(url)
    short_payloads, long_payloads = await asyncio.gather(short, long)
    code = await asyncio.to_thread(process.wait, SHUTDOWN_TIMEOUT_S + 30)
    return refused, short_payloads, long_payloads, code, time.monotonic() - signalled


def test_sigterm_drains_in_flight_streams_then_exits_0(server):
    process, url = server
    refused, short, long, code, elapsed = asyncio.run(_drain_scenario(process, url))
    assert code == 0, process.stdout.read()
    assert refused in ("503", "refused")
    assert short[-1] == "[DONE]", short
    assert json.loads(short[-2])["usage"]["completion_tokens"] == 16
    assert "[DONE]" not in long, "the long stream should have been cut at the grace period"
    assert SHUTDOWN_TIMEOUT_S - 1 < elapsed < SHUTDOWN_TIMEOUT_S + 20


async def test_draining_gate_refuses_new_requests_with_503(serve, http):
    url, gate = await serve(retry_after_s=3)
    body = {"model": "smollm2", "prompt": "Hi", "max_tokens": 2}
    assert (await http.post(f"{url}/v1/completions", json=body)).status_code == 200
    gate.start_draining()
    for method, path in (("POST", "/v1/completions"), ("GET", "/health"), ("GET", "/v1/models")):
        response = await http.request(method, url + path, json=body if method == "POST" else None)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "shutting_down" and error["type"] == "server_error"
        assert response.headers["retry-after"] == "3"
        assert response.headers["connection"] == "close"
