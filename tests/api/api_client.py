"""Test helpers for the HTTP layer: a JSON/SSE client over TestClient and error asserts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from blacksheep.contents import Content, JSONContent
from blacksheep.testing import TestClient

from toolkit.api.app import build_app
from toolkit.config.schema import ServerConfig

MODEL = "smollm2"


@dataclass
class Reply:
    """A finished HTTP exchange: status, headers and decoded body."""

    status: int
    content_type: str
    text: str
    headers: Any

    def json(self) -> Any:
        return json.loads(self.text)

    def events(self) -> list[str]:
        """The ``data:`` payloads of an SSE body, in order."""
        assert self.content_type.startswith("text/event-stream"), self.content_type
        lines = [line for line in self.text.split("\n") if line]
        assert all(line.startswith("data: ") for line in lines), lines
        return [line[len("data: "):] for line in lines]

    def chunks(self) -> list[dict]:
        """The JSON chunks of an SSE body; asserts ``[DONE]`` comes last and only once."""
        events = self.events()
        assert events[-1] == "[DONE]"
        assert events.count("[DONE]") == 1
        return [json.loads(event) for event in events[:-1]]


class ApiClient:
    """TestClient wrapper: JSON in, ``Reply`` out."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        return await self._reply(await self.client.get(path, headers=headers))

    async def post(self, path: str, body: Any = None, *, raw: bytes | None = None,
                   content_type: bytes = b"application/json",
                   headers: dict[str, str] | None = None) -> Reply:
        content = Content(content_type, raw) if raw is not None else JSONContent(body)
        return await self._reply(await self.client.post(path, content=content, headers=headers))

    async def options(self, path: str, headers: dict[str, str]) -> Reply:
        return await self._reply(await self.client.options(path, headers=headers))

    async def request(self, method: str, path: str) -> Reply:
        return await self._reply(await getattr(self.client, method.lower())(path))

    @staticmethod
    async def _reply(response) -> Reply:
        content_type = (response.content_type() or b"").decode()
        return Reply(response.status, content_type, await response.text(), response.headers)


def assert_error(reply: Reply, status: int, *, type_: str | None = None,
                 param: str | None = None, code: str | None = None) -> dict:
    """Assert an OpenAI-shaped error body with the given status (and fields, when given)."""
    assert reply.status == status, reply.text
    assert reply.content_type.startswith("application/json")
    body = reply.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in error["message"]
    if type_ is not None:
        assert error["type"] == type_
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


async def open_client(engine: Any, config: ServerConfig | None = None) -> tuple[Any, ApiClient]:
    """Build and start the app for ``engine``; returns (app, client)."""
    app = build_app(engine, config or ServerConfig())
    await app.start()
    return app, ApiClient(TestClient(app))
