"""use_beam_search over HTTP (SmolLM2): response shapes, greedy equivalence, errors.
The search itself is checked against brute force in test_beam_search.py."""

from __future__ import annotations

import pytest
from api_client import MODEL, assert_error

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def completion(**fields) -> dict:
    return {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 6,
            "use_beam_search": True, **fields}


async def test_one_beam_is_greedy_decoding(api):
    greedy = (await api.post(COMPLETIONS, completion(use_beam_search=False,
                                                     temperature=0))).json()
    assert greedy["choices"][0]["finish_reason"] == "length"
    reply = await api.post(COMPLETIONS, completion())
    assert reply.status == 200, reply.text
    [choice] = reply.json()["choices"]
    assert choice["text"] == greedy["choices"][0]["text"]
    assert choice["finish_reason"] == "length"


async def test_completions_return_the_n_best_of_best_of_beams(api):
    reply = await api.post(COMPLETIONS, completion(n=2, best_of=3, length_penalty=0.5,
                                                   early_stopping="never",
                                                   repetition_penalty=1.0, min_tokens=0))
    assert reply.status == 200, reply.text
    body = reply.json()
    assert body["object"] == "text_completion"
    choices = body["choices"]
    assert [c["index"] for c in choices] == [0, 1]
    assert choices[0]["text"] != choices[1]["text"]
    assert all(c["finish_reason"] in ("stop", "length") for c in choices)
    assert body["usage"]["completion_tokens"] <= 2 * 6
    assert body["usage"]["total_tokens"] == (body["usage"]["prompt_tokens"]
                                             + body["usage"]["completion_tokens"])


async def test_two_prompts_get_n_choices_each(api):
    reply = await api.post(COMPLETIONS, completion(prompt=["Hello", "The sky is"], n=2,
                                                   max_tokens=3, early_stopping=True))
    assert [c["index"] for c in reply.json()["choices"]] == [0, 1, 2, 3]


async def test_chat_beam_search_answers_messages(api, chat_body):
    body = chat_body(use_beam_search=True, n=2, max_tokens=5)
    body.pop("temperature")
    reply = await api.post(CHAT, body)
    assert reply.status == 200, reply.text
    choices = reply.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1]
    assert all(c["message"]["role"] == "assistant" and c["message"]["content"]
               for c in choices)


@pytest.mark.parametrize("fields, param", [
    ({"stream": True}, "stream"), ({"stop": ["."]}, "stop"), ({"logprobs": 1}, "logprobs"),
    ({"guided_choice": ["a", "b"]}, "guided_choice"), ({"best_of": 1, "n": 2}, "best_of"),
    ({"bad_words": ["Paris"]}, "bad_words"), ({"logit_bias": {"5": 1}}, "logit_bias"),
    ({"repetition_penalty": 1.2}, "repetition_penalty"), ({"min_tokens": 2}, "min_tokens"),
    ({"early_stopping": "sometimes"}, "early_stopping"),
    ({"use_beam_search": False, "length_penalty": 2.0}, "length_penalty"),
    ({"use_beam_search": False, "early_stopping": "never"}, "early_stopping"),
])
async def test_what_beam_search_cannot_honour_is_a_400(api, fields, param):
    assert_error(await api.post(COMPLETIONS, completion(**fields)), 400, param=param)


async def test_chat_stream_with_beam_search_is_a_400(api, chat_body):
    error = assert_error(await api.post(CHAT, chat_body(use_beam_search=True, stream=True)),
                         400, param="stream")
    assert "use_beam_search" in error["message"]
