"""``GET /openapi.json``: the server's own OpenAPI 3.1 document, from its pydantic models.

Every operation documents its request body (when it takes one) and the OpenAI error body
that any non-2xx status carries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from blacksheep import Request, Response
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from toolkit.api.http.render import json_response
from toolkit.api.openai.protocol import ChatCompletionRequest, CompletionRequest
from toolkit.api.openai.protocol_embeddings import EmbeddingRequest
from toolkit.api.openai.protocol_responses import ResponsesRequest
from toolkit.api.openai.responses import ErrorResponse
from toolkit.api.openai.serving_tokenize import (
    DetokenizeRequest,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
)

_REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Operation:
    """One documented route."""

    method: str
    """HTTP method."""
    path: str
    """Route path."""
    summary: str
    """One line of documentation."""
    bodies: tuple[type[BaseModel], ...] = ()
    """Accepted JSON request bodies (any one of them); empty: no body."""

    @property
    def path_params(self) -> list[str]:
        """The ``{name}`` segments of the path, in order."""
        return re.findall(r"\{(\w+)\}", self.path)


OPERATIONS = (
    Operation("GET", "/v1/models", "The served model names."),
    Operation("GET", "/v1/models/{model}", "One served model's card."),
    Operation("POST", "/v1/chat/completions", "Chat completions (optionally streamed).",
              (ChatCompletionRequest,)),
    Operation("POST", "/v1/completions", "Text completions (optionally streamed).",
              (CompletionRequest,)),
    Operation("POST", "/v1/embeddings", "Embeddings: the model's pooled hidden states.",
              (EmbeddingRequest,)),
    Operation("POST", "/v1/responses", "The Responses API (optionally streamed).",
              (ResponsesRequest,)),
    Operation("GET", "/v1/responses/{response_id}", "A stored response."),
    Operation("DELETE", "/v1/responses/{response_id}", "Delete a stored response."),
    Operation("POST", "/v1/responses/{response_id}/cancel",
              "Cancel a background response (none run in the background: 400 or 404)."),
    Operation("POST", "/tokenize", "Tokenize a prompt or a conversation.",
              (TokenizeCompletionRequest, TokenizeChatRequest)),
    Operation("POST", "/detokenize", "Decode token ids.", (DetokenizeRequest,)),
    Operation("GET", "/metrics", "Prometheus metrics."),
    Operation("GET", "/health", "200 while the engine runs, 503 otherwise."),
    Operation("GET", "/version", "The server version."),
)
"""Every route the server answers (besides this document)."""


def _schemas() -> dict:
    models = {model for op in OPERATIONS for model in op.bodies} | {ErrorResponse}
    _, top = models_json_schema([(m, "validation") for m in sorted(models, key=str)],
                                ref_template=_REF)
    return top["$defs"]


def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": _REF.format(model=model.__name__)}


def _operation(op: Operation) -> dict:
    errors = {"application/json": {"schema": _ref(ErrorResponse)}}
    spec = {
        "summary": op.summary,
        "operationId": f"{op.method.lower()}{re.sub(r'[/{}]', '_', op.path)}",
        "responses": {"200": {"description": "Success."},
                      "default": {"description": "An OpenAI-shaped error.", "content": errors}},
    }
    if op.path_params:
        spec["parameters"] = [{"name": name, "in": "path", "required": True,
                               "schema": {"type": "string"}} for name in op.path_params]
    if op.bodies:
        schema = _ref(op.bodies[0]) if len(op.bodies) == 1 else {
            "anyOf": [_ref(model) for model in op.bodies]}
        spec["requestBody"] = {"required": True,
                               "content": {"application/json": {"schema": schema}}}
    return spec


def openapi_document(title: str, version: str) -> dict:
    """The OpenAPI 3.1 document of every operation in ``OPERATIONS``."""
    paths: dict[str, dict] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {"openapi": "3.1.0", "info": {"title": title, "version": version},
            "paths": paths, "components": {"schemas": _schemas()}}


class OpenAPIServing:
    """Serves the document, built once."""

    def __init__(self, version: str) -> None:
        self.document = openapi_document("toolkit", version)

    async def openapi(self, request: Request) -> Response:
        return json_response(self.document)
