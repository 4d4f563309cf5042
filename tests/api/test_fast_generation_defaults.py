"""Request defaults from the model's generation_config.json (server.generation_config, as
vLLM's --generation-config): a request's own values win; none keeps the built-in ones;
`toolkit config show` says what the server uses and where each value comes from
(FakeEngine, a tiny generation_config.json in tmp_path; no model)."""

from __future__ import annotations

import json

import pytest
from api_client import assert_error
from fake_engine import FakeEngine
from typer.testing import CliRunner

from toolkit.api.openai.sampling import generation_defaults

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
GENERATION_CONFIG = {"bos_token_id": 1, "eos_token_id": 2, "do_sample": True,
                     "temperature": 0.6, "top_p": 0.9, "top_k": 20, "min_p": 0.05,
                     "repetition_penalty": 1.1, "max_new_tokens": 7}


@pytest.fixture
def model_dir(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG))
    return tmp_path


def test_the_sampling_keys_of_generation_config_become_defaults(model_dir):
    assert generation_defaults(model_dir) == {
        "temperature": 0.6, "top_p": 0.9, "top_k": 20, "min_p": 0.05,
        "repetition_penalty": 1.1, "max_tokens": 7}
    assert generation_defaults("none") == {} and generation_defaults("auto") == {}
    (model_dir / "bare").mkdir()
    assert generation_defaults(model_dir / "bare") == {}  # a directory without the file


def test_a_bad_generation_config_is_one_error_naming_the_file(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"top_p": 0}))
    with pytest.raises(ValueError, match=r"generation_config.json: top_p=0.* out of range"):
        generation_defaults(tmp_path)
    with pytest.raises(ValueError, match="server.generation_config=.*not a directory"):
        generation_defaults(tmp_path / "missing")


async def test_unset_parameters_take_the_models_defaults(fake_served, model_dir):
    engine = FakeEngine()
    api = await fake_served(engine, generation_config=str(model_dir))
    chat = {"messages": [{"role": "user", "content": "Hi"}], "ignore_eos": True}
    assert (await api.post(CHAT, chat)).status == 200
    params = engine.requests[-1].params
    assert (params.temperature, params.top_p, params.top_k, params.min_p,
            params.repetition_penalty, params.max_tokens) == (0.6, 0.9, 20, 0.05, 1.1, 7)
    own = {**chat, "temperature": 0, "top_p": 1.0, "top_k": -1, "max_tokens": 3}
    assert (await api.post(CHAT, own)).status == 200
    params = engine.requests[-1].params
    assert (params.temperature, params.top_p, params.top_k, params.max_tokens) == (0, 1, -1, 3)
    assert params.min_p == 0.05  # still the model's: the request did not set it


async def test_max_new_tokens_stays_within_the_context(fake_served, tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"max_new_tokens": 10_000}))
    engine = FakeEngine(max_model_len=64)
    api = await fake_served(engine, generation_config=str(tmp_path))
    reply = await api.post(CHAT, {"messages": [{"role": "user", "content": "Hi"}]})
    assert reply.status == 200
    request = engine.requests[-1]
    assert request.params.max_tokens == 64 - len(request.prompt_token_ids)


async def test_without_a_generation_config_the_builtin_defaults_apply(fake_api, fake_engine):
    assert (await fake_api.post(COMPLETIONS, {"prompt": "Hi"})).status == 200
    params = fake_engine.requests[-1].params
    assert (params.temperature, params.top_p, params.top_k, params.max_tokens) == (1, 1, -1, 16)


async def test_a_default_the_request_overrides_out_of_range_still_names_its_field(
        fake_served, model_dir):
    api = await fake_served(FakeEngine(), generation_config=str(model_dir))
    reply = await api.post(CHAT, {"messages": [{"role": "user", "content": "Hi"}],
                                  "top_p": 1.5})
    assert_error(reply, 400, param="top_p")


def test_config_show_says_what_the_server_uses_and_where_from(model_dir):
    from toolkit.cli.main import app

    runner = CliRunner()
    shown = runner.invoke(app, ["config", "show", f"server.generation_config={model_dir}"])
    assert shown.exit_code == 0, shown.output
    origin = f"({model_dir}/generation_config.json)"
    assert f"#   temperature: 0.6  {origin}" in shown.stdout
    assert f"#   top_k: 20  {origin}" in shown.stdout
    assert "sampling.* above is `toolkit generate` only" in shown.stdout
    builtin = runner.invoke(app, ["config", "show", "server.generation_config=none"])
    assert "#   temperature: 1.0  (built-in, as vLLM)" in builtin.stdout
    assert "#   max_tokens: the rest of the context" in builtin.stdout
