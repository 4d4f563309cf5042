"""Fixtures for the reliability tests: the real engine behind a real uvicorn, with limits."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace

import httpx
import pytest
import uvicorn
from reliability_helpers import FAIL_AFTER, FAULTY_SEED

import toolkit.runner.model_runner as model_runner
from toolkit.api.app import build_app
from toolkit.api.http.shutdown import ShutdownGate
from toolkit.config.schema import ServerConfig


@pytest.fixture
def scheduler_limits(engine):
    """Tighten the session engine's scheduler (``max_num_seqs``, ``max_waiting``) for one
    test; the original config is restored afterwards. Only used while the engine is idle."""
    scheduler = engine.core.scheduler
    original = scheduler.config

    def apply(**fields) -> None:
        scheduler.config = replace(original, **fields)

    yield apply
    scheduler.config = original


@pytest.fixture
async def serve(engine):
    """``await serve(**server_fields)`` -> (base URL, gate): the app over the real engine
    behind uvicorn on a loopback port. Every server is stopped at teardown."""
    servers = []

    async def start(**fields) -> tuple[str, ShutdownGate]:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        gate = ShutdownGate()
        app = build_app(engine, ServerConfig(**fields), gate)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        servers.append((server, task, sock))
        while not server.started:
            await asyncio.sleep(0.02)
        return f"http://127.0.0.1:{sock.getsockname()[1]}", gate

    yield start
    for server, task, sock in servers:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def http():
    """An httpx client with generous timeouts (the CPU model is slow under load)."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as client:
        yield client


@pytest.fixture
def faulty_sampler(monkeypatch):
    """The real sampler, except that it raises for a batch holding a row of a request
    seeded ``FAULTY_SEED`` that already has ``FAIL_AFTER`` tokens."""
    real = model_runner.sample

    def sample(logits, params, generators, histories=None, grammar=None, **options):
        if any(p.seed == FAULTY_SEED and len(h.output) >= FAIL_AFTER
               for p, h in zip(params, histories or ())):
            raise RuntimeError("injected sampling failure")
        return real(logits, params, generators, histories, grammar, **options)

    monkeypatch.setattr(model_runner, "sample", sample)
