"""Server-sent events for streamed chat completions."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator

from pydantic import BaseModel

from modelhub.errors import ModelhubError

__all__ = ["sse_events"]

log = logging.getLogger(__name__)


async def sse_events(chunks: AsyncGenerator[BaseModel, None]) -> AsyncIterator[bytes]:
    """``data: {chunk}`` lines, then ``data: [DONE]``. An error after the first byte can no
    longer change the status code, so it is sent as an error event."""
    try:
        async for chunk in chunks:
            yield b"data: " + chunk.model_dump_json().encode() + b"\n\n"
    except ModelhubError as exc:
        yield b"data: " + _json(exc.to_body()) + b"\n\n"
    except Exception:
        log.exception("stream failed")
        failure = ModelhubError("The server had an error while generating the response.")
        yield b"data: " + _json(failure.to_body()) + b"\n\n"
    finally:
        await chunks.aclose()  # settles the request now, not whenever it is collected
    yield b"data: [DONE]\n\n"


def _json(body: dict) -> bytes:
    return json.dumps(body).encode()
