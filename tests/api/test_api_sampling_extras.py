"""Every vLLM / Aphrodite sampling extra is accepted, honoured and range-checked."""

from __future__ import annotations

import pytest
from api_client import MODEL, assert_error

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
PROMPT = "The capital of France is"


def completion(**fields) -> dict:
    return {"model": MODEL, "prompt": PROMPT, "max_tokens": 4, "temperature": 0, **fields}


async def text_of(api, **fields) -> str:
    reply = await api.post(COMPLETIONS, completion(**fields))
    assert reply.status == 200, reply.text
    return reply.json()["choices"][0]["text"]


@pytest.mark.parametrize("fields", [
    {"top_k": 5}, {"min_p": 0.1}, {"top_a": 0.2}, {"tfs": 0.9}, {"typical_p": 0.9},
    {"eta_cutoff": 3.0}, {"epsilon_cutoff": 3.0}, {"smoothing_factor": 0.5},
    {"smoothing_factor": 0.5, "smoothing_curve": 2.0}, {"presence_penalty": 0.5},
    {"frequency_penalty": 0.5}, {"repetition_penalty": 1.3}, {"min_tokens": 2},
    {"skip_special_tokens": False}, {"spaces_between_special_tokens": False},
    {"include_stop_str_in_output": True}, {"truncate_prompt_tokens": 3},
    {"add_special_tokens": False}, {"user": "u"}, {"best_of": 1},
])
async def test_extra_is_accepted_with_sampling(api, fields):
    reply = await api.post(COMPLETIONS, completion(temperature=0.8, seed=1, **fields))
    assert reply.status == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] >= 1


async def test_allowed_token_ids_and_logit_bias_steer_greedy(api, engine):
    [token] = engine.tokenizer.encode(" banana", add_special_tokens=False)[:1]
    reply = await api.post(COMPLETIONS, completion(allowed_token_ids=[token], max_tokens=3))
    assert reply.json()["choices"][0]["text"] == engine.tokenizer.decode([token] * 3)
    biased = await text_of(api, logit_bias={str(token): 100}, max_tokens=2)
    assert biased == engine.tokenizer.decode([token] * 2)


async def test_repetition_penalty_changes_greedy_text(api):
    plain = await text_of(api, max_tokens=24, ignore_eos=True)
    penalized = await text_of(api, max_tokens=24, ignore_eos=True, repetition_penalty=2.0)
    assert plain != penalized


async def test_truncate_prompt_tokens_keeps_the_tail(api, engine):
    ids = engine.tokenizer.encode(PROMPT)
    reply = (await api.post(COMPLETIONS, completion(truncate_prompt_tokens=2))).json()
    assert reply["usage"]["prompt_tokens"] == 2
    tail = (await api.post(COMPLETIONS, completion(prompt=ids[-2:]))).json()
    assert reply["choices"][0]["text"] == tail["choices"][0]["text"]


async def test_add_special_tokens_false_drops_bos(api, engine):
    with_bos = (await api.post(COMPLETIONS, completion())).json()["usage"]["prompt_tokens"]
    without = (await api.post(COMPLETIONS, completion(add_special_tokens=False))).json()
    expected = len(engine.tokenizer.encode(PROMPT, add_special_tokens=False))
    assert without["usage"]["prompt_tokens"] == expected <= with_bos


async def test_request_id_is_the_response_id(api):
    reply = await api.post(COMPLETIONS, completion(request_id="my-req-1"))
    assert reply.json()["id"] == "my-req-1"


async def test_best_of_returns_the_highest_cumulative_logprob(api):
    body = completion(temperature=1.0, seed=7, max_tokens=4, ignore_eos=True, logprobs=0)
    samples = (await api.post(COMPLETIONS, {**body, "n": 4})).json()["choices"]
    totals = {c["text"]: sum(c["logprobs"]["token_logprobs"]) for c in samples}
    best = (await api.post(COMPLETIONS, {**body, "n": 1, "best_of": 4})).json()["choices"]
    assert len(best) == 1
    assert best[0]["text"] == max(totals, key=totals.get)


async def test_best_of_returns_the_n_best_of_its_samples_in_order(api):
    body = completion(temperature=1.0, seed=3, max_tokens=4, ignore_eos=True, logprobs=0)
    samples = (await api.post(COMPLETIONS, {**body, "n": 4})).json()["choices"]
    totals = sorted((sum(c["logprobs"]["token_logprobs"]) for c in samples), reverse=True)
    best = (await api.post(COMPLETIONS, {**body, "n": 2, "best_of": 4})).json()["choices"]
    assert [c["index"] for c in best] == [0, 1]
    got = [sum(c["logprobs"]["token_logprobs"]) for c in best]
    assert got == pytest.approx(totals[:2])


async def test_best_of_without_logprobs_hides_them(api):
    reply = (await api.post(COMPLETIONS, completion(temperature=1.0, best_of=3, n=2))).json()
    assert [c["index"] for c in reply["choices"]] == [0, 1]
    assert all(c["logprobs"] is None for c in reply["choices"])


@pytest.mark.parametrize("fields, param", [
    ({"top_a": 1.5}, "top_a"), ({"tfs": 0}, "tfs"), ({"typical_p": 1.2}, "typical_p"),
    ({"eta_cutoff": -1}, "eta_cutoff"), ({"epsilon_cutoff": 20000}, "epsilon_cutoff"),
    ({"smoothing_factor": -0.1}, "smoothing_factor"), ({"smoothing_curve": 0.5},
                                                       "smoothing_curve"),
    ({"presence_penalty": 3}, "presence_penalty"), ({"frequency_penalty": -2.5},
                                                    "frequency_penalty"),
    ({"repetition_penalty": 0}, "repetition_penalty"), ({"min_tokens": 9}, "min_tokens"),
    ({"min_tokens": -1}, "min_tokens"), ({"logit_bias": {"5": 200}}, "logit_bias"),
    ({"logit_bias": {"x": 1}}, "logit_bias"), ({"logit_bias": {"99999999": 1}}, "logit_bias"),
    ({"allowed_token_ids": []}, "allowed_token_ids"),
    ({"allowed_token_ids": [99999999]}, "allowed_token_ids"),
    ({"stop_token_ids": [99999999]}, "stop_token_ids"),
    ({"truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
    ({"best_of": 1, "n": 2}, "best_of"), ({"best_of": 3, "stream": True}, "best_of"),
    ({"length_penalty": 2.0}, "length_penalty"), ({"early_stopping": True}, "early_stopping"),
    ({"priority": 1}, "priority"), ({"logprobs": -1}, "logprobs"),
    ({"logprobs": 21}, "logprobs"), ({"request_id": ""}, "request_id"),
])
async def test_bad_extra_is_400_naming_it(api, fields, param):
    assert_error(await api.post(COMPLETIONS, completion(**fields)), 400,
                 type_="invalid_request_error", param=param)
