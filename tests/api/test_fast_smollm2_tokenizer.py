"""The API over the FakeEngine with SmolLM2's real tokenizer (no weights): the chat template,
token ids, token strings and incremental text are the ones the real server uses."""

from __future__ import annotations

import pytest
from fake_engine import FakeEngine
from sse_frames import sse_chunks

MODEL = "smollm2"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
SCRIPT = " The capital of France is Paris. It is known for the Eiffel Tower 🗼."


@pytest.fixture
def smol_engine(smollm2_tokenizer):
    return FakeEngine(tokenizer=smollm2_tokenizer, model_name=MODEL, max_model_len=2048,
                      script=SCRIPT)


@pytest.fixture
async def smol_api(fake_served, smol_engine):
    return await fake_served(smol_engine)


def test_the_tokenizer_is_smollm2s(smollm2_tokenizer):
    assert smollm2_tokenizer.vocab_size == 49152
    assert smollm2_tokenizer.convert_ids_to_tokens(smollm2_tokenizer.eos_token_ids) == [
        "<|im_end|>"]
    assert "<|im_start|>" in smollm2_tokenizer.chat_template


async def test_chat_prompt_is_smollm2s_chat_template(smol_api, smol_engine,
                                                    smollm2_tokenizer):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    body = (await smol_api.post(CHAT, {"model": MODEL, "messages": messages,
                                       "max_tokens": 100})).json()
    expected = smollm2_tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert smol_engine.requests[0].prompt_token_ids == expected
    assert body["usage"]["prompt_tokens"] == len(expected)
    assert body["choices"][0]["message"]["content"] == SCRIPT
    assert body["choices"][0]["finish_reason"] == "stop"
    script_ids = smollm2_tokenizer.encode(SCRIPT, add_special_tokens=False)
    assert body["usage"]["completion_tokens"] == len(script_ids) + 1


async def test_stream_text_and_logprob_tokens_match_the_message(smol_api, smollm2_tokenizer):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 100, "logprobs": True, "top_logprobs": 2}
    plain = (await smol_api.post(CHAT, body)).json()["choices"][0]
    chunks = sse_chunks(await smol_api.post(CHAT, {**body, "stream": True}))
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert streamed == plain["message"]["content"] == SCRIPT
    assert "\ufffd" not in streamed
    tokens = [e["token"] for e in plain["logprobs"]["content"]]
    assert "".join(tokens).startswith(" The capital of France is Paris.")
    streamed_tokens = [e["token"] for c in chunks if c["choices"][0]["logprobs"]
                       for e in c["choices"][0]["logprobs"]["content"]]
    assert streamed_tokens == tokens


async def test_tokenize_detokenize_and_completions_echo(smol_api, smollm2_tokenizer):
    text = "The capital of France is"
    ids = smollm2_tokenizer.encode(text)
    reply = (await smol_api.post("/tokenize", {"prompt": text,
                                               "return_token_strs": True})).json()
    assert reply["tokens"] == ids and reply["count"] == len(ids)
    assert "".join(reply["token_strs"]) == text
    assert (await smol_api.post("/detokenize", {"tokens": ids})).json() == {"prompt": text}
    body = (await smol_api.post(COMPLETIONS, {"prompt": text, "max_tokens": 3, "echo": True,
                                              "logprobs": 1})).json()
    choice = body["choices"][0]
    assert choice["text"].startswith(text + " The capital")
    assert len(choice["logprobs"]["tokens"]) == len(ids) + 3
    assert "".join(choice["logprobs"]["tokens"]) == choice["text"]
