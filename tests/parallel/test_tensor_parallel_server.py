"""`toolkit serve` with tensor parallelism, over HTTP: the split model answers what the
whole one does; a killed worker fails what is pending with an OpenAI-shaped 503, turns
/health to 503, ends the server with a non-zero code and leaves no process behind."""

from __future__ import annotations

import os
import pathlib
import signal
import threading
import time

import httpx
import pytest
from served_tiny import PROMPT_IDS, alive, completion_ids, serving, whole_model_tokens
from test_tensor_parallel import _config
from tiny_checkpoint import write_tiny_llama

pytestmark = pytest.mark.slow  # starts a server and its worker processes

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


def _wait_until_running(url: str, count: int, timeout: float = 30) -> None:
    """Poll /metrics until ``count`` requests are in the running batch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics", timeout=5).text
        running = [line for line in text.splitlines()
                   if line.startswith("vllm:num_requests_running")]
        if running and float(running[0].split()[-1]) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} requests running after {timeout} s")


@pytest.fixture
def tp_server(tmp_path):
    """A `toolkit serve` over a tiny Llama split over 2 ranks; its process, URL and dir."""
    model_dir = write_tiny_llama(tmp_path / "tiny")
    with serving(model_dir, "parallel.tensor_parallel_size=2") as (process, url, log):
        yield process, url, model_dir, log


def test_the_split_server_answers_what_the_whole_model_does(tp_server):
    process, url, model_dir, log = tp_server
    assert any("TP 2 (mp, gloo)" in line for line in log), "".join(log)
    served = completion_ids(url)
    assert served == whole_model_tokens(_config(model_dir, 1), [PROMPT_IDS])[0]


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
        _wait_until_running(url, 2)  # the pending request is in the batch too
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
    while [pid for pid in workers if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {pid: pathlib.Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
            for pid in workers if alive(pid)}
    assert not left, f"processes left behind: {left}"
