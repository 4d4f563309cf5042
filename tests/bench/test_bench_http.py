"""`toolkit bench` against a real OpenAI-compatible server (uvicorn on loopback): SmolLM2
(slow), the tiny random checkpoint (fast), and a port nobody listens on."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
import uvicorn
from tiny_model import tiny_overrides

from toolkit.api.app import build_app
from toolkit.bench.http_client import HttpClient, open_session, sse_data
from toolkit.bench.main import run_bench
from toolkit.bench.records import RequestRecord
from toolkit.bench.workload import BenchRequest
from toolkit.compose import compose_config
from toolkit.config.schema import ServerConfig
from toolkit.runtime import build_runtime


def serve(engine):
    """Serve ``engine``'s OpenAI API on a free loopback port; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(engine, ServerConfig()),
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
def base_url(engine):
    yield from serve(engine)


@pytest.fixture
def tiny_base_url(tiny_model_dir):
    runtime = build_runtime(compose_config(tiny_overrides(tiny_model_dir)))
    runtime.engine.start()
    try:
        yield from serve(runtime.engine)
    finally:
        runtime.engine.shutdown()


@pytest.mark.parametrize("workload", ["random", "chat"])
@pytest.mark.slow
def test_bench_streams_from_an_openai_url(base_url, tmp_path, workload):
    run = run_bench([f"bench={workload}", f"bench.target={base_url}", "bench.num_requests=3",
                     "bench.prompt_len=8", "bench.output_len=5", "bench.max_concurrency=2",
                     "bench.num_warmup=1", "bench.progress=false",
                     f"bench.output_dir={tmp_path}"])
    metrics = run.results[0].metrics
    assert metrics["num_errors"] == 0 and metrics["num_completed"] == 3
    assert metrics["num_output_tokens"] == 15  # from the usage chunk; ignore_eos
    assert metrics["num_prompt_tokens"] > 3 * 8 if workload == "chat" else 3 * 5
    records = json.loads((tmp_path / "00" / "results.json").read_text())["records"]
    for record in records:
        assert record["chunk_times"] == sorted(record["chunk_times"])
        assert record["start"] < record["chunk_times"][0] <= record["end"]
    assert metrics["ttft_p50_s"] > 0 and metrics["itl_p50_s"] > 0


def test_unreachable_url_counts_errors(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    run = run_bench([f"bench.target=http://127.0.0.1:{port}/v1", "bench.model=m",
                     "bench.num_requests=2", "bench.num_warmup=0", "bench.progress=false",
                     f"bench.output_dir={tmp_path}"])
    assert run.results[0].metrics["num_errors"] == 2
    assert "Cannot connect" in run.results[0].records[0].error


def test_the_sse_stream_of_a_real_server_is_timed_per_chunk(tiny_base_url, tmp_path):
    run = run_bench([f"bench.target={tiny_base_url}", "bench.num_requests=3",
                     "bench.prompt_len=6", "bench.output_len=4", "bench.num_warmup=0",
                     "bench.progress=false", f"bench.output_dir={tmp_path}"])
    metrics = run.results[0].metrics
    assert (metrics["num_completed"], metrics["num_errors"]) == (3, 0)
    assert metrics["num_output_tokens"] == 12  # the usage chunk; ignore_eos
    for record in run.results[0].records:
        # one content event per token with text (the random model may sample a special
        # token, whose text is empty)
        assert 1 <= len(record.chunk_times) <= 4
        assert record.start < record.chunk_times[0] <= record.chunk_times[-1] <= record.end


def test_a_server_error_is_counted_with_its_status(tiny_base_url, tmp_path):
    run = run_bench([f"bench.target={tiny_base_url}", "bench.model=nope",
                     "bench.num_requests=1", "bench.num_warmup=0", "bench.progress=false",
                     f"bench.output_dir={tmp_path}"])
    assert run.results[0].metrics["num_errors"] == 1
    assert run.results[0].records[0].error.startswith("RuntimeError: HTTP 404: ")


def test_a_request_dropped_on_a_kept_alive_connection_is_sent_again():
    """A server that closes every connection unanswered at its second request (as
    llama-server does at its sixth): each request still completes, on a fresh connection."""
    event = json.dumps({"choices": [{"text": "hi"}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
    body = f"data: {event}\n\ndata: [DONE]\n\n".encode()
    connections = []

    async def handle(reader, writer):
        connections.append(writer)
        for _ in range(2):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            if _:  # the second request on this connection: dropped
                break
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = HttpClient(open_session(30), f"http://127.0.0.1:{port}/v1", "m", 0.0, True)
        records = [RequestRecord(time.perf_counter()) for _ in range(3)]
        for record in records:
            await client.send(BenchRequest(prompt="x", max_tokens=1), record)
        await client.close()
        server.close()
        return records

    records = asyncio.run(main())
    assert [record.num_output_tokens for record in records] == [1, 1, 1]
    assert len(connections) >= 3  # the dropped requests went out again on new connections


def test_event_stream_parsing_follows_the_sse_format():
    """data lines joined by newlines, an optional space after the colon, CRLF line ends,
    comments and other fields skipped, an event left open at the end still delivered."""

    class Lines:
        def __init__(self, raw: bytes):
            self.lines = raw.splitlines(keepends=True)

        def __aiter__(self):
            return self

        async def __anext__(self):
            if not self.lines:
                raise StopAsyncIteration
            return self.lines.pop(0)

    raw = (b": keep-alive\r\n\r\nevent: message\r\ndata: {\"a\":\r\ndata:1}\r\n\r\n"
           b"id: 7\ndata: [DONE]\n\ndata: last")

    async def collect():
        return [data async for data in sse_data(Lines(raw))]

    assert asyncio.run(collect()) == ['{"a":\n1}', "[DONE]", "last"]
