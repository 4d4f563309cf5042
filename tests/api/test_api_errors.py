"""Every bad request ends in an OpenAI-shaped error with the right status and param."""

from __future__ import annotations

import pytest
from api_client import MODEL, assert_error

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "Say hi."}]


def chat(**fields) -> dict:
    return {"model": MODEL, "messages": USER, "max_tokens": 4, **fields}


def completion(**fields) -> dict:
    return {"model": MODEL, "prompt": "Hello", "max_tokens": 4, **fields}


@pytest.mark.parametrize("path, body", [(CHAT, chat(model="gpt-9")),
                                        (COMPLETIONS, completion(model="gpt-9"))])
async def test_unknown_model_is_404(api, path, body):
    error = assert_error(await api.post(path, body), 404, type_="not_found_error",
                         param="model", code="model_not_found")
    assert "gpt-9" in error["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b""])
async def test_malformed_body_is_400(api, raw):
    assert_error(await api.post(CHAT, raw=raw), 400, type_="invalid_request_error")


async def test_non_json_content_type_is_415(api):
    form = b"application/x-www-form-urlencoded"
    reply = await api.post(CHAT, raw=b"model=smollm2", content_type=form)
    assert_error(reply, 415, code="unsupported_media_type")


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
    (COMPLETIONS, {"model": MODEL}, "prompt"),
    (COMPLETIONS, completion(prompt=[-1, 5]), "prompt"),
    (COMPLETIONS, completion(prompt={"text": "x"}), "prompt"),
    (COMPLETIONS, completion(max_tokens="many"), "max_tokens"),
])
async def test_invalid_field_names_param(api, path, body, param):
    assert_error(await api.post(path, body), 400, type_="invalid_request_error", param=param)


@pytest.mark.parametrize("path, body, param", [
    (CHAT, chat(temperature=-0.5), "temperature"),
    (CHAT, chat(top_p=0), "top_p"),
    (CHAT, chat(top_p=1.5), "top_p"),
    (CHAT, chat(top_k=-2), "top_k"),
    (CHAT, chat(min_p=2.0), "min_p"),
    (CHAT, chat(max_tokens=0), "max_tokens"),
    (CHAT, chat(max_completion_tokens=-3), "max_completion_tokens"),
    (CHAT, chat(stop=["ok", ""]), "stop"),
    (COMPLETIONS, completion(max_tokens=0), "max_tokens"),
    (COMPLETIONS, completion(temperature=500), "temperature"),
])
async def test_out_of_range_value_is_400_with_param(api, path, body, param):
    assert_error(await api.post(path, body), 400, type_="invalid_request_error", param=param)


async def test_prompt_longer_than_context_is_400(api, engine):
    long_text = "hello " * (engine.max_model_len + 10)
    body = chat(messages=[{"role": "user", "content": long_text}])
    error = assert_error(await api.post(CHAT, body), 400, param="messages",
                         code="context_length_exceeded")
    assert str(engine.max_model_len) in error["message"]
    del body["max_tokens"]
    assert_error(await api.post(CHAT, body), 400, param="messages",
                 code="context_length_exceeded")
    assert_error(await api.post(COMPLETIONS, completion(prompt=long_text)), 400,
                 param="prompt", code="context_length_exceeded")


async def test_prompt_exactly_filling_context_is_400(api, engine):
    ids = [engine.tokenizer.encode("hello")[0]] * engine.max_model_len
    assert_error(await api.post(COMPLETIONS, completion(prompt=ids, max_tokens=None)), 400,
                 param="prompt", code="context_length_exceeded")


async def test_prompt_plus_max_tokens_over_context_is_400(api, engine):
    error = assert_error(await api.post(CHAT, chat(max_tokens=engine.max_model_len)), 400,
                         param="max_tokens", code="context_length_exceeded")
    assert str(engine.max_model_len) in error["message"]
    assert_error(await api.post(CHAT, chat(max_completion_tokens=engine.max_model_len)), 400,
                 param="max_completion_tokens", code="context_length_exceeded")
    ids = [engine.tokenizer.encode("hello")[0]] * (engine.max_model_len - 4)
    assert_error(await api.post(COMPLETIONS, completion(prompt=ids, max_tokens=5)), 400,
                 param="max_tokens", code="context_length_exceeded")


@pytest.mark.parametrize("path, body, param", [
    (CHAT, chat(messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]),
     "messages[0].content[0].type"),
    (COMPLETIONS, completion(suffix="end"), "suffix"),
])
async def test_unimplemented_parameter_is_rejected(api, path, body, param):
    error = assert_error(await api.post(path, body), 400, type_="invalid_request_error",
                         param=param, code="unsupported_parameter")
    assert "not supported" in error["message"]


async def test_harmless_parameters_are_accepted(api):
    body = chat(user="u-1", presence_penalty=0, frequency_penalty=0.0, logprobs=False,
                tools=[], tool_choice="none", response_format={"type": "text"}, logit_bias={})
    reply = await api.post(CHAT, body)
    assert reply.status == 200, reply.text


async def test_stream_options_need_stream(api):
    body = chat(stream_options={"include_usage": True})
    assert_error(await api.post(CHAT, body), 400, param="stream_options")


async def test_empty_prompt_is_400(api):
    assert_error(await api.post(COMPLETIONS, completion(prompt=[])), 400, param="prompt")
    assert_error(await api.post(COMPLETIONS, completion(prompt="")), 400, param="prompt")


async def test_token_id_outside_vocabulary_is_400(api, engine):
    body = completion(prompt=[1, engine.tokenizer.vocab_size + 7])
    assert_error(await api.post(COMPLETIONS, body), 400, param="prompt")
