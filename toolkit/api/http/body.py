"""Read a JSON request body into a pydantic model, or fail with an OpenAI-shaped error."""

from __future__ import annotations

from typing import TypeVar

from blacksheep import Request
from pydantic import BaseModel, ValidationError

from toolkit.api.http.errors import APIError, from_validation_error

ModelT = TypeVar("ModelT", bound=BaseModel)


def check_content_type(request: Request) -> None:
    """Reject a body declared as anything but JSON (415); a missing type is read as JSON."""
    content_type = request.content_type()
    if content_type and not request.declares_json():
        raise APIError(
            f"Unsupported Content-Type '{content_type.decode(errors='replace')}': "
            "send the body as application/json",
            status=415,
            code="unsupported_media_type",
        )


async def parse_body(request: Request, model: type[ModelT]) -> ModelT:
    """Parse and validate the request body as ``model``; errors become 400/415."""
    check_content_type(request)
    raw = await request.read()
    if not raw:
        raise APIError("The request body is empty: send a JSON object", code="invalid_json")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
