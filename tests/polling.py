"""The one poll-until helper the tests share (sync and async forms).

Both call ``produce`` until ``done`` accepts its value or ``timeout`` passes, and return the
last value either way: the caller asserts on it, so a failure shows what was last seen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["poll_until", "poll_until_async"]

T = TypeVar("T")


def poll_until(
    produce: Callable[[], T],
    done: Callable[[T], object] = bool,
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
) -> T:
    deadline = time.monotonic() + timeout
    while not done(value := produce()) and time.monotonic() < deadline:
        time.sleep(interval)
    return value


async def poll_until_async(
    produce: Callable[[], Awaitable[T]],
    done: Callable[[T], object] = bool,
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
) -> T:
    deadline = time.monotonic() + timeout
    while not done(value := await produce()) and time.monotonic() < deadline:
        await asyncio.sleep(interval)
    return value
