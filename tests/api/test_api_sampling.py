"""Request fields -> SamplingParams and output budgets (pure functions, no engine)."""

from __future__ import annotations

import pytest

from toolkit.api.http.errors import APIError, loc_to_param
from toolkit.api.openai.protocol import ChatCompletionRequest, CompletionRequest
from toolkit.api.openai.sampling import (
    build_sampling_params,
    choice_params,
    resolve_max_tokens,
)

MESSAGES = [{"role": "user", "content": "hi"}]


def chat(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": MESSAGES, **fields})


def test_omitted_max_tokens_uses_the_rest_of_the_context():
    assert resolve_max_tokens(chat(), 100, 2048, "messages") == 1948
    assert resolve_max_tokens(chat(), 2047, 2048, "messages") == 1
    prompt_only = CompletionRequest(prompt="x", max_tokens=None)
    assert resolve_max_tokens(prompt_only, 10, 64, "prompt") == 54


def test_requested_budget_that_fits_is_kept():
    assert resolve_max_tokens(chat(max_tokens=48), 2000, 2048, "messages") == 48
    assert resolve_max_tokens(chat(max_completion_tokens=7, max_tokens=99), 10, 2048, "m") == 7


def test_prompt_filling_the_context_is_rejected():
    with pytest.raises(APIError) as info:
        resolve_max_tokens(chat(), 2048, 2048, "messages")
    assert (info.value.status, info.value.param) == (400, "messages")
    assert info.value.code == "context_length_exceeded"


def test_budget_past_the_context_names_the_field_used():
    with pytest.raises(APIError) as info:
        resolve_max_tokens(chat(max_completion_tokens=49), 2000, 2048, "messages")
    assert info.value.param == "max_completion_tokens"
    assert "49 > 2048 - 2000" in info.value.message


def test_sampling_params_take_request_fields_and_defaults():
    params = build_sampling_params(
        chat(temperature=0, top_k=5, min_p=0.1, stop="END", stop_token_ids=[7], seed=3,
             ignore_eos=True), max_tokens=12)
    assert params.max_tokens == 12 and params.temperature == 0.0
    assert params.top_k == 5 and params.min_p == 0.1 and params.top_p == 1.0
    assert params.stop == ("END",) and params.stop_token_ids == (7,)
    assert params.seed == 3 and params.ignore_eos
    assert build_sampling_params(chat(), 4).temperature == 1.0


def test_each_choice_gets_its_own_seed():
    params = build_sampling_params(chat(seed=10), 4)
    assert [p.seed for p in choice_params(params, 3)] == [10, 11, 12]
    unseeded = build_sampling_params(chat(), 4)
    assert [p.seed for p in choice_params(unseeded, 2)] == [None, None]


@pytest.mark.parametrize("loc, param", [
    (("messages", 0, "content"), "messages[0].content"),
    (("prompt", "list[int]", 3), "prompt[3]"),
    (("messages", 1, "content", "list[ContentPart]", 0, "type"), "messages[1].content[0].type"),
    (("stop", "str"), "stop"),
    ((), ""),
])
def test_validation_locations_become_openai_params(loc, param):
    assert loc_to_param(loc) == param
