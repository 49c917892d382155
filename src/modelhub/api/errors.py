"""The one place where exceptions become HTTP responses, in OpenAI's error shape.

Starlette's and FastAPI's own HTTP errors keep their status: FastAPI answers a body that is
not UTF-8, or JSON nested deeper than Python's parser goes, with a 400, which this module
once turned into a 500. Error bodies are written in ASCII, so a message that quotes the
caller's input (a model name holding a lone surrogate) can always be encoded.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelhub.errors import (
    AuthenticationError,
    InvalidRequestError,
    MethodNotAllowedError,
    ModelhubError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
)

__all__ = ["error_response", "install_error_handlers", "validation_param"]

log = logging.getLogger(__name__)

# Starlette's HTTP errors by status; any other status keeps its number, with the class of
# its kind (4xx: the caller's, 5xx: ours).
_BY_STATUS: dict[int, type[ModelhubError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    413: PayloadTooLargeError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


class _ErrorResponse(JSONResponse):
    def render(self, content: object) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()


def error_response(exc: ModelhubError, status_code: int | None = None) -> JSONResponse:
    return _ErrorResponse(
        exc.to_body(), status_code=status_code or exc.status_code, headers=exc.headers
    )


def validation_param(loc: tuple) -> str | None:
    """pydantic's ('body', 'messages', 0, 'content') -> OpenAI's 'messages[0].content';
    ('query', 'by') -> 'by'."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path") else loc)
    # Discriminated unions add the tag as a path element ('user', 'function-after[...]').
    param = ""
    for p in parts:
        if isinstance(p, int):
            param += f"[{p}]"
        elif (
            p
            in (
                "system",
                "developer",
                "user",
                "assistant",
                "tool",
                "text",
                "image_url",
                "input_audio",
            )
            and param
            or "[" in str(p)
            or "(" in str(p)
        ):
            continue
        else:
            param += f".{p}" if param else str(p)
    return param or None


def _from_validation(exc: RequestValidationError) -> ModelhubError:
    first = exc.errors()[0]
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return InvalidRequestError(
            "The request body is not valid JSON: " + str(first.get("ctx", {}).get("error", "")),
            code="invalid_json",
        )
    param = validation_param(loc)
    message = first.get("msg", "Invalid request")
    if first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'."
    elif param:
        message = f"Invalid value for '{param}': {message}"
    return InvalidRequestError(message, param=param)


def _body_error(exc: StarletteHTTPException) -> ModelhubError | None:
    """FastAPI's 400 for a body it could not parse, by its cause."""
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return InvalidRequestError(
            f"The request body is not valid UTF-8 (byte {cause.start}).", code="invalid_json"
        )
    if isinstance(cause, RecursionError):
        return InvalidRequestError(
            "The request body is JSON nested too deeply to parse.", code="invalid_json"
        )
    return None


def _from_http(request: Request, exc: StarletteHTTPException) -> ModelhubError:
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        return NotFoundError(f"Unknown request URL: {where}.", code="unknown_url")
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return MethodNotAllowedError(
            f"Method not allowed: {where}. Allowed: {allowed}.",
            headers={"Allow": allowed} if allowed else None,
        )
    if exc.status_code == 400 and (error := _body_error(exc)) is not None:
        return error
    kind = _BY_STATUS.get(exc.status_code)
    if kind is None:
        kind = InvalidRequestError if exc.status_code < 500 else ModelhubError
    return kind(str(exc.detail), headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ModelhubError)
    async def _modelhub(request: Request, exc: ModelhubError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_from_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(_from_http(request, exc), exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            ModelhubError("The server had an error while processing your request.")
        )
