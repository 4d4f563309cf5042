"""Security checks: keys compared in constant time and never logged, request logs truncated,
per-request chat templates sandboxed."""

from __future__ import annotations

import hmac
import logging

import pytest
from api_client import MODEL, assert_error, open_client

from toolkit.config.schema import ServerConfig

CHAT = "/v1/chat/completions"
API_KEY = "sk-api-3f9c1d7e5b"
OTHER_KEY = "sk-other-8a2b4c6d"
ADMIN_KEY = "sk-admin-0e1f2a3b"
WRONG_KEY = "sk-wrong-77d1c0ff"


def chat(**fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi there"}],
            "max_tokens": 2, "temperature": 0, **fields}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def keyed(engine):
    app, client = await open_client(engine, ServerConfig(
        api_keys=[API_KEY, OTHER_KEY], admin_key=ADMIN_KEY, log_level="debug",
        enable_log_requests=True))
    yield client
    await app.stop()


def _logged_text(records: list[logging.LogRecord]) -> str:
    parts = []
    for record in records:
        parts.append(record.getMessage())
        if record.exc_text:
            parts.append(record.exc_text)
    return "\n".join(parts)


async def test_keys_are_never_logged(keyed, caplog):
    with caplog.at_level(logging.DEBUG):
        assert (await keyed.post(CHAT, chat(), headers=bearer(API_KEY))).status == 200
        assert_error(await keyed.post(CHAT, chat(), headers=bearer(WRONG_KEY)), 401)
        assert_error(await keyed.get("/metrics", headers=bearer(API_KEY)), 401)
        assert (await keyed.get("/metrics", headers=bearer(ADMIN_KEY))).status == 200
        assert_error(await keyed.post(CHAT, {"bad": 1}, headers=bearer(OTHER_KEY)), 400)
    text = _logged_text(caplog.records)
    assert "request chatcmpl" in text, "nothing was logged: the test would prove nothing"
    for key in (API_KEY, OTHER_KEY, ADMIN_KEY, WRONG_KEY):
        assert key not in text


async def test_every_key_is_compared_in_constant_time(keyed, monkeypatch):
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr("toolkit.api.http.security.hmac.compare_digest", spy)
    for token in (API_KEY, WRONG_KEY):
        compared.clear()
        await keyed.post("/tokenize", {"model": MODEL, "prompt": "x"}, headers=bearer(token))
        assert sorted(compared) == sorted(k.encode() for k in (API_KEY, OTHER_KEY, ADMIN_KEY))


async def test_admin_operations_need_the_admin_key(keyed):
    for key in (API_KEY, OTHER_KEY, WRONG_KEY):
        assert_error(await keyed.get("/metrics", headers=bearer(key)), 401,
                     code="invalid_api_key")
    assert_error(await keyed.get("/metrics"), 401)


async def test_request_log_is_off_by_default(engine, caplog):
    app, client = await open_client(engine)
    try:
        with caplog.at_level(logging.INFO, logger="toolkit.api.requests"):
            body = {"model": MODEL, "prompt": "Hi", "max_tokens": 1}
            assert (await client.post("/v1/completions", body)).status == 200
    finally:
        await app.stop()
    assert not [r for r in caplog.records if r.name == "toolkit.api.requests"]


async def test_request_log_is_truncated_at_max_log_len(engine, caplog):
    app, client = await open_client(engine, ServerConfig(max_log_len=5, enable_log_requests=True))
    long_prompt = " ".join(f"word{i}" for i in range(300))
    try:
        with caplog.at_level(logging.INFO, logger="toolkit.api.requests"):
            body = {"model": MODEL, "prompt": long_prompt, "max_tokens": 1}
            assert (await client.post("/v1/completions", body)).status == 200
    finally:
        await app.stop()
    [record] = [r for r in caplog.records if r.name == "toolkit.api.requests"]
    shown = record.args[1]
    assert len(shown) == 1 and len(shown[0]) == 5
    assert "word299" not in record.getMessage()


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ self.__init__.__globals__ }}",
])
async def test_request_template_cannot_reach_python_internals(api, template):
    reply = await api.post(CHAT, chat(chat_template=template))
    error = assert_error(reply, 400, param="messages")
    assert "unsafe" in error["message"] or "undefined" in error["message"], error
    assert "<class" not in reply.text and "<module" not in reply.text
    assert "uid=" not in reply.text
