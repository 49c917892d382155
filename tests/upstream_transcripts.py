"""The recorded upstream streams in ``tests/data/upstream_sse/``: what each was asked and
scripted with, and how to record them again (``python -m tests.upstream_transcripts``)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import httpx

from tests.sse import TRANSCRIPTS
from tests.vllm_double import SERVED_MODEL, Reply, VllmDouble

__all__ = ["TRANSCRIPT_REQUESTS", "record_transcript"]

_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
_ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
_STREAM = {"model": SERVED_MODEL, "stream": True, "stream_options": {"include_usage": True}}
# name -> (request body, the replies it is scripted with); n=2 is two n=1 requests, as the
# gateway sends it.
TRANSCRIPT_REQUESTS: dict[str, tuple[dict, tuple[Reply, ...]]] = {
    "text": ({**_STREAM, "messages": _ASK, "max_tokens": 64}, (Reply(content="Sunny, 21 °C."),)),
    "tool_call": (
        {**_STREAM, "messages": _ASK, "tools": [_WEATHER_TOOL], "max_tokens": 64},
        (Reply(content="Checking.", tool_calls=[("get_weather", '{"city": "Paris"}')]),),
    ),
    "truncated_tool_call": (
        {
            **_STREAM,
            "messages": _ASK,
            "tools": [_WEATHER_TOOL],
            "tool_choice": "required",
            "max_tokens": 9,
        },
        (Reply(tool_calls=[("get_weather", '{"city": "Paris, France"}')]),),
    ),
    "json": (
        {**_STREAM, "messages": _ASK, "response_format": {"type": "json_object"}, "max_tokens": 64},
        (Reply(content='{"city": "Paris", "sky": "clear"}'),),
    ),
    "logprobs": (
        {**_STREAM, "messages": _ASK, "max_tokens": 16, "logprobs": True, "top_logprobs": 2},
        (Reply(content="Mild and dry."),),
    ),
    "n2_choice0": (
        {**_STREAM, "messages": _ASK, "max_tokens": 4, "seed": 1},
        (Reply(content="Rain later today."),),
    ),
    "n2_choice1": (
        {**_STREAM, "messages": _ASK, "max_tokens": 4, "seed": 2},
        (Reply(content="Clear."),),
    ),
}


def record_transcript(double: VllmDouble, name: str) -> str:
    """The raw SSE body the double sends for one of ``TRANSCRIPT_REQUESTS``."""
    body, replies = TRANSCRIPT_REQUESTS[name]
    double.script(*replies)
    response = httpx.post(f"{double.api_url}/chat/completions", json=body, timeout=30)
    response.raise_for_status()
    return response.text


def main() -> None:
    """``python -m tests.upstream_transcripts [NAME ...]`` (re)writes the named transcripts,
    or all of them."""
    names = sys.argv[1:] or list(TRANSCRIPT_REQUESTS)
    with tempfile.TemporaryDirectory() as tmp:
        double = VllmDouble(Path(tmp)).start()
        try:
            TRANSCRIPTS.mkdir(parents=True, exist_ok=True)
            for name in names:
                (TRANSCRIPTS / f"{name}.sse").write_text(
                    record_transcript(double, name), encoding="utf-8"
                )
        finally:
            double.stop()


if __name__ == "__main__":
    main()
