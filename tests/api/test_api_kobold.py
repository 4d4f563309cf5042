"""The Kobold API (server.kobold_api) through the real app: Kobold parameter names give the
same text as their OpenAI / vLLM names on /v1/completions."""

from __future__ import annotations

import asyncio
import json

import pytest
from api_client import MODEL, assert_error, open_client

from toolkit.config.schema import ServerConfig

PROMPT = "Once upon a time, in a small village,"
GENERATE = "/api/v1/generate"
STREAM = "/api/extra/generate/stream"


@pytest.fixture
async def kobold(engine):
    app, client = await open_client(engine, ServerConfig(kobold_api=True, kobold_max_length=99))
    yield client
    await app.stop()


def kai(**fields) -> dict:
    return {"prompt": PROMPT, "max_context_length": 512, "max_length": 8, "temperature": 0,
            **fields}


async def generated(kobold, **fields) -> str:
    reply = await kobold.post(GENERATE, kai(**fields))
    assert reply.status == 200, reply.text
    [result] = reply.json()["results"]
    return result["text"]


async def completed(api, prompt, **fields) -> str:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 8, **fields}
    reply = await api.post("/v1/completions", body)
    assert reply.status == 200, reply.text
    return reply.json()["choices"][0]["text"]


async def test_greedy_generate_equals_greedy_completion(kobold, api):
    assert await generated(kobold) == await completed(api, PROMPT, temperature=0)


async def test_kobold_names_map_to_sampling_params(kobold, api):
    sampled = await generated(kobold, temperature=0.9, top_k=20, top_p=0.95, min_p=0.02,
                              top_a=0.1, tfs=0.97, typical=0.95, eps_cutoff=2.0,
                              eta_cutoff=3.0, rep_pen=1.3, sampler_seed=11, max_length=12)
    expected = await completed(api, PROMPT, temperature=0.9, top_k=20, top_p=0.95,
                               min_p=0.02, top_a=0.1, tfs=0.97, typical_p=0.95,
                               epsilon_cutoff=2.0, eta_cutoff=3.0, repetition_penalty=1.3,
                               seed=11, max_tokens=12)
    assert sampled == expected
    unlimited = await generated(kobold, temperature=1.0, top_k=0, sampler_seed=5)
    assert unlimited == await completed(api, PROMPT, temperature=1.0, top_k=-1, seed=5)


async def test_the_prompt_keeps_its_last_context_tokens(kobold, api, engine):
    ids = engine.tokenizer.encode(PROMPT)
    text = await generated(kobold, max_context_length=12, max_length=6)
    assert text == await completed(api, ids[-6:], temperature=0, max_tokens=6)


async def test_stop_sequence_and_n(kobold):
    full = await generated(kobold, max_length=16)
    stop = full.split()[2]
    cut = await generated(kobold, max_length=16, stop_sequence=[stop])
    assert cut == full[:full.index(stop)]
    reply = await kobold.post(GENERATE, kai(n=3, temperature=1.0, sampler_seed=1))
    assert len(reply.json()["results"]) == 3


async def test_default_bad_words_ban_brackets_and_eos(kobold):
    prompt = "a = [1, 2, 3]\nb = [4, 5, 6]\nc = ["
    plain = await generated(kobold, prompt=prompt, max_length=10)
    assert "[" in plain or "]" in plain
    banned = await generated(kobold, prompt=prompt, max_length=10, use_default_badwordsids=True)
    assert "[" not in banned and "]" not in banned


async def test_stream_sends_message_events_that_add_up_to_the_text(kobold):
    reply = await kobold.post(STREAM, kai())
    assert reply.status == 200, reply.text
    assert reply.content_type.startswith("text/event-stream")
    blocks = [b for b in reply.text.split("\n\n") if b.strip()]
    tokens = []
    for block in blocks:
        event, data = block.split("\n")
        assert event == "event: message"
        tokens.append(json.loads(data.removeprefix("data: "))["token"])
    assert len(tokens) > 1
    assert "".join(tokens) == await generated(kobold)


async def test_info_routes(kobold, engine):
    assert (await kobold.get("/api/v1/model")).json() == {"result": f"toolkit/{MODEL}"}
    assert (await kobold.get("/api/v1/info/version")).json() == {"result": "1.2.4"}
    assert (await kobold.get("/api/extra/version")).json()["result"] == "KoboldCpp"
    assert (await kobold.get("/api/v1/config/max_length")).json() == {"value": 99}
    assert (await kobold.get("/api/v1/config/max_context_length")).json() == {
        "value": engine.max_model_len}
    count = (await kobold.post("/api/extra/tokencount", {"prompt": PROMPT})).json()
    assert count["value"] == len(engine.tokenizer.encode(PROMPT)) == len(count["ids"])


@pytest.mark.parametrize("fields, param", [
    ({"max_length": 512}, "max_length"), ({"rep_pen": 5.0}, "rep_pen"),
    ({"typical": 0}, "typical"), ({"stop_sequence": [""]}, "stop_sequence"),
    ({"prompt": None}, "prompt"), ({"max_length": 0}, "max_length"),
    ({"n": 2, "temperature": 1.0}, "n"),
])
async def test_bad_parameters_are_400s_naming_them(kobold, fields, param):
    path = STREAM if "n" in fields else GENERATE
    assert_error(await kobold.post(path, kai(**fields)), 400, param=param)


async def test_kobold_routes_are_off_by_default(api):
    assert_error(await api.post(GENERATE, kai()), 404)
    assert_error(await api.get("/api/v1/model"), 404)


async def test_kobold_routes_need_the_api_key_when_keys_are_set(engine):
    app, client = await open_client(engine, ServerConfig(kobold_api=True, api_keys=["sk-k"]))
    try:
        assert_error(await client.post(GENERATE, kai()), 401)
        reply = await client.post(GENERATE, kai(max_length=2),
                                  headers={"Authorization": "Bearer sk-k"})
        assert reply.status == 200, reply.text
    finally:
        await app.stop()


async def test_check_shows_progress_and_abort_ends_the_generation(kobold):
    task = asyncio.create_task(kobold.post(GENERATE, kai(genkey="g-1", max_length=400,
                                                         temperature=1.0, sampler_seed=2)))
    partial = ""
    for _ in range(600):
        await asyncio.sleep(0.05)
        partial = (await kobold.post("/api/extra/generate/check", {"genkey": "g-1"})
                   ).json()["results"][0]["text"]
        if partial:
            break
    assert partial
    duplicate = await kobold.post(GENERATE, kai(genkey="g-1"))
    assert_error(duplicate, 400, param="genkey")
    assert (await kobold.post("/api/extra/abort", {"genkey": "g-1"})).json() == {}
    reply = await asyncio.wait_for(task, 60)
    assert reply.status == 200, reply.text
    text = reply.json()["results"][0]["text"]
    assert text.startswith(partial)
    count = (await kobold.post("/api/extra/tokencount", {"prompt": text})).json()["value"]
    assert count < 200  # stopped long before max_length
    done = await kobold.post("/api/extra/generate/check", {"genkey": "g-1"})
    assert done.json() == {"results": [{"text": ""}]}
