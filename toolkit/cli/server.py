"""Run the app under uvicorn; SIGTERM or SIGINT drains in-flight requests, then returns."""

from __future__ import annotations

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

    def __init__(self, config: uvicorn.Config, gate: ShutdownGate) -> None:
        super().__init__(config)
        self.gate = gate

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.gate.start_draining()
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def serve_until_signalled(app: Application, config: ServerConfig, gate: ShutdownGate) -> bool:
    """Serve until a signal; in-flight requests get ``config.shutdown_timeout`` seconds to
    finish. False when the server could not start (the port is taken ...)."""
    server = DrainingServer(uvicorn.Config(app, **uvicorn_options(config)), gate)
    server.run()
    return server.started
