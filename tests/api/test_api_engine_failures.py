"""A request the engine fails gets a 500 server_error; other requests are unaffected.

The real engine offers no way to fail one request on demand, so ``FaultyEngine`` wraps it
and marks one request's stream as failed after its first real delta.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from api_client import MODEL, assert_error, open_client

CHAT = "/v1/chat/completions"


class FaultyEngine:
    """The real engine, except that request ids ending in ``fail_suffix`` fail mid-way."""

    def __init__(self, engine, fail_suffix: str, fail_after: int) -> None:
        self._engine = engine
        self.fail_suffix = fail_suffix
        self.fail_after = fail_after

    def __getattr__(self, name):
        return getattr(self._engine, name)

    async def generate(self, request_id, prompt_token_ids, params, priority=0):
        stream = self._engine.generate(request_id, prompt_token_ids, params, priority)
        try:
            count = 0
            async for output in stream:
                if request_id.endswith(self.fail_suffix) and count == self.fail_after:
                    yield dataclasses.replace(output, finish_reason="abort", error="device lost")
                    return
                count += 1
                yield output
        finally:
            await stream.aclose()


@pytest.fixture
async def faulty_api(engine):
    faulty = FaultyEngine(engine, fail_suffix="-1", fail_after=0)
    app, client = await open_client(faulty)
    yield client, faulty
    await app.stop()


def body(**fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Count to ten."}],
            "max_tokens": 6, "temperature": 0, **fields}


async def test_failed_choice_fails_that_request_with_500(faulty_api):
    api, _ = faulty_api
    error = assert_error(await api.post(CHAT, body(n=2)), 500, type_="server_error")
    assert "device lost" in error["message"]


async def test_other_requests_still_succeed(faulty_api, engine):
    api, _ = faulty_api
    assert (await api.post(CHAT, body(n=2))).status == 500
    reply = await api.post(CHAT, body(n=1))
    assert reply.status == 200, reply.text
    assert engine.healthy
    assert engine.stats()["num_running"] == 0


async def test_failure_before_streaming_is_a_500(faulty_api):
    api, faulty = faulty_api
    faulty.fail_suffix = "-0"
    assert_error(await api.post(CHAT, body(stream=True)), 500, type_="server_error")


async def test_failure_mid_stream_sends_an_error_event(faulty_api):
    api, faulty = faulty_api
    faulty.fail_after = 2
    reply = await api.post(CHAT, body(n=2, stream=True))
    assert reply.status == 200
    events = reply.events()
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error"
    assert "device lost" in error["message"]
