"""Fixtures for the HTTP layer: the app over the real engine, request bodies."""

from __future__ import annotations

from typing import Any

import pytest
from api_client import MODEL, open_client


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
