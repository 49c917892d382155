"""OpenAI's error body, ``{"error": {"message", "type", "param", "code"}}``: what every
refusal looks like on the wire (``modelhub.errors`` builds it)."""

from __future__ import annotations

from pydantic import BaseModel

__all__ = ["ErrorDetail", "ErrorResponse"]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
