"""The event loop every bench process uses: uvloop where installed (as uvicorn uses it), so
the fake upstream and the load generator cost as little CPU as possible."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_fast"]

T = TypeVar("T")


def run_fast(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # plain asyncio is fine, only slower
        return asyncio.run(coro)
    return uvloop.run(coro)
