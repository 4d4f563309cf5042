"""Which JSON-schema keywords the installed xgrammar (0.2.8) enforces exactly.

xgrammar compiles some keywords into the grammar and silently ignores others; an ignored
assertion would let the model produce output that fails validation. ``check_schema``
finds the first such keyword so the API can refuse the schema with a 400 that names it.
The boundary was measured by compiling each keyword and feeding the matcher an instance
that violates it (tests/guided/test_schema_support.py keeps it honest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IGNORED = frozenset({
    "multipleOf", "uniqueItems", "contains", "minContains", "maxContains", "propertyNames",
    "patternProperties", "dependentRequired", "dependentSchemas", "dependencies", "not",
    "if", "then", "else", "contentEncoding", "contentMediaType", "contentSchema",
    "$dynamicRef", "$dynamicAnchor", "$recursiveRef", "$recursiveAnchor",
})
"""Assertions xgrammar does not compile (multipleOf only in some bound combinations)."""

ANNOTATIONS = frozenset({
    "title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly",
    "$schema", "$id", "$comment", "$anchor", "$defs", "definitions",
})
"""Keywords that assert nothing about an instance."""

ASSERTIONS = frozenset({
    "type", "enum", "const", "maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "format", "maxItems", "minItems", "items",
    "prefixItems", "unevaluatedItems", "properties", "required", "additionalProperties",
    "unevaluatedProperties", "maxProperties", "minProperties", "anyOf", "allOf", "oneOf",
    "$ref",
}) | IGNORED
"""Every standard keyword that constrains an instance (others are ignored by validators
too, so they are harmless)."""

FORMATS = frozenset({
    "email", "date", "time", "date-time", "duration", "uuid", "ipv4", "ipv6", "hostname",
    "uri", "uri-reference", "uri-template", "json-pointer", "relative-json-pointer",
})
"""String formats xgrammar compiles into the grammar."""

_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
EXACT_FORMAT_PATTERNS = {"ipv4": rf"^({_OCTET}\.){{3}}{_OCTET}$"}
"""Formats xgrammar compiles more loosely than validators check them (ipv4 octets with
leading zeros such as "000"), compiled as these exact patterns instead."""
_LITERALS = ("enum", "const", "default", "examples")

COMBINATORS = ("$ref", "anyOf", "allOf", "oneOf")
"""Keywords whose sibling assertions xgrammar ignores."""

_STRING_SHAPE = ("pattern", "minLength", "maxLength")
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
_SCHEMA_VALUES = ("additionalProperties", "items", "unevaluatedItems",
                  "unevaluatedProperties")
_SCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_JSON_TYPES = {"string": str, "boolean": bool, "object": dict, "array": list,
               "null": type(None)}


@dataclass(frozen=True)
class UnsupportedKeyword:
    """A keyword the grammar would not enforce, where it is, and why."""

    keyword: str
    path: str
    """JSON pointer of the subschema holding it ("#" for the root)."""
    reason: str

    def message(self) -> str:
        return (f"JSON schema keyword '{self.keyword}' at {self.path} is not enforced by "
                f"the xgrammar backend: {self.reason}")


def with_exact_formats(schema: Any) -> Any:
    """A copy of ``schema`` with every ``format`` of EXACT_FORMAT_PATTERNS replaced by its
    exact ``pattern`` (check_schema has already refused format beside pattern)."""
    if isinstance(schema, list):
        return [with_exact_formats(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: value if key in _LITERALS else with_exact_formats(value)
           for key, value in schema.items()}
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in EXACT_FORMAT_PATTERNS:
        del out["format"]
        out["pattern"] = EXACT_FORMAT_PATTERNS[fmt]
    return out


def check_schema(schema: Any, path: str = "#") -> UnsupportedKeyword | None:
    """The first keyword of ``schema`` (or a subschema) that xgrammar would not enforce
    exactly; None when every assertion is compiled into the grammar."""
    if not isinstance(schema, dict):
        return None
    found = _check_node(schema, path)
    if found is not None:
        return found
    for key, child, child_path in _children(schema, path):
        found = check_schema(child, child_path)
        if found is not None:
            return found
    return None


def _check_node(node: dict, path: str) -> UnsupportedKeyword | None:
    for check in (_ignored, _combined, _enum_siblings, _string_shape, _required):
        found = check(node, path)
        if found is not None:
            return found
    return None


def _ignored(node: dict, path: str) -> UnsupportedKeyword | None:
    for key, value in node.items():
        if key in IGNORED and not (key == "uniqueItems" and value is False):
            return UnsupportedKeyword(key, path, "xgrammar ignores it")
    for key in ("oneOf", "allOf"):
        if isinstance(node.get(key), list) and len(node[key]) > 1:
            reason = ("it is compiled as anyOf (a value may match several branches)"
                      if key == "oneOf" else "only a single-branch allOf is compiled")
            return UnsupportedKeyword(key, path, reason)
    return None


def _combined(node: dict, path: str) -> UnsupportedKeyword | None:
    present = [key for key in COMBINATORS if key in node]
    if not present:
        return None
    for key in node:
        if key in ASSERTIONS and key != present[0]:
            return UnsupportedKeyword(key, path, f"it is ignored next to {present[0]}; move "
                                      f"it into the {present[0]} target")
    return None


def _enum_siblings(node: dict, path: str) -> UnsupportedKeyword | None:
    """enum/const compile to their values alone: siblings other than a matching type are
    ignored."""
    key = "enum" if "enum" in node else "const" if "const" in node else None
    if key is None:
        return None
    for other in node:
        if other in ASSERTIONS and other not in (key, "type"):
            return UnsupportedKeyword(other, path, f"it is ignored next to {key}")
    values = node[key] if key == "enum" and isinstance(node[key], list) else [node[key]]
    if "type" in node and not all(_has_type(v, node["type"]) for v in values):
        return UnsupportedKeyword("type", path, f"a value of {key} does not have this type, "
                                  f"and the grammar would still produce it")
    return None


def _string_shape(node: dict, path: str) -> UnsupportedKeyword | None:
    """format and pattern each replace the string grammar: nothing else is combined."""
    fmt = node.get("format")
    if fmt is not None and _may_be_string(node):
        if fmt not in FORMATS:
            return UnsupportedKeyword("format", path, f"format {fmt!r} is not one of "
                                      f"{', '.join(sorted(FORMATS))}")
        for other in _STRING_SHAPE:
            if other in node:
                return UnsupportedKeyword(other, path, "it is ignored next to format")
    if "pattern" in node:
        for other in ("minLength", "maxLength"):
            if other in node:
                return UnsupportedKeyword(other, path, "it is ignored next to pattern; "
                                          "put the length into the pattern")
    return None


def _required(node: dict, path: str) -> UnsupportedKeyword | None:
    """Strict mode admits only declared properties: a required one must be declared."""
    declared = node.get("properties") or {}
    for name in node.get("required") or ():
        if name not in declared:
            return UnsupportedKeyword("required", path, f"{name!r} is required but not in "
                                      "properties, so the grammar cannot produce it")
    return None


def _children(node: dict, path: str):
    """(key, subschema, its path) for every subschema position xgrammar compiles."""
    for key in _SCHEMA_MAPS:
        if isinstance(node.get(key), dict):
            for name, child in node[key].items():
                yield key, child, f"{path}/{key}/{_escape(name)}"
    for key in _SCHEMA_VALUES:
        if isinstance(node.get(key), dict):
            yield key, node[key], f"{path}/{key}"
    for key in _SCHEMA_LISTS:
        if isinstance(node.get(key), list):
            for i, child in enumerate(node[key]):
                yield key, child, f"{path}/{key}/{i}"


def _has_type(value: Any, types: Any) -> bool:
    names = types if isinstance(types, list) else [types]
    return any(_is_type(value, name) for name in names)


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    expected = _JSON_TYPES.get(name)
    return expected is not None and isinstance(value, expected)


def _may_be_string(node: dict) -> bool:
    types = node.get("type")
    return types is None or types == "string" or (isinstance(types, list)
                                                   and "string" in types)


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")
