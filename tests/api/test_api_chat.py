"""POST /v1/chat/completions against the real SmolLM2 engine."""

from __future__ import annotations

from api_client import MODEL

CHAT = "/v1/chat/completions"


async def test_chat_non_stream_shape_and_usage(api, chat_body):
    reply = await api.post(CHAT, chat_body(max_tokens=5, ignore_eos=True))
    assert reply.status == 200, reply.text
    body = reply.json()
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) == len("chatcmpl-") + 32
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL
    assert isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert choice["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == 5
    assert usage["prompt_tokens"] > 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_chat_prompt_tokens_match_the_chat_template(api, engine, chat_body):
    body = chat_body(max_tokens=1)
    expected = engine.tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True)
    reply = await api.post(CHAT, body)
    assert reply.json()["usage"]["prompt_tokens"] == len(expected)


async def test_max_completion_tokens_wins_over_max_tokens(api, chat_body):
    reply = await api.post(CHAT, chat_body(max_tokens=9, max_completion_tokens=3, ignore_eos=True))
    body = reply.json()
    assert body["usage"]["completion_tokens"] == 3
    assert body["choices"][0]["finish_reason"] == "length"


async def test_chat_stream_matches_greedy_non_stream(api, chat_body):
    plain = (await api.post(CHAT, chat_body(max_tokens=12))).json()
    reply = await api.post(CHAT, chat_body(max_tokens=12, stream=True))
    assert reply.status == 200
    chunks = reply.chunks()
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0] is chunks[-1]
    assert finals[0]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:])
    assert text == plain["choices"][0]["message"]["content"]


async def test_chat_stream_usage_chunk(api, chat_body):
    body = chat_body(max_tokens=4, ignore_eos=True, stream=True,
                     stream_options={"include_usage": True})
    chunks = (await api.post(CHAT, body)).chunks()
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] == 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + 4
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


async def test_chat_stream_without_usage_has_no_usage_chunk(api, chat_body):
    chunks = (await api.post(CHAT, chat_body(max_tokens=3, stream=True))).chunks()
    assert all(chunk["choices"] for chunk in chunks)
    assert all(chunk.get("usage") is None for chunk in chunks)


async def test_chat_n2_returns_two_choices(api, chat_body):
    body = chat_body(n=2, max_tokens=4, ignore_eos=True, temperature=1.0, seed=11)
    reply = await api.post(CHAT, body)
    data = reply.json()
    assert [c["index"] for c in data["choices"]] == [0, 1]
    assert all(c["finish_reason"] == "length" for c in data["choices"])
    assert data["usage"]["completion_tokens"] == 8


async def test_chat_n2_stream_has_each_choice(api, chat_body):
    body = chat_body(n=2, max_tokens=3, ignore_eos=True, stream=True,
                     stream_options={"include_usage": True})
    chunks = (await api.post(CHAT, body)).chunks()
    *choice_chunks, usage_chunk = chunks
    choices = [chunk["choices"][0] for chunk in choice_chunks]
    assert [c["index"] for c in choices[:2]] == [0, 1]
    assert all(c["delta"] == {"role": "assistant", "content": ""} for c in choices[:2])
    finished = sorted(c["index"] for c in choices if c["finish_reason"])
    assert finished == [0, 1]
    assert usage_chunk["usage"]["completion_tokens"] == 6


async def test_seed_makes_sampling_reproducible(api, chat_body):
    body = chat_body(max_tokens=8, temperature=1.0, seed=1234)
    first = (await api.post(CHAT, body)).json()["choices"][0]["message"]["content"]
    second = (await api.post(CHAT, body)).json()["choices"][0]["message"]["content"]
    assert first == second


async def test_stop_string_is_honoured(api, chat_body):
    free = (await api.post(CHAT, chat_body(max_tokens=16))).json()
    text = free["choices"][0]["message"]["content"]
    stop = text.strip()[len(text.strip()) // 2:][:3]
    assert stop.strip(), text
    reply = (await api.post(CHAT, chat_body(max_tokens=16, stop=stop))).json()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == text[: text.index(stop)]
    assert stop not in choice["message"]["content"]


async def test_text_content_parts_equal_plain_content(api, chat_body):
    plain = await api.post(CHAT, chat_body(
        messages=[{"role": "user", "content": "Hello\nthere"}], max_tokens=6))
    parts = await api.post(CHAT, chat_body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]}], max_tokens=6))
    assert parts.status == 200, parts.text
    assert parts.json()["choices"][0]["message"] == plain.json()["choices"][0]["message"]
    assert parts.json()["usage"] == plain.json()["usage"]


async def test_system_developer_and_assistant_turns(api, chat_body):
    messages = [
        {"role": "developer", "content": "You answer briefly."},
        {"role": "user", "content": "Hi", "name": "ann"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
    ]
    reply = await api.post(CHAT, chat_body(messages=messages, max_tokens=4, user="someone"))
    assert reply.status == 200, reply.text
    assert reply.json()["choices"][0]["finish_reason"] in ("stop", "length")


async def test_model_may_be_omitted(api, chat_body):
    body = chat_body(max_tokens=2)
    del body["model"]
    reply = await api.post(CHAT, body)
    assert reply.status == 200, reply.text
    assert reply.json()["model"] == MODEL
