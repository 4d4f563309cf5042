"""`toolkit serve` over a tiny checkpoint in a subprocess, and the process bookkeeping the
parallel server tests share."""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx

STARTUP_TIMEOUT_S = 240
PROMPT_IDS = [5, 9, 14, 3, 22, 7]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid: int) -> bool:
    """``pid`` runs (a zombie does not count)."""
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextlib.contextmanager
def serving(model_dir: pathlib.Path, *overrides: str) -> Iterator[tuple[subprocess.Popen, str,
                                                                         list[str]]]:
    """(process, base URL, its log lines so far) of a healthy `toolkit serve` over the tiny
    float32 checkpoint ``model_dir`` with ``overrides``; interrupted (then killed) at exit
    if still running."""
    port = free_port()
    command = [sys.executable, "-m", "toolkit", "serve", "device=cpu",
               f"model.path={model_dir}", "model.dtype=float32", "model.max_model_len=256",
               "cache.num_pages=256", "cache.page_size=4", f"server.port={port}",
               "server.return_tokens_as_token_ids=true", "server.shutdown_timeout=2",
               *overrides]
    process = subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(process.stdout), daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert process.poll() is None, "toolkit serve exited early:\n" + "".join(log)
            assert time.monotonic() < deadline, "not healthy in time:\n" + "".join(log)
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        yield process, url, log
    finally:
        if process.poll() is None:
            process.send_signal(2)  # SIGINT: a clean shutdown
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def completion_ids(url: str, prompt: list[int] = PROMPT_IDS) -> list[int]:
    """Greedy token ids of a 12-token completion of ``prompt`` (token ids as text)."""
    body = {"model": "smollm2", "prompt": prompt, "max_tokens": 12, "temperature": 0,
            "ignore_eos": True, "logprobs": 1}
    reply = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    tokens = reply.json()["choices"][0]["logprobs"]["tokens"]
    return [int(token.removeprefix("token_id:")) for token in tokens]


def whole_model_tokens(config, prompts: list[list[int]], max_tokens: int = 12) -> list[list[int]]:
    """Greedy tokens of ``prompts``, run together by one in-process runtime built from
    ``config`` (the reference the split and replicated servers must equal)."""
    from toolkit.protocol import SamplingParams
    from toolkit.runtime import build_runtime

    runtime = build_runtime(config)
    try:
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
        tokens: dict[str, list[int]] = {}
        for i, prompt in enumerate(prompts):
            runtime.core.add_request(f"whole{i}", prompt, params)
            tokens[f"whole{i}"] = []
        while runtime.core.has_unfinished:
            for output in runtime.core.step():
                tokens[output.request_id] += output.new_token_ids
    finally:
        runtime.close()
    return [tokens[f"whole{i}"] for i in range(len(prompts))]
