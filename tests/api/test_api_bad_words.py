"""bad_words over HTTP: banned words never appear in chat or completion text."""

from __future__ import annotations

import pytest
from api_client import MODEL, assert_error

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def completion(**fields) -> dict:
    return {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 12,
            "temperature": 0, "ignore_eos": True, **fields}


async def test_a_banned_word_leaves_the_greedy_completion(api):
    plain = (await api.post(COMPLETIONS, completion())).json()["choices"][0]["text"]
    word = plain.split()[0]
    assert f" {word}" in f" {plain}"
    reply = await api.post(COMPLETIONS, completion(bad_words=[word]))
    assert reply.status == 200, reply.text
    banned = reply.json()["choices"][0]["text"]
    assert word not in banned.split()
    assert banned != plain


async def test_a_banned_word_leaves_the_greedy_chat_answer(api, chat_body):
    plain = (await api.post(CHAT, chat_body(max_tokens=12))).json()
    text = plain["choices"][0]["message"]["content"]
    words = [w.strip(".,!?") for w in text.split()]
    word = max(words, key=len)
    reply = await api.post(CHAT, chat_body(max_tokens=12, bad_words=[word]))
    assert reply.status == 200, reply.text
    assert word not in reply.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("bad_words", [[""], ["  "], "dragon", [3]])
async def test_bad_words_must_be_non_empty_strings(api, bad_words):
    error = assert_error(await api.post(COMPLETIONS, completion(bad_words=bad_words)), 400)
    assert error["param"].startswith("bad_words"), error
