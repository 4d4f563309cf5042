"""One request failing (its template, its output processing) fails only that request, with
an OpenAI-shaped error; concurrent requests complete and the engine stays healthy."""

from __future__ import annotations

import asyncio

import pytest
from reliability_helpers import (
    CHAT,
    FAULTY_SEED,
    assert_openai_error,
    chat,
    chunk_json,
    sse_payloads,
    wait_idle,
)

BROKEN_TEMPLATES = [
    "{{ raise_exception('no') }}",
    "{% for %}",
    "{{ 1 // 0 }}",
    "{{ messages[99].content }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
]


@pytest.fixture
def failing_output(runtime, monkeypatch):
    """The real output processor, except that it raises for request ids starting "boom"."""
    processor = runtime.core.output_processor
    real = processor.process

    def process(request):
        if request.request_id.startswith("boom"):
            raise RuntimeError("injected failure")
        return real(request)

    monkeypatch.setattr(processor, "process", process)


async def test_output_processing_failure_fails_only_that_request(
        engine, serve, http, failing_output):
    url, _ = await serve()
    good = [http.post(url + CHAT, json=chat(max_tokens=12, stream=i % 2 == 1))
            for i in range(4)]
    bad = http.post(url + CHAT, json=chat(max_tokens=12, request_id="boom"))
    bad_stream = http.post(url + CHAT, json=chat(max_tokens=12, stream=True,
                                                 request_id="boom-stream"))
    *good_replies, bad_reply, bad_stream_reply = await asyncio.gather(*good, bad, bad_stream)
    for reply in good_replies:
        assert reply.status_code == 200 and "error" not in reply.text, reply.text
    error = assert_openai_error(bad_reply, 500, code="engine_error")
    assert error["type"] == "server_error"
    assert_openai_error(bad_stream_reply, 500, code="engine_error")
    assert engine.healthy
    assert not any((await wait_idle(engine)).values())
    assert engine.metrics.finished_requests.get("error", 0) >= 2


async def test_a_request_whose_sampling_fails_is_a_500_and_the_others_go_on(
        engine, serve, http, faulty_sampler):
    url, _ = await serve()
    good = chat(max_tokens=16, stream=True)
    alone = await http.post(url + CHAT, json=good)
    bad_reply, good_reply = await asyncio.gather(
        http.post(url + CHAT, json=chat(max_tokens=16, seed=FAULTY_SEED)),
        http.post(url + CHAT, json=good))
    error = assert_openai_error(bad_reply, 500, code="engine_error")
    assert "sampling failed" in error["message"]
    assert good_reply.status_code == 200, good_reply.text
    assert streamed_text(alone.text)
    assert streamed_text(good_reply.text) == streamed_text(alone.text)
    assert (await http.get(url + "/health")).status_code == 200
    assert engine.healthy
    assert not any((await wait_idle(engine)).values())


def streamed_text(body: str) -> str:
    """The content of a chat stream's deltas, joined."""
    chunks = [chunk_json(p) for p in sse_payloads(body) if p != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in chunks if c["choices"])


@pytest.mark.parametrize("template", BROKEN_TEMPLATES)
async def test_broken_request_template_is_a_400_and_others_go_on(engine, serve, http, template):
    url, _ = await serve()
    good = http.post(url + CHAT, json=chat(max_tokens=6))
    bad = http.post(url + CHAT, json=chat(chat_template=template))
    good_reply, bad_reply = await asyncio.gather(good, bad)
    assert_openai_error(bad_reply, 400)
    assert "<class" not in bad_reply.json()["error"]["message"]
    assert good_reply.status_code == 200, good_reply.text
    assert engine.healthy


async def test_broken_template_on_a_stream_is_a_400(serve, http):
    url, _ = await serve()
    reply = await http.post(url + CHAT, json=chat(stream=True, chat_template="{% for %}"))
    assert_openai_error(reply, 400)
    assert not sse_payloads(reply.text)


@pytest.mark.parametrize("path,body", [
    (CHAT, chat(chat_template="{% if false %}x{% endif %}")),
    ("/v1/completions", {"prompt": "", "max_tokens": 2}),
    ("/v1/completions", {"prompt": [[]], "max_tokens": 2}),
])
async def test_a_prompt_without_tokens_is_a_400_not_an_engine_failure(engine, serve, http,
                                                                        path, body):
    url, _ = await serve()
    assert_openai_error(await http.post(url + path, json=body), 400)
    assert engine.healthy


async def test_the_engine_refuses_an_empty_prompt_without_dying(engine):
    from toolkit.protocol import SamplingParams

    stream = engine.generate("empty-prompt", [], SamplingParams(max_tokens=2))
    outputs = [output async for output in stream]
    assert outputs[-1].error == "the prompt has no tokens"
    assert engine.healthy
