"""Request fields -> one ``GuidedSpec``: guided_* extras and response_format.

Compilation (and so the check that a schema, regex or grammar is valid) happens in the
engine, off the event loop, through ``EngineClient.validate_guided``.
"""

from __future__ import annotations

import json
from typing import Any

from toolkit.api.http.errors import APIError
from toolkit.api.openai.protocol_sampling import GuidedRequest
from toolkit.protocol import GuidedSpec

GUIDED_BACKENDS = ("xgrammar",)
"""Values guided_decoding_backend accepts."""

_GUIDED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")


def invalid(param: str, message: str) -> APIError:
    """A 400 ``invalid_value`` naming ``param``."""
    return APIError(message, param=param, code="invalid_value")


def guided_spec(request: GuidedRequest) -> GuidedSpec | None:
    """The request's output constraint, or None; a 400 when several are set or a field
    has the wrong shape."""
    _check_backend(request.guided_decoding_backend)
    given = [name for name in _GUIDED_FIELDS if getattr(request, name) is not None]
    response_format = request.response_format
    if response_format is not None and response_format.type != "text":
        given.append("response_format")
    if len(given) > 1:
        raise invalid(given[1], f"only one of {', '.join(given)} may be set")
    if request.guided_whitespace_pattern is not None and given[:1] != ["guided_json"] \
            and "response_format" not in given:
        raise invalid("guided_whitespace_pattern",
                      "guided_whitespace_pattern only applies to JSON output")
    if not given:
        return None
    return _spec(request, given[0])


def json_spec(schema: Any, param: str, whitespace_pattern: str | None = None) -> GuidedSpec:
    """A JSON-schema spec from a dict or JSON text; a 400 naming ``param`` when it is not
    a JSON object. Key order is kept: the output's properties follow the schema's order
    (a forced tool call writes its name before its arguments, so they can stream)."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise invalid(param, f"{param} is not valid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise invalid(param, f"{param} must be a JSON schema object")
    return GuidedSpec("json", json.dumps(schema), whitespace_pattern, param)


def _spec(request: GuidedRequest, name: str) -> GuidedSpec:
    whitespace = request.guided_whitespace_pattern
    if name == "guided_json":
        return json_spec(request.guided_json, name, whitespace)
    if name == "guided_regex":
        return GuidedSpec("regex", request.guided_regex, param=name)
    if name == "guided_choice":
        if not request.guided_choice or not all(request.guided_choice):
            raise invalid(name, "guided_choice must be a non-empty list of non-empty strings")
        return GuidedSpec("choice", json.dumps(request.guided_choice), param=name)
    if name == "guided_grammar":
        kind = "grammar" if "::=" in request.guided_grammar else "lark"
        return GuidedSpec(kind, request.guided_grammar, param=name)
    return _response_format_spec(request, whitespace)


def _response_format_spec(request: GuidedRequest, whitespace: str | None) -> GuidedSpec:
    response_format = request.response_format
    if response_format.type == "json_object":
        return GuidedSpec("json_object", whitespace_pattern=whitespace,
                          param="response_format")
    if response_format.json_schema is None or response_format.json_schema.schema_ is None:
        raise invalid("response_format.json_schema",
                      "response_format of type json_schema needs json_schema.schema")
    return json_spec(response_format.json_schema.schema_, "response_format.json_schema",
                     whitespace)


def _check_backend(backend: str | None) -> None:
    if backend is not None and backend not in GUIDED_BACKENDS:
        raise invalid("guided_decoding_backend",
                      f"guided_decoding_backend {backend!r} is not available; valid: "
                      f"{', '.join(GUIDED_BACKENDS)}")
