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
