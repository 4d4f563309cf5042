"""Errors over the scripted FakeEngine: every bad request, engine failure, timeout and limit
ends in an OpenAI-shaped error with the right status, param and code, and a bad request
never reaches the engine (no model, fast tier)."""

from __future__ import annotations

import json

import pytest
from api_client import assert_error
from fake_engine import Failure, FakeEngine
from sse_frames import sse_payloads

from toolkit.api.http.errors import error_type
from toolkit.protocol.errors import EngineOverloadedError

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MODEL = "fake"
USER = [{"role": "user", "content": "Hi"}]


def chat(**fields) -> dict:
    return {"model": MODEL, "messages": USER, "max_tokens": 4, **fields}


def completion(**fields) -> dict:
    return {"model": MODEL, "prompt": "Hello", "max_tokens": 4, **fields}


def check(reply, status: int, *, param: str | None = None, code: str | None = None) -> dict:
    """``assert_error`` with the type the server's own status mapping gives."""
    return assert_error(reply, status, type_=error_type(status), param=param, code=code)


@pytest.mark.parametrize("path, body", [(CHAT, chat(model="gpt-9")),
                                        (COMPLETIONS, completion(model="gpt-9")),
                                        ("/v1/embeddings", {"model": "gpt-9", "input": "x"}),
                                        ("/tokenize", {"model": "gpt-9", "prompt": "x"})])
async def test_unknown_model_is_404(fake_api, fake_engine, path, body):
    error = check(await fake_api.post(path, body), 404, param="model", code="model_not_found")
    assert "gpt-9" in error["message"]
    assert fake_engine.requests == [] and fake_engine.embed_calls == []


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b"", b"\xff\xfe"])
async def test_malformed_body_is_400(fake_api, fake_engine, raw):
    check(await fake_api.post(CHAT, raw=raw), 400)
    assert fake_engine.requests == []


async def test_non_json_content_type_is_415(fake_api):
    form = b"application/x-www-form-urlencoded"
    check(await fake_api.post(CHAT, raw=b"model=fake", content_type=form), 415,
          code="unsupported_media_type")


@pytest.mark.parametrize("path, body, param", [
    (CHAT, {"model": MODEL}, "messages"),
    (CHAT, chat(messages=[]), "messages"),
    (CHAT, chat(messages="hello"), "messages"),
    (CHAT, chat(messages=[{"content": "x"}]), "messages[0].role"),
    (CHAT, chat(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
    (CHAT, chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    (CHAT, chat(n=0), "n"),
    (CHAT, chat(temperature="hot"), "temperature"),
    (CHAT, chat(stop=[1, 2]), "stop"),
    (CHAT, chat(seed=2**64), "seed"),
    (COMPLETIONS, {"model": MODEL}, "prompt"),
    (COMPLETIONS, completion(prompt=[-1, 5]), "prompt"),
    (COMPLETIONS, completion(prompt={"text": "x"}), "prompt"),
    (COMPLETIONS, completion(max_tokens="many"), "max_tokens"),
])
async def test_invalid_field_names_param(fake_api, fake_engine, path, body, param):
    check(await fake_api.post(path, body), 400, param=param)
    assert fake_engine.requests == []


@pytest.mark.parametrize("path, body, param", [
    (CHAT, chat(temperature=-0.5), "temperature"),
    (CHAT, chat(top_p=0), "top_p"),
    (CHAT, chat(top_p=1.5), "top_p"),
    (CHAT, chat(top_k=-2), "top_k"),
    (CHAT, chat(min_p=2.0), "min_p"),
    (CHAT, chat(presence_penalty=3), "presence_penalty"),
    (CHAT, chat(repetition_penalty=0), "repetition_penalty"),
    (CHAT, chat(max_tokens=0), "max_tokens"),
    (CHAT, chat(max_completion_tokens=-3), "max_completion_tokens"),
    (CHAT, chat(min_tokens=9), "min_tokens"),
    (CHAT, chat(stop=["ok", ""]), "stop"),
    (CHAT, chat(logit_bias={"abc": 1}), "logit_bias"),
    (CHAT, chat(logit_bias={"100000": 1}), "logit_bias"),
    (CHAT, chat(stop_token_ids=[100000]), "stop_token_ids"),
    (CHAT, chat(top_logprobs=3), "top_logprobs"),
    (CHAT, chat(logprobs=True, top_logprobs=21), "top_logprobs"),
    (CHAT, chat(n=17), "n"),
    (CHAT, chat(n=3, best_of=2), "best_of"),
    (CHAT, chat(n=1, best_of=2, stream=True), "best_of"),
    (CHAT, chat(priority=1), "priority"),
    (CHAT, chat(stream_options={"include_usage": True}), "stream_options"),
    (CHAT, chat(add_generation_prompt=True, continue_final_message=True),
     "continue_final_message"),
    (CHAT, chat(chat_template_kwargs={"messages": []}), "chat_template_kwargs"),
    (CHAT, chat(chat_template="{% for %}"), "messages"),
    (CHAT, chat(chat_template="{{ ''.__class__.__mro__ }}"), "messages"),
    (CHAT, chat(guided_json="{not json"), "guided_json"),
    (CHAT, chat(guided_regex="("), "guided_regex"),
    (CHAT, chat(guided_choice=[]), "guided_choice"),
    (CHAT, chat(guided_json={}, guided_regex="a+"), "guided_regex"),
    (CHAT, chat(use_beam_search=True, stream=True), "stream"),
    (COMPLETIONS, completion(max_tokens=0), "max_tokens"),
    (COMPLETIONS, completion(temperature=500), "temperature"),
    (COMPLETIONS, completion(logprobs=21), "logprobs"),
    (COMPLETIONS, completion(truncate_prompt_tokens=0), "truncate_prompt_tokens"),
    (COMPLETIONS, completion(prompt=""), "prompt"),
    (COMPLETIONS, completion(prompt=[]), "prompt"),
    (COMPLETIONS, completion(prompt=[1, 100000]), "prompt"),
])
async def test_out_of_range_value_is_400_naming_the_param(fake_api, fake_engine, path, body,
                                                          param):
    error = check(await fake_api.post(path, body), 400, param=param)
    assert error["code"] is not None
    assert fake_engine.requests == []


async def test_nan_and_infinity_are_400(fake_api, fake_engine):
    for literal in (b"NaN", b"Infinity", b"1e999"):
        raw = b'{"model": "fake", "messages": [{"role": "user", "content": "Hi"}], ' \
              b'"temperature": ' + literal + b"}"
        check(await fake_api.post(CHAT, raw=raw), 400, param="temperature")
    assert fake_engine.requests == []


@pytest.mark.parametrize("path, body, param", [
    (CHAT, chat(messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]),
     "messages[0].content[0].type"),
    (CHAT, chat(functions=[{"name": "f"}]), "functions"),
    (COMPLETIONS, completion(suffix="end"), "suffix"),
])
async def test_unimplemented_parameter_is_rejected(fake_api, path, body, param):
    error = check(await fake_api.post(path, body), 400, param=param,
                  code="unsupported_parameter")
    assert "not supported" in error["message"]


async def test_context_length(fake_api, fake_engine):
    long_text = "Hello" * 300  # one token each: 300 > 256
    error = check(await fake_api.post(CHAT, chat(messages=[{"role": "user",
                                                            "content": long_text}])),
                  400, param="messages", code="context_length_exceeded")
    assert "256" in error["message"]
    check(await fake_api.post(COMPLETIONS, completion(prompt=long_text)), 400, param="prompt",
          code="context_length_exceeded")
    check(await fake_api.post(COMPLETIONS, completion(prompt=[5] * 256, max_tokens=None)), 400,
          param="prompt", code="context_length_exceeded")
    check(await fake_api.post(COMPLETIONS, completion(prompt=[5] * 250, max_tokens=7)), 400,
          param="max_tokens", code="context_length_exceeded")
    check(await fake_api.post(CHAT, chat(max_completion_tokens=256)), 400,
          param="max_completion_tokens", code="context_length_exceeded")
    assert fake_engine.requests == []
    reply = await fake_api.post(COMPLETIONS, completion(prompt=[5] * 250, max_tokens=6))
    assert reply.status == 200, reply.text


async def test_unknown_route_and_wrong_method(fake_api):
    check(await fake_api.get("/v1/nope"), 404, code="not_found")
    check(await fake_api.post("/v1/audio/speech", {"input": "x"}), 404)
    reply = await fake_api.get(CHAT)
    check(reply, 405, code="method_not_allowed")
    assert reply.headers.get_first(b"allow") == b"POST"
    check(await fake_api.post("/health", {}), 405)


# ------------------------------------------------------------------ engine failures


async def test_error_delta_is_a_500_naming_the_engine_error(fake_api, fake_engine):
    fake_engine.failure = Failure(after=2, error="device lost")
    error = check(await fake_api.post(CHAT, chat()), 500, code="engine_error")
    assert "device lost" in error["message"]
    fake_engine.failure = None
    assert (await fake_api.post(CHAT, chat())).status == 200  # the next request is served


async def test_one_failed_choice_fails_the_request_and_aborts_the_others(fake_api, fake_engine):
    fake_engine.failure = Failure(after=1, request_suffix="-1")
    reply = await fake_api.post(CHAT, chat(n=3, max_tokens=50))
    check(reply, 500, code="engine_error")
    ids = [r.request_id for r in fake_engine.requests]
    assert len(ids) == 3
    assert sorted(fake_engine.aborted) == sorted(i for i in ids if not i.endswith("-1"))
    assert fake_engine.stats()["num_running"] == 0


async def test_failure_before_the_first_delta_is_a_500_not_a_stream(fake_api, fake_engine):
    fake_engine.failure = Failure(after=0)
    reply = await fake_api.post(CHAT, chat(stream=True))
    check(reply, 500, code="engine_error")


async def test_failure_mid_stream_is_an_error_event(fake_api, fake_engine):
    fake_engine.failure = Failure(after=2, error="device lost", request_suffix="-1")
    reply = await fake_api.post(CHAT, chat(n=2, max_tokens=50, stream=True,
                                           stream_options={"include_usage": True}))
    payloads = sse_payloads(reply)  # 200, well framed, [DONE] last
    *chunks, error_event = [json.loads(p) for p in payloads[:-1]]
    assert set(error_event) == {"error"}
    error = error_event["error"]
    assert error["type"] == error_type(500) and error["code"] == "engine_error"
    assert "device lost" in error["message"]
    assert all("error" not in chunk for chunk in chunks)
    assert not any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks)
    assert all(c["choices"] for c in chunks)  # no usage chunk after a failure
    assert [r.request_id for r in fake_engine.requests if r.request_id in fake_engine.aborted] \
        == [fake_engine.requests[0].request_id]


async def test_an_exception_from_the_engine_is_a_500_without_details(fake_api, fake_engine):
    fake_engine.failure = Failure(after=1, raises=RuntimeError("secret internals"))
    reply = await fake_api.post(COMPLETIONS, completion())
    error = check(reply, 500, code="engine_error")
    assert "secret" not in reply.text and "Traceback" not in reply.text
    assert error["message"]


@pytest.mark.parametrize("stream", [False, True])
async def test_overloaded_engine_is_503_with_retry_after(fake_api, fake_engine, stream):
    fake_engine.failure = Failure(raises=EngineOverloadedError("the waiting queue is full"))
    reply = await fake_api.post(CHAT, chat(stream=stream))
    error = check(reply, 503, code="server_overloaded")
    assert "queue" in error["message"]
    assert reply.headers.get_first(b"retry-after") == b"1"


async def test_dead_engine_is_503(fake_api, fake_engine):
    fake_engine.healthy = False
    check(await fake_api.get("/health"), 503)
    reply = await fake_api.post(CHAT, chat())
    check(reply, 503, code="engine_unavailable")
    assert reply.headers.get_first(b"retry-after") == b"1"
    check(await fake_api.post("/v1/embeddings", {"input": "x"}), 503, code="engine_unavailable")
    assert fake_engine.requests == []


async def test_embedding_failure_is_a_500(fake_api, fake_engine):
    fake_engine.embed_error = RuntimeError("the embedding forward failed")
    check(await fake_api.post("/v1/embeddings", {"input": "Hi"}), 500, code="engine_error")


# ------------------------------------------------------------- deadlines and limits


async def test_request_timeout_is_408_and_aborts(fake_served):
    engine = FakeEngine(delay_s=0.02)
    api = await fake_served(engine, request_timeout=0.1)
    check(await api.post(CHAT, chat(max_tokens=200)), 408, code="request_timeout")
    [request] = engine.requests
    assert engine.aborted == [request.request_id]
    assert (await api.post(CHAT, chat(max_tokens=2))).status == 200


async def test_request_timeout_mid_stream_is_an_error_event(fake_served):
    engine = FakeEngine(delay_s=0.02)
    api = await fake_served(engine, request_timeout=0.1)
    payloads = sse_payloads(await api.post(CHAT, chat(max_tokens=200, stream=True)))
    error = json.loads(payloads[-2])["error"]
    assert error["code"] == "request_timeout" and error["type"] == error_type(408)
    assert json.loads(payloads[0])["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert engine.aborted == [engine.requests[0].request_id]


async def test_request_body_limit_is_413(fake_served, fake_engine):
    api = await fake_served(fake_engine, max_request_body_bytes=512)
    small = await api.post(CHAT, chat())
    assert small.status == 200, small.text
    big = chat(messages=[{"role": "user", "content": "x" * 600}])
    check(await api.post(CHAT, big), 413, code="request_too_large")
    check(await api.post("/tokenize", {"prompt": "x" * 600}), 413, code="request_too_large")
    assert len(fake_engine.requests) == 1


async def test_api_keys_guard_the_api_but_not_health(fake_served, fake_engine):
    api = await fake_served(fake_engine, api_keys=["k1"], admin_key="adm")
    error = check(await api.post(CHAT, chat()), 401, code="invalid_api_key")
    assert "API key" in error["message"]
    check(await api.post(CHAT, chat(), headers={"Authorization": "Bearer nope"}), 401)
    for key in ("k1", "adm"):
        reply = await api.post(CHAT, chat(), headers={"Authorization": f"Bearer {key}"})
        assert reply.status == 200, reply.text
    assert (await api.get("/health")).status == 200
    check(await api.get("/metrics", headers={"Authorization": "Bearer k1"}), 401)
    assert (await api.get("/metrics", headers={"Authorization": "Bearer adm"})).status == 200
    assert len(fake_engine.requests) == 2
