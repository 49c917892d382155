"""Output grammars: integer ranges exactly as llama.cpp's C++ converter writes them, and
schema grammars that llama.cpp's own parser compiles."""

from __future__ import annotations

import re

import pytest

from modelhub.errors import InvalidRequestError
from modelhub.formats.grammar import json_schema_grammar, response_format_grammar
from modelhub.formats.grammar_ints import int_range_rule
from modelhub.schemas.chat import ChatCompletionRequest
from modelhub.serving.conversation import to_conversation


def _as_regex(rule: str) -> re.Pattern:
    """The rule's GBNF subset (literals, classes, {m,n}, groups, |) as a Python regex."""
    pattern = re.sub(r'"([^"]*)"', lambda m: re.escape(m.group(1)), rule)
    return re.compile(pattern.replace(" ", ""))


@pytest.mark.parametrize(
    ("low", "high"),
    [(1, 9), (0, 100), (-5, 5), (-120, -7), (13, 4021), (0, 0), (7, 7), (99, 101)],
)
def test_closed_ranges_match_exactly_their_integers(low, high):
    regex = _as_regex(int_range_rule(low, high))
    for n in range(low - 300, high + 300):
        assert bool(regex.fullmatch(str(n))) == (low <= n <= high), n


@pytest.mark.parametrize(
    ("low", "high"),
    [(0, None), (1, None), (42, None), (-17, None), (None, 0), (None, 250), (None, -3)],
)
def test_open_ranges_match_exactly_their_integers(low, high):
    regex = _as_regex(int_range_rule(low, high))
    for n in list(range(-1200, 1200)) + [10**12, -(10**12)]:
        inside = (low is None or n >= low) and (high is None or n <= high)
        assert bool(regex.fullmatch(str(n))) == inside, n
    assert not regex.fullmatch("007")  # JSON has no leading zeros


def test_integer_bounds_reach_the_schema_grammar():
    grammar = json_schema_grammar(
        {
            "type": "object",
            "properties": {
                "days": {"type": "integer", "minimum": 1, "maximum": 9},
                "count": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 100},
                "any": {"type": "integer"},
            },
        },
        param="p",
    )
    assert "days ::= ([1-9]) space" in grammar
    assert "count ::= (" in grammar


def test_an_empty_range_and_a_broken_schema_are_400s():
    with pytest.raises(InvalidRequestError) as info:
        json_schema_grammar({"type": "integer", "minimum": 5, "maximum": 1}, param="x.schema")
    assert info.value.param == "x.schema"
    with pytest.raises(InvalidRequestError):
        json_schema_grammar({"type": "nonsense"}, param="x.schema")


def test_response_formats():
    def fmt(response_format):
        return to_conversation(
            ChatCompletionRequest(
                model="m",
                messages=[{"role": "user", "content": "hi"}],
                response_format=response_format,
            )
        ).json_output

    assert response_format_grammar(None) is None
    assert response_format_grammar(fmt({"type": "text"})) is None
    assert "root ::= object" in response_format_grammar(fmt({"type": "json_object"}))
    schema = {
        "type": "json_schema",
        "json_schema": {"name": "n", "schema": {"type": "integer", "maximum": 3}},
    }
    assert response_format_grammar(fmt(schema)).startswith("root ::= (")


@pytest.mark.parametrize("digits", range(1, 20))
def test_large_bounds_match_exactly_and_write_only_valid_repetitions(digits):
    """minimum: 202 once admitted 201, and 16+ digit bounds wrote [0-9]{18,15}."""
    bound = int("7" * digits) if digits < 19 else 2**63 - 2
    for low, high in ((bound, None), (None, -bound), (202, None), (-bound, bound)):
        rule = int_range_rule(low, high)
        for m, n in re.findall(r"\{(\d+),(\d+)\}", rule):
            assert int(m) <= int(n), rule
        regex = _as_regex(rule)
        for x in (bound - 1, bound, bound + 1, -bound - 1, -bound, 201, 202, 0, 2**63 - 1):
            inside = (low is None or x >= low) and (high is None or x <= high)
            assert bool(regex.fullmatch(str(x))) == inside, (low, high, x)


def test_bounds_outside_int64_are_refused():
    for schema in ({"type": "integer", "minimum": 1e308}, {"type": "integer", "maximum": -(2**64)}):
        with pytest.raises(InvalidRequestError):
            json_schema_grammar(schema, param="response_format")
