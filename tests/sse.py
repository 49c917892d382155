"""The one server-sent-events reader the tests share, and the recorded upstream transcripts.

``sse_data`` follows the SSE rules the chat streams use: an event's ``data:`` lines (one
optional space after the colon) are joined by newlines, a blank line ends the event, comment
lines (``:``) and other fields are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["DONE", "TRANSCRIPTS", "load_transcript", "sse_chunks", "sse_data"]

DONE = "[DONE]"
TRANSCRIPTS = Path(__file__).parent / "data" / "upstream_sse"


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """Each event's data, in order, ``[DONE]`` included; a last event without its blank
    line (a cut stream) still counts."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield "\n".join(data)


def sse_chunks(lines: Iterable[str]) -> Iterator[dict]:
    """The JSON payloads of a chat stream, up to ``[DONE]``."""
    for data in sse_data(lines):
        if data == DONE:
            return
        yield json.loads(data)


def load_transcript(name: str) -> list[dict]:
    """A recorded upstream stream (``tests/data/upstream_sse/<name>.sse``) as its chunks."""
    text = (TRANSCRIPTS / f"{name}.sse").read_text(encoding="utf-8")
    return list(sse_chunks(text.splitlines()))
