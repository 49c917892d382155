"""The OpenAPI document lists the errors the hub really answers with.

FastAPI documents a 422 for every route that takes parameters; the hub never sends one
(``api/errors.py`` makes validation errors OpenAI's 400). Each operation instead lists the
4xx/5xx statuses it can answer, each with OpenAI's error body, so a client generator and
the adversarial suite (schemathesis) see the real contract.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from modelhub.api.deps import AuthenticatedRoute
from modelhub.schemas.errors import ErrorDetail, ErrorResponse

__all__ = ["install_openapi"]

_DESCRIPTIONS = {
    400: "Invalid request",
    401: "Missing or invalid API key",
    403: "The key's contract is suspended or does not include the model",
    404: "Unknown model",
    410: "The model is retired",
    413: "Request body too large",
    429: "Rate limit exceeded (Retry-After)",
    503: "The model is not configured or its engine is overloaded (Retry-After)",
}
# Routes that run a model: everything a chat request can be refused for.
_MODEL_STATUSES = (400, 401, 403, 404, 410, 413, 429, 503)
# Routes without authentication (the operator's probes).
_OPEN_PATHS = frozenset(("/health", "/ready", "/metrics"))


def _statuses(route: APIRoute) -> tuple[int, ...]:
    if route.path in _OPEN_PATHS:
        return ()
    if isinstance(route, AuthenticatedRoute):
        return _MODEL_STATUSES
    statuses = {401, 403}
    if route.dependant.query_params or route.body_field is not None:
        statuses.add(400)
    if route.body_field is not None:
        statuses.add(413)
    if route.dependant.path_params:
        statuses.add(404)
    return tuple(sorted(statuses))


def _document(app: FastAPI) -> dict:
    document = get_openapi(title=app.title, version=app.version, routes=app.routes)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas["ErrorDetail"] = ErrorDetail.model_json_schema()
    schemas["ErrorResponse"] = ErrorResponse.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    schemas["ErrorResponse"].pop("$defs", None)
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods:
            operation = document["paths"][route.path_format][method.lower()]
            responses = operation["responses"]
            responses.pop("422", None)
            for status in _statuses(route):
                responses[str(status)] = {"description": _DESCRIPTIONS[status], "content": error}
    return document


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi
