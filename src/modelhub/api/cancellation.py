"""Client disconnects, handled in one place (as vLLM's ``with_cancellation`` does).

Starlette cancels a streamed response when its client leaves, but not a handler that is
still working towards a response. ``until_disconnect`` runs such work next to a listener
for ``http.disconnect`` and cancels the work when the client goes; the work's own
``finally`` blocks (serving's accounting) then settle it as cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from modelhub.errors import ClientClosedRequestError

__all__ = ["until_disconnect"]

T = TypeVar("T")


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, or ``ClientClosedRequestError`` once it was cancelled because the
    client left. Call it only after the body has been read: the listener consumes
    ``receive``."""
    task = asyncio.ensure_future(work)
    listener = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, listener), return_when=asyncio.FIRST_COMPLETED)
    finally:
        listener.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, listener, return_exceptions=True)
    if task.cancelled():
        raise ClientClosedRequestError("The client closed the connection.")
    return task.result()
