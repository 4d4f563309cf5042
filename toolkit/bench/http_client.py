"""Sends benchmark requests to any OpenAI-compatible server over streaming HTTP.

Text prompts go to /completions, chats to /chat/completions, both with `stream: true` and
`stream_options.include_usage`; the event stream is read with httpx-sse. Token counts
come from the usage chunk when the server sends one, else one token per content chunk.
A request dropped unanswered on a kept-alive connection is sent again (HttpClient.send).
"""

from __future__ import annotations

import json
import time

import httpx
from httpx_sse import aconnect_sse

from toolkit.bench.records import RequestRecord
from toolkit.bench.workload import BenchRequest

MAX_STALE_RETRIES = 2
"""Resends of a request dropped unanswered (see HttpClient.send)."""


class HttpClient:
    """One pooled httpx client for a whole run; `create` asks /models for the model id
    when none is given."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, model: str,
                 temperature: float, ignore_eos: bool) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.temperature = temperature
        self.ignore_eos = ignore_eos

    @classmethod
    async def create(cls, base_url: str, model: str | None, timeout_s: float,
                     temperature: float, ignore_eos: bool) -> HttpClient:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        client = httpx.AsyncClient(timeout=timeout_s, limits=limits)
        if model is None:
            model = await _first_model(client, base_url.rstrip("/"))
        return cls(client, base_url, model, temperature, ignore_eos)

    async def send(self, request: BenchRequest, record: RequestRecord) -> None:
        """Stream one request to the end, filling `record`; raise on an HTTP or stream error.

        A request that a server drops before answering on a kept-alive connection is sent
        again, at most MAX_STALE_RETRIES times: servers close idle or much-used connections
        (llama.cpp's llama-server after 5 requests on one) and httpx, unlike a browser,
        does not resend on a fresh one itself. Once a chunk has arrived it is an error."""
        for attempt in range(MAX_STALE_RETRIES + 1):
            try:
                return await self._stream(request, record)
            except httpx.RemoteProtocolError:
                if record.chunk_times or attempt == MAX_STALE_RETRIES:
                    raise

    async def _stream(self, request: BenchRequest, record: RequestRecord) -> None:
        path, body = self._body(request)
        usage = None
        async with aconnect_sse(self.client, "POST", self.base_url + path,
                                json=body) as events:
            response = events.response
            if response.status_code != 200:
                detail = (await response.aread()).decode(errors="replace")[:200]
                raise RuntimeError(f"HTTP {response.status_code}: {detail}")
            async for event in events.aiter_sse():
                chunk = _parse_event(event.data)
                if chunk is None:
                    continue
                usage = chunk.get("usage") or usage
                if _chunk_text(chunk):
                    record.chunk_times.append(time.perf_counter())
        if usage:
            record.num_prompt_tokens = usage.get("prompt_tokens", 0)
            record.num_output_tokens = usage.get("completion_tokens", 0)
        else:
            record.num_output_tokens = len(record.chunk_times)

    async def close(self) -> None:
        await self.client.aclose()

    def _body(self, request: BenchRequest) -> tuple[str, dict]:
        body = {"model": request.lora_name or self.model, "max_tokens": request.max_tokens,
                "stream": True,
                "stream_options": {"include_usage": True}, "temperature": self.temperature}
        if self.ignore_eos:
            body["ignore_eos"] = True
        if request.seed is not None:
            body["seed"] = request.seed
        if request.is_chat:
            return "/chat/completions", {**body, "messages": list(request.messages)}
        return "/completions", {**body, "prompt": request.prompt}


async def _first_model(client: httpx.AsyncClient, base_url: str) -> str:
    response = await client.get(f"{base_url}/models")
    response.raise_for_status()
    return response.json()["data"][0]["id"]


def _parse_event(data: str) -> dict | None:
    """The JSON chunk of an event's data; None for an empty event and for [DONE]."""
    if not data.strip() or data.strip() == "[DONE]":
        return None
    chunk = json.loads(data)
    if "error" in chunk:
        raise RuntimeError(f"stream error: {chunk['error']}")
    return chunk


def _chunk_text(chunk: dict) -> str:
    """The generated text of a chunk: `text` (completions) or `delta.content` (chat)."""
    text = ""
    for choice in chunk.get("choices") or []:
        text += choice.get("text") or (choice.get("delta") or {}).get("content") or ""
    return text
