"""`toolkit serve` as a real process on a loopback port, driven by the official openai client."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow  # loads the real SmolLM2

STARTUP_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_url():
    port = free_port()
    command = [sys.executable, "-m", "toolkit", "serve", f"server.port={port}",
               "model.max_model_len=2048", "cache.cpu_kv_cache_gb=0.25", "server.log_level=warning"]
    process = subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"toolkit serve exited early:\n{process.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("toolkit serve did not become healthy in time")
    yield url
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def client(server_url):
    return openai.OpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0)


def test_models_and_health(client, server_url):
    assert [m.id for m in client.models.list().data] == ["smollm2"]
    assert httpx.get(f"{server_url}/health").status_code == 200


def test_chat_completion(client):
    response = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is 2 + 2?"}],
        max_tokens=12, temperature=0)
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert response.usage.completion_tokens <= 12
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_chat_stream_equals_non_stream_greedy(client):
    messages = [{"role": "user", "content": "Name a fruit."}]
    whole = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=12,
                                           temperature=0)
    chunks = list(client.chat.completions.create(
        model="smollm2", messages=messages, max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completions_stream_and_not(client):
    whole = client.completions.create(model="smollm2", prompt="The capital of France is",
                                      max_tokens=8, temperature=0)
    assert whole.choices[0].text and whole.usage.completion_tokens <= 8
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=8, temperature=0,
        stream=True) if c.choices)
    assert streamed == whole.choices[0].text


def test_errors_are_openai_shaped(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2", temperature=-1,
                                       messages=[{"role": "user", "content": "x"}])
    assert info.value.body["param"] == "temperature" or "temperature" in info.value.body["message"]


def test_eight_concurrent_requests(server_url):
    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0)

        async def one(i: int) -> str:
            if i % 2:
                response = await client.chat.completions.create(
                    model="smollm2", max_tokens=16,
                    messages=[{"role": "user", "content": f"Count to {i + 2}."}])
                return response.choices[0].message.content
            stream = await client.completions.create(
                model="smollm2", prompt=f"Story number {i}:", max_tokens=16, stream=True)
            return "".join([c.choices[0].text async for c in stream if c.choices])

        return await asyncio.gather(*(one(i) for i in range(8)))

    texts = asyncio.run(main())
    assert len(texts) == 8 and all(texts)
