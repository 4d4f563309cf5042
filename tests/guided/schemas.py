"""A corpus of JSON schemas whose instances are short (bounded strings, arrays, numbers)."""

from __future__ import annotations

S = {"type": "string", "maxLength": 12}
I = {"type": "integer", "minimum": 0, "maximum": 999}


def obj(props: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": props,
            "required": list(props) if required is None else required}


SCHEMAS: list[dict] = [
    obj({"name": S}),
    obj({"name": S, "age": {"type": "integer", "minimum": 0, "maximum": 120}}),
    obj({"ok": {"type": "boolean"}}),
    obj({"color": {"enum": ["red", "green", "blue"]}}),
    obj({"n": {"type": "integer", "minimum": -5, "maximum": 5}}),
    obj({"x": {"type": "number", "minimum": 0, "maximum": 1}}),
    obj({"tags": {"type": "array", "items": S, "minItems": 1, "maxItems": 3}}),
    obj({"point": obj({"x": I, "y": I})}),
    obj({"user": obj({"id": I, "email": {"type": "string",
                                          "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.(com|org)$"}})}),
    obj({"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}}),
    obj({"date": {"type": "string", "format": "date"}}),
    obj({"a": S, "b": I}, required=["a"]),
    obj({"kind": {"const": "fixed"}, "v": I}),
    obj({"items": {"type": "array", "items": obj({"id": I}), "maxItems": 2}}),
    {"type": "array", "items": I, "minItems": 2, "maxItems": 4},
    {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
    {"enum": ["yes", "no", "maybe"]},
    {"type": "integer", "minimum": 10, "maximum": 99},
    {"type": "boolean"},
    {"type": "string", "maxLength": 8},
    obj({"status": {"enum": ["open", "closed"]}, "count": I}),
    obj({"nested": obj({"deeper": obj({"leaf": {"type": "boolean"}})})}),
    obj({"v": {"anyOf": [I, {"type": "string", "maxLength": 5}]}}),
    obj({"v": {"type": ["integer", "null"], "minimum": 0, "maximum": 9}}),
    obj({"matrix": {"type": "array", "maxItems": 2,
                    "items": {"type": "array", "items": I, "maxItems": 2}}}),
    obj({"title": S, "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
         "rating": {"enum": [1, 2, 3, 4, 5]}}),
    obj({"price": {"type": "number", "exclusiveMinimum": 0, "maximum": 100}}),
    obj({"zip": {"type": "string", "pattern": "^[0-9]{5}$"}}),
    obj({"id": {"type": "string", "format": "uuid"}}),
    obj({"time": {"type": "string", "format": "time"}}),
    obj({"hex": {"type": "string", "pattern": "^#[0-9a-f]{6}$"}}),
    obj({"flags": obj({"a": {"type": "boolean"}, "b": {"type": "boolean"}}, required=["a"])}),
    {"$defs": {"pt": obj({"x": I})}, "type": "object",
     "properties": {"p": {"$ref": "#/$defs/pt"}}, "required": ["p"]},
    obj({"name": {"type": "string", "minLength": 2, "maxLength": 6}}),
]

REGEXES: list[str] = [r"[a-z]{3,6}", r"\d{3}-\d{4}", r"(cat|dog|bird)s?",
                      r"[A-Z][a-z]{1,5} [0-9]{1,2}", r"0x[0-9a-f]{4}"]

CHOICES: list[list[str]] = [["yes", "no"], ["red", "green", "blue"],
                            ["Paris", "London", "Tokyo", "New York"]]
