"""The JSON-schema keyword boundary: accepted keywords are enforced by the grammar, and
every rejected one is a keyword the grammar would let the model violate."""

from __future__ import annotations

import json

import jsonschema
import pytest
import xgrammar as xgr
from schemas import BOUNDARY, validate

from toolkit.guided.compiler import GuidedSpecError
from toolkit.guided.grammars import compile_spec
from toolkit.guided.schema_support import check_schema, with_exact_formats
from toolkit.protocol import GuidedSpec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def xgr_compiler(runtime):
    """A plain in-process xgrammar compiler over the model's tokenizer."""
    return xgr.GrammarCompiler(runtime.core.guided.info, max_threads=1)


def _accepts(compiler, schema: dict, instance) -> bool:
    """What the server compiles for ``schema`` accepts ``instance``."""
    grammar = compile_spec(compiler, GuidedSpec("json", json.dumps(with_exact_formats(schema))))
    matcher = xgr.GrammarMatcher(grammar)
    return matcher.accept_string(json.dumps(instance)) and matcher.is_completed()


@pytest.mark.parametrize("schema, bad, good", BOUNDARY,
                         ids=[json.dumps(s)[:60] for s, _, _ in BOUNDARY])
def test_boundary_matches_what_xgrammar_enforces(xgr_compiler, schema, bad, good):
    with pytest.raises(jsonschema.ValidationError):
        validate(bad, schema)
    found = check_schema(schema)
    if found is None:
        validate(good, schema)
        assert not _accepts(xgr_compiler, schema, bad)
        assert _accepts(xgr_compiler, schema, good)
    else:
        assert _accepts(xgr_compiler, schema, bad), found


def test_boundary_has_both_sides():
    verdicts = [check_schema(schema) is None for schema, _, _ in BOUNDARY]
    assert sum(verdicts) >= 15 and verdicts.count(False) >= 15


@pytest.mark.parametrize("schema, keyword", [
    ({"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}},
     "uniqueItems"),
    ({"type": "string", "format": "date", "minLength": 10}, "minLength"),
    ({"$defs": {"x": {"type": "number", "multipleOf": 0.5}}, "$ref": "#/$defs/x"},
     "multipleOf"),
])
def test_compiler_refuses_naming_the_keyword(runtime, schema, keyword):
    spec = GuidedSpec("json", json.dumps(schema), param="response_format.json_schema")
    with pytest.raises(GuidedSpecError) as caught:
        runtime.core.guided.compile(spec)
    assert caught.value.param == "response_format.json_schema"
    assert f"'{keyword}'" in str(caught.value)
