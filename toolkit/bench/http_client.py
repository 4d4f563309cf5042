"""Sends benchmark requests to any OpenAI-compatible server over streaming HTTP.

Text prompts go to /completions, chats to /chat/completions, both with `stream: true` and
`stream_options.include_usage`; the event stream is read line by line over aiohttp (as
vLLM's benchmark client does: its C-accelerated parser costs the client about 60 us a
chunk where httpx with httpx-sse cost ~150 us, CPU that a benchmark on the server's own
machine takes from the server). Token counts come from the usage chunk when the server
sends one, else one token per content chunk. A request dropped unanswered on a
kept-alive connection is sent again (HttpClient.send).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import aiohttp

from toolkit.bench.records import RequestRecord
from toolkit.bench.workload import BenchRequest

MAX_STALE_RETRIES = 2
"""Resends of a request dropped unanswered (see HttpClient.send)."""
STALE_CONNECTION_ERRORS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
"""What aiohttp raises for a request whose kept-alive connection the server had closed."""


class HttpClient:
    """One pooled aiohttp session for a whole run; `create` asks /models for the model id
    when none is given."""

    def __init__(self, session: aiohttp.ClientSession | None, base_url: str, model: str,
                 temperature: float, ignore_eos: bool) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.temperature = temperature
        self.ignore_eos = ignore_eos

    @classmethod
    async def create(cls, base_url: str, model: str | None, timeout_s: float,
                     temperature: float, ignore_eos: bool) -> HttpClient:
        session = open_session(timeout_s)
        try:
            if model is None:
                model = await _first_model(session, base_url.rstrip("/"))
        except BaseException:
            await session.close()
            raise
        return cls(session, base_url, model, temperature, ignore_eos)

    async def send(self, request: BenchRequest, record: RequestRecord) -> None:
        """Stream one request to the end, filling `record`; raise on an HTTP or stream error.

        A request that a server drops before answering on a kept-alive connection is sent
        again, at most MAX_STALE_RETRIES times: servers close idle or much-used connections
        (llama.cpp's llama-server after 5 requests on one), and a POST is not resent by
        aiohttp itself. Once a chunk has arrived it is an error."""
        for attempt in range(MAX_STALE_RETRIES + 1):
            try:
                return await self._stream(request, record)
            except aiohttp.ClientConnectorError:  # no connection at all: nothing to resend
                raise
            except STALE_CONNECTION_ERRORS:
                if record.chunk_times or attempt == MAX_STALE_RETRIES:
                    raise

    async def _stream(self, request: BenchRequest, record: RequestRecord) -> None:
        path, body = self._body(request)
        usage = None
        async with self.session.post(self.base_url + path, json=body) as response:
            if response.status != 200:
                detail = (await response.read()).decode(errors="replace")[:200]
                raise RuntimeError(f"HTTP {response.status}: {detail}")
            async for data in sse_data(response.content):
                chunk = _parse_event(data)
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
        if self.session is not None:
            await self.session.close()

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


def open_session(timeout_s: float) -> aiohttp.ClientSession:
    """A session without a connection cap (the load generator sets the concurrency)."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s),
                                 connector=aiohttp.TCPConnector(limit=0))


async def sse_data(lines: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The data of each server-sent event in ``lines`` (an aiohttp StreamReader): its
    ``data:`` lines joined by newlines, yielded at the blank line that ends the event (or
    at the end of the stream); other fields and comments are skipped."""
    data: list[str] = []
    async for raw in lines:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


async def _first_model(session: aiohttp.ClientSession, base_url: str) -> str:
    async with session.get(f"{base_url}/models") as response:
        response.raise_for_status()
        return (await response.json())["data"][0]["id"]


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
