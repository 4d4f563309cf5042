"""``GET /`` (the page), ``GET /ui/app.js`` and ``/ui/app.css``, and the page's data:
``GET /ui/stats`` and ``GET /ui/config``.

Keys: the page and its static files are public (they hold no data). ``/ui/config`` needs a
key accepted on ``/v1`` (an api key or the admin key) whenever any key is configured;
``/ui/stats`` needs the admin key when one is set (as ``/metrics`` does), else an api key
when api keys are set. Without keys both are open, as the rest of the server is.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from blacksheep import Content, Request, Response

import toolkit
from toolkit.api.context import ServingContext
from toolkit.api.http.errors import APIError
from toolkit.api.http.render import error_response, json_response
from toolkit.api.http.security import bearer_token, key_matches

if TYPE_CHECKING:
    from toolkit.config.schema import ServerConfig

Handler = Callable[[Request], Awaitable[Response]]

STATIC_TYPES = {
    "index.html": b"text/html; charset=utf-8",
    "app.js": b"text/javascript; charset=utf-8",
    "app.css": b"text/css; charset=utf-8",
}
"""The shipped files (``toolkit/api/ui/static``) and their content types."""

CSP = (b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
       b"frame-ancestors 'none'")
"""The page's Content-Security-Policy: its own scripts, styles and API only (no CDN, no
inline script)."""

REDACTED = "<redacted>"


def ui_routes(ctx: ServingContext, config: ServerConfig) -> list[tuple[str, str, Handler]]:
    """The UI's (method, path, handler) routes; none when ``server.ui`` is off."""
    return UIServing(ctx, config).routes() if config.ui else []


def stats_body(ctx: ServingContext) -> dict[str, Any]:
    """The engine's state and counters as JSON: ``engine.stats()`` plus token totals,
    finished requests, mean TTFT / ITL (seconds, null before any) and speculative
    acceptance. ``time_s`` is a monotonic clock, for rates between two reads."""
    engine = ctx.engine
    metrics = engine.metrics
    return {
        **engine.stats(),
        "healthy": engine.healthy,
        "time_s": time.monotonic(),
        "prompt_tokens": metrics.prompt_tokens,
        "generation_tokens": metrics.generation_tokens,
        "finished_requests": dict(metrics.finished_requests),
        "ttft_mean_s": _mean(metrics.ttft),
        "itl_mean_s": _mean(metrics.itl),
        "spec_num_draft_tokens": metrics.num_draft_tokens,
        "spec_acceptance_rate": metrics.acceptance_rate,
        "spec_mean_accepted_length": metrics.mean_accepted_length,
    }


def config_body(ctx: ServingContext, config: ServerConfig) -> dict[str, Any]:
    """What the server knows about itself: version, model, limits, determinism and the
    server options (api keys and the admin key redacted)."""
    engine = ctx.engine
    server = dataclasses.asdict(config)
    server["api_keys"] = [REDACTED] * len(config.api_keys)
    server["admin_key"] = REDACTED if config.admin_key else None
    return {
        "version": toolkit.__version__,
        "model": ctx.model_name,
        "served_model_name": list(ctx.served_model_name),
        "engine_model_name": engine.model_name,
        "max_model_len": engine.max_model_len,
        "deterministic": engine.deterministic,
        "supports_priority": engine.supports_priority,
        "vocab_size": engine.tokenizer.vocab_size,
        "server": server,
    }


def _mean(histogram) -> float | None:
    return histogram.total / histogram.count if histogram.count else None


class UIServing:
    """The page, its static files and its two JSON endpoints."""

    def __init__(self, ctx: ServingContext, config: ServerConfig) -> None:
        self.ctx = ctx
        self.config = config
        everyone = [*config.api_keys, *([config.admin_key] if config.admin_key else [])]
        self.config_keys = everyone
        """Keys accepted on /ui/config (empty: open)."""
        self.stats_keys = [config.admin_key] if config.admin_key else everyone
        """Keys accepted on /ui/stats (empty: open)."""
        static = resources.files(__package__).joinpath("static")
        self.files = {name: static.joinpath(name).read_bytes() for name in STATIC_TYPES}

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of every UI route."""
        return [
            ("GET", "/", self._static("index.html")),
            ("GET", "/ui/app.js", self._static("app.js")),
            ("GET", "/ui/app.css", self._static("app.css")),
            ("GET", "/ui/stats", self.stats),
            ("GET", "/ui/config", self.config_info),
        ]

    def _static(self, name: str) -> Handler:
        body, content_type = self.files[name], STATIC_TYPES[name]

        async def serve(request: Request) -> Response:
            response = Response(200, [(b"Cache-Control", b"no-cache"),
                                      (b"X-Content-Type-Options", b"nosniff")],
                                Content(content_type, body))
            if name == "index.html":
                response.add_header(b"Content-Security-Policy", CSP)
            return response

        return serve

    async def stats(self, request: Request) -> Response:
        """``GET /ui/stats``: ``stats_body`` (the dashboard polls it)."""
        refused = _refused(request, self.stats_keys)
        return refused if refused is not None else json_response(stats_body(self.ctx))

    async def config_info(self, request: Request) -> Response:
        """``GET /ui/config``: ``config_body``."""
        refused = _refused(request, self.config_keys)
        return (refused if refused is not None
                else json_response(config_body(self.ctx, self.config)))


def _refused(request: Request, keys: list[str]) -> Response | None:
    """The 401 the auth middleware sends, unless the request brings one of ``keys`` (or
    none is configured)."""
    if not keys or key_matches(bearer_token(request), keys):
        return None
    return error_response(APIError("Invalid or missing API key: send "
                                   "'Authorization: Bearer <key>'", status=401,
                                   code="invalid_api_key"),
                          [(b"WWW-Authenticate", b"Bearer")])
