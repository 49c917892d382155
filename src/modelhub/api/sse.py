"""Server-sent events for streamed chat completions.

Chunks are written in batches: whatever the request produced while the previous write
was under way leaves in one write. An upstream's burst of chunks read in one network read
is then one write to the client, not one per chunk through every ASGI layer, and a slow
reader holds back at most ``_READ_AHEAD`` chunks before generation waits for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass

import anyio
from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from modelhub.errors import ModelhubError
from modelhub.serving.chat import ChatStream

__all__ = ["EventStreamResponse", "sse_events"]

log = logging.getLogger(__name__)

_READ_AHEAD = 64


class EventStreamResponse(StreamingResponse):
    """``stream``'s chunks (or ``chunks``, made from them) as server-sent events. ``stream``
    is closed however the response ends, even if the client left before its first byte."""

    def __init__(
        self,
        stream: ChatStream,
        headers: Mapping[str, str],
        *,
        chunks: AsyncGenerator[BaseModel, None] | None = None,
    ):
        super().__init__(
            sse_events(stream if chunks is None else chunks),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache"},
        )
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()


@dataclass(frozen=True)
class _End:
    error: Exception | None = None


async def sse_events(
    chunks: ChatStream | AsyncGenerator[BaseModel, None],
) -> AsyncIterator[bytes]:
    """``data: {chunk}`` lines, then ``data: [DONE]``. An error after the first byte can no
    longer change the status code, so it is sent as an error event."""
    queue: asyncio.Queue[BaseModel | _End] = asyncio.Queue(maxsize=_READ_AHEAD)
    reader = asyncio.create_task(_read(chunks, queue))
    try:
        while True:
            batch = [await queue.get()]
            while not isinstance(batch[-1], _End) and not queue.empty():
                batch.append(queue.get_nowait())
            data = b"".join(_event(c) for c in batch if not isinstance(c, _End))
            if data:
                yield data
            end = batch[-1]
            if isinstance(end, _End):
                if end.error is not None:
                    raise end.error
                break
    except ModelhubError as exc:
        yield b"data: " + _json(exc.to_body()) + b"\n\n"
    except Exception:
        log.exception("stream failed")
        failure = ModelhubError("The server had an error while generating the response.")
        yield b"data: " + _json(failure.to_body()) + b"\n\n"
    finally:
        # Settles the request now (cancelled, if the client left), not whenever it is
        # collected; shielded, as a drain's cancellation must not cut the settling short.
        reader.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.gather(reader, return_exceptions=True)
    yield b"data: [DONE]\n\n"


async def _read(chunks: ChatStream | AsyncGenerator[BaseModel, None], queue: asyncio.Queue) -> None:
    try:
        async for chunk in chunks:
            await queue.put(chunk)
    except Exception as exc:  # noqa: BLE001 - handed to the writer, which reports it
        await queue.put(_End(exc))
    else:
        await queue.put(_End())
    finally:
        await chunks.aclose()


def _event(chunk: BaseModel) -> bytes:
    return b"data: " + chunk.model_dump_json().encode() + b"\n\n"


def _json(body: dict) -> bytes:
    return json.dumps(body).encode()
