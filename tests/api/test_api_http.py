"""Over a real uvicorn server: client disconnects abort generations; the OpenAI SDK works."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from api_client import MODEL


async def wait_idle(engine, timeout: float = 10.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        stats = engine.stats()
        if stats["num_running"] == 0 and stats["num_waiting"] == 0:
            return True
        await asyncio.sleep(0.05)
    return False


def long_body(**fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": 1500, "ignore_eos": True, "temperature": 0, **fields}


async def test_stream_disconnect_aborts_generation(base_url, engine):
    async with httpx.AsyncClient(timeout=30) as client:
        async with client.stream("POST", f"{base_url}/v1/chat/completions",
                                 json=long_body(stream=True, n=2)) as response:
            assert response.status_code == 200
            lines = 0
            async for line in response.aiter_lines():
                lines += bool(line)
                if lines >= 5:
                    break
        assert engine.stats()["num_running"] + engine.stats()["num_waiting"] > 0
    assert await wait_idle(engine)


async def test_non_stream_disconnect_aborts_generation(base_url, engine):
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"{base_url}/v1/completions", timeout=1.0,
                              json={"model": MODEL, "prompt": "Once", "max_tokens": 1500,
                                    "ignore_eos": True})
    assert await wait_idle(engine)


async def test_served_over_http_with_openai_shape(base_url):
    async with httpx.AsyncClient(timeout=30) as client:
        reply = await client.post(f"{base_url}/v1/chat/completions",
                                  json=long_body(max_tokens=3))
        assert reply.status_code == 200
        assert reply.json()["usage"]["completion_tokens"] == 3
        bad = await client.post(f"{base_url}/v1/chat/completions", content=b"{oops",
                                headers={"content-type": "application/json"})
        assert bad.status_code == 400
        assert set(bad.json()["error"]) == {"message", "type", "param", "code"}


async def test_openai_sdk_round_trip(base_url):
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused")
    messages = [{"role": "user", "content": "Say hello."}]
    # Warm the prefix cache first, so that both compared requests reuse the same cached
    # prompt blocks (a cached prefix rounds differently in bfloat16 from a cold prefill).
    await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1)
    reply = await client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=5, temperature=0)
    stream = await client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=5, temperature=0, stream=True,
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == reply.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=messages, max_tokens=2)
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=0)
    assert info.value.param == "max_tokens"
    await client.close()
