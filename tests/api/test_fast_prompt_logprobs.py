"""vLLM's prompt_logprobs over the scripted FakeEngine: completions carry them on each
choice, chat on the response (vLLM's places); null first, then token id -> {logprob, rank,
decoded_token}; a negative, too large or streamed request is a 400 (no model)."""

from __future__ import annotations

import pytest
from api_client import assert_error
from fake_engine import FakeEngine, FakeTokenizer

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
TOKENIZER = FakeTokenizer()
PROMPT = "Hello world, the"
PROMPT_IDS = TOKENIZER.encode(PROMPT)


def check_shape(entries: list, prompt_ids: list[int], alternatives: int) -> None:
    """vLLM's shape: one entry per prompt token, null first; each a dict whose keys are
    token ids (as JSON strings) with the prompt's own token among them."""
    assert len(entries) == len(prompt_ids)
    assert entries[0] is None
    engine = FakeEngine()
    for position, (entry, token) in enumerate(zip(entries[1:], prompt_ids[1:]), 1):
        assert str(token) in entry
        expected = engine.logprobs_of(token, position, alternatives)
        assert entry[str(token)] == {"logprob": expected.logprob, "rank": 1,
                                     "decoded_token": TOKENIZER.token_strings([token])[0]}
        assert len(entry) == max(alternatives, 1)
        ranks = sorted(v["rank"] for v in entry.values())
        assert ranks == list(range(1, len(entry) + 1))
        assert all(set(v) == {"logprob", "rank", "decoded_token"} for v in entry.values())


async def test_completions_return_prompt_logprobs_on_each_choice(fake_api, fake_engine):
    reply = await fake_api.post(COMPLETIONS, {"prompt": PROMPT, "max_tokens": 2,
                                              "prompt_logprobs": 2, "n": 2})
    assert reply.status == 200, reply.text
    assert fake_engine.requests[0].params.prompt_logprobs == 2
    for choice in reply.json()["choices"]:
        check_shape(choice["prompt_logprobs"], PROMPT_IDS, 2)
        assert choice["logprobs"] is None  # prompt_logprobs alone asks for no output ones


async def test_chat_returns_prompt_logprobs_on_the_response(fake_api, fake_engine):
    reply = await fake_api.post(CHAT, {"messages": [{"role": "user", "content": "Hi"}],
                                       "max_tokens": 2, "prompt_logprobs": 0})
    assert reply.status == 200, reply.text
    body = reply.json()
    prompt = fake_engine.requests[0].prompt_token_ids
    check_shape(body["prompt_logprobs"], prompt, 0)
    assert "prompt_logprobs" not in body["choices"][0]


async def test_not_asked_leaves_the_field_out(fake_api, fake_engine):
    completion = (await fake_api.post(COMPLETIONS, {"prompt": PROMPT, "max_tokens": 2})).json()
    assert "prompt_logprobs" not in completion["choices"][0]
    assert fake_engine.requests[0].params.prompt_logprobs is None
    chat = (await fake_api.post(CHAT, {"messages": [{"role": "user", "content": "Hi"}],
                                       "max_tokens": 2})).json()
    assert "prompt_logprobs" not in chat


async def test_echo_logprobs_keep_their_own_width_beside_prompt_logprobs(fake_api, fake_engine):
    reply = await fake_api.post(COMPLETIONS, {"prompt": PROMPT, "max_tokens": 1, "echo": True,
                                              "logprobs": 1, "prompt_logprobs": 3})
    assert reply.status == 200, reply.text
    assert fake_engine.requests[0].params.prompt_logprobs == 3  # the larger of the two
    choice = reply.json()["choices"][0]
    check_shape(choice["prompt_logprobs"], PROMPT_IDS, 3)
    echoed = choice["logprobs"]["top_logprobs"][:len(PROMPT_IDS)]
    assert echoed[0] is None and all(len(top) == 1 for top in echoed[1:])


@pytest.mark.parametrize("path, extra, message", [
    (COMPLETIONS, {"prompt_logprobs": -1}, "prompt_logprobs=-1 must be >= 0"),
    (CHAT, {"prompt_logprobs": -2}, "prompt_logprobs=-2 must be >= 0"),
    (COMPLETIONS, {"prompt_logprobs": 21}, "more than this server's max_logprobs (20)"),
    (CHAT, {"prompt_logprobs": 1, "stream": True}, "not available with stream=true"),
    (COMPLETIONS, {"prompt_logprobs": 1, "use_beam_search": True, "n": 2},
     "cannot be combined with use_beam_search"),
])
async def test_bad_prompt_logprobs_are_a_400_naming_the_field(fake_api, fake_engine, path,
                                                               extra, message):
    body = ({"prompt": PROMPT} if path == COMPLETIONS
            else {"messages": [{"role": "user", "content": "Hi"}]})
    reply = await fake_api.post(path, {**body, "max_tokens": 2, **extra})
    error = assert_error(reply, 400, param="prompt_logprobs")
    assert message in error["message"]
    assert not fake_engine.requests
