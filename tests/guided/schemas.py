"""A corpus of JSON schemas whose instances are short (bounded strings, arrays, numbers)."""

from __future__ import annotations

import jsonschema

S = {"type": "string", "maxLength": 12}
I = {"type": "integer", "minimum": 0, "maximum": 999}


def validate(instance, schema: dict) -> None:
    """jsonschema validation that also checks string formats (date, email, uuid ...)."""
    validator = jsonschema.Draft202012Validator
    validator(schema, format_checker=validator.FORMAT_CHECKER).validate(instance)


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
    obj({"host": {"type": "string", "format": "ipv4"}}),
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

# The accepted side of the keyword boundary (toolkit/guided/schema_support.py), sampled
# with the rest of the corpus: combinators with annotation siblings, enum with a type.
SCHEMAS += [
    {"$defs": {"d": {"type": "integer", "minimum": 0, "maximum": 9}}, "type": "object",
     "properties": {"v": {"allOf": [{"$ref": "#/$defs/d"}], "title": "V"}},
     "required": ["v"]},
    obj({"v": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9},
                         {"type": "null"}], "default": None, "description": "or null"}}),
    obj({"mood": {"type": "string", "enum": ["happy", "sad"]},
         "ids": {"type": "array", "items": I, "maxItems": 2, "uniqueItems": False}}),
    obj({"ip": {"type": "string", "format": "ipv4"}}),
]

BOUNDARY: list[tuple[dict, object, object]] = [
    ({"type": "string", "minLength": 3}, "ab", "abc"),
    ({"type": "string", "maxLength": 3}, "abcd", "abc"),
    ({"type": "string", "pattern": "^[a-z]+$"}, "A", "a"),
    ({"type": "string", "format": "date"}, "2020-13-45", "2020-01-02"),
    ({"type": "string", "format": "ipv4"}, "101.000.000.110", "101.0.0.110"),
    ({"type": "string", "format": "uuid"}, "x", "123e4567-e89b-12d3-a456-426614174000"),
    ({"type": "integer", "minimum": 3, "maximum": 5}, 6, 4),
    ({"type": "number", "exclusiveMaximum": 0.5}, 0.5, 0.25),
    ({"type": "string", "enum": ["a", "b"]}, "c", "a"),
    ({"const": "x"}, "y", "x"),
    ({"anyOf": [{"type": "integer", "minimum": 10}, {"type": "null"}], "title": "t"}, 3, 12),
    ({"allOf": [{"type": "integer", "maximum": 5}]}, 9, 3),
    ({"oneOf": [{"type": "integer", "maximum": 5}]}, 9, 3),
    ({"$defs": {"p": {"type": "integer", "maximum": 3}}, "$ref": "#/$defs/p"}, 9, 2),
    ({"type": "array", "items": I, "minItems": 1, "maxItems": 2}, [1, 2, 3], [1]),
    ({"type": "array", "prefixItems": [I, S], "items": False}, [1, 2], [1, "a"]),
    ({"type": "object", "additionalProperties": I}, {"a": "s"}, {"a": 1}),
    ({"type": "object", "properties": {"a": I, "b": I}, "maxProperties": 1},
     {"a": 1, "b": 2}, {"a": 1}),
    ({"type": ["integer", "null"]}, "s", None),
    # rejected: xgrammar would accept the first (invalid) instance
    ({"type": "integer", "multipleOf": 5, "minimum": 0}, 7, 10),
    ({"type": "array", "items": I, "uniqueItems": True}, [1, 1], [1, 2]),
    ({"type": "array", "items": I, "contains": {"const": 3}}, [1], [3]),
    ({"type": "object", "properties": {"a": I}, "propertyNames": {"maxLength": 0}},
     {"a": 1}, {}),
    ({"type": "object", "properties": {"a": I, "b": I}, "dependentRequired": {"a": ["b"]}},
     {"a": 1}, {"a": 1, "b": 2}),
    ({"type": "integer", "not": {"const": 3}}, 3, 4),
    ({"type": "object", "properties": {"a": I, "b": I}, "if": {"required": ["a"]},
      "then": {"required": ["b"]}}, {"a": 1}, {"a": 1, "b": 1}),
    ({"oneOf": [{"type": "integer", "minimum": 0}, {"type": "integer", "maximum": 5}]}, 3, 9),
    ({"allOf": [{"type": "integer", "minimum": 0}, {"maximum": 5}]}, 9, 3),
    ({"type": "string", "format": "email", "maxLength": 6}, "abcdef@b.com", "a@b.co"),
    ({"type": "string", "format": "email", "pattern": "^z"}, "a@b.co", "z@b.co"),
    ({"type": "string", "pattern": "^[a-z]+$", "minLength": 3}, "ab", "abc"),
    ({"type": "string", "format": "regex"}, "(", "a+"),
    ({"type": "string", "enum": ["abc", "abcdef"], "maxLength": 3}, "abcdef", "abc"),
    ({"const": "x", "type": "integer"}, "x", None),
    ({"$defs": {"p": {"type": "integer"}}, "$ref": "#/$defs/p", "maximum": 3}, 9, 2),
    ({"type": "integer", "anyOf": [{"maximum": 3}, {"minimum": 10}]}, 5, 2),
    ({"type": "object", "properties": {"a": I}, "required": ["x"]}, {"a": 1}, None),
]
"""(schema, an instance that violates it, one that satisfies it or None): the checker
must accept exactly the schemas whose grammar rejects the violating instance."""
