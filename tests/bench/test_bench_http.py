"""`toolkit bench` against a real OpenAI-compatible server (uvicorn on loopback)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import uvicorn

from toolkit.api.app import build_app
from toolkit.bench.main import run_bench
from toolkit.config.schema import ServerConfig

pytestmark = pytest.mark.slow


@pytest.fixture
def base_url(engine):
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


@pytest.mark.parametrize("workload", ["random", "chat"])
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
    assert "ConnectError" in run.results[0].records[0].error
