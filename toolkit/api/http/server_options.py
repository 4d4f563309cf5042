"""ServerConfig -> the keyword arguments of ``uvicorn.run`` (no uvicorn import here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.config.schema import ServerConfig


def uvicorn_options(config: ServerConfig) -> dict[str, Any]:
    """Host, port, log level, TLS, root path and the shutdown grace for uvicorn."""
    return {
        "host": config.host,
        "port": config.port,
        "log_level": config.log_level,
        "root_path": config.root_path,
        "ssl_keyfile": config.ssl_keyfile,
        "ssl_certfile": config.ssl_certfile,
        "ssl_ca_certs": config.ssl_ca_certs,
        "ssl_cert_reqs": config.ssl_cert_reqs,
        "timeout_graceful_shutdown": config.shutdown_timeout,
    }
