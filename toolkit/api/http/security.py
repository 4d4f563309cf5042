"""API keys (``Authorization: Bearer``), the admin key, CORS and user middlewares."""

from __future__ import annotations

import hmac
import importlib
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from blacksheep import Application, Request, Response

from toolkit.api.http.errors import APIError
from toolkit.api.http.render import error_response

if TYPE_CHECKING:
    from toolkit.config.schema import ServerConfig

Handler = Callable[[Request], Awaitable[Response]]
Middleware = Callable[[Request, Handler], Awaitable[Response]]

PROTECTED_PREFIXES = ("/v1/", "/tokenize", "/detokenize", "/api/")
"""Paths that need an API key when api_keys (or admin_key) is set."""
ADMIN_PATHS = ("/metrics", "/v1/load_lora_adapter", "/v1/unload_lora_adapter")
"""Paths that need the admin key when it is set."""


def bearer_token(request: Request) -> str | None:
    value = request.get_first_header(b"Authorization")
    if not value or not value.lower().startswith(b"bearer "):
        return None
    return value[len(b"bearer "):].decode(errors="replace").strip()


def key_matches(token: str | None, keys: list[str]) -> bool:
    """Constant-time comparison against every key."""
    if token is None:
        return False
    found = False
    for key in keys:
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


def auth_middleware(config: ServerConfig) -> Middleware | None:
    """A middleware enforcing the keys, or None when no key is configured."""
    api_keys = [*config.api_keys, *([config.admin_key] if config.admin_key else [])]
    admin_keys = [config.admin_key] if config.admin_key else []
    if not api_keys:
        return None

    async def authenticate(request: Request, handler: Handler) -> Response:
        path = request.path
        if request.method == "OPTIONS":
            return await handler(request)
        if path.startswith(ADMIN_PATHS) and admin_keys:
            allowed = admin_keys
        elif path.startswith(PROTECTED_PREFIXES) and config.api_keys:
            allowed = api_keys
        else:
            return await handler(request)
        if not key_matches(bearer_token(request), allowed):
            return error_response(APIError("Invalid or missing API key: send "
                                           "'Authorization: Bearer <key>'", status=401,
                                           code="invalid_api_key"),
                                  [(b"WWW-Authenticate", b"Bearer")])
        return await handler(request)

    return authenticate


def install_cors(app: Application, config: ServerConfig) -> None:
    """Enable CORS for the configured origins only; no origins, no CORS headers."""
    if config.cors_allow_origins:
        app.use_cors(allow_origins=list(config.cors_allow_origins),
                     allow_methods=list(config.cors_allow_methods),
                     allow_headers=list(config.cors_allow_headers),
                     allow_credentials=config.cors_allow_credentials)


def load_middleware(path: str) -> Middleware:
    """Import ``package.module:name`` (or ``package.module.name``); a class is instantiated
    without arguments. Raises ValueError naming the path when it cannot be imported,
    TypeError when it is not callable."""
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"server.middleware: cannot import {path!r}: {exc}") from None
    middleware = target() if inspect.isclass(target) else target
    if not callable(middleware):
        raise TypeError(f"server.middleware: {path!r} is not callable")
    return middleware
