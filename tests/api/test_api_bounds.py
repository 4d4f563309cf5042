"""Out-of-range numbers (huge ints, NaN, infinities) are 400s naming the field, never 5xx,
and they leave the engine serving (issue 16: a 2**64 seed killed the engine loop)."""

from __future__ import annotations

import json

import pytest
from api_client import MODEL, assert_error, open_client

from toolkit.compose import compose_config
from toolkit.config.errors import ConfigError
from toolkit.config.schema import ServerConfig

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
KOBOLD = "/api/v1/generate"
USER = [{"role": "user", "content": "Say hi."}]

EDGES = (2**31, 2**53, 2**63, 2**64, -1, "NaN", "Infinity", "-Infinity", 1e308)
"""Values sent to every numeric field; strings are JSON's non-standard literals."""


def raw(body: dict, field: str, value: object) -> bytes:
    """``body`` with ``field`` set to ``value`` as JSON; a string value is written as is
    (NaN, Infinity) and a path ``a.b`` sets a key of the dict ``a``."""
    literal = value if isinstance(value, str) else json.dumps(value)
    name, _, key = field.partition(".")
    text = json.dumps({**body, name: "@"})
    if key:
        return text.replace('"@"', f'{{"{key}": {literal}}}').encode()
    if field.endswith("_ids") or field in ("prompt", "input", "tokens"):
        return text.replace('"@"', f"[{literal}]").encode()
    return text.replace('"@"', literal).encode()


def chat(**fields) -> dict:
    return {"model": MODEL, "messages": USER, "max_tokens": 2, "temperature": 0.7, **fields}


async def assert_serving(api) -> None:
    """The engine still runs: /health is 200 and a plain request succeeds."""
    assert (await api.get("/health")).status == 200
    reply = await api.post(CHAT, chat(temperature=0))
    assert reply.status == 200, reply.text


async def assert_bounded(api, path: str, body: bytes, field: str, valid: bool) -> None:
    """200 for a valid value, else a 400 whose param names ``field``; then still serving."""
    reply = await api.post(path, raw=body)
    assert reply.status < 500, reply.text
    if valid:
        assert reply.status == 200, reply.text
    else:
        error = assert_error(reply, 400, type_="invalid_request_error")
        assert (error["param"] or "").startswith(field.partition(".")[0]), error
    assert (await api.get("/health")).status == 200


async def test_seed_2_to_the_64_is_400_and_the_server_keeps_serving(api):
    error = assert_error(await api.post(CHAT, chat(seed=2**64)), 400, param="seed",
                         code="invalid_value")
    assert "seed" in error["message"]
    await assert_serving(api)


@pytest.mark.parametrize("seed", [2**63, -(2**63) - 1, 2**64 - 1, 10**30])
async def test_seed_outside_signed_64_bits_is_400(api, seed):
    assert_error(await api.post(CHAT, chat(seed=seed)), 400, param="seed")
    assert_error(await api.post(COMPLETIONS, {"prompt": "Hi", "max_tokens": 2, "seed": seed}),
                 400, param="seed")
    await assert_serving(api)


@pytest.mark.parametrize("seed", [2**63 - 1, -(2**63), -1, 0])
async def test_seed_at_the_signed_64_bit_limits_works_for_every_choice(api, seed):
    """Choice i samples with seed + i: the last seed's neighbours still seed the engine."""
    reply = await api.post(CHAT, chat(seed=seed, n=3))
    assert reply.status == 200, reply.text
    assert len(reply.json()["choices"]) == 3
    await assert_serving(api)


@pytest.mark.parametrize("field", ["n", "best_of"])
async def test_n_and_best_of_over_max_n_are_400(api, field):
    error = assert_error(await api.post(CHAT, chat(**{field: 17})), 400, param=field)
    assert "max_n (16)" in error["message"]
    reply = await api.post(COMPLETIONS, {"prompt": "Hi", "max_tokens": 1, field: 1000})
    assert_error(reply, 400, param=field)
    await assert_serving(api)


async def test_max_n_is_a_server_option(engine):
    app, api = await open_client(engine, ServerConfig(max_n=2, kobold_api=True))
    try:
        assert (await api.post(CHAT, chat(n=2))).status == 200
        error = assert_error(await api.post(CHAT, chat(n=1, best_of=3)), 400, param="best_of")
        assert "max_n (2)" in error["message"]
        beams = chat(n=1, best_of=3, use_beam_search=True, temperature=0)
        assert_error(await api.post(CHAT, beams), 400, param="best_of")
        kobold = {"prompt": "Hi", "max_context_length": 64, "max_length": 2, "n": 3}
        assert_error(await api.post(KOBOLD, kobold), 400, param="n")
    finally:
        await app.stop()


async def test_max_n_below_1_fails_at_start(engine):
    from toolkit.api.app import build_app

    with pytest.raises(ValueError, match="server.max_n=0 must be >= 1"):
        build_app(engine, ServerConfig(max_n=0))


def test_max_n_composes_as_a_server_key():
    assert compose_config([]).server.max_n == 16
    assert compose_config(["server.max_n=64"]).server.max_n == 64
    with pytest.raises(ConfigError, match="server.max_n=many"):
        compose_config(["server.max_n=many"])
    with pytest.raises(ConfigError, match="unknown key 'server.max_nn'"):
        compose_config(["server.max_nn=4"])


CHAT_FIELDS = (
    "max_tokens", "max_completion_tokens", "min_tokens", "top_k", "top_logprobs", "n",
    "best_of", "truncate_prompt_tokens", "seed", "priority", "temperature", "top_p",
    "min_p", "top_a", "tfs", "typical_p", "eta_cutoff", "epsilon_cutoff", "smoothing_factor",
    "smoothing_curve", "presence_penalty", "frequency_penalty", "repetition_penalty",
    "length_penalty", "logit_bias.5", "stop_token_ids", "allowed_token_ids",
)
CHAT_VALID = {
    "top_k": {2**31, 2**53, -1}, "seed": {2**31, 2**53, -1},
    "truncate_prompt_tokens": {2**31, 2**53, 2**63, 2**64},
    "presence_penalty": {-1}, "frequency_penalty": {-1}, "logit_bias.5": {-1},
}
"""(field -> edge values that are valid); every other edge value is a 400."""


@pytest.mark.parametrize("value", EDGES, ids=str)
@pytest.mark.parametrize("field", CHAT_FIELDS)
async def test_chat_numeric_edges_are_400_or_200(api, field, value):
    body = chat(top_p=0.9) if field == "top_k" else chat()
    body.pop(field, None)
    valid = value in CHAT_VALID.get(field, ())
    await assert_bounded(api, CHAT, raw(body, field, value), field, valid)


async def test_logit_bias_key_edges_are_400(api):
    for value in EDGES:
        reply = await api.post(CHAT, chat(logit_bias={str(value): 1}))
        assert_error(reply, 400, param="logit_bias")
    await assert_serving(api)


@pytest.mark.parametrize("temperature", [1e-300, 1e-45, 1e-8])
async def test_tiny_temperature_samples_greedily(api, temperature):
    """A positive temperature below 1e-5 would overflow the logits; it is read as 0."""
    reply = await api.post(CHAT, chat(temperature=temperature, max_tokens=4))
    assert reply.status == 200, reply.text
    greedy = await api.post(CHAT, chat(temperature=0, max_tokens=4))
    assert reply.json()["choices"][0]["message"] == greedy.json()["choices"][0]["message"]


@pytest.mark.parametrize("factor, curve, status", [
    (100, 100, 200), (101, 1, 400), (1, 101, 400), (1e308, 4, 400), (1, 1e308, 400),
])
async def test_smoothing_is_bounded_to_what_float32_holds(api, factor, curve, status):
    reply = await api.post(CHAT, chat(smoothing_factor=factor, smoothing_curve=curve))
    if status == 200:
        assert reply.status == 200, reply.text
    else:
        error = assert_error(reply, 400)
        assert error["param"] in ("smoothing_factor", "smoothing_curve")
    await assert_serving(api)


@pytest.mark.parametrize("value", [*EDGES, 10.5, -10.5], ids=str)
async def test_beam_length_penalty_is_in_minus_10_to_10(api, value):
    """num_tokens ** length_penalty must stay finite and non-zero."""
    body = {"prompt": "Hi", "max_tokens": 2, "use_beam_search": True, "n": 2}
    await assert_bounded(api, COMPLETIONS, raw(body, "length_penalty", value),
                         "length_penalty", valid=value == -1)


COMPLETION_FIELDS = ("logprobs", "max_tokens", "n", "best_of", "seed", "prompt")
COMPLETION_VALID = {"seed": {2**31, 2**53, -1}}


@pytest.mark.parametrize("value", EDGES, ids=str)
@pytest.mark.parametrize("field", COMPLETION_FIELDS)
async def test_completion_numeric_edges_are_400_or_200(api, field, value):
    body = {"prompt": "Hi", "max_tokens": 2, "echo": field == "logprobs"}
    body.pop(field, None)
    valid = value in COMPLETION_VALID.get(field, ())
    await assert_bounded(api, COMPLETIONS, raw(body, field, value), field, valid)


@pytest.mark.parametrize("value", EDGES, ids=str)
@pytest.mark.parametrize("path, body, field, valid", [
    ("/v1/embeddings", {"input": "hi"}, "truncate_prompt_tokens", {2**31, 2**53, 2**63, 2**64}),
    ("/v1/embeddings", {}, "input", set()),
    ("/v1/embeddings", {"input": "hi"}, "dimensions", set()),
    ("/detokenize", {}, "tokens", set()),
])
async def test_embedding_and_tokenizer_edges_are_400_or_200(api, path, body, field, valid,
                                                            value):
    await assert_bounded(api, path, raw(body, field, value), field, value in valid)


@pytest.fixture
async def kobold(engine):
    app, api = await open_client(engine, ServerConfig(kobold_api=True))
    yield api
    await app.stop()


KOBOLD_FIELDS = (
    "max_context_length", "max_length", "n", "rep_pen", "temperature", "top_k", "top_a",
    "top_p", "min_p", "tfs", "eps_cutoff", "eta_cutoff", "typical", "smoothing_factor",
    "smoothing_curve", "sampler_seed",
)
KOBOLD_VALID = {
    "max_context_length": {2**31, 2**53, 2**63, 2**64},
    "temperature": {-1},  # below 1e-5: greedy (Kobold)
    "tfs": {-1},  # read as the smallest positive value (Kobold)
    "top_k": {2**31, 2**53, -1}, "sampler_seed": {2**31, 2**53, -1},
}


@pytest.mark.parametrize("value", EDGES, ids=str)
@pytest.mark.parametrize("field", KOBOLD_FIELDS)
async def test_kobold_numeric_edges_are_400_or_200(kobold, field, value):
    body = {"prompt": "Hi", "max_context_length": 64, "max_length": 2, "temperature": 0.7}
    body.pop(field, None)
    valid = value in KOBOLD_VALID.get(field, ())
    await assert_bounded(kobold, KOBOLD, raw(body, field, value), field, valid)
