"""The official openai client drives the extras through extra_body over real HTTP."""

from __future__ import annotations

import openai
from api_client import MODEL


async def test_openai_client_with_extra_body(base_url):
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    extras = {"top_k": 20, "min_p": 0.05, "top_a": 0.1, "tfs": 0.95, "typical_p": 0.95,
              "smoothing_factor": 0.3, "repetition_penalty": 1.1, "min_tokens": 2,
              "ignore_eos": True, "request_id": "e2e-1"}
    chat = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4,
        temperature=0.7, seed=3, logprobs=True, top_logprobs=2, extra_body=extras)
    assert chat.id == "e2e-1"
    assert chat.usage.completion_tokens == 4
    assert len(chat.choices[0].logprobs.content) == 4
    assert len(chat.choices[0].logprobs.content[0].top_logprobs) == 2
    text = await client.completions.create(
        model=MODEL, prompt="One, two,", max_tokens=3, temperature=0, logprobs=1, echo=True,
        extra_body={"best_of": 2, "allowed_token_ids": [28, 29, 30]})
    choice = text.choices[0]
    assert choice.text.startswith("One, two,")
    assert choice.logprobs.token_logprobs[0] is None
    try:
        await client.completions.create(model=MODEL, prompt="x", max_tokens=2,
                                        extra_body={"tfs": 2})
        raise AssertionError("tfs=2 must be rejected")
    except openai.BadRequestError as exc:
        assert exc.body["param"] == "tfs"
    await client.close()
