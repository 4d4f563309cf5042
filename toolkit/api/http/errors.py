"""OpenAI-shaped errors: one exception type, one JSON body, one place that builds both."""

from __future__ import annotations

import re
from http import HTTPStatus

from pydantic import ValidationError

from toolkit.api.openai.responses import ErrorInfo, ErrorResponse
from toolkit.protocol.errors import EngineDeadError, EngineOverloadedError

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
"""The ``type`` field per HTTP status, as OpenAI's API writes it; any other 4xx is an
``invalid_request_error`` and any 5xx a ``server_error`` (the ``code`` says more)."""

_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})
_FIELD_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_MAX_REPORTED_ERRORS = 3


class APIError(Exception):
    """A request that ends in an OpenAI-shaped error response.

    ``param`` names the offending request field (``messages[0].content``), when there is one.
    """

    def __init__(
        self,
        message: str,
        status: int = 400,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code

    @property
    def type(self) -> str:
        """The OpenAI error type for this status."""
        return error_type(self.status)

    def body(self) -> dict:
        """The JSON body: ``{"error": {"message", "type", "param", "code"}}``."""
        return error_body(self.message, self.status, param=self.param, code=self.code)


def error_type(status: int) -> str:
    """The ``type`` field for an HTTP status (``"invalid_request_error"`` for 400 ...)."""
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(
    message: str, status: int, *, param: str | None = None, code: str | None = None
) -> dict:
    """Build an OpenAI error body for ``status``."""
    info = ErrorInfo(message=message, type=error_type(status), param=param, code=code)
    return ErrorResponse(error=info).model_dump()


def retry_after(seconds: int) -> list[tuple[bytes, bytes]]:
    """The ``Retry-After`` header every 503 carries."""
    return [(b"Retry-After", str(seconds).encode())]


def engine_failure(exc: BaseException) -> APIError:
    """The error for an exception raised by the engine for one request: 503 when it was
    refused for overload or the engine has stopped, else 500."""
    if isinstance(exc, EngineOverloadedError):
        return APIError(str(exc), status=503, code="server_overloaded")
    if isinstance(exc, EngineDeadError):
        return APIError(str(exc), status=503, code="engine_unavailable")
    return APIError("The engine failed to generate a response", status=500,
                    code="engine_error")


def status_phrase(status: int) -> str:
    """The standard reason phrase of an HTTP status."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def unsupported(param: str, subject: str | None = None) -> APIError:
    """A 400 for an OpenAI parameter this server accepts in the schema but cannot honour.

    The message reads "<subject> is not supported yet"; ``subject`` defaults to the param.
    """
    message = f"{subject or repr(param)} is not supported yet"
    return APIError(message, param=param, code="unsupported_parameter")


def from_validation_error(exc: ValidationError) -> APIError:
    """Turn a pydantic validation failure into a 400 that names the first bad parameter."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    if not errors:
        return APIError("Invalid request body", code="invalid_request")
    if errors[0]["type"] == "json_invalid":
        return APIError(f"Invalid JSON body: {errors[0]['msg']}", code="invalid_json")
    params = [loc_to_param(err["loc"]) for err in errors]
    details = [
        f"{param}: {err['msg']}" if param else err["msg"]
        for param, err in zip(params, errors, strict=True)
    ]
    unique = list(dict.fromkeys(details))[:_MAX_REPORTED_ERRORS]
    return APIError("; ".join(unique), param=params[0] or None, code="invalid_value")


def loc_to_param(loc: tuple[int | str, ...]) -> str:
    """``("messages", 0, "content")`` -> ``"messages[0].content"``, dropping union tags."""
    param = ""
    for part in loc:
        if isinstance(part, int):
            param += f"[{part}]"
        elif _FIELD_NAME.match(part) and part not in _TYPE_TAGS:
            param += f".{part}" if param else part
    return param
