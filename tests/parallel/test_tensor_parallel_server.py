"""`toolkit serve` with tensor parallelism, over HTTP: the split model answers what the
whole one does; a killed worker fails what is pending with an OpenAI-shaped 503, turns
/health to 503, ends the server with a non-zero code and leaves no process behind."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from test_tensor_parallel import _config
from tiny_checkpoint import write_tiny_llama

from toolkit.protocol import SamplingParams
from toolkit.runtime import build_runtime

pytestmark = pytest.mark.slow  # starts a server and its worker processes

STARTUP_TIMEOUT_S = 240
PROMPT_IDS = [5, 9, 14, 3, 22, 7]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``."""
    found = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def tp_server(tmp_path):
    """A `toolkit serve` over a tiny Llama split over 2 ranks; its process, URL and dir."""
    model_dir = write_tiny_llama(tmp_path / "tiny")
    port = _free_port()
    command = [sys.executable, "-m", "toolkit", "serve", "device=cpu",
               f"model.path={model_dir}", "model.dtype=float32", "model.max_model_len=256",
               "cache.num_pages=256", "cache.page_size=4", "parallel.tensor_parallel_size=2",
               f"server.port={port}", "server.return_tokens_as_token_ids=true",
               "server.shutdown_timeout=2"]
    process = subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(process.stdout), daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        assert process.poll() is None, "toolkit serve exited early:\n" + "".join(log)
        assert time.monotonic() < deadline, "not healthy in time:\n" + "".join(log)
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.3)
    yield process, url, model_dir, log
    if process.poll() is None:
        process.kill()
        process.wait()


def _completion_ids(url: str) -> list[int]:
    body = {"model": "smollm2", "prompt": PROMPT_IDS, "max_tokens": 12, "temperature": 0,
            "ignore_eos": True, "logprobs": 1}
    reply = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    tokens = reply.json()["choices"][0]["logprobs"]["tokens"]
    return [int(token.removeprefix("token_id:")) for token in tokens]


def test_the_split_server_answers_what_the_whole_model_does(tp_server):
    process, url, model_dir, log = tp_server
    assert any("TP 2 (mp, gloo)" in line for line in log), "".join(log)
    served = _completion_ids(url)
    runtime = build_runtime(_config(model_dir, 1))
    try:
        runtime.core.add_request("whole", PROMPT_IDS, SamplingParams(
            temperature=0.0, max_tokens=12, ignore_eos=True))
        whole = []
        while runtime.core.has_unfinished:
            for output in runtime.core.step():
                whole += output.new_token_ids
    finally:
        runtime.close()
    assert served == whole


def test_a_killed_worker_takes_the_server_down_cleanly(tp_server):
    process, url, _, log = tp_server
    workers = _children(process.pid)
    ranks = [pid for pid in workers
             if "spawn_main" in pathlib.Path(f"/proc/{pid}/cmdline").read_text()]
    assert ranks, f"no worker process among {workers}"
    body = {"model": "smollm2", "prompt": PROMPT_IDS, "max_tokens": 200, "ignore_eos": True}
    replies: list[httpx.Response] = []
    pending = threading.Thread(target=lambda: replies.append(
        httpx.post(f"{url}/v1/completions", json=body, timeout=120)))
    with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True},
                      timeout=120) as stream:
        pending.start()
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))  # generating
        os.kill(ranks[0], signal.SIGKILL)
        rest = "\n".join(lines)
    assert "engine_unavailable" in rest and "worker rank 1" in rest, rest
    pending.join(120)
    assert replies and replies[0].status_code == 503, replies and replies[0].text
    assert replies[0].json()["error"]["code"] == "engine_unavailable"
    try:
        health = httpx.get(f"{url}/health", timeout=5).status_code
    except httpx.TransportError:
        health = None  # already gone: as good as a 503
    assert health in (503, None)
    assert process.wait(60) not in (0, None), "".join(log)
    deadline = time.monotonic() + 10
    while [pid for pid in workers if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {pid: pathlib.Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
            for pid in workers if _alive(pid)}
    assert not left, f"processes left behind: {left}"
