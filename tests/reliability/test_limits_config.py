"""The admission and shutdown keys compose, reach the frozen configs and are range-checked."""

from __future__ import annotations

import pytest

from toolkit.api.http.server_options import uvicorn_options
from toolkit.compose import compose_config
from toolkit.config.errors import ConfigError


def test_defaults_bound_the_queue_and_the_body():
    cfg = compose_config([])
    assert cfg.scheduler.max_waiting == 1024
    assert cfg.server.max_request_body_bytes == 8 * 1024 * 1024
    assert cfg.server.request_timeout is None
    assert uvicorn_options(cfg.server)["timeout_graceful_shutdown"] == 30.0


def test_overrides_reach_the_configs():
    cfg = compose_config(["scheduler.max_waiting=null", "server.request_timeout=2.5",
                          "server.max_request_body_bytes=null", "server.shutdown_timeout=5"])
    assert cfg.scheduler.max_waiting is None and cfg.server.request_timeout == 2.5
    assert cfg.server.max_request_body_bytes is None
    assert uvicorn_options(cfg.server)["timeout_graceful_shutdown"] == 5.0


@pytest.mark.parametrize("override, message", [
    ("scheduler.max_waiting=0", "scheduler.max_waiting=0 must be >= 1"),
    ("server.max_request_body_bytes=0", "server.max_request_body_bytes=0 must be >= 1"),
    ("server.request_timeout=0", "server.request_timeout=0.0 must be > 0"),
    ("server.shutdown_timeout=-1", "server.shutdown_timeout=-1.0 must be >= 0"),
    ("server.retry_after_s=-1", "server.retry_after_s=-1 must be >= 0"),
])
def test_bad_limits_fail_with_one_line(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        compose_config([override])
