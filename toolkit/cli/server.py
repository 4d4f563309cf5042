"""Run the app under uvicorn; SIGTERM or SIGINT drains in-flight requests, then returns."""

from __future__ import annotations

import socket
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from toolkit.api.http.server_options import uvicorn_options
from toolkit.api.http.shutdown import ShutdownGate

if TYPE_CHECKING:
    from blacksheep import Application

    from toolkit.config.schema import ServerConfig


class DrainingServer(uvicorn.Server):
    """uvicorn's server that opens the gate's drain on the first exit signal, and does not
    re-raise the signal once it has stopped (uvicorn does, which would end the process by
    that signal instead of letting ``serve`` choose its exit code)."""

    def __init__(self, config: uvicorn.Config, gate: ShutdownGate,
                 on_started: Callable[[str], None] | None = None) -> None:
        super().__init__(config)
        self.gate = gate
        self.on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start-up, then ``on_started(base URL)`` once it listens."""
        await super().startup(sockets)
        if self.started and self.on_started is not None:
            self.on_started(self.base_url())

    def base_url(self) -> str:
        """scheme://host:port of the listening socket (the real port when port=0)."""
        config = self.config
        port = config.port
        servers = getattr(self, "servers", None)
        if servers and servers[0].sockets:
            port = servers[0].sockets[0].getsockname()[1]
        host = config.host if ":" not in config.host else f"[{config.host}]"
        scheme = "https" if config.ssl_certfile else "http"
        return f"{scheme}://{host}:{port}"

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.gate.start_draining()
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def serve_until_signalled(app: Application, config: ServerConfig, gate: ShutdownGate,
                          on_started: Callable[[str], None] | None = None) -> bool:
    """Serve until a signal; in-flight requests get ``config.shutdown_timeout`` seconds to
    finish. ``on_started(base URL)`` runs once the server listens. False when the server
    could not start (the port was taken after the preflight check ...)."""
    server = DrainingServer(uvicorn.Config(app, **uvicorn_options(config)), gate, on_started)
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind or its start-up fails
        return False
    return server.started
