"""Real clients against a real server: the app that ``toolkit serve`` builds (the composed
server config, its defaults unchanged) over the real SmolLM2 engine, behind uvicorn on a
loopback port in its own thread, so that synchronous clients (LangChain, LiteLLM,
instructor) and asynchronous ones (the openai SDK, openai-agents) both reach it.

These tests need the ``clients`` extra (``pip install -c constraints/cpu.txt -e
'.[test,clients]'``); each module skips when its client is not installed (the openai SDK
module runs wherever the ``test`` extra's openai is). Every test is marked ``clients``: run
them apart with ``python -m pytest -m clients``; they are also ``slow`` (the ``engine``
fixture loads SmolLM2).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import uvicorn

from toolkit.api.app import build_app

# Clients that look things up on the network at import or first use are kept offline:
# LiteLLM reads its bundled model price map instead of fetching it, and neither it nor
# the agents SDK sends telemetry or traces anywhere.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")


@pytest.fixture(scope="package")
def server_url(runtime, engine) -> Iterator[str]:
    """``http://127.0.0.1:PORT``: ``toolkit serve``'s app (``runtime.config.server``, the
    defaults of conf/server/default.yaml) over the session engine, served by uvicorn in a
    thread while this folder's tests run."""
    config = replace(runtime.config.server, log_level="warning")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(build_app(engine, config), log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="clients-server")
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


@pytest.fixture(scope="package")
def api_base(server_url) -> str:
    """The OpenAI base URL clients are given: ``http://127.0.0.1:PORT/v1``."""
    return f"{server_url}/v1"


@pytest.fixture(scope="module")
def openai_client(api_base):
    """The openai SDK's synchronous client of the server (no retries: a failure shows)."""
    import openai

    client = openai.OpenAI(base_url=api_base, api_key="unused", max_retries=0, timeout=120)
    yield client
    client.close()
