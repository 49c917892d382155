"""The OpenAPI document lists the errors the hub really answers with.

FastAPI documents a 422 for every route that takes parameters; the hub never sends one
(``api/errors.py`` makes validation errors OpenAI's 400). Routers declare their statuses
with ``error_responses(...)`` (OpenAI's error body for each), and the document drops every
422, putting a 400 in its place where a router declared none. A client generator and the
adversarial suite (schemathesis) then see the real contract.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from modelhub.schemas.errors import ErrorResponse

__all__ = ["MODEL_ERRORS", "error_responses", "install_openapi"]

_DESCRIPTIONS = {
    400: "Invalid request",
    401: "Missing or invalid API key",
    403: "The key's contract is suspended or does not include the model",
    404: "Unknown model or resource",
    410: "The model is retired",
    413: "Request body too large",
    429: "Rate limit exceeded (Retry-After)",
    503: "The model is not configured or its engine is overloaded (Retry-After)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a router or route: each status with OpenAI's error body."""
    return {s: {"model": ErrorResponse, "description": _DESCRIPTIONS[s]} for s in statuses}


# Routes that run a model: everything a chat request can be refused for.
MODEL_ERRORS = error_responses(400, 401, 403, 404, 410, 413, 429, 503)


def _document(app: FastAPI) -> dict:
    document = get_openapi(title=app.title, version=app.version, routes=app.routes)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    error = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, schema in error.pop("$defs", {}).items():
        schemas.setdefault(name, schema)
    schemas.setdefault(ErrorResponse.__name__, error)
    invalid = error_responses(400)[400]
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None and "400" not in responses:
                responses["400"] = {
                    "description": invalid["description"],
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/ErrorResponse"}
                        }
                    },
                }
    return document


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi
