"""`toolkit serve parallel.data_parallel_size=2` over HTTP: two replica actors on the
server's own local Ray instance answer what one engine does, /metrics counts requests per
replica, a killed replica's stream ends with an OpenAI-shaped 503 while the other's
finishes and /health stays 200, the replica comes back, and SIGTERM leaves nothing behind."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import threading
import time

import httpx
import pytest
from served_tiny import PROMPT_IDS, alive, completion_ids, serving, whole_model_tokens
from test_data_parallel import _config
from tiny_checkpoint import write_tiny_llama

pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # starts a server, its Ray instance and two replicas

COMEBACK_TIMEOUT_S = 120


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``."""
    parents = {}
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        below = [child for child, parent in parents.items() if parent in frontier]
        found += below
        frontier = below
    return found


def _cmdline(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def _replica_counts(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^toolkit:replica_requests_total\{[^}]*replica="(\d+)"[^}]*\} (\S+)$', text, re.M)}


@pytest.fixture(scope="module")
def dp_server(tmp_path_factory):
    model_dir = write_tiny_llama(tmp_path_factory.mktemp("tiny"))
    with serving(model_dir, "device.num_threads=2", "parallel.data_parallel_size=2") as (
            process, url, log):
        yield process, url, model_dir, log


def test_replicas_answer_what_one_engine_does(dp_server):
    process, url, model_dir, log = dp_server
    assert any("DP 2 (ray)" in line for line in log), "".join(log)
    prompts = [[5 + i, *PROMPT_IDS[1:]] for i in range(4)]  # no shared first page
    served = [completion_ids(url, prompt) for prompt in prompts]
    counts = _replica_counts(url)
    print(f"requests per replica (/metrics): {counts}")
    assert counts == {"0": 2.0, "1": 2.0}
    assert served == whole_model_tokens(_config(model_dir), prompts)


def _stream(url: str, prompt: list[int], lines: list[str], started: threading.Event) -> None:
    body = {"model": "smollm2", "prompt": prompt, "max_tokens": 240, "ignore_eos": True,
            "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=120) as stream:
        for line in stream.iter_lines():
            lines.append(line)
            if line.startswith("data: "):
                started.set()


def test_a_killed_replica_fails_its_stream_only_then_comes_back(dp_server):
    process, url, _, log = dp_server
    replicas = [pid for pid in _descendants(process.pid) if "ReplicaActor" in _cmdline(pid)]
    assert len(replicas) == 2, [_cmdline(pid) for pid in _descendants(process.pid)]
    outputs: list[list[str]] = [[], []]
    started = [threading.Event(), threading.Event()]
    streams = [threading.Thread(target=_stream, args=(url, [5 + i, 9, 14], outputs[i],
                                                      started[i])) for i in range(2)]
    for stream in streams:
        stream.start()
    assert all(event.wait(60) for event in started)
    os.kill(replicas[0], signal.SIGKILL)
    for stream in streams:
        stream.join(120)
    texts = ["\n".join(lines) for lines in outputs]
    failed = [text for text in texts if "engine_unavailable" in text]
    assert len(failed) == 1, texts  # the two streams were on different replicas
    assert "was lost" in failed[0]
    finished = next(text for text in texts if "engine_unavailable" not in text)
    assert "[DONE]" in finished and '"finish_reason":"length"' in finished.replace(" ", "")
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200  # one replica serves
    assert completion_ids(url)  # and answers meanwhile
    deadline = time.monotonic() + COMEBACK_TIMEOUT_S
    while "toolkit:replica_up" not in (text := httpx.get(f"{url}/metrics").text) or any(
            line.endswith(" 0.0") for line in text.splitlines()
            if line.startswith("toolkit:replica_up")):
        assert time.monotonic() < deadline, "the killed replica did not come back"
        time.sleep(0.5)
    before = _replica_counts(url)
    for i in range(4):
        assert completion_ids(url, [30 + i, 8, 9, 10, 11])
    after = _replica_counts(url)
    assert all(after[r] > before[r] for r in ("0", "1")), (before, after)


def test_sigterm_stops_the_server_and_its_ray_processes(dp_server):
    process, _, _, log = dp_server
    below = _descendants(process.pid)
    assert below
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0, "".join(log)
    deadline = time.monotonic() + 20
    while [pid for pid in below if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.3)
    left = {pid: _cmdline(pid) for pid in below if alive(pid)}
    assert not left, f"processes left behind: {left}"
