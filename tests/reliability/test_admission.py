"""Admission control against a real server: a full queue is a 503 with Retry-After, an
oversized body a 413, a request past its deadline a 408 (or an error event mid-stream);
each path leaves the engine idle."""

from __future__ import annotations

import asyncio

import httpx
from reliability_helpers import (
    CHAT,
    assert_openai_error,
    chat,
    chunk_json,
    sse_payloads,
    wait_for,
    wait_idle,
)

LONG = {"max_tokens": 2000, "ignore_eos": True}
"""A generation far longer than any test waits for."""


async def test_full_waiting_queue_is_503_with_retry_after(engine, serve, http,
                                                           scheduler_limits):
    scheduler_limits(max_num_seqs=1, max_waiting=1)
    url, _ = await serve(retry_after_s=7)
    running = asyncio.create_task(http.post(url + CHAT, json=chat(**LONG)))
    await wait_for(lambda: engine.stats()["num_running"] == 1)
    queued = asyncio.create_task(http.post(url + CHAT, json=chat(**LONG)))
    await wait_for(lambda: engine.stats()["num_waiting"] == 1)
    for stream in (False, True):
        refused = await http.post(url + CHAT, json=chat(stream=stream))
        error = assert_openai_error(refused, 503, code="server_overloaded")
        assert error["type"] == "server_error"
        assert refused.headers["retry-after"] == "7"
    for task in (running, queued):
        task.cancel()
    await asyncio.gather(running, queued, return_exceptions=True)
    assert not any((await wait_idle(engine)).values())
    assert (await http.post(url + CHAT, json=chat(max_tokens=2))).status_code == 200


async def test_body_over_the_limit_is_413(serve, http):
    url, _ = await serve(max_request_body_bytes=2048)
    padded = chat(content="x" * 4096)
    assert_openai_error(await http.post(url + CHAT, json=padded), 413, code="request_too_large")

    async def chunked():
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(64):
            yield b"y" * 64
        yield b'"}]}'

    response = await http.post(url + CHAT, content=chunked(),
                               headers={"Content-Type": "application/json"})
    assert_openai_error(response, 413, code="request_too_large")
    assert (await http.post(url + CHAT, json=chat(max_tokens=2))).status_code == 200


async def test_chunked_body_under_the_limit_is_read(serve, http):
    url, _ = await serve(max_request_body_bytes=2048)

    async def chunked():
        yield b'{"messages": [{"role": "user", "content": "Hi"}],'
        yield b' "max_tokens": 2}'

    response = await http.post(url + CHAT, content=chunked(),
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text


async def test_deadline_before_any_output_is_408_and_frees_the_request(engine, serve, http):
    url, _ = await serve(request_timeout=0.5)
    response = await http.post(url + CHAT, json=chat(**LONG))
    assert_openai_error(response, 408, code="request_timeout")
    assert not any((await wait_idle(engine)).values())


async def test_deadline_while_queued_is_408_for_a_stream(engine, serve, http, scheduler_limits):
    scheduler_limits(max_num_seqs=1)
    url, _ = await serve(request_timeout=1)
    running = asyncio.create_task(http.post(url + CHAT, json=chat(stream=True, **LONG)))
    await wait_for(lambda: engine.stats()["num_running"] == 1)
    response = await http.post(url + CHAT, json=chat(stream=True, **LONG))
    assert_openai_error(response, 408, code="request_timeout")
    await wait_for(lambda: engine.stats()["num_waiting"] == 0)
    first = await running
    assert first.status_code == 200 and "request_timeout" in sse_payloads(first.text)[-2]
    assert not any((await wait_idle(engine)).values())


async def test_deadline_mid_stream_ends_it_with_an_error_event(engine, serve, http):
    url, _ = await serve(request_timeout=3)
    response = await http.post(url + CHAT, json=chat(stream=True, **LONG))
    assert response.status_code == 200
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    error = chunk_json(payloads[-2])["error"]
    assert error["code"] == "request_timeout" and error["type"] == "invalid_request_error"
    contents = [chunk_json(p)["choices"][0]["delta"].get("content") for p in payloads[:-2]]
    assert any(contents), "the deadline fell before any token; the test proves nothing"
    assert not any((await wait_idle(engine)).values())


async def test_disconnected_queued_request_leaves_the_queue(engine, serve, scheduler_limits):
    scheduler_limits(max_num_seqs=1)
    url, _ = await serve()
    async with httpx.AsyncClient(timeout=60) as first, httpx.AsyncClient(timeout=60) as second:
        running = asyncio.create_task(first.post(url + CHAT, json=chat(**LONG)))
        await wait_for(lambda: engine.stats()["num_running"] == 1)
        queued = asyncio.create_task(second.post(url + CHAT, json=chat(**LONG)))
        await wait_for(lambda: engine.stats()["num_waiting"] == 1)
        queued.cancel()
        await asyncio.gather(queued, return_exceptions=True)
        await wait_for(lambda: engine.stats()["num_waiting"] == 0)
        assert engine.stats()["num_running"] == 1
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert not any((await wait_idle(engine)).values())
