"""Grammars (GBNF) that constrain decoding to the output a request asked for.

llama.cpp's JSON-schema converter (the Python one shipped in llama-cpp-python) writes them,
so the embedded engine's constraint is the one llama.cpp's server would apply. That port
lacks one thing the C++ converter has, integer bounds (``minimum``, ``maximum`` and their
exclusive forms), which ``grammar_ints`` adds. What a schema may ask (repetitions, enum
sizes, depth) is bounded before it gets here, by ``schema_limits``. Still unenforced, as in llama.cpp:
``multipleOf`` and bounds on non-integer numbers.
"""

from __future__ import annotations

import math

from llama_cpp.llama_grammar import RESERVED_NAMES, BuiltinRule, SchemaConverter

from modelhub.errors import InvalidRequestError
from modelhub.formats.conversation import JsonOutput
from modelhub.formats.grammar_ints import int_range_rule

__all__ = ["SchemaGrammar", "json_schema_grammar", "response_format_grammar"]

# A character of a JSON string, as llama.cpp's C++ converter writes it. The Python port's
# rule (``[^"\\]``) lets a raw newline or other control character into a string, which
# makes the output invalid JSON.
_JSON_CHAR = BuiltinRule(r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})', [])


class SchemaGrammar(SchemaConverter):
    """llama-cpp-python's converter, plus integer ranges; ``rule(schema, name)`` adds the
    rules for one schema and returns the name of its top rule."""

    def __init__(self) -> None:
        super().__init__(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)

    def _add_primitive(self, name: str, rule: BuiltinRule) -> str:
        return super()._add_primitive(name, _JSON_CHAR if name == "char" else rule)

    def rule(self, schema: dict, name: str) -> str:
        return self.visit(self.resolve_refs(schema, name), name)

    def visit(self, schema, name):
        bounds = _integer_bounds(schema)
        if bounds is None:
            return super().visit(schema, name)
        rule_name = name + "-" if name in RESERVED_NAMES else name or "root"  # as the base does
        return self._add_rule(rule_name, f"({int_range_rule(*bounds)}) space")


def _integer_bounds(schema: dict) -> tuple[int | None, int | None] | None:
    """(lowest, highest) integer allowed, for a bounded integer schema; else None."""
    if not isinstance(schema, dict) or schema.get("type") != "integer":
        return None
    lows, highs = [], []
    if "minimum" in schema:
        lows.append(math.ceil(schema["minimum"]))
    if "exclusiveMinimum" in schema:
        lows.append(math.floor(schema["exclusiveMinimum"]) + 1)
    if "maximum" in schema:
        highs.append(math.floor(schema["maximum"]))
    if "exclusiveMaximum" in schema:
        highs.append(math.ceil(schema["exclusiveMaximum"]) - 1)
    if not lows and not highs:
        return None
    return (max(lows) if lows else None), (min(highs) if highs else None)


def json_schema_grammar(schema: dict, *, param: str) -> str:
    converter = SchemaGrammar()
    try:
        converter.rule(schema, "")
        return converter.format_grammar()
    except Exception as exc:  # the converter raises bare Exceptions and asserts on bad schemas
        raise InvalidRequestError(f"Unsupported JSON schema: {exc}", param=param) from exc


# Any JSON object, for response_format {"type": "json_object"}. The converter's grammar allows
# one space between tokens, where llama.cpp's stock JSON grammar lets a weak model emit
# whitespace until max_tokens.
_OBJECT_GBNF = json_schema_grammar({"type": "object"}, param="response_format")


def response_format_grammar(output: JsonOutput | None) -> str | None:
    if output is None:
        return None
    if output.schema is None:
        return _OBJECT_GBNF
    return json_schema_grammar(output.schema, param="response_format")
