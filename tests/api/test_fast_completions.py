"""POST /v1/completions over the scripted FakeEngine: shapes, usage, prompts as text or ids,
n over several prompts, streaming, logprobs and echo (no model, fast tier)."""

from __future__ import annotations

import re

import pytest
from fake_engine import DEFAULT_SCRIPT, FakeEngine, FakeTokenizer
from sse_frames import sse_chunks

COMPLETIONS = "/v1/completions"
MODEL = "fake"
PROMPT = "Hello world, the"
TOKENIZER = FakeTokenizer()
PROMPT_IDS = TOKENIZER.encode(PROMPT)
SCRIPT_IDS = TOKENIZER.encode(DEFAULT_SCRIPT, add_special_tokens=False)
ID = re.compile(r"^cmpl-[0-9a-f]{32}$")


def completion(**fields) -> dict:
    return {"model": MODEL, "prompt": PROMPT, "max_tokens": 6, **fields}


def script_text(num_tokens: int) -> str:
    return TOKENIZER.decode(SCRIPT_IDS[:num_tokens])


async def test_string_prompt_shape_and_usage(fake_api, fake_engine):
    reply = await fake_api.post(COMPLETIONS, completion())
    assert reply.status == 200, reply.text
    body = reply.json()
    assert set(body) == {"id", "object", "created", "model", "choices", "usage"}
    assert ID.match(body["id"])
    assert body["object"] == "text_completion" and body["model"] == MODEL
    assert body["choices"] == [{"index": 0, "text": script_text(6), "logprobs": None,
                                "finish_reason": "length"}]
    assert body["usage"] == {"prompt_tokens": len(PROMPT_IDS), "completion_tokens": 6,
                             "total_tokens": len(PROMPT_IDS) + 6}
    [request] = fake_engine.requests
    assert request.prompt_token_ids == PROMPT_IDS
    assert request.request_id == f"{body['id']}-0"


async def test_token_id_prompt_equals_string_prompt(fake_api, fake_engine):
    by_text = (await fake_api.post(COMPLETIONS, completion())).json()
    by_ids = (await fake_api.post(COMPLETIONS, completion(prompt=PROMPT_IDS))).json()
    assert by_ids["choices"] == by_text["choices"]
    assert by_ids["usage"] == by_text["usage"]
    assert fake_engine.requests[0].prompt_token_ids == fake_engine.requests[1].prompt_token_ids


async def test_several_prompts_times_n(fake_api, fake_engine):
    prompts = [PROMPT_IDS, TOKENIZER.encode("Hi there")]
    body = (await fake_api.post(COMPLETIONS, completion(prompt=prompts, n=2,
                                                        max_tokens=3))).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert all(c["text"] == script_text(3) for c in body["choices"])
    assert body["usage"]["prompt_tokens"] == sum(len(p) for p in prompts)  # once per prompt
    assert body["usage"]["completion_tokens"] == 12
    # choice index = prompt * n + sample; each choice is its own engine request
    by_id = {r.request_id: r.prompt_token_ids for r in fake_engine.requests}
    assert [by_id[f"{body['id']}-{i}"] for i in range(4)] == [prompts[0]] * 2 + [prompts[1]] * 2


async def test_default_and_null_max_tokens(fake_api, fake_engine):
    body = completion(ignore_eos=True)
    del body["max_tokens"]
    data = (await fake_api.post(COMPLETIONS, body)).json()
    assert data["usage"]["completion_tokens"] == 16
    assert data["choices"][0]["finish_reason"] == "length"
    data = (await fake_api.post(COMPLETIONS, completion(max_tokens=None))).json()
    assert data["choices"][0] == {"index": 0, "text": DEFAULT_SCRIPT, "logprobs": None,
                                  "finish_reason": "stop"}
    assert fake_engine.requests[1].params.max_tokens == 256 - len(PROMPT_IDS)


async def test_generation_stops_at_the_context_length(fake_served):
    engine = FakeEngine(max_model_len=len(PROMPT_IDS) + 4)
    api = await fake_served(engine)
    data = (await api.post(COMPLETIONS, completion(max_tokens=None))).json()
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 4


async def test_stream_framing_and_usage(fake_api):
    plain = (await fake_api.post(COMPLETIONS, completion())).json()
    reply = await fake_api.post(COMPLETIONS, completion(
        stream=True, stream_options={"include_usage": True}))
    *chunks, usage_chunk = sse_chunks(reply)
    assert len({c["id"] for c in chunks + [usage_chunk]}) == 1
    for chunk in chunks:
        assert chunk["object"] == "text_completion" and chunk["model"] == MODEL
        assert chunk["usage"] is None and len(chunk["choices"]) == 1
    *texts, final = [c["choices"][0] for c in chunks]
    assert [c["text"] for c in texts] == [TOKENIZER.decode([t]) for t in SCRIPT_IDS[:6]]
    assert all(c["finish_reason"] is None and c["logprobs"] is None for c in texts)
    assert final == {"index": 0, "text": "", "logprobs": None, "finish_reason": "length"}
    assert "".join(c["text"] for c in texts) == plain["choices"][0]["text"]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]


async def test_stream_with_stop_string_holds_back_partial_matches(fake_api):
    reply = await fake_api.post(COMPLETIONS, completion(max_tokens=100, stop=["fake model"],
                                                        stream=True))
    chunks = sse_chunks(reply)
    texts = [c["choices"][0]["text"] for c in chunks]
    assert "".join(texts) == "Hello world! I am a "
    assert "fake" not in "".join(texts)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_logprobs_shape(fake_api, fake_engine):
    body = (await fake_api.post(COMPLETIONS, completion(logprobs=2, max_tokens=4))).json()
    choice = body["choices"][0]
    logprobs = choice["logprobs"]
    assert set(logprobs) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert logprobs["tokens"] == [TOKENIZER.decode([t]) for t in SCRIPT_IDS[:4]]
    assert "".join(logprobs["tokens"]) == choice["text"]
    assert logprobs["text_offset"] == [sum(map(len, logprobs["tokens"][:i])) for i in range(4)]
    for position, (token_id, token, logprob, top) in enumerate(zip(
            SCRIPT_IDS, logprobs["tokens"], logprobs["token_logprobs"],
            logprobs["top_logprobs"], strict=False)):
        expected = fake_engine.logprobs_of(token_id, position, 2)
        assert logprob == pytest.approx(expected.logprob)
        assert len(top) == 2 and top[token] == pytest.approx(expected.logprob)
    assert fake_engine.requests[0].params.logprobs == 2
    assert fake_engine.requests[0].params.prompt_logprobs is None


async def test_stream_logprob_offsets_continue_across_chunks(fake_api):
    chunks = sse_chunks(await fake_api.post(COMPLETIONS, completion(logprobs=0, stream=True)))
    pieces = [c["choices"][0]["logprobs"] for c in chunks if c["choices"][0]["logprobs"]]
    tokens = [t for p in pieces for t in p["tokens"]]
    offsets = [o for p in pieces for o in p["text_offset"]]
    assert offsets == [sum(map(len, tokens[:i])) for i in range(len(tokens))]
    assert all(p["top_logprobs"] == [{t: lp} for t, lp in zip(p["tokens"],
                                                               p["token_logprobs"])]
               for p in pieces)


async def test_echo_with_prompt_logprobs(fake_api, fake_engine):
    body = (await fake_api.post(COMPLETIONS, completion(echo=True, logprobs=1,
                                                        max_tokens=3))).json()
    choice = body["choices"][0]
    assert choice["text"] == PROMPT + script_text(3)
    logprobs = choice["logprobs"]
    assert len(logprobs["tokens"]) == len(PROMPT_IDS) + 3
    assert "".join(logprobs["tokens"]) == choice["text"]
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert all(lp is not None for lp in logprobs["token_logprobs"][1:])
    assert fake_engine.requests[0].params.prompt_logprobs == 1


async def test_echo_stream_starts_with_the_prompt(fake_api):
    plain = (await fake_api.post(COMPLETIONS, completion(echo=True))).json()["choices"][0]
    chunks = sse_chunks(await fake_api.post(COMPLETIONS, completion(echo=True, stream=True)))
    texts = [c["choices"][0]["text"] for c in chunks]
    assert texts[0] == PROMPT + script_text(1)
    assert "".join(texts) == plain["text"] == PROMPT + script_text(6)


async def test_beam_search_over_the_engine(fake_api, fake_engine):
    # the fake ranks each step's script token first, so the best beam is the script
    body = (await fake_api.post(COMPLETIONS, completion(use_beam_search=True, best_of=2, n=2,
                                                        max_tokens=3, temperature=0))).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert all(c["finish_reason"] == "length" for c in body["choices"])
    assert body["choices"][0]["text"] == script_text(1) * 3
    assert all(r.params.max_tokens == 1 and r.params.logprobs == 4
               for r in fake_engine.requests)
