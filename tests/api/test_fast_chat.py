"""POST /v1/chat/completions over the scripted FakeEngine: response and chunk shapes, usage,
what reaches the engine, n / best_of, stops, logprobs, tool calls (no model, fast tier)."""

from __future__ import annotations

import json
import re

import pytest
from fake_engine import DEFAULT_SCRIPT, FakeEngine, FakeTokenizer
from sse_frames import sse_chunks

CHAT = "/v1/chat/completions"
MODEL = "fake"
HI = [{"role": "user", "content": "Hi"}]
HI_PROMPT = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
TOKENIZER = FakeTokenizer()
SCRIPT_IDS = TOKENIZER.encode(DEFAULT_SCRIPT, add_special_tokens=False)
ID = re.compile(r"^chatcmpl-[0-9a-f]{32}$")


def chat(**fields) -> dict:
    return {"model": MODEL, "messages": HI, "max_tokens": 5, **fields}


def script_text(num_tokens: int) -> str:
    return TOKENIZER.decode(SCRIPT_IDS[:num_tokens])


def contents(chunks: list[dict], index: int = 0) -> str:
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks
                   if c["choices"] and c["choices"][0]["index"] == index)


async def test_non_stream_shape_and_usage(fake_api, fake_engine):
    reply = await fake_api.post(CHAT, chat())
    assert reply.status == 200, reply.text
    assert reply.content_type.startswith("application/json")
    body = reply.json()
    assert set(body) == {"id", "object", "created", "model", "choices", "usage"}
    assert ID.match(body["id"])
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL
    assert isinstance(body["created"], int) and body["created"] > 1_600_000_000
    [choice] = body["choices"]
    assert (choice["index"], choice["logprobs"], choice["finish_reason"]) == (0, None, "length")
    message = choice["message"]
    assert (message["role"], message["content"]) == ("assistant", script_text(5))
    assert not message.get("tool_calls")
    assert "reasoning_content" not in message
    [request] = fake_engine.requests
    assert request.request_id == f"{body['id']}-0"
    assert body["usage"] == {"prompt_tokens": len(request.prompt_token_ids),
                             "completion_tokens": 5,
                             "total_tokens": len(request.prompt_token_ids) + 5}


async def test_the_prompt_is_the_rendered_chat_template(fake_api, fake_engine):
    messages = [{"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"},
                                             {"type": "text", "text": "there"}]}]
    assert (await fake_api.post(CHAT, chat(messages=messages))).status == 200
    assert (await fake_api.post(CHAT, chat())).status == 200
    first, second = fake_engine.requests
    assert TOKENIZER.decode(first.prompt_token_ids, skip_special_tokens=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi\nthere<|im_end|>\n<|im_start|>assistant\n")
    assert second.prompt_token_ids == TOKENIZER.encode(HI_PROMPT, add_special_tokens=False)


async def test_eos_ends_the_choice_with_stop_and_is_counted(fake_api):
    body = (await fake_api.post(CHAT, chat(max_tokens=100))).json()
    assert body["choices"][0]["message"]["content"] == DEFAULT_SCRIPT
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == len(SCRIPT_IDS) + 1  # the EOS token


async def test_ignore_eos_runs_to_max_tokens(fake_api, fake_engine):
    body = (await fake_api.post(CHAT, chat(max_tokens=25, ignore_eos=True))).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 25
    assert body["choices"][0]["message"]["content"] == DEFAULT_SCRIPT + script_text(5)
    assert fake_engine.requests[0].params.ignore_eos


async def test_max_completion_tokens_wins_and_omitted_uses_the_context(fake_api, fake_engine):
    body = (await fake_api.post(CHAT, chat(max_tokens=9, max_completion_tokens=3))).json()
    assert body["usage"]["completion_tokens"] == 3
    omitted = chat()
    del omitted["max_tokens"], omitted["model"]
    reply = await fake_api.post(CHAT, omitted)
    assert reply.status == 200 and reply.json()["model"] == MODEL
    capped, rest = fake_engine.requests
    assert capped.params.max_tokens == 3
    assert rest.params.max_tokens == fake_engine.max_model_len - len(rest.prompt_token_ids)


async def test_request_fields_reach_the_engine_as_sampling_params(fake_api, fake_engine):
    reply = await fake_api.post(CHAT, chat(
        temperature=0.7, top_p=0.9, top_k=40, min_p=0.05, presence_penalty=0.5,
        frequency_penalty=-0.5, repetition_penalty=1.1, stop=["END"], stop_token_ids=[7],
        logit_bias={"5": -100}, seed=10, n=3, min_tokens=2, include_stop_str_in_output=True))
    assert reply.status == 200, reply.text
    body = reply.json()
    assert [r.request_id for r in fake_engine.requests] == [f"{body['id']}-{i}" for i in range(3)]
    assert [r.params.seed for r in fake_engine.requests] == [10, 11, 12]
    params = fake_engine.requests[0].params
    assert (params.temperature, params.top_p, params.top_k, params.min_p) == (0.7, 0.9, 40, 0.05)
    assert (params.presence_penalty, params.frequency_penalty) == (0.5, -0.5)
    assert params.repetition_penalty == 1.1
    assert params.stop == ("END",) and params.stop_token_ids == (7,)
    assert params.logit_bias == ((5, -100.0),)
    assert params.min_tokens == 2 and params.include_stop_str_in_output
    assert params.logprobs is None and params.max_tokens == 5


async def test_priority_reaches_an_engine_that_supports_it(fake_served):
    engine = FakeEngine(supports_priority=True)
    api = await fake_served(engine)
    assert (await api.post(CHAT, chat(priority=-3, n=2))).status == 200
    assert [r.priority for r in engine.requests] == [-3, -3]


async def test_tiny_temperature_is_greedy(fake_api, fake_engine):
    assert (await fake_api.post(CHAT, chat(temperature=1e-7))).status == 200
    assert fake_engine.requests[0].params.temperature == 0.0


async def test_stream_framing_and_chunk_shapes(fake_api):
    plain = (await fake_api.post(CHAT, chat())).json()
    chunks = sse_chunks(await fake_api.post(CHAT, chat(stream=True)))
    ids = {chunk["id"] for chunk in chunks}
    assert len(ids) == 1 and ID.match(ids.pop())
    assert len({chunk["created"] for chunk in chunks}) == 1
    for chunk in chunks:
        assert set(chunk) == {"id", "object", "created", "model", "choices", "usage"}
        assert chunk["object"] == "chat.completion.chunk" and chunk["model"] == MODEL
        assert chunk["usage"] is None
        assert len(chunk["choices"]) == 1
    role, *middle, final = [chunk["choices"][0] for chunk in chunks]
    assert role == {"index": 0, "delta": {"role": "assistant", "content": ""},
                    "logprobs": None, "finish_reason": None}
    assert [c["delta"] for c in middle] == [{"content": TOKENIZER.decode([t])}
                                            for t in SCRIPT_IDS[:5]]
    assert all(c["finish_reason"] is None for c in middle)
    assert final == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert contents(chunks) == plain["choices"][0]["message"]["content"]


async def test_stream_usage_chunk_comes_last(fake_api, fake_engine):
    reply = await fake_api.post(CHAT, chat(stream=True, stream_options={"include_usage": True}))
    *chunks, usage_chunk = sse_chunks(reply)
    prompt_tokens = len(fake_engine.requests[0].prompt_token_ids)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 5,
                                    "total_tokens": prompt_tokens + 5}
    assert usage_chunk["id"] == chunks[0]["id"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(chunk["usage"] is None for chunk in chunks)


async def test_stream_until_eos(fake_api):
    chunks = sse_chunks(await fake_api.post(CHAT, chat(max_tokens=100, stream=True)))
    assert contents(chunks) == DEFAULT_SCRIPT
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_n2_non_stream(fake_api, fake_engine):
    body = (await fake_api.post(CHAT, chat(n=2, max_tokens=4))).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert all(c["message"]["content"] == script_text(4) for c in body["choices"])
    assert all(c["finish_reason"] == "length" for c in body["choices"])
    prompt_tokens = len(fake_engine.requests[0].prompt_token_ids)
    assert body["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 8,
                             "total_tokens": prompt_tokens + 8}


async def test_n2_stream_opens_every_choice_then_interleaves(fake_api):
    reply = await fake_api.post(CHAT, chat(n=2, max_tokens=3, stream=True,
                                           stream_options={"include_usage": True}))
    *chunks, usage_chunk = sse_chunks(reply)
    choices = [chunk["choices"][0] for chunk in chunks]
    assert [c["index"] for c in choices[:2]] == [0, 1]
    assert all(c["delta"] == {"role": "assistant", "content": ""} for c in choices[:2])
    assert {c["index"] for c in choices[2:4]} == {0, 1}  # the engine streams them side by side
    assert sorted(c["index"] for c in choices if c["finish_reason"]) == [0, 1]
    for index in (0, 1):
        mine = [c for c in choices if c["index"] == index]
        assert mine[-1]["finish_reason"] == "length"
        assert contents(chunks, index) == script_text(3)
    assert usage_chunk["usage"]["completion_tokens"] == 6


async def test_best_of_returns_the_highest_cumulative_logprob(fake_served):
    # seed s says "Hi" (s - 4) times then EOS; fewer tokens, higher cumulative logprob
    hi = TOKENIZER.id_of("Hi")
    engine = FakeEngine(script=lambda prompt, params: [hi] * (params.seed - 4))
    api = await fake_served(engine)
    body = (await api.post(CHAT, chat(n=1, best_of=3, seed=5, max_tokens=10))).json()
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["message"]["content"] == "Hi"
    assert choice["logprobs"] is None  # computed to rank the samples, not asked for
    assert [r.params.logprobs for r in engine.requests] == [0, 0, 0]
    assert body["usage"]["completion_tokens"] == (1 + 1) + (2 + 1) + (3 + 1)


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_string_cuts_the_text(fake_api, stream):
    reply = await fake_api.post(CHAT, chat(max_tokens=100, stop=[" fox", "zzz"], stream=stream))
    if stream:
        chunks = sse_chunks(reply)
        text, reason = contents(chunks), chunks[-1]["choices"][0]["finish_reason"]
    else:
        choice = reply.json()["choices"][0]
        text, reason = choice["message"]["content"], choice["finish_reason"]
    assert text == DEFAULT_SCRIPT[:DEFAULT_SCRIPT.index(" fox")]
    assert reason == "stop"


async def test_include_stop_str_in_output(fake_api):
    body = (await fake_api.post(CHAT, chat(max_tokens=100, stop="fake",
                                           include_stop_str_in_output=True))).json()
    assert body["choices"][0]["message"]["content"] == "Hello world! I am a fake"


async def test_stop_token_id(fake_api):
    model = TOKENIZER.id_of(" model")
    body = (await fake_api.post(CHAT, chat(max_tokens=100, stop_token_ids=[model]))).json()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == SCRIPT_IDS.index(model) + 1


async def test_logprobs_shape(fake_api, fake_engine):
    body = (await fake_api.post(CHAT, chat(max_tokens=4, logprobs=True, top_logprobs=3))).json()
    choice = body["choices"][0]
    content = choice["logprobs"]["content"]
    assert set(choice["logprobs"]) == {"content"}
    assert len(content) == 4
    assert "".join(e["token"] for e in content) == choice["message"]["content"]
    for position, (entry, token_id) in enumerate(zip(content, SCRIPT_IDS, strict=False)):
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        expected = fake_engine.logprobs_of(token_id, position, 3)
        assert entry["token"] == TOKENIZER.decode([token_id])
        assert entry["logprob"] == pytest.approx(expected.logprob)
        assert entry["bytes"] == list(entry["token"].encode())
        assert [t["token"] for t in entry["top_logprobs"]] == TOKENIZER.token_strings(
            [t for t, _ in expected.top])
        assert entry["top_logprobs"][0]["token"] == entry["token"]
        assert all(set(t) == {"token", "logprob", "bytes"} for t in entry["top_logprobs"])
    assert fake_engine.requests[0].params.logprobs == 3


async def test_logprobs_without_top_logprobs(fake_api, fake_engine):
    body = (await fake_api.post(CHAT, chat(max_tokens=2, logprobs=True))).json()
    content = body["choices"][0]["logprobs"]["content"]
    assert [e["top_logprobs"] for e in content] == [[], []]
    assert fake_engine.requests[0].params.logprobs == 0


async def test_logprobs_stream_one_entry_per_token(fake_api):
    chunks = sse_chunks(await fake_api.post(CHAT, chat(max_tokens=4, logprobs=True,
                                                       top_logprobs=1, stream=True)))
    with_logprobs = [c["choices"][0] for c in chunks if c["choices"][0]["logprobs"]]
    assert len(with_logprobs) == 4
    for choice in with_logprobs:
        [entry] = choice["logprobs"]["content"]
        assert entry["token"] == choice["delta"]["content"]
        assert len(entry["top_logprobs"]) == 1


async def test_multi_token_deltas_carry_their_logprobs(fake_served):
    engine = FakeEngine(tokens_per_delta=3)
    api = await fake_served(engine)
    plain = (await api.post(CHAT, chat(max_tokens=7))).json()
    chunks = sse_chunks(await api.post(CHAT, chat(max_tokens=7, stream=True, logprobs=True)))
    deltas = [c["choices"][0] for c in chunks[1:-1]]
    assert [len(d["logprobs"]["content"]) for d in deltas] == [3, 3, 1]
    assert contents(chunks) == plain["choices"][0]["message"]["content"] == script_text(7)


async def test_tokens_as_ids_and_response_role(fake_served, fake_engine):
    api = await fake_served(fake_engine, return_tokens_as_token_ids=True, response_role="bot")
    body = (await api.post(CHAT, chat(max_tokens=2, logprobs=True, top_logprobs=2))).json()
    choice = body["choices"][0]
    assert choice["message"]["role"] == "bot"
    assert [e["token"] for e in choice["logprobs"]["content"]] == [
        f"token_id:{t}" for t in SCRIPT_IDS[:2]]
    chunks = sse_chunks(await api.post(CHAT, chat(max_tokens=1, stream=True)))
    assert chunks[0]["choices"][0]["delta"] == {"role": "bot", "content": ""}


async def test_half_characters_are_never_streamed(fake_served):
    api = await fake_served(FakeEngine(script="a🐉b"))
    chunks = sse_chunks(await api.post(CHAT, chat(max_tokens=6, stream=True)))
    deltas = [c["choices"][0]["delta"] for c in chunks[1:-1]]
    assert deltas == [{"content": "a"}, {"content": "🐉"}, {"content": "b"}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_echo_prepends_the_final_assistant_message(fake_api, fake_engine):
    messages = [*HI, {"role": "assistant", "content": "Well,"}]
    body = (await fake_api.post(CHAT, chat(messages=messages, echo=True,
                                           add_generation_prompt=False,
                                           continue_final_message=True))).json()
    assert body["choices"][0]["message"]["content"] == "Well," + script_text(5)
    prompt = TOKENIZER.decode(fake_engine.requests[0].prompt_token_ids,
                              skip_special_tokens=False)
    assert prompt.endswith("<|im_start|>assistant\nWell,")


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


@pytest.mark.parametrize("stream", [False, True])
async def test_auto_tool_call_is_parsed(fake_served, stream):
    engine = FakeEngine(script="Sure." + CALL, max_model_len=4096)  # the tools template is long
    api = await fake_served(engine)
    reply = await api.post(CHAT, chat(max_tokens=200, tools=TOOLS, stream=stream))
    prompt = TOKENIZER.decode(engine.requests[0].prompt_token_ids, skip_special_tokens=False)
    assert "get_weather" in prompt  # the tool-capable template rendered the tools
    if not stream:
        choice = reply.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        assert choice["message"]["content"] == "Sure."
        [call] = choice["message"]["tool_calls"]
        assert call["type"] == "function" and call["id"].startswith("call_")
        assert call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
        return
    chunks = sse_chunks(reply)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert contents(chunks) == "Sure."
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["index"] == 0 and calls[0]["id"].startswith("call_")
    assert calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(c["function"].get("arguments", "") for c in calls)
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
