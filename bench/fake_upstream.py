"""A minimal OpenAI-compatible upstream that streams a fixed reply as fast as it can.

It is the thing *not* under test in the gateway benchmark, so it is a bare asyncio
protocol (no framework): HTTP/1.1 keep-alive, ``POST .../chat/completions`` streamed as
SSE in one write (chunked encoding) or answered as one JSON body, ``GET .../models`` for
health checks. Run: ``python -m bench.fake_upstream --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from bench.aio import run_fast

__all__ = ["REPLY_WORDS", "main"]

# The fixed reply: a dozen content chunks, like a short chat answer.
REPLY_WORDS = [
    "The",
    " image",
    " shows",
    " a",
    " thin",
    " white",
    " line",
    " on",
    " a",
    " dark",
    " blue",
    " background.",
]
_MODEL = "fake"


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _sse(model: str, include_usage: bool) -> bytes:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model}
    events = [
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        }
    ]
    for word in REPLY_WORDS:
        events.append(
            {**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        )
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        events.append(
            {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": 20,
                    "completion_tokens": len(REPLY_WORDS),
                    "total_tokens": 20 + len(REPLY_WORDS),
                },
            }
        )
    body = (
        b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    )
    return _chunk(body) + b"0\r\n\r\n"


def _json(model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(REPLY_WORDS)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 20,
                "completion_tokens": len(REPLY_WORDS),
                "total_tokens": 20 + len(REPLY_WORDS),
            },
        }
    ).encode()


class _Cache:
    """Responses depend only on (model, stream, include_usage): build each once."""

    def __init__(self) -> None:
        self._memo: dict[tuple, bytes] = {}

    def response(self, model: str, stream: bool, usage: bool) -> bytes:
        key = (model, stream, usage)
        if key not in self._memo:
            if stream:
                head = (
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                self._memo[key] = head + _sse(model, usage)
            else:
                body = _json(model)
                self._memo[key] = (
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
        return self._memo[key]


_CACHE = _Cache()
_MODELS = json.dumps({"object": "list", "data": [{"id": _MODEL, "object": "model"}]}).encode()


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self._buf) < end + 4 + length:
                return
            body = self._buf[end + 4 : end + 4 + length]
            self._buf = self._buf[end + 4 + length :]
            self._transport.write(self._answer(lines[0], body))

    @staticmethod
    def _answer(request_line: str, body: bytes) -> bytes:
        method, path, _ = request_line.split(" ", 2)
        if method == "GET" and path.rstrip("/").endswith("/models"):
            return (
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                % (len(_MODELS), _MODELS)
            )
        if method == "POST" and path.endswith("/chat/completions"):
            request = json.loads(body or b"{}")
            usage = bool((request.get("stream_options") or {}).get("include_usage"))
            return _CACHE.response(
                str(request.get("model", _MODEL)), bool(request.get("stream")), usage
            )
        return b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


async def _serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Protocol, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    run_fast(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
