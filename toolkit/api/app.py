"""The BlackSheep application: routes, OpenAI-shaped error handling, lifecycle hooks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from blacksheep import Application, Request, Response
from blacksheep.exceptions import MessageAborted
from blacksheep.server.routing import Router
from pydantic import ValidationError

import toolkit
from toolkit.api.context import ServingContext
from toolkit.api.engine_client import EngineClient
from toolkit.api.http.body_limit import body_limit_middleware
from toolkit.api.http.errors import APIError, retry_after, status_phrase
from toolkit.api.http.metrics import MetricsServing
from toolkit.api.http.openapi import OpenAPIServing
from toolkit.api.http.render import error_response
from toolkit.api.http.security import auth_middleware, install_cors, load_middleware
from toolkit.api.http.shutdown import ShutdownGate, drain_middleware
from toolkit.api.kobold.serving import KoboldServing
from toolkit.api.openai.serving_chat import ChatServing
from toolkit.api.openai.serving_completions import CompletionServing
from toolkit.api.openai.serving_embeddings import EmbeddingServing
from toolkit.api.openai.serving_lora import LoraAdminServing
from toolkit.api.openai.serving_models import InfoServing
from toolkit.api.openai.serving_responses import ResponsesServing
from toolkit.api.openai.serving_tokenize import TokenizeServing
from toolkit.api.ui.serving import ui_routes

if TYPE_CHECKING:
    from toolkit.config.schema import ServerConfig

logger = logging.getLogger("toolkit.api")

Handler = Callable[[Request], Awaitable[Response]]

_HTTP_STATUSES = (400, 401, 403, 404, 405, 408, 413, 415, 422, 500)
"""Statuses BlackSheep may raise on its own; all are answered in OpenAI's shape."""


def build_app(engine: EngineClient, server_config: ServerConfig,
              gate: ShutdownGate | None = None) -> Application:
    """The OpenAI-compatible application serving ``engine``.

    ``engine`` is an already started ``AsyncEngine`` (the caller owns its lifetime);
    ``server_config`` is the ``ServerConfig``: log level, keys, CORS, served names, chat
    template, response options, limits, middlewares and the Kobold API switch (TLS and root_path go to uvicorn,
    see ``toolkit.api.http.server_options``); ``gate`` refuses new requests once the server
    starts draining (the caller sets it on SIGTERM). A bad chat template path or middleware
    import path raises ValueError.
    """
    logger.setLevel(server_config.log_level.upper())
    ctx = ServingContext.from_config(engine, server_config)
    router = Router()
    app = Application(router=router, show_error_details=False)
    routes = _routes(ctx)
    routes += ResponsesServing.from_config(ctx, server_config.chat).routes()
    if server_config.kobold_api:
        routes += KoboldServing(ctx).routes()
    if server_config.allow_runtime_lora_updating:
        if not server_config.admin_key:
            raise ValueError("server.allow_runtime_lora_updating=true needs server.admin_key "
                             "(the load/unload endpoints take only the admin key)")
        routes += LoraAdminServing(ctx).routes()
    routes += ui_routes(ctx, server_config)
    for method, path, handler in routes:
        router.add(method, path, _endpoint(handler))
    router.fallback = _fallback(routes)
    install_cors(app, server_config)
    _install_middlewares(app, server_config, gate or ShutdownGate())
    _install_error_handlers(app, server_config)
    _install_lifecycle(app, ctx)
    return app


def _install_middlewares(app: Application, config: ServerConfig, gate: ShutdownGate) -> None:
    """In order: refuse while draining, authenticate, bound the body, then the user's."""
    builtin = [drain_middleware(gate, config.retry_after_s), auth_middleware(config),
               body_limit_middleware(config.max_request_body_bytes)]
    app.middlewares.extend(m for m in builtin if m is not None)
    app.middlewares.extend(load_middleware(path) for path in config.middleware)


def _routes(ctx: ServingContext) -> list[tuple[str, str, Handler]]:
    chat = ChatServing(ctx)
    completions = CompletionServing(ctx)
    info = InfoServing(ctx)
    tokenize = TokenizeServing(ctx)
    metrics = MetricsServing(ctx)
    openapi = OpenAPIServing(toolkit.__version__)
    return [
        ("GET", "/v1/models", info.models),
        ("GET", "/v1/models/{path:model}", info.model),
        ("POST", "/v1/chat/completions", chat.handle),
        ("POST", "/v1/completions", completions.handle),
        ("POST", "/v1/embeddings", EmbeddingServing(ctx).handle),
        ("POST", "/tokenize", tokenize.tokenize),
        ("POST", "/detokenize", tokenize.detokenize),
        ("GET", "/metrics", metrics.metrics),
        ("GET", "/health", info.health),
        ("GET", "/version", info.version),
        ("GET", "/openapi.json", openapi.openapi),
    ]


def _endpoint(handler: Handler) -> Handler:
    """A plain function around a bound method (BlackSheep marks route handlers)."""

    async def endpoint(request: Request) -> Response:
        return await handler(request)

    return endpoint


def _fallback(routes: list[tuple[str, str, Handler]]) -> Handler:
    """404 for unknown paths; 405 (with ``Allow``) for known paths and a wrong method."""
    allowed: dict[str, set[str]] = {}
    for method, path, _ in routes:
        allowed.setdefault(path, set()).add(method)

    async def not_found(request: Request) -> Response:
        methods = allowed.get(request.path.rstrip("/") or "/")
        if methods is None:
            error = APIError(f"Route {request.path} not found", status=404, code="not_found")
            return error_response(error)
        error = APIError(
            f"Method {request.method} is not allowed on {request.path}",
            status=405,
            code="method_not_allowed",
        )
        return error_response(error, [(b"Allow", ", ".join(sorted(methods)).encode())])

    return not_found


def _install_error_handlers(app: Application, server_config: ServerConfig) -> None:
    """Every error leaves the server as ``{"error": {...}}``; no tracebacks, no HTML."""

    async def on_api_error(_app: Application, request: Request, exc: APIError) -> Response:
        if exc.status >= 500:
            logger.error("%s %s -> %d: %s", request.method, request.path, exc.status, exc)
        return error_response(exc, retry_after(server_config.retry_after_s)
                              if exc.status == 503 else None)

    async def on_http_error(_app: Application, request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status", 500)
        message = status_phrase(status) if status >= 500 else str(exc) or status_phrase(status)
        return error_response(APIError(message, status=status))

    async def on_internal_error(_app: Application, request: Request, exc: Exception) -> Response:
        logger.error("%s %s failed", request.method, request.path, exc_info=exc)
        return error_response(APIError("Internal server error", status=500))

    async def on_client_gone(_app: Application, request: Request, exc: Exception) -> Response:
        logger.info("%s %s: the client left before sending its body", request.method,
                    request.path)
        return error_response(APIError("The client closed the request", status=499,
                                       code="client_closed"))

    app.exceptions_handlers[APIError] = on_api_error
    app.exceptions_handlers[MessageAborted] = on_client_gone
    app.exceptions_handlers[ValidationError] = on_internal_error
    for status in _HTTP_STATUSES:
        app.exceptions_handlers[status] = on_http_error


def _install_lifecycle(app: Application, ctx: ServingContext) -> None:
    """Log the served model on start; the engine itself is started and stopped by its owner."""

    async def on_start(_app: Application) -> None:
        logger.info("serving model %r as %s (max_model_len=%d)", ctx.engine.model_name,
                    list(ctx.served_model_name), ctx.engine.max_model_len)

    async def on_stop(_app: Application) -> None:
        logger.info("API server stopped")

    app.on_start += on_start
    app.on_stop += on_stop
