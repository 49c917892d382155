"""The one place where exceptions become HTTP responses, in OpenAI's error shape."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelhub.errors import InvalidRequestError, MethodNotAllowedError, ModelhubError, NotFoundError

__all__ = ["error_response", "install_error_handlers", "validation_param"]

log = logging.getLogger(__name__)


def error_response(exc: ModelhubError) -> JSONResponse:
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers)


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ModelhubError)
    async def _modelhub(request: Request, exc: ModelhubError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_from_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            return error_response(
                NotFoundError(f"Unknown request URL: {where}.", code="unknown_url")
            )
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            return error_response(
                MethodNotAllowedError(
                    f"Method not allowed: {where}. Allowed: {allowed}.",
                    headers={"Allow": allowed} if allowed else None,
                )
            )
        return error_response(ModelhubError(str(exc.detail)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            ModelhubError("The server had an error while processing your request.")
        )
