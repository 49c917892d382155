"""Interleave several async iterators (the choices of an ``n > 1`` request) into one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

__all__ = ["merge"]

T = TypeVar("T")

_DONE = object()


async def merge(iterators: list[AsyncIterator[T]]) -> AsyncIterator[T]:
    """Items in the order they arrive. Leaving early cancels every producer and waits for
    them; a producer's error ends the merge with that error."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(iterator: AsyncIterator[T]) -> None:
        try:
            async for item in iterator:
                await queue.put(item)
        except Exception as exc:  # noqa: BLE001 (handed to the consumer, which re-raises it)
            await queue.put(exc)
        finally:
            await iterator.aclose()
            queue.put_nowait(_DONE)

    tasks = [asyncio.create_task(pump(it)) for it in iterators]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is _DONE:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
