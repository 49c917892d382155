"""GET /v1/usage: a contract reads its own usage."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter()
