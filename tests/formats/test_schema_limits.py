"""What a schema may ask: the limits refuse what would crash or stall the engine, and let
ordinary schemas through (including properties named like keywords)."""

from __future__ import annotations

import pytest

from modelhub.errors import InvalidRequestError
from modelhub.formats.schema_limits import LLAMA_MAX_OPTIONAL, SchemaLimits, check_schema

LIMITS = SchemaLimits(max_repetition=4096, max_alternatives=1024, max_depth=64, max_size=100_000)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "minLength": 3000},  # a flat sequence: cheap to parse
        {"type": "string", "minLength": 3000, "maxLength": 3000 + LLAMA_MAX_OPTIONAL},
        {"type": "array", "items": {"enum": list(range(1000))}, "maxItems": 10},
        {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
        {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
        {
            "type": "object",
            "properties": {
                "minLength": {"type": "string"},
                "enum": {"type": "integer"},
                "pattern": {"type": "string", "default": "a{0,99999}"},
            },
        },
    ],
)
def test_ordinary_schemas_pass(schema):
    assert check_schema(schema, "response_format", LIMITS) > 0


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "string", "maxLength": 1001}, "llama.cpp"),
        ({"type": "string", "minLength": 5000}, "at most 4096"),
        ({"type": "string", "pattern": "^(ab){2,2000}$"}, "optional"),
        ({"type": "string", "minLength": 5, "maxLength": 2}, "cannot be satisfied"),
        ({"type": "string", "maxLength": 2.5}, "whole number"),
        ({"anyOf": [{"enum": list(range(600))}, {"enum": list(range(600))}]}, "alternatives"),
        ({"type": ["integer"], "exclusiveMaximum": float("inf")}, "integer bounds"),
        ({"$defs": {"a": {"type": "integer", "minimum": 2**64}}}, "integer bounds"),
    ],
)
def test_costly_schemas_are_400s_naming_the_parameter(schema, words):
    with pytest.raises(InvalidRequestError, match=words) as info:
        check_schema(schema, "tools[2].function.parameters", LIMITS)
    assert info.value.param == "tools[2].function.parameters"


def test_depth_and_size_are_bounded_without_recursion():
    deep: dict = {}
    for _ in range(100_000):
        deep = {"items": deep}
    with pytest.raises(InvalidRequestError, match="deeper"):
        check_schema(deep, "response_format", LIMITS)
    with pytest.raises(InvalidRequestError, match="larger"):
        check_schema({"description": "x" * 200_000}, "response_format", LIMITS)
