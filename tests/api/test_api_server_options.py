"""ServerConfig keys wired through build_app: keys, CORS, names, template, roles, limits."""

from __future__ import annotations

import pytest
from api_client import MODEL, assert_error, open_client

from toolkit.api.http.server_options import uvicorn_options
from toolkit.config.schema import ServerConfig

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Hi"}]


def chat(**fields) -> dict:
    return {"messages": USER, "max_tokens": 2, "temperature": 0, **fields}


@pytest.fixture
async def served(engine):
    apps = []

    async def make(**fields):
        app, client = await open_client(engine, ServerConfig(**fields))
        apps.append(app)
        return client

    yield make
    for app in apps:
        await app.stop()


async def test_api_keys_guard_v1_with_bearer(served):
    api = await served(api_keys=["k1", "k2"], admin_key="adm")
    error = assert_error(await api.post(CHAT, chat()), 401, type_="authentication_error")
    assert "API key" in error["message"]
    assert_error(await api.post(CHAT, chat(), headers={"Authorization": "Bearer nope"}), 401)
    for key in ("k1", "k2", "adm"):
        reply = await api.post(CHAT, chat(), headers={"Authorization": f"Bearer {key}"})
        assert reply.status == 200, reply.text
    assert (await api.get("/health")).status == 200
    assert_error(await api.get("/metrics", headers={"Authorization": "Bearer k1"}), 401)
    assert (await api.get("/metrics", headers={"Authorization": "Bearer adm"})).status == 200


async def test_cors_is_closed_unless_configured(served):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    closed = await served()
    reply = await closed.options(CHAT, preflight)
    assert reply.headers.get_first(b"access-control-allow-origin") is None
    opened = await served(cors_allow_origins=["https://app.example"])
    reply = await opened.options(CHAT, preflight)
    assert reply.headers.get_first(b"access-control-allow-origin") == b"https://app.example"


async def test_served_model_name_aliases(served):
    api = await served(served_model_name=["smol", "gpt-4o"])
    reply = await api.post(CHAT, chat(model="gpt-4o"))
    assert reply.json()["model"] == "gpt-4o"  # the asked alias is echoed, as vLLM does
    assert [m["id"] for m in (await api.get("/v1/models")).json()["data"]] == ["smol", "gpt-4o"]
    assert_error(await api.post(CHAT, chat(model=MODEL)), 404)


async def test_server_chat_template_inline_and_from_file(served, engine, tmp_path):
    template = "{% for m in messages %}<{{ m['content'] }}>{% endfor %}"
    expected = len(engine.tokenizer.encode("<Hi>", add_special_tokens=False))
    inline = await served(chat_template=template)
    assert (await inline.post(CHAT, chat())).json()["usage"]["prompt_tokens"] == expected
    path = tmp_path / "t.jinja"
    path.write_text(template)
    from_file = await served(chat_template=str(path))
    assert (await from_file.post(CHAT, chat())).json()["usage"]["prompt_tokens"] == expected


def test_bad_chat_template_path_or_middleware_fails_at_build(engine):
    from toolkit.api.app import build_app

    with pytest.raises(ValueError, match="chat_template"):
        build_app(engine, ServerConfig(chat_template="/no/such/file.jinja"))
    with pytest.raises(ValueError, match="middleware"):
        build_app(engine, ServerConfig(middleware=["no_such_module:thing"]))


async def test_response_role_tokens_as_ids_and_max_logprobs(served):
    api = await served(response_role="bot", return_tokens_as_token_ids=True, max_logprobs=2)
    reply = (await api.post(CHAT, chat(logprobs=True, top_logprobs=2))).json()["choices"][0]
    assert reply["message"]["role"] == "bot"
    assert reply["logprobs"]["content"][0]["token"].startswith("token_id:")
    assert_error(await api.post(CHAT, chat(logprobs=True, top_logprobs=3)), 400,
                 param="top_logprobs")


async def test_middleware_by_import_path(served):
    api = await served(middleware=["sample_middleware:tag_response"])
    assert (await api.get("/health")).headers.get_first(b"x-toolkit-test") == b"1"


def test_uvicorn_options_carry_tls_and_root_path():
    options = uvicorn_options(ServerConfig(ssl_keyfile="k.pem", ssl_certfile="c.pem",
                                           ssl_ca_certs="ca.pem", ssl_cert_reqs=2,
                                           root_path="/llm", port=9001))
    assert options["ssl_keyfile"] == "k.pem" and options["ssl_certfile"] == "c.pem"
    assert options["ssl_ca_certs"] == "ca.pem" and options["ssl_cert_reqs"] == 2
    assert options["root_path"] == "/llm" and options["port"] == 9001
