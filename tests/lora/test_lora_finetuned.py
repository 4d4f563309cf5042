"""An adapter that changes behaviour visibly, end to end: a LoRA fine-tuned here with PEFT
on SmolLM2-135M-Instruct (experiments/lora_finetune.py: a made-up fact, a few optimizer
steps) is served by the real engine behind a real uvicorn server, and over HTTP the
adapter's name answers with the new fact while the base model's name does not (slow tier:
loads SmolLM2 and trains for about a minute on two cores)."""

from __future__ import annotations

import asyncio
import importlib.util
import pathlib
import socket

import httpx
import pytest
import uvicorn
from tiny_lora import build_lora_runtime

from toolkit.api.app import build_app
from toolkit.config.schema import ServerConfig

pytest.importorskip("peft")

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "lora_finetune.py"


def _finetune_module():
    spec = importlib.util.spec_from_file_location("lora_finetune", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def finetune():
    return _finetune_module()


@pytest.fixture(scope="module")
def zorb_dir(smollm2_dir, finetune, tmp_path_factory) -> pathlib.Path:
    """The fine-tuned adapter, trained once for this module."""
    directory = tmp_path_factory.mktemp("zorb")
    finetune.train_adapter(smollm2_dir, directory)
    return directory


@pytest.fixture(scope="module")
def zorb_runtime(smollm2_dir, zorb_dir):
    runtime = build_lora_runtime(smollm2_dir, {"zorb": zorb_dir}, "model.name=smollm2",
                                 "lora.max_lora_rank=8")
    runtime.engine.start()
    yield runtime
    runtime.engine.shutdown()


async def test_served_adapter_answers_with_the_taught_fact(zorb_runtime, finetune):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = build_app(zorb_runtime.engine, ServerConfig())
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}",
                                     timeout=120) as http:
            async def ask(model: str) -> str:
                reply = await http.post("/v1/chat/completions", json={
                    "model": model, "temperature": 0, "max_tokens": 16,
                    "messages": [{"role": "user", "content": finetune.QUESTION}]})
                assert reply.status_code == 200, reply.text
                assert reply.json()["model"] == model  # the adapter's name is echoed
                return reply.json()["choices"][0]["message"]["content"]

            tuned, base = await asyncio.gather(ask("zorb"), ask("smollm2"))
    finally:
        server.should_exit = True
        await task
        sock.close()
    assert finetune.FACT_WORD in tuned, tuned
    assert finetune.FACT_WORD not in base, base
    assert zorb_runtime.engine.lora.num_pinned == 0

