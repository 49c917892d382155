"""Grammars (GBNF) that constrain decoding to the output a request asked for.

llama.cpp's own JSON-schema converter (shipped in llama-cpp-python) writes them, so the
embedded engine's constraint is the one llama.cpp's server would apply.
"""

from __future__ import annotations

import json

from llama_cpp.llama_grammar import json_schema_to_gbnf

from modelhub.errors import InvalidRequestError
from modelhub.schemas.chat import ResponseFormat

__all__ = ["json_schema_grammar", "response_format_grammar"]

# Any JSON object, for response_format {"type": "json_object"}. The converter's grammar allows
# one space between tokens, where llama.cpp's stock JSON grammar lets a weak model emit
# whitespace until max_tokens.
_OBJECT_GBNF = json_schema_to_gbnf(json.dumps({"type": "object"}))


def json_schema_grammar(schema: dict, *, param: str) -> str:
    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises bare Exceptions on unsupported schemas
        raise InvalidRequestError(f"Unsupported JSON schema: {exc}", param=param) from exc


def response_format_grammar(response_format: ResponseFormat | None) -> str | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return _OBJECT_GBNF
    assert response_format.json_schema is not None
    return json_schema_grammar(
        response_format.json_schema.schema_, param="response_format.json_schema.schema"
    )
