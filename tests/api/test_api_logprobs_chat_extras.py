"""Logprobs in OpenAI's shapes, completions echo, and the chat extras."""

from __future__ import annotations

import pytest
from api_client import MODEL, assert_error

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "Name a colour."}]


def chat(**fields) -> dict:
    return {"model": MODEL, "messages": USER, "max_tokens": 4, "temperature": 0, **fields}


def completion(**fields) -> dict:
    return {"model": MODEL, "prompt": "One, two,", "max_tokens": 3, "temperature": 0, **fields}


async def test_chat_logprobs_shape(api):
    reply = await api.post(CHAT, chat(logprobs=True, top_logprobs=3, ignore_eos=True))
    choice = reply.json()["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == 4
    assert "".join(e["token"] for e in content) == choice["message"]["content"]
    for entry in content:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        assert entry["bytes"] == list(entry["token"].encode())
        assert len(entry["top_logprobs"]) == 3
        assert entry["top_logprobs"][0]["token"] == entry["token"]  # greedy: the top one
        assert entry["logprob"] <= 0


async def test_chat_logprobs_stream_per_delta(api):
    reply = await api.post(CHAT, chat(logprobs=True, top_logprobs=1, stream=True,
                                      ignore_eos=True))
    entries = [e for c in reply.chunks() if c["choices"] and c["choices"][0].get("logprobs")
               for e in c["choices"][0]["logprobs"]["content"]]
    assert len(entries) == 4


async def test_completion_logprobs_shape(api):
    reply = await api.post(COMPLETIONS, completion(logprobs=2, ignore_eos=True))
    choice = reply.json()["choices"][0]
    logprobs = choice["logprobs"]
    assert set(logprobs) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert "".join(logprobs["tokens"]) == choice["text"]
    assert logprobs["text_offset"] == [0, *[sum(map(len, logprobs["tokens"][:i + 1]))
                                            for i in range(2)]]
    assert all(len(top) == 2 for top in logprobs["top_logprobs"])


async def test_echo_with_prompt_logprobs(api, engine):
    reply = await api.post(COMPLETIONS, completion(echo=True, logprobs=1, ignore_eos=True))
    choice = reply.json()["choices"][0]
    prompt_ids = engine.tokenizer.encode("One, two,")
    assert choice["text"].startswith("One, two,")
    logprobs = choice["logprobs"]
    assert len(logprobs["tokens"]) == len(prompt_ids) + 3
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert all(lp is not None for lp in logprobs["token_logprobs"][1:])


async def test_echo_stream_starts_with_the_prompt(api):
    plain = (await api.post(COMPLETIONS, completion(echo=True))).json()["choices"][0]["text"]
    chunks = (await api.post(COMPLETIONS, completion(echo=True, stream=True))).chunks()
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == plain


@pytest.mark.parametrize("path, body, param", [
    (CHAT, chat(top_logprobs=3), "top_logprobs"),
    (CHAT, chat(logprobs=True, top_logprobs=21), "top_logprobs"),
    (CHAT, chat(add_generation_prompt=True, continue_final_message=True),
     "continue_final_message"),
    (CHAT, chat(chat_template_kwargs={"messages": []}), "chat_template_kwargs"),
    (CHAT, chat(chat_template="{{ ''.__class__.__mro__ }}"), "messages"),
    (CHAT, chat(chat_template="{% for %}"), "messages"),
])
async def test_chat_extra_errors(api, path, body, param):
    assert_error(await api.post(path, body), 400, type_="invalid_request_error", param=param)


async def test_continue_final_message_and_echo(api):
    messages = [*USER, {"role": "assistant", "content": "My favourite colour is"}]
    body = chat(messages=messages, add_generation_prompt=False, continue_final_message=True,
                echo=True)
    reply = await api.post(CHAT, body)
    assert reply.status == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"].startswith("My favourite colour is")


async def test_request_chat_template_kwargs_documents_and_name(api, engine):
    template = ("{% for m in messages %}{{ m['name'] or m['role'] }}: {{ m['content'] }}\n"
                "{% endfor %}{% for d in documents %}[{{ d['title'] }}]{% endfor %}"
                "{{ greeting }}")
    body = chat(messages=[{"role": "user", "content": "hi", "name": "ann"}],
                chat_template=template, chat_template_kwargs={"greeting": "Bot:"},
                documents=[{"title": "doc1", "text": "x"}], max_tokens=1)
    reply = await api.post(CHAT, body)
    assert reply.status == 200, reply.text
    expected = engine.tokenizer.encode("ann: hi\n[doc1]Bot:", add_special_tokens=False)
    assert reply.json()["usage"]["prompt_tokens"] == len(expected)


async def test_system_role_reaches_the_template(api, engine):
    with_system = chat(messages=[{"role": "system", "content": "Be terse."}, *USER], max_tokens=1)
    plain = (await api.post(CHAT, chat(max_tokens=1))).json()["usage"]["prompt_tokens"]
    assert (await api.post(CHAT, with_system)).json()["usage"]["prompt_tokens"] != plain
