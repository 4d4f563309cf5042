"""POST /v1/completions against the real SmolLM2 engine."""

from __future__ import annotations

import pytest
from api_client import MODEL

COMPLETIONS = "/v1/completions"
PROMPT = "The capital of France is"


def completion_body(**overrides) -> dict:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 6, "temperature": 0}
    body.update(overrides)
    return body


async def test_string_prompt(api, engine):
    reply = await api.post(COMPLETIONS, completion_body(ignore_eos=True))
    assert reply.status == 200, reply.text
    body = reply.json()
    assert body["id"].startswith("cmpl-")
    assert body["object"] == "text_completion"
    assert body["model"] == MODEL
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["text"]
    assert choice["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": len(engine.tokenizer.encode(PROMPT)),
        "completion_tokens": 6,
        "total_tokens": len(engine.tokenizer.encode(PROMPT)) + 6,
    }


async def test_token_id_prompt_equals_string_prompt(api, engine):
    ids = engine.tokenizer.encode(PROMPT)
    by_text = (await api.post(COMPLETIONS, completion_body())).json()
    by_ids = (await api.post(COMPLETIONS, completion_body(prompt=ids))).json()
    assert by_ids["choices"][0]["text"] == by_text["choices"][0]["text"]
    assert by_ids["usage"] == by_text["usage"]


async def test_list_of_prompts(api, engine):
    prompts = [PROMPT, "One, two, three,"]
    reply = await api.post(COMPLETIONS, completion_body(prompt=prompts))
    body = reply.json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    for prompt, choice in zip(prompts, body["choices"], strict=True):
        alone = (await api.post(COMPLETIONS, completion_body(prompt=prompt))).json()
        assert choice["text"] == alone["choices"][0]["text"]
    assert body["usage"]["prompt_tokens"] == sum(len(engine.tokenizer.encode(p)) for p in prompts)


async def test_list_of_token_id_prompts_with_n2(api, engine):
    prompts = [engine.tokenizer.encode(PROMPT), engine.tokenizer.encode("Once upon a time")]
    body = completion_body(prompt=prompts, n=2, max_tokens=3, ignore_eos=True)
    data = (await api.post(COMPLETIONS, body)).json()
    assert [c["index"] for c in data["choices"]] == [0, 1, 2, 3]
    assert data["choices"][0]["text"] == data["choices"][1]["text"]
    assert data["usage"]["completion_tokens"] == 12
    assert data["usage"]["prompt_tokens"] == sum(len(p) for p in prompts)


async def test_default_max_tokens_is_16(api):
    body = completion_body(ignore_eos=True)
    del body["max_tokens"]
    data = (await api.post(COMPLETIONS, body)).json()
    assert data["usage"]["completion_tokens"] == 16
    assert data["choices"][0]["finish_reason"] == "length"


async def test_completion_stream_matches_non_stream(api):
    plain = (await api.post(COMPLETIONS, completion_body(max_tokens=10))).json()
    reply = await api.post(COMPLETIONS, completion_body(
        max_tokens=10, stream=True, stream_options={"include_usage": True}))
    chunks = reply.chunks()
    *text_chunks, usage_chunk = chunks
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in text_chunks) == plain["choices"][0]["text"]
    assert text_chunks[-1]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert all(c["choices"][0]["finish_reason"] is None for c in text_chunks[:-1])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]


@pytest.mark.parametrize("stop_as_list", [False, True])
async def test_stop_string_is_honoured(api, stop_as_list):
    free = (await api.post(COMPLETIONS, completion_body(max_tokens=16))).json()
    text = free["choices"][0]["text"]
    stop = text.strip()[len(text.strip()) // 2:][:3]
    assert stop.strip(), text
    data = (await api.post(COMPLETIONS, completion_body(
        max_tokens=16, stop=[stop] if stop_as_list else stop))).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == text[: text.index(stop)]


async def test_stop_token_ids(api, engine):
    free = (await api.post(COMPLETIONS, completion_body(max_tokens=8, ignore_eos=True))).json()
    generated_ids = engine.tokenizer.encode(free["choices"][0]["text"], add_special_tokens=False)
    data = (await api.post(COMPLETIONS, completion_body(
        max_tokens=8, ignore_eos=True, stop_token_ids=generated_ids))).json()
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["completion_tokens"] < 8
