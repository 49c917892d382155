"""Limits on what a JSON schema (``response_format``, a tool's parameters) may ask of the
grammar it becomes, checked before any work is done for the request.

What they prevent, measured on the issue's landed main and on llama.cpp 0.3.36's parser:

- A bounded repetition (``maxLength``, ``maxItems``, a pattern's ``{m,n}``) becomes
  ``max - min`` nested optional groups. llama.cpp's parser refuses more than 1,000 of them
  (``maxLength: 1001`` does not compile) and recurses once per group before it does:
  ``maxLength: 8192`` overflows a 2 MiB thread stack, ``100000`` the main one, and the
  process dies with every stream in flight. The fixed part (``min``) is a flat sequence
  (``minLength: 100000`` compiles in 25 ms), bounded by ``schema_max_repetition``.
- Alternatives (enum values, anyOf/oneOf branches) are grammar stacks the sampler checks
  every candidate token against: a 10,000-value enum held the decode thread for 15 s. Their
  sum over the schema is bounded by ``schema_max_alternatives``.
- An integer ``minimum: 1e308`` wrote the invalid repetition ``[0-9]{290,13}`` and took
  17 GB: integer bounds must lie in int64.
- Depth and size (``schema_max_depth``, ``schema_max_size``) bound the converter's own
  recursion and work. The walk here is iterative, so no schema can crash it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from modelhub.errors import InvalidRequestError
from modelhub.settings import Settings

__all__ = ["LLAMA_MAX_OPTIONAL", "SchemaLimits", "check_schema"]

# Nested optional groups llama.cpp's grammar parser accepts (measured: 1,000 compile, 1,001
# do not). Not a setting: a larger value only trades the 400 for an engine error.
LLAMA_MAX_OPTIONAL = 1000
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# Pairs of keywords repeating a rule; the converter ignores min/maxProperties and
# min/maxContains, but a bound is a bound.
_REPETITIONS = (
    ("minLength", "maxLength"),
    ("minItems", "maxItems"),
    ("minProperties", "maxProperties"),
    ("minContains", "maxContains"),
)
_ALTERNATIVES = ("enum", "anyOf", "oneOf", "type")
_INTEGER_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
# {m}, {m,} and {m,n} in a regular expression, unless the brace is escaped.
_QUANTIFIER = re.compile(r"(?<!\\)\{\s*(\d*)\s*(,\s*(\d*)\s*)?\}")

# What a value in a schema is: a schema (or a list of them), a map from names to schemas
# (whose keys are the caller's words, never keywords), or plain data (enum values, defaults).
_SCHEMA, _MAP, _DATA = range(3)
_MAPS_OF_SCHEMAS = frozenset(
    ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
)
_DATA_KEYWORDS = frozenset(("enum", "const", "default", "examples"))


@dataclass(frozen=True)
class SchemaLimits:
    max_repetition: int
    max_alternatives: int
    max_depth: int
    max_size: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SchemaLimits:
        return cls(
            max_repetition=settings.schema_max_repetition,
            max_alternatives=settings.schema_max_alternatives,
            max_depth=settings.schema_max_depth,
            max_size=settings.schema_max_size,
        )


def _children(node: object, kind: int) -> Iterator[tuple[object, int]]:
    if isinstance(node, list):
        for item in node:
            yield item, kind
    elif isinstance(node, dict):
        for key, value in node.items():
            if kind == _SCHEMA and key in _MAPS_OF_SCHEMAS:
                yield value, _MAP
            elif kind == _SCHEMA and key in _DATA_KEYWORDS:
                yield value, _DATA
            else:
                yield value, _SCHEMA if kind == _MAP else kind


def _size(node: object) -> int:
    """The node's own share of the schema's size: one per value, plus its text."""
    if isinstance(node, str):
        return 1 + len(node)
    if isinstance(node, dict):
        return 1 + sum(len(k) for k in node)
    return 1


class _Check:
    """One schema's walk: what it found so far, and the error naming its parameter."""

    def __init__(self, limits: SchemaLimits, param: str):
        self.limits = limits
        self.param = param
        self.size = 0
        self.alternatives = 0

    def refuse(self, message: str) -> InvalidRequestError:
        return InvalidRequestError(f"The JSON schema in '{self.param}' {message}", param=self.param)

    def repetition(self, name: str, low: int, high: int | None) -> None:
        limit = self.limits.max_repetition
        for value in (low, high):
            if value is not None and value > limit:
                raise self.refuse(
                    f"repeats {value} times ({name}); this hub allows at most {limit}."
                )
        if high is not None and high < low:
            raise self.refuse(f"cannot be satisfied: {name} asks for {low} to {high}.")
        if high is not None and high - low > LLAMA_MAX_OPTIONAL:
            raise self.refuse(
                f"leaves {high - low} repetitions optional ({name}); llama.cpp's grammar parser "
                f"accepts at most {LLAMA_MAX_OPTIONAL}."
            )

    def bounds(self, node: dict) -> None:
        for low_key, high_key in _REPETITIONS:
            values = [node.get(low_key), node.get(high_key)]
            if values == [None, None]:
                continue
            for key, value in zip((low_key, high_key), values, strict=True):
                if value is not None and (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not math.isfinite(value)
                    or value != int(value)
                    or value < 0
                ):
                    raise self.refuse(f"has '{key}': {value!r}; it must be a whole number >= 0.")
            low, high = (None if v is None else int(v) for v in values)
            self.repetition(f"{low_key}/{high_key}", low or 0, high)
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            for match in _QUANTIFIER.finditer(pattern):
                low_s, comma, high_s = match.groups()
                low = int(low_s) if low_s else 0
                high = low if not comma else int(high_s) if high_s else None
                self.repetition(f"pattern {match.group(0)}", low, high)

    def alternatives_of(self, node: dict) -> None:
        found = sum(len(node[k]) for k in _ALTERNATIVES if isinstance(node.get(k), list))
        if isinstance(node.get("properties"), dict):
            found += len(node["properties"])
        self.alternatives += found
        limit = self.limits.max_alternatives
        if self.alternatives > limit:
            raise self.refuse(
                f"has more alternatives than this hub's limit of {limit} (enum values, anyOf/oneOf "
                "branches, types and properties, added up)."
            )

    def integer_bounds(self, node: dict) -> None:
        kind = node.get("type")
        if kind != "integer" and not (isinstance(kind, list) and "integer" in kind):
            return
        for key in _INTEGER_BOUNDS:
            value = node.get(key)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not _INT64_MIN <= value <= _INT64_MAX
            ):
                raise self.refuse(
                    f"has '{key}': {value!r}; integer bounds must lie between {_INT64_MIN} and "
                    f"{_INT64_MAX}."
                )

    def walk(self, schema: object) -> int:
        stack: list[tuple[object, int, int]] = [(schema, _SCHEMA, 1)]
        while stack:
            node, kind, depth = stack.pop()
            if depth > self.limits.max_depth:
                raise self.refuse(f"nests deeper than this hub's limit of {self.limits.max_depth}.")
            self.size += _size(node)
            if self.size > self.limits.max_size:
                raise self.refuse(
                    f"is larger than this hub's limit of {self.limits.max_size} (about its length "
                    "in JSON)."
                )
            if kind == _SCHEMA and isinstance(node, dict):
                self.bounds(node)
                self.alternatives_of(node)
                self.integer_bounds(node)
            stack.extend((child, k, depth + 1) for child, k in _children(node, kind))
        return self.size


def check_schema(schema: object, param: str, limits: SchemaLimits) -> int:
    """Refuse (400 naming ``param``) a schema whose grammar would cost too much, or could not
    be compiled; return its size, so a caller can bound several schemas together."""
    return _Check(limits, param).walk(schema)
